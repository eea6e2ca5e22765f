package traversal

import (
	"errors"
	"sync"
	"time"

	"github.com/failsafe-go/failsafe-go/circuitbreaker"

	"github.com/antnode/antnode/bootstrap"
	"github.com/antnode/antnode/identity"
	"github.com/antnode/antnode/monitor"
)

// The recovery ladder: every attempt runs under these policies, and each
// step that fails is met by the next:
//
//  1. retry with exponential backoff and jitter (bootstrap registration,
//     bounded by the backoff's maximum; see package bootstrap);
//  2. a circuit breaker per bootstrap: after repeated failures a bootstrap
//     is skipped, and probed again after a delay (half-open);
//  3. the alternative bootstrap when one cannot introduce;
//  4. phase timeouts derived from measured round-trip times;
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
}

// TimeoutsFor derives phase timeouts from the round-trip times measured so
// far: rttBootstrap to the introducing bootstrap and rttPeer, the
// estimated round trip to the peer (zero: unknown). budget caps a punch
// round. It is a pure function: a round gets 30 peer round trips (at
// least 1 s, at most budget); the sync wait 4 bootstrap round trips (at
// least 500 ms).
func TimeoutsFor(rttBootstrap, rttPeer, budget time.Duration) PhaseTimeouts {
	t := PhaseTimeouts{Sync: max(500*time.Millisecond, 4*rttBootstrap), Punch: budget}
	if rttPeer > 0 {
		t.Punch = min(budget, max(time.Second, 30*rttPeer))
	}
	return t
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
			n.rec.Record(monitor.Event{Kind: monitor.KindBreaker, Bootstrap: label, Detail: monitor.BreakerStateName(e.NewState)})
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
	Reason monitor.Reason
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
		g.RelayOnly, g.Reason = true, monitor.ReasonPunchTimeout
	}
	if d.inflight > maxInflight {
		g.Light = true
		if g.Reason == monitor.ReasonNone {
			g.Reason = monitor.ReasonOverloaded
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
