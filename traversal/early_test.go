package traversal

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/pion/stun/v3"

	"github.com/antnode/antnode/bootstrap"
	"github.com/antnode/antnode/bootstrap/wire"
	"github.com/antnode/antnode/event"
	"github.com/antnode/antnode/identity"
	"github.com/antnode/antnode/internal/testkit"
	"github.com/antnode/antnode/nattype"
)

func TestLateTargets(t *testing.T) {
	host := func(a string) wire.Candidate {
		return wire.Candidate{Kind: wire.KindHost, Addr: netip.MustParseAddrPort(a)}
	}
	relayed := wire.Candidate{Kind: wire.KindRelay, Addr: netip.MustParseAddrPort("203.0.113.1:50000")}
	registered := []wire.Candidate{host("192.0.2.1:1"), host("198.51.100.1:1")}
	tests := []struct {
		name     string
		answered []wire.Candidate
		want     []wire.Candidate
	}{
		{"the same as registered", registered, nil},
		{"none", nil, nil},
		{"a new mapping", append(slices.Clone(registered), host("198.51.100.1:2")), []wire.Candidate{host("198.51.100.1:2")}},
		{"a relayed address is no check target", []wire.Candidate{relayed}, nil},
		{"a new one twice", []wire.Candidate{host("192.0.2.9:9"), host("192.0.2.9:9")}, []wire.Candidate{host("192.0.2.9:9")}},
		{"same address, other kind", []wire.Candidate{{Kind: wire.KindServerReflexive, Addr: registered[1].Addr}}, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := lateTargets(registered, tc.answered); !slices.Equal(got, tc.want) {
				t.Fatalf("lateTargets = %v, want %v", got, tc.want)
			}
		})
	}
}

// earlyTarget registers a bare bootstrap client with bs as a peer whose
// offers onOffer handles, and announces its NAT type (eim-apdf: what an
// initiator's strategy starts from on an early introduction; without one
// it waits for the answer). It returns once the bootstrap has handled the
// announcement (a request made after it is answered after it); the client
// closes with the test.
func earlyTarget(t *testing.T, bs Bootstrap, onOffer func(*bootstrap.Offer)) *identity.Identity {
	t.Helper()
	id := testkit.Identity(t)
	b, err := bootstrap.NewClient(bootstrap.ClientConfig{Identity: id, Endpoint: testkit.Endpoint(t), Addr: bs.Addr, ID: bs.ID, OnOffer: onOffer})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	if err := b.WaitReady(ctx); err != nil {
		t.Fatal(err)
	}
	if err := b.AnnounceNAT(eimAPDF); err != nil {
		t.Fatal(err)
	}
	_, _ = b.RequestRelay(ctx) // answered after the announcement was handled
	return id
}

// TestDeclineAfterEarlyStart: on an early introduction the initiator
// checks the target's registered addresses before the target answers;
// when the target then declines, the attempt ends at once with the
// refusal, in coordination, and does not fall back to the relay.
func TestDeclineAfterEarlyStart(t *testing.T) {
	bs := startBootstrap(t)
	rec := &recorder{}
	a := startNode(t, rec, bs)
	release := make(chan struct{})
	bID := earlyTarget(t, bs, func(o *bootstrap.Offer) {
		<-release
		o.Decline(wire.CodeRefused)
	})
	var once sync.Once
	answer := func() { once.Do(func() { close(release) }) }
	t.Cleanup(answer) // before the target's Close, which waits for the offer's handler
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	done := make(chan error, 1)
	go func() {
		c, err := a.Connect(ctx, bID.ID())
		if err == nil {
			c.Close()
		}
		done <- err
	}()
	testkit.WaitFor(t, 5*time.Second, "a check before the answer", func() bool { return len(rec.Kind(event.KindCheckSent)) > 0 })
	answer()
	err := <-done
	var ce *ConnectError
	if !errors.As(err, &ce) || ce.Reason != event.ReasonRefused || ce.Phase != event.PhaseCoordinate {
		t.Fatalf("Connect: %v, want refused in coordination", err)
	}
	if ctx.Err() != nil {
		t.Fatal("the attempt lasted until its deadline")
	}
	if fb := rec.Kind(event.KindFallback); len(fb) > 0 {
		t.Fatalf("fell back after a refusal: %+v", fb)
	}
}

func TestWarmPermitWait(t *testing.T) {
	ms := time.Millisecond
	tests := []struct {
		name      string
		peer, own time.Duration
		want      time.Duration
	}{
		{"equal RTTs: the jitter margin", 40 * ms, 40 * ms, 10 * ms},
		{"the peer farther", 80 * ms, 40 * ms, 60 * ms},
		{"the peer nearer", 20 * ms, 80 * ms, 5 * ms},
		{"unknown RTTs", 0, 0, 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := warmPermitWait(tc.peer, tc.own); got != tc.want {
				t.Fatalf("warmPermitWait(%v, %v) = %v, want %v", tc.peer, tc.own, got, tc.want)
			}
		})
	}
}

