package traversal

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"time"

	"github.com/failsafe-go/failsafe-go"
	"github.com/failsafe-go/failsafe-go/circuitbreaker"
	"github.com/failsafe-go/failsafe-go/timeout"
	"github.com/quic-go/quic-go"

	"github.com/antnode/antnode/bootstrap"
	"github.com/antnode/antnode/endpoint"
	"github.com/antnode/antnode/event"
	"github.com/antnode/antnode/holepunch"
	"github.com/antnode/antnode/identity"
)

// The recovery ladder: every attempt runs under these policies, and each
// step that fails is met by the next:
//
//  1. retry with exponential backoff and jitter (bootstrap registration,
//     bounded by the backoff's maximum; see package bootstrap);
//  2. a circuit breaker per bootstrap: after repeated failures a bootstrap
//     is skipped, and probed again after a delay (half-open);
//  3. the alternative bootstrap when one cannot introduce;
//  4. phase timeouts derived from measured round-trip times, run as
//     failsafe-go timeout policies (see TimeoutsFor and within);
//  5. the relay when no direct path can exist or none validated;
//  6. graceful degradation: under load, or for a peer whose direct
//     attempts keep failing, stay on the relay, probe more slowly and
//     skip optional work, and say why.

// PhaseTimeouts are the per-phase bounds of one attempt.
type PhaseTimeouts struct {
	// Sync bounds the wait for the bootstrap's PunchNow after the
	// introduction; past it this side starts punching on its own.
	Sync time.Duration
	// Punch bounds one round of checks.
	Punch time.Duration
	// Relay bounds getting a relay allocation: credentials from the
	// bootstrap and the TURN allocation (with its authentication
	// challenge) on the relay beside it.
	Relay time.Duration
	// Handshake bounds one QUIC handshake (one dial) to the peer.
	Handshake time.Duration
}

// The lower bounds of the phase timeouts: however short the round trips,
// a phase gets time for a lost packet or two to be sent again.
const (
	minSync      = 500 * time.Millisecond
	minPunch     = time.Second
	minRelay     = 2 * time.Second
	minHandshake = 2 * time.Second
)

// phaseLimits are the upper bounds of a node's phase timeouts: its
// PunchBudget and HandshakeTimeout, and fixed ones for the rest.
func (n *Node) phaseLimits() PhaseTimeouts {
	return PhaseTimeouts{Sync: 5 * time.Second, Punch: n.cfg.PunchBudget, Relay: 10 * time.Second, Handshake: n.cfg.HandshakeTimeout}
}

// phaseTimeouts are the phase timeouts of an attempt introduced in sess.
func (n *Node) phaseTimeouts(sess *bootstrap.Session) PhaseTimeouts {
	rttB := sess.Bootstrap().Status().RTT
	return TimeoutsFor(rttB, rttB+sess.PeerRTT, n.phaseLimits())
}

// TimeoutsFor derives phase timeouts from the round-trip times measured so
// far: rttBootstrap to the introducing bootstrap (whose relay sits beside
// it) and rttPeer, the estimated round trip to the peer (zero: unknown).
// Each phase is held between a lower bound and its upper bound in limit
// (the upper bound wins if they cross). It is a pure function:
//
//   - Sync: 4 bootstrap round trips, at least 500 ms;
//   - Punch: 30 peer round trips, at least 1 s (the upper bound when the
//     peer's round trip is unknown);
//   - Relay: 10 bootstrap round trips, at least 2 s;
//   - Handshake: 10 peer round trips, at least 2 s (the upper bound when
//     unknown).
func TimeoutsFor(rttBootstrap, rttPeer time.Duration, limit PhaseTimeouts) PhaseTimeouts {
	bound := func(d, lo, hi time.Duration) time.Duration { return min(hi, max(lo, d)) }
	t := PhaseTimeouts{
		Sync:      bound(4*rttBootstrap, minSync, limit.Sync),
		Punch:     limit.Punch,
		Relay:     bound(10*rttBootstrap, minRelay, limit.Relay),
		Handshake: limit.Handshake,
	}
	if rttPeer > 0 {
		t.Punch = bound(30*rttPeer, minPunch, limit.Punch)
		t.Handshake = bound(10*rttPeer, minHandshake, limit.Handshake)
	}
	return t
}

// within runs fn under a failsafe-go timeout policy of d: fn's context
// ends after d, and within then returns an error that is
// timeout.ErrExceeded. What fn achieved as the time ran out is not lost:
// if fn succeeded, so does within. An end of ctx itself is returned as
// fn (or failsafe) reports it.
func within[R any](ctx context.Context, d time.Duration, fn func(context.Context) (R, error)) (R, error) {
	var r R
	var ferr error
	ran := false
	_, err := failsafe.With(timeout.New[R](d)).WithContext(ctx).GetWithExecution(func(exec failsafe.Execution[R]) (R, error) {
		ran = true
		r, ferr = fn(exec.Context())
		return r, ferr
	})
	switch {
	case ran && ferr == nil:
		return r, nil // done, if only just
	case errors.Is(err, timeout.ErrExceeded) && ctx.Err() == nil:
		// fn's error says only that its context ended: not wrapped, so that
		// it does not read as the caller's cancellation.
		var zero R
		return zero, fmt.Errorf("%w after %v (%v)", timeout.ErrExceeded, d, ferr) //nolint:errorlint // see above
	case ran:
		return r, ferr
	}
	return r, err
}

