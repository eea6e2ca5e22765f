package bootstrap

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/quic-go/quic-go"

	"github.com/antnode/antnode/bootstrap/wire"
	"github.com/antnode/antnode/event"
	"github.com/antnode/antnode/identity"
	"github.com/antnode/antnode/internal/testkit"
)

// eventLog keeps every event a server records.
type eventLog = testkit.Recorder

// dialControl opens a control connection and stream as id, without the
// Client, and does not keep it alive: it sends only what the test writes.
func dialControl(t *testing.T, srv *testServer, id *identity.Identity) (*quic.Conn, *quic.Stream) {
	t.Helper()
	ep := newEndpoint(t, "127.0.0.1:0")
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	conn, err := ep.Transport().Dial(ctx, net.UDPAddrFromAddrPort(srv.Addr()), id.ClientTLS(srv.id.ID(), wire.ALPN), &quic.Config{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.CloseWithError(0, "") })
	str, err := conn.OpenStreamSync(ctx)
	if err != nil {
		t.Fatal(err)
	}
	return conn, str
}

// readUntil reads control messages from r until one that match accepts;
// it fails after 5 s or 32 messages.
func readUntil(t *testing.T, str *quic.Stream, r *wire.Reader, what string, match func(wire.Message) bool) wire.Message {
	t.Helper()
	str.SetReadDeadline(time.Now().Add(5 * time.Second))
	defer str.SetReadDeadline(time.Time{})
	for range 32 {
		m, err := r.Read()
		if err != nil {
			t.Fatalf("waiting for %s: %v", what, err)
		}
		if match(m) {
			return m
		}
	}
	t.Fatalf("no %s within 32 messages", what)
	return nil
}

// holdOffers returns an OnOffer that hands every offer to the test
// unanswered, and keeps it so until its Client closes (the Client declines
// an offer when OnOffer returns).
func holdOffers() (func(*Offer), <-chan *Offer) {
	offers := make(chan *Offer, 16)
	return func(o *Offer) {
		offers <- o
		<-o.c.ctx.Done()
	}, offers
}

func nextOffer(t *testing.T, offers <-chan *Offer) *Offer {
	t.Helper()
	select {
	case o := <-offers:
		return o
	case <-time.After(5 * time.Second):
		t.Fatal("no offer reached the target")
		return nil
	}
}

// TestPendingIntroductionsPerPeer: a requester with MaxPendingPerPeer
// unanswered introductions is refused the next one with CodeTooMany (the
// target is not offered it); another requester is not; an answer frees a
// slot.
func TestPendingIntroductionsPerPeer(t *testing.T) {
	tests := []struct {
		name  string
		limit int
	}{
		{"limit 1", 1},
		{"limit 3", 3},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			rec := &eventLog{}
			srv := startServer(t, ServerConfig{MaxPendingPerPeer: tc.limit, OfferTimeout: time.Minute, Recorder: rec})
			onOffer, offers := holdOffers()
			// Connect returns with the answer (an early introduction
			// returns before it, and counts against the limit the same).
			b := startClient(t, srv, ClientConfig{DisableEarly: true, OnOffer: onOffer})
			a := startClient(t, srv, ClientConfig{})
			other := startClient(t, srv, ClientConfig{})
			ready(t, a)
			ready(t, b)
			ready(t, other)
			bID := b.cfg.Identity.ID()
			ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
			defer cancel()

			results := make(chan error, tc.limit+1)
			connect := func(c *Client) {
				_, err := c.Connect(ctx, bID, Intro{})
				results <- err
			}
			held := make([]*Offer, 0, tc.limit)
			for range tc.limit {
				go connect(a)
				held = append(held, nextOffer(t, offers))
			}
			// One over the limit: refused at once, never offered.
			_, err := a.Connect(ctx, bID, Intro{})
			var re *RequestError
			if !errors.As(err, &re) || re.Code != wire.CodeTooMany || !errors.Is(err, ErrOverloaded) || classify(err) != event.ReasonOverloaded {
				t.Fatalf("request %d: %v, want CodeTooMany (overloaded)", tc.limit+1, err)
			}
			if _, ok := rec.Find(func(ev event.Event) bool {
				return ev.Kind == event.KindBootstrapRequest && ev.Outcome == event.OutcomeFail && ev.Reason == event.ReasonOverloaded
			}); !ok {
				t.Fatal("the server recorded no refused request")
			}
			// The limit is per requester.
			go func() {
				s, err := other.Connect(ctx, bID, Intro{})
				if err == nil {
					s.Close()
				}
				results <- err
			}()
			o := nextOffer(t, offers)
			if o.From != other.cfg.Identity.ID() {
				t.Fatalf("offer from %s, want the other requester (the refused request was forwarded)", o.From.Short())
			}
			o.Decline(wire.CodeRefused)
			if err := <-results; !errors.Is(err, ErrRefused) {
				t.Fatalf("other requester: %v, want ErrRefused", err)
			}
			// An answer frees a slot: the next request is forwarded.
			held[0].Decline(wire.CodeRefused)
			if err := <-results; !errors.Is(err, ErrRefused) {
				t.Fatalf("declined request: %v, want ErrRefused", err)
			}
			go connect(a)
			if o := nextOffer(t, offers); o.From != a.cfg.Identity.ID() {
				t.Fatalf("offer from %s, want the requester", o.From.Short())
			} else {
				held[0] = o
			}
			for _, o := range held {
				o.Decline(wire.CodeRefused)
			}
			for range tc.limit {
				if err := <-results; !errors.Is(err, ErrRefused) {
					t.Fatalf("held request: %v, want ErrRefused", err)
				}
			}
		})
	}
}