// TestLateCandidateAfterEarlyStart: on an early introduction the
// initiator starts on what the target registered; a candidate that only
// the target's answer carries joins the checks (a connectivity check
// arrives there) while the attempt runs.
func TestLateCandidateAfterEarlyStart(t *testing.T) {
	bs := startBootstrap(t)
	rec := &recorder{}
	a := startNode(t, rec, bs)
	late, err := net.ListenUDP("udp4", net.UDPAddrFromAddrPort(netip.MustParseAddrPort("127.0.0.1:0")))
	if err != nil {
		t.Fatal(err)
	}
	defer late.Close()
	lateAddr := late.LocalAddr().(*net.UDPAddr).AddrPort()
	bID := earlyTarget(t, bs, func(o *bootstrap.Offer) {
		s, err := o.Accept(bootstrap.Intro{NAT: eimAPDF, Candidates: []wire.Candidate{{Kind: wire.KindHost, Priority: 0x7effffff, Addr: lateAddr}}})
		if err == nil {
			defer s.Close()
			<-s.Done()
		}
	})
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	cctx, stop := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		if c, err := a.Connect(cctx, bID.ID()); err == nil {
			c.Close()
		}
	}()
	defer func() { stop(); <-done }()
	late.SetReadDeadline(time.Now().Add(5 * time.Second))
	buf := make([]byte, 1500)
	for { // bounded by the read deadline
		n, err := late.Read(buf)
		if err != nil {
			t.Fatalf("no check reached the late candidate: %v", err)
		}
		m := &stun.Message{Raw: append([]byte(nil), buf[:n]...)}
		if m.Decode() == nil && m.Type == stun.BindingRequest {
			break
		}
	}
	if _, ok := rec.Find(func(ev event.Event) bool { return ev.Kind == event.KindCandidate && ev.Addr == lateAddr }); !ok {
		t.Fatal("the late candidate was not recorded")
	}
}

func TestEarlyEnough(t *testing.T) {
	blocked := nattype.Type{Filtering: nattype.FilteringBlocked}
	apdm := nattype.Type{Mapping: nattype.MappingAPDM, Filtering: nattype.FilteringAPDF}
	cone := nattype.Type{Mapping: nattype.MappingEIM, Filtering: nattype.FilteringAPDF}
	srflx := wire.Candidate{Kind: wire.KindServerReflexive, Addr: netip.MustParseAddrPort("198.51.100.7:4000"), Origin: wire.OriginObserved}
	mapped := wire.Candidate{Kind: wire.KindMapped, Addr: netip.MustParseAddrPort("198.51.100.7:4100"), Origin: wire.OriginObservedIP}
	elsewhere := wire.Candidate{Kind: wire.KindMapped, Addr: netip.MustParseAddrPort("192.0.2.9:4100"), Origin: wire.OriginAnnounced}
	warm := relayCandidate(netip.MustParseAddrPort("203.0.113.1:50000"))
	tests := []struct {
		name string
		peer bootstrap.Intro
		want bool
	}{
		{"classified cone", bootstrap.Intro{NAT: cone, Candidates: []wire.Candidate{srflx}}, true},
		{"not classified", bootstrap.Intro{Candidates: []wire.Candidate{srflx}}, false},
		// Blocked is settled (its mapping cannot be measured): this
		// waited for the answer, a bootstrap round trip, before.
		{"blocked with its warm relay", bootstrap.Intro{NAT: blocked, Candidates: []wire.Candidate{srflx, warm}}, true},
		// TestWarmRelayConnects: the peer registered before its warm
		// allocation was ready; both sides waited to be dialled.
		{"blocked, no warm relay registered yet", bootstrap.Intro{NAT: blocked, Candidates: []wire.Candidate{srflx}}, false},
		{"symmetric with its warm relay", bootstrap.Intro{NAT: apdm, Candidates: []wire.Candidate{srflx, warm}}, true},
		{"symmetric, no warm relay registered yet", bootstrap.Intro{NAT: apdm, Candidates: []wire.Candidate{srflx}}, false},
		{"symmetric with a port mapping keeps none", bootstrap.Intro{NAT: apdm, Candidates: []wire.Candidate{srflx, mapped}}, true},
		// As the strategy reads it (RemoteSide): a mapping at an IP no
		// bootstrap observed is the peer's word only.
		{"symmetric claiming a mapping elsewhere", bootstrap.Intro{NAT: apdm, Candidates: []wire.Candidate{srflx, elsewhere}}, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := earlyEnough(tc.peer); got != tc.want {
				t.Fatalf("earlyEnough = %v, want %v", got, tc.want)
			}
		})
	}
}
