package traversal

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"reflect"
	"sync/atomic"
	"testing"
	"time"

	"github.com/antnode/antnode/internal/testkit"

	"github.com/failsafe-go/failsafe-go/timeout"

	"github.com/antnode/antnode/bootstrap"
	"github.com/antnode/antnode/bootstrap/wire"
	"github.com/antnode/antnode/endpoint"
	"github.com/antnode/antnode/event"
	"github.com/antnode/antnode/holepunch"
	"github.com/antnode/antnode/identity"
	"github.com/antnode/antnode/relay"
)

// dropToConn is a UDP socket whose datagrams to one address vanish: a
// direct path to that peer that is blackholed in this direction.
type dropToConn struct {
	net.PacketConn
	drop netip.AddrPort
}

func (c dropToConn) WriteTo(b []byte, addr net.Addr) (int, error) {
	if ua, ok := addr.(*net.UDPAddr); ok && ua.AddrPort() == c.drop {
		return len(b), nil
	}
	return c.PacketConn.WriteTo(b, addr)
}

// blackholedFrom returns an endpoint on loopback from which nothing
// reaches the endpoint ep: the checks, QUIC packets and answers of a peer
// on it never get to ep's node, everything else does.
func blackholedFrom(t *testing.T, ep *endpoint.Endpoint) *endpoint.Endpoint {
	t.Helper()
	raw, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	out, err := endpoint.New(endpoint.Config{Conn: dropToConn{raw, ep.LocalAddr()}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { out.Close() })
	return out
}

// ofAttempt returns the events of one attempt, of kind k.
func ofAttempt(r *recorder, id event.AttemptID, k event.Kind) []event.Event {
	var out []event.Event
	for _, ev := range r.Kind(k) {
		if ev.Attempt == id {
			out = append(out, ev)
		}
	}
	return out
}

// statesOf returns the states an attempt moved its peer through.
func statesOf(r *recorder, id event.AttemptID) []string {
	var out []string
	for _, ev := range ofAttempt(r, id, event.KindStateChange) {
		out = append(out, ev.To)
	}
	return out
}

func hasRecovery(evs []event.Event, detail string, reason event.Reason) bool {
	for _, ev := range evs {
		if ev.Detail == detail && ev.Reason == reason {
			return true
		}
	}
	return false
}

// TestRepeatedDirectFailuresStayOnRelay: the peer's packets to this node
// vanish, so every direct attempt fails and falls back to the relay. After
// two such failures the next connect goes straight to the relay: no
// punching, a "degrade" recovery with the reason, and the peer's state
// machine ends in degraded with that reason.
func TestRepeatedDirectFailuresStayOnRelay(t *testing.T) {
	b, _ := relayBootstrap(t, relay.ServerConfig{})
	aEP := testkit.Endpoint(t)
	rec := &recorder{}
	a := startNodeCfg(t, Config{Endpoint: aEP, Bootstraps: []Bootstrap{b}, Recorder: rec, MaxRounds: 1, UpgradeBase: -1})
	peer := startNodeCfg(t, Config{Endpoint: blackholedFrom(t, aEP), Bootstraps: []Bootstrap{b}, UpgradeBase: -1})
	var ids []event.AttemptID
	for i := range repeatFailures + 1 {
		ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
		start := time.Now()
		c, err := a.Connect(ctx, peer.ID())
		cancel()
		if err != nil {
			t.Fatalf("connect %d: %v", i+1, err)
		}
		t.Logf("connect %d: %s in %v", i+1, c.Path(), time.Since(start).Round(time.Millisecond))
		if c.Path() != event.PathRelay {
			t.Fatalf("connect %d over %s, want the relay", i+1, c.Path())
		}
		if _, err := c.SendVerified(t.Context(), 32<<10); err != nil {
			t.Fatalf("connect %d: transfer: %v", i+1, err)
		}
		ids = append(ids, c.Attempt())
		if i < repeatFailures {
			c.Close()
			// The connection's end moves the peer to closed on its own
			// goroutine; a new attempt must not overlap it (an end landing
			// mid-attempt moves the peer to closed, and the machine then
			// refuses the attempt's further states).
			waitState(t, a, peer.ID(), StateClosed)
			continue
		}
		st := peerState(a, peer.ID())
		if st.State != StateDegraded {
			t.Fatalf("after connect %d the peer is %s, want degraded; transitions %+v", i+1, st.State, st.Transitions)
		}
		last := st.Transitions[len(st.Transitions)-1]
		if last.From != StateConnectedRelay || last.To != StateDegraded || last.Reason != event.ReasonPunchTimeout {
			t.Fatalf("last transition %+v, want connected-relay -> degraded (punch_timeout)", last)
		}
		c.Close()
	}
	for i, id := range ids[:repeatFailures] {
		// A direct attempt that failed, then the relay.
		if states := statesOf(rec, id); len(states) < 4 || !reflect.DeepEqual(states[:4], []string{"discovering", "coordinating", "punching", "relaying"}) {
			t.Fatalf("connect %d: states %v", i+1, states)
		}
		recs := ofAttempt(rec, id, event.KindRecovery)
		if len(ofAttempt(rec, id, event.KindCheckSent)) == 0 || len(recs) != 1 || recs[0].Detail != "relay_fallback" || recs[0].Outcome != event.OutcomeOK {
			t.Fatalf("connect %d: no direct checks, or recoveries %+v (want one relay_fallback)", i+1, recs)
		}
	}
	third := ids[repeatFailures]
	want := []string{"discovering", "coordinating", "relaying", "connected-relay", "degraded"}
	if states := statesOf(rec, third); !reflect.DeepEqual(states, want) {
		t.Fatalf("degraded connect: states %v, want %v", states, want)
	}
	recs := ofAttempt(rec, third, event.KindRecovery)
	if len(recs) != 1 || recs[0].Detail != "degrade" || recs[0].Reason != event.ReasonPunchTimeout || recs[0].Outcome != event.OutcomeOK {
		t.Fatalf("degraded connect: recoveries %+v, want one degrade (punch_timeout)", recs)
	}
	fb := ofAttempt(rec, third, event.KindFallback)
	if len(fb) != 1 || fb[0].Detail != "direct->relay" || fb[0].Reason != event.ReasonPunchTimeout {
		t.Fatalf("degraded connect: fallbacks %+v", fb)
	}
	for _, ev := range ofAttempt(rec, third, event.KindPhaseStart) {
		if ev.Phase == event.PhaseSync {
			t.Fatal("the degraded connect waited for a punch round")
		}
	}
}

// waitState waits (up to 5 s) for peer's state on n to be s.
func waitState(t *testing.T, n *Node, peer identity.PeerID, s State) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for peerState(n, peer).State != s {
		if time.Now().After(deadline) {
			t.Fatalf("peer %s is %s, want %s", peer.Short(), peerState(n, peer).State, s)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func peerState(n *Node, id identity.PeerID) PeerStatus {
	for _, p := range n.Peers() {
		if p.ID == id {
			return p
		}
	}
	return PeerStatus{}
}

// TestOverloadedAttemptIsDegraded: with MaxInflight 1, attempts that
// start while another is in flight are degraded: they say why (a
// "degrade" recovery, overloaded), their checks run at half the pace
// (fewer checks in a round towards a peer that never answers), and they
// still connect where a path exists. Once the load is gone, attempts are
// whole again.
func TestOverloadedAttemptIsDegraded(t *testing.T) {
	b := startBootstrap(t)
	aEP := testkit.Endpoint(t)
	rec := &recorder{}
	// Nothing remembered: the last connect is introduced too.
	a := startNodeCfg(t, Config{Endpoint: aEP, Bootstraps: []Bootstrap{b}, Recorder: rec, MaxInflight: 1, MaxRounds: 1,
		SpeculativeDials: -1, Relay: RelayNever, RememberFor: -1})
	slow := [2]*Node{
		startNodeCfg(t, Config{Endpoint: blackholedFrom(t, aEP), Bootstraps: []Bootstrap{b}}),
		startNodeCfg(t, Config{Endpoint: blackholedFrom(t, aEP), Bootstraps: []Bootstrap{b}}),
	}
	easy := startNodeCfg(t, Config{Bootstraps: []Bootstrap{b}})

	// Two attempts that cannot succeed, the second started while the
	// first punches; then one that can, while both are in flight.
	var failed [2]chan error
	for i, p := range slow {
		failed[i] = make(chan error, 1)
		go func() {
			_, err := a.Connect(t.Context(), p.ID())
			failed[i] <- err
		}()
		waitState(t, a, p.ID(), StatePunching)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	c, err := a.Connect(ctx, easy.ID())
	if err != nil {
		t.Fatalf("the attempt under load: %v", err)
	}
	defer c.Close()
	if c.Path() != event.PathDirect {
		t.Fatalf("under load connected over %s", c.Path())
	}
	degraded := func(id event.AttemptID) bool {
		recs := ofAttempt(rec, id, event.KindRecovery)
		return len(recs) == 1 && recs[0].Detail == "degrade" && recs[0].Reason == event.ReasonOverloaded
	}
	if !degraded(c.Attempt()) {
		t.Fatalf("recoveries of the attempt under load %+v, want one degrade (overloaded)", ofAttempt(rec, c.Attempt(), event.KindRecovery))
	}
	var ids [2]event.AttemptID
	for i := range slow {
		var ce *ConnectError
		if err := <-failed[i]; !errors.As(err, &ce) || ce.Reason != event.ReasonPunchTimeout {
			t.Fatalf("attempt %d to an unreachable peer: %v", i+1, err)
		}
		ids[i] = ce.Attempt
	}
	if degraded(ids[0]) || !degraded(ids[1]) {
		t.Fatalf("degraded: first attempt %v, second %v; want only the second", degraded(ids[0]), degraded(ids[1]))
	}
	// The same round bound (1 s on loopback), half the pace.
	full, half := ofAttempt(rec, ids[0], event.KindCheckSent), ofAttempt(rec, ids[1], event.KindCheckSent)
	cands := checkedCandidates(half)
	lo, hi := len(holepunch.Plan(cands, holepunch.PlanConfig{Budget: time.Second}.Slower(2))),
		len(holepunch.Plan(cands, holepunch.PlanConfig{Budget: 2 * time.Second}.Slower(2)))
	t.Logf("checks in a round: %d at full pace, %d at half pace (to %d addresses)", len(full), len(half), len(cands))
	if len(half) >= len(full) || len(half) < lo || len(half) > hi {
		t.Fatalf("%d checks under load, %d without: want fewer, on the slowed schedule (%d..%d)", len(half), len(full), lo, hi)
	}
	// Once the load is gone, attempts are whole again.
	c2, err := a.Connect(ctx, easy.ID())
	if err != nil {
		t.Fatal(err)
	}
	defer c2.Close()
	if recs := ofAttempt(rec, c2.Attempt(), event.KindRecovery); len(recs) != 0 {
		t.Fatalf("an attempt without load was degraded: %+v", recs)
	}
}

// checkedCandidates returns the addresses that check events went to, as
// candidates (for the schedule they were sent on).
func checkedCandidates(sent []event.Event) []wire.Candidate {
	var cands []wire.Candidate
	seen := map[netip.AddrPort]bool{}
	for _, ev := range sent {
		if !seen[ev.Addr] {
			seen[ev.Addr] = true
			cands = append(cands, wire.Candidate{Kind: wire.KindHost, Priority: 1, Addr: ev.Addr})
		}
	}
	return cands
}

// TestBlackholedAttemptGivesUpAtRTTBound: towards a peer whose packets
// never arrive, on loopback (round trips well under a millisecond), a
// punch round ends at its round-trip-derived bound (1 s, the lower bound)
// rather than the configured PunchBudget, and a dial at the handshake
// bound (2 s) rather than HandshakeTimeout: both configured at 20 s.
func TestBlackholedAttemptGivesUpAtRTTBound(t *testing.T) {
	const configured = 20 * time.Second
	tests := []struct {
		name   string
		cfg    Config
		reason event.Reason
		is     error
	}{
		{"punch round", Config{PunchBudget: configured, SpeculativeDials: -1}, event.ReasonPunchTimeout, holepunch.ErrNoPath},
		{"handshake", Config{PunchBudget: 300 * time.Millisecond, HandshakeTimeout: configured}, event.ReasonTimeout, timeout.ErrExceeded},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			b := startBootstrap(t)
			aEP := testkit.Endpoint(t)
			rec := &recorder{}
			cfg := tc.cfg
			cfg.Endpoint, cfg.Bootstraps, cfg.Recorder = aEP, []Bootstrap{b}, rec
			cfg.Relay, cfg.MaxRounds, cfg.ConnectTimeout = RelayNever, 1, 2*configured
			a := startNodeCfg(t, cfg)
			peer := startNodeCfg(t, Config{Endpoint: blackholedFrom(t, aEP), Bootstraps: []Bootstrap{b}})
			start := time.Now()
			_, err := a.Connect(t.Context(), peer.ID())
			took := time.Since(start)
			var ce *ConnectError
			if !errors.As(err, &ce) || ce.Reason != tc.reason || !errors.Is(err, tc.is) {
				t.Fatalf("got %v, want reason %s", err, tc.reason)
			}
			var punch time.Duration
			for _, ev := range ofAttempt(rec, ce.Attempt, event.KindPhaseEnd) {
				if ev.Phase == event.PhasePunch {
					punch = ev.Duration
				}
			}
			t.Logf("gave up after %v (punch round %v)", took.Round(time.Millisecond), punch.Round(time.Millisecond))
			if took >= configured/2 {
				t.Fatalf("gave up after %v: the configured %v, not the round-trip bound", took, configured)
			}
			if tc.reason != event.ReasonPunchTimeout {
				return
			}
			// The round's checks: the schedule of the 1 s bound (2 s if
			// loopback round trips were slower than 33 ms), not of 20 s.
			sent := ofAttempt(rec, ce.Attempt, event.KindCheckSent)
			cands := checkedCandidates(sent)
			lo := len(holepunch.Plan(cands, holepunch.PlanConfig{Budget: time.Second}))
			hi := len(holepunch.Plan(cands, holepunch.PlanConfig{Budget: 2 * time.Second}))
			full := len(holepunch.Plan(cands, holepunch.PlanConfig{Budget: configured}))
			if len(sent) < lo || len(sent) > hi {
				t.Fatalf("%d checks sent to %d addresses, want %d..%d (the whole budget: %d)", len(sent), len(cands), lo, hi, full)
			}
		})
	}
}

// TestFailedRecoveryIsRecordedAsFailed: a direct attempt that fails falls
// back to a relay that never answers; the relay fallback is recorded once
// its result is known, as failed, not as ok when it was decided.
func TestFailedRecoveryIsRecordedAsFailed(t *testing.T) {
	b, _ := silentRelayBootstrap(t)
	aEP := testkit.Endpoint(t)
	rec := &recorder{}
	a := startNodeCfg(t, Config{Endpoint: aEP, Bootstraps: []Bootstrap{b}, Recorder: rec, MaxRounds: 1,
		PunchBudget: 300 * time.Millisecond, ConnectTimeout: 6 * time.Second})
	peer := startNodeCfg(t, Config{Endpoint: blackholedFrom(t, aEP), Bootstraps: []Bootstrap{b}})
	_, err := a.Connect(t.Context(), peer.ID())
	var ce *ConnectError
	if !errors.As(err, &ce) {
		t.Fatalf("connect through a silent relay: %v", err)
	}
	recs := ofAttempt(rec, ce.Attempt, event.KindRecovery)
	if len(recs) != 1 || recs[0].Detail != "relay_fallback" || recs[0].Outcome != event.OutcomeFail || recs[0].Err == nil {
		t.Fatalf("recoveries %+v, want one failed relay_fallback with its error", recs)
	}
}

// silentRelayBootstrap starts a bootstrap whose relay takes requests and
// never answers (a relay behind a firewall that lets nothing out).
func silentRelayBootstrap(t *testing.T) (Bootstrap, *atomic.Int64) {
	t.Helper()
	raw, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	reads := &atomic.Int64{}
	rs, err := relay.NewServer(relay.ServerConfig{UDP: countingSilentConn{raw, reads}, RelayIP: netip.MustParseAddr("127.0.0.1")})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { rs.Close() })
	id := testkit.Identity(t)
	srv, err := bootstrap.NewServer(bootstrap.ServerConfig{Identity: id, Endpoint: testkit.Endpoint(t), Relay: rs})
	if err != nil {
		t.Fatal(err)
	}
	rs.SetPolicy(srv.RelayAllowed)
	t.Cleanup(func() { srv.Close() })
	return Bootstrap{Addr: srv.Addr(), ID: id.ID()}, reads
}

// countingSilentConn reads (and counts) what arrives and sends nothing.
type countingSilentConn struct {
	net.PacketConn
	reads *atomic.Int64
}

func (c countingSilentConn) ReadFrom(b []byte) (int, net.Addr, error) {
	n, a, err := c.PacketConn.ReadFrom(b)
	if err == nil {
		c.reads.Add(1)
	}
	return n, a, err
}

func (countingSilentConn) WriteTo(b []byte, _ net.Addr) (int, error) { return len(b), nil }

// TestSilentRelayGivesWayToAnother: the relay of the bootstrap that makes
// the introduction takes the allocation request and never answers. The
// allocation gives up at its round-trip-derived bound (2 s on loopback)
// and the attempt goes through the other bootstrap and its relay within
// a ConnectTimeout of 6 s: without the bound, the allocation waits for
// pion's own retransmissions to give up (7.8 s), past the attempt's end.
func TestSilentRelayGivesWayToAnother(t *testing.T) {
	b0, reads := silentRelayBootstrap(t)
	b1, rs1 := relayBootstrap(t, relay.ServerConfig{})
	rec := &recorder{}
	a := startNodeCfg(t, Config{Bootstraps: []Bootstrap{b0, b1}, Relay: RelayForce, Recorder: rec, ConnectTimeout: 6 * time.Second})
	peer := startNodeCfg(t, Config{Bootstraps: []Bootstrap{b0, b1}})
	deadline := time.Now().Add(5 * time.Second)
	for len(a.registered()) < 2 || len(peer.registered()) < 2 {
		if time.Now().After(deadline) {
			t.Fatal("not registered with both bootstraps")
		}
		time.Sleep(10 * time.Millisecond)
	}
	start := time.Now()
	c, err := a.Connect(t.Context(), peer.ID())
	if err != nil {
		t.Fatalf("connect: %v (the silent relay heard %d requests)", err, reads.Load())
	}
	defer c.Close()
	t.Logf("connected through bootstrap 1's relay after %v", time.Since(start).Round(time.Millisecond))
	if c.Path() != event.PathRelay || rs1.Allocations() != 1 {
		t.Fatalf("path %s, %d allocations on bootstrap 1's relay", c.Path(), rs1.Allocations())
	}
	if reads.Load() == 0 {
		t.Fatal("the silent relay was never asked: the test proves nothing")
	}
	if _, err := c.SendVerified(t.Context(), 64<<10); err != nil {
		t.Fatal(err)
	}
	failed := false
	for _, ev := range ofAttempt(rec, c.Attempt(), event.KindPhaseEnd) {
		failed = failed || (ev.Phase == event.PhaseRelay && ev.Outcome == event.OutcomeFail && ev.Reason == event.ReasonRelayUnavailable)
	}
	if !failed {
		t.Fatal("no failed relay phase (relay_unavailable) before the alternate bootstrap")
	}
	if !hasRecovery(rec.Kind(event.KindRecovery), "alternate_bootstrap", event.ReasonRelayUnavailable) {
		t.Fatalf("no alternate_bootstrap recovery: %+v", rec.Kind(event.KindRecovery))
	}
}