// TestCandidateLimit: a peer may have wire.MaxCandidates (32) candidates,
// registered and announced together; an address it has already is not
// counted again; the 33rd is a protocol error (CodeTooMany) that closes
// only that peer's connection.
func TestCandidateLimit(t *testing.T) {
	cand := func(i int) wire.Candidate {
		return wire.Candidate{Kind: wire.KindHost, Priority: uint32(i), Addr: netip.AddrPortFrom(netip.AddrFrom4([4]byte{10, 0, byte(i >> 8), byte(i)}), 4000)}
	}
	tests := []struct {
		name       string
		registered int // candidates in Register; the rest up to the limit by AddAddress
	}{
		{"all announced", 0},
		{"some registered", 10},
		{"all but one registered", wire.MaxCandidates - 1},
		{"all registered", wire.MaxCandidates},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			rec := &eventLog{}
			srv := startServer(t, ServerConfig{Recorder: rec})
			conn, str := rawControl(t, srv)
			r := wire.NewReader(str)
			reg := &wire.Register{Version: wire.Version}
			for i := range tc.registered {
				reg.Candidates = append(reg.Candidates, cand(i))
			}
			msgs := mustMarshal(t, reg)
			for i := tc.registered; i < wire.MaxCandidates; i++ {
				msgs = append(msgs, mustMarshal(t, &wire.AddAddress{Candidate: cand(i)})...)
			}
			// At the limit, an address the peer has already is accepted
			// (the Pong after it proves the server went on).
			msgs = append(msgs, mustMarshal(t, &wire.AddAddress{Candidate: cand(0)})...)
			msgs = append(msgs, mustMarshal(t, &wire.Ping{Seq: 77})...)
			if _, err := str.Write(msgs); err != nil {
				t.Fatal(err)
			}
			readUntil(t, str, r, "pong", func(m wire.Message) bool { p, ok := m.(*wire.Pong); return ok && p.Seq == 77 })
			peers := srv.Peers()
			if len(peers) != 1 || len(peers[0].Candidates) != wire.MaxCandidates {
				t.Fatalf("registry %+v, want one peer with %d candidates", peers, wire.MaxCandidates)
			}
			if conn.Context().Err() != nil {
				t.Fatalf("connection closed at the limit: %v", context.Cause(conn.Context()))
			}

			if _, err := str.Write(mustMarshal(t, &wire.AddAddress{Candidate: cand(wire.MaxCandidates)})); err != nil {
				t.Fatal(err)
			}
			if got := closedByServer(t, conn); got != closeProtocol {
				t.Fatalf("close code %#x, want %#x", got, closeProtocol)
			}
			ev, ok := rec.Find(func(ev event.Event) bool {
				return ev.Kind == event.KindSecurity && ev.Reason == event.ReasonProtocolError
			})
			var pe *ProtocolError
			if !ok || !errors.As(ev.Err, &pe) || pe.Code != wire.CodeTooMany {
				t.Fatalf("security event %+v (found %v), want a protocol error with CodeTooMany", ev, ok)
			}
			// The Error frame may or may not beat the close; if it came,
			// it carries the code.
			str.SetReadDeadline(time.Now().Add(time.Second))
			for range 8 {
				m, err := r.Read()
				if err != nil {
					break
				}
				if e, ok := m.(*wire.Error); ok && e.Code != wire.CodeTooMany {
					t.Fatalf("error frame code %s, want too_many", e.Code)
				}
			}
			testkit.WaitFor(t, 3*time.Second, "the peer to be unregistered", func() bool { return srv.NumPeers() == 0 })
			ready(t, startClient(t, srv, ClientConfig{}))
		})
	}
}