// dialPeer dials peer at addr from ep for the attempt whose credentials
// on the peer's side have ufrag, the handshake bounded by limit.
func (n *Node) dialPeer(ctx context.Context, ep *endpoint.Endpoint, addr netip.AddrPort, peer identity.PeerID, ufrag string, limit time.Duration) (*quic.Conn, error) {
	tlsConf := n.cfg.Identity.ClientTLS(peer, PeerALPN)
	tlsConf.ServerName = attemptName(ufrag)
	tlsConf.ClientSessionCache = n.memory.sessions(peer) // a remembered dial resumes it
	qc, err := within(ctx, limit, func(ctx context.Context) (*quic.Conn, error) {
		return ep.Transport().Dial(ctx, net.UDPAddrFromAddrPort(addr), tlsConf, n.peerQUIC())
	})
	if errors.Is(err, timeout.ErrExceeded) {
		return nil, fmt.Errorf("traversal: QUIC handshake with %s: %w", n.san(addr), err)
	}
	return qc, err
}

// waitPunchWithin waits for the bootstrap's PunchNow at most d.
func waitPunchWithin(ctx context.Context, sess *bootstrap.Session, d time.Duration) (bootstrap.Punch, error) {
	return within(ctx, d, func(ctx context.Context) (bootstrap.Punch, error) { return waitPunch(ctx, sess) })
}

// punchPlan is the check schedule of a punch round: the Punch phase
// timeout as its budget, spread out to half the pace (fewer checks, half
// as often) when the attempt is degraded under load. It is a pure
// function.
func punchPlan(to PhaseTimeouts, strat Strategy) holepunch.PlanConfig {
	p := holepunch.PlanConfig{Budget: to.Punch}
	if strat.Slow {
		p = p.Slower(2)
	}
	return p
}

// bootstrapFault reports whether err says a bootstrap itself is unwell (it
// counts against its breaker), as opposed to the peer or the request.
func bootstrapFault(err error) bool {
	return errors.Is(err, bootstrap.ErrUnavailable) || errors.Is(err, bootstrap.ErrOverloaded)
}

// newBreaker builds the circuit breaker of one bootstrap.
func (n *Node) newBreaker(label string) circuitbreaker.CircuitBreaker[*bootstrap.Session] {
	return circuitbreaker.NewBuilder[*bootstrap.Session]().
		HandleIf(func(_ *bootstrap.Session, err error) bool { return bootstrapFault(err) }).
		WithFailureThreshold(uint(n.cfg.BreakerThreshold)).
		WithDelay(n.cfg.BreakerDelay).
		WithSuccessThreshold(1).
		OnStateChanged(func(e circuitbreaker.StateChangedEvent) {
			n.rec.Record(event.Event{Kind: event.KindBreaker, Bootstrap: label, Detail: e.NewState.String()})
		}).
		Build()
}

// degrader decides when attempts shed work.
type degrader struct {
	mu       sync.Mutex
	inflight int
	failures map[identity.PeerID][]time.Time // recent direct failures per peer
}

// degradation says how an attempt is degraded.
type degradation struct {
	// RelayOnly: go straight to the relay (repeated direct failures to
	// this peer).
	RelayOnly bool
	// Light: under load: no speculative dials, no birthday search, slower
	// checks.
	Light  bool
	Reason event.Reason
}

// apply returns the initiator's strategy s as degraded by g under relay
// mode mode. It is a pure function. Light: no speculative dials, checks
// at half the pace, and the birthday search (hundreds of sockets,
// thousands of probes) gives way to the relay; RelayOnly: straight to the
// relay. Without a relay (RelayNever) the direct attempt stays, lighter.
func (g degradation) apply(s Strategy, mode RelayMode) Strategy {
	if g.Light {
		s.Speculative, s.Slow = false, true
		if s.Birthday != BirthdayNone && mode != RelayNever {
			s = Strategy{Reason: event.ReasonOverloaded}
		}
	}
	if g.RelayOnly && mode != RelayNever {
		s = Strategy{Reason: g.Reason}
	}
	return s
}

// repeatFailures and repeatWindow: this many direct failures to one peer
// within the window keep its next attempts on the relay.
const (
	repeatFailures = 2
	repeatWindow   = 10 * time.Minute
	maxTracked     = 4096
)

// begin registers an attempt and returns how to degrade it; end must be
// called when it is over.
func (d *degrader) begin(peer identity.PeerID, maxInflight int, now time.Time) degradation {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.inflight++
	var g degradation
	recent := 0
	for _, t := range d.failures[peer] {
		if now.Sub(t) < repeatWindow {
			recent++
		}
	}
	if recent >= repeatFailures {
		g.RelayOnly, g.Reason = true, event.ReasonPunchTimeout
	}
	if d.inflight > maxInflight {
		g.Light = true
		if g.Reason == event.ReasonNone {
			g.Reason = event.ReasonOverloaded
		}
	}
	return g
}

func (d *degrader) end() {
	d.mu.Lock()
	d.inflight--
	d.mu.Unlock()
}

// directFailed records a failed direct attempt to peer.
func (d *degrader) directFailed(peer identity.PeerID, now time.Time) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.failures == nil {
		d.failures = map[identity.PeerID][]time.Time{}
	}
	if len(d.failures) >= maxTracked {
		for id := range d.failures { // forget one peer (bounded state)
			delete(d.failures, id)
			break
		}
	}
	ts := append(d.failures[peer], now)
	if len(ts) > repeatFailures {
		ts = ts[len(ts)-repeatFailures:]
	}
	d.failures[peer] = ts
}

// directWorked forgets a peer's failures.
func (d *degrader) directWorked(peer identity.PeerID) {
	d.mu.Lock()
	delete(d.failures, peer)
	d.mu.Unlock()
}

// busy reports whether attempts are above the load threshold (optional
// work such as re-classification waits).
func (d *degrader) busy(maxInflight int) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.inflight > maxInflight
}