// TestOfferExpires: a target that never answers makes the requester's
// introduction end with CodeExpired (ErrExpired) after OfferTimeout, and
// frees the requester's pending slot; the target, if it answers late, is
// told the introduction is over (ErrPeerCanceled) rather than left
// waiting for punch rounds.
func TestOfferExpires(t *testing.T) {
	const offerTimeout = 200 * time.Millisecond
	rec := &eventLog{}
	srv := startServer(t, ServerConfig{OfferTimeout: offerTimeout, MaxPendingPerPeer: 1, Recorder: rec})
	onOffer, offers := holdOffers()
	// Connect returns with the result (an early introduction's session
	// ends with it instead: TestEarlyIntroduction).
	b := startClient(t, srv, ClientConfig{DisableEarly: true, OnOffer: onOffer})
	a := startClient(t, srv, ClientConfig{})
	ready(t, a)
	ready(t, b)
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()

	start := time.Now()
	_, err := a.Connect(ctx, b.cfg.Identity.ID(), Intro{})
	elapsed := time.Since(start)
	var re *RequestError
	if !errors.As(err, &re) || re.Code != wire.CodeExpired || !errors.Is(err, ErrExpired) || classify(err) != event.ReasonExpired {
		t.Fatalf("Connect: %v, want CodeExpired (ErrExpired)", err)
	}
	if elapsed < offerTimeout {
		t.Fatalf("expired after %v, before the offer timeout %v", elapsed, offerTimeout)
	}
	late := nextOffer(t, offers) // the target was offered it and stayed silent
	if _, ok := rec.Find(func(ev event.Event) bool {
		return ev.Kind == event.KindBootstrapRequest && ev.Outcome == event.OutcomeFail && ev.Reason == event.ReasonExpired
	}); !ok {
		t.Fatal("the server recorded no expired request")
	}

	// The expired request no longer counts against the limit of 1, and a
	// late answer to it does not disturb the next introduction.
	switch ls, err := late.Accept(Intro{}); {
	case err == nil: // answered before the cancel came: the session ends
		select {
		case <-ls.Done():
			if !errors.Is(ls.Err(), ErrPeerCanceled) {
				t.Fatalf("the late answer's session ended with %v, want ErrPeerCanceled", ls.Err())
			}
		case <-time.After(5 * time.Second):
			t.Fatal("a late answer to an expired offer left the target's session waiting")
		}
	case !errors.Is(err, ErrPeerCanceled):
		t.Fatalf("late accept: %v, want ErrPeerCanceled or a session that ends with it", err)
	}
	results := make(chan error, 1)
	go func() {
		s, err := a.Connect(ctx, b.cfg.Identity.ID(), Intro{})
		if err == nil {
			s.Close()
		}
		results <- err
	}()
	o := nextOffer(t, offers)
	if o.ID == late.ID {
		t.Fatal("the expired offer was offered again")
	}
	if _, err := o.Accept(Intro{}); err != nil {
		t.Fatal(err)
	}
	if err := <-results; err != nil {
		t.Fatalf("introduction after the expiry: %v", err)
	}
}

// TestSilentPeerExpires: a registration that hears nothing for
// IdleTimeout is removed from the registry (a connect to it is then
// answered unknown peer), while a peer that keeps alive stays.
func TestSilentPeerExpires(t *testing.T) {
	const idle = 400 * time.Millisecond
	srv := startServer(t, ServerConfig{IdleTimeout: idle})
	a := startClient(t, srv, ClientConfig{KeepAlive: idle / 8})
	ready(t, a)

	silent := newIdentity(t)
	_, str := dialControl(t, srv, silent)
	if _, err := str.Write(mustMarshal(t, &wire.Register{Version: wire.Version})); err != nil {
		t.Fatal(err)
	}
	readUntil(t, str, wire.NewReader(str), "registered", func(m wire.Message) bool { _, ok := m.(*wire.Registered); return ok })
	registered := func(id identity.PeerID) bool {
		for _, p := range srv.Peers() {
			if p.ID == id {
				return true
			}
		}
		return false
	}
	if !registered(silent.ID()) {
		t.Fatal("the silent peer is not registered")
	}

	testkit.WaitFor(t, 10*idle, "the silent peer's registration to expire", func() bool { return !registered(silent.ID()) })
	if !registered(a.cfg.Identity.ID()) || !a.Status().Registered {
		t.Fatal("the peer that keeps alive expired too")
	}
	ctx, cancel := context.WithTimeout(t.Context(), 3*time.Second)
	defer cancel()
	_, err := a.Connect(ctx, silent.ID(), Intro{})
	var re *RequestError
	if !errors.As(err, &re) || re.Code != wire.CodeUnknownPeer || !errors.Is(err, ErrUnknownPeer) {
		t.Fatalf("connect to the expired peer: %v, want CodeUnknownPeer", err)
	}
}
