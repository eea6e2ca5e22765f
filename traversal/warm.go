package traversal

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/antnode/antnode/bootstrap"
	"github.com/antnode/antnode/bootstrap/wire"
	"github.com/antnode/antnode/event"
	"github.com/antnode/antnode/holepunch"
	"github.com/antnode/antnode/nattype"
	"github.com/antnode/antnode/relay"
)

// The warm relay: a node that has learned it cannot be reached directly
// keeps one relay allocation ready on its home bootstrap and announces
// the relayed address with its candidates, so that an introduction to it
// can go through the relay at once.

// WarmRelayMode says whether the node keeps a relay allocation warm.
type WarmRelayMode uint8

// Warm relay modes.
const (
	// WarmRelayAuto keeps an allocation warm while the node's NAT type
	// says it cannot be reached directly (see NeedsWarmRelay).
	WarmRelayAuto WarmRelayMode = iota
	// WarmRelayOff never keeps one: the relay is allocated per attempt.
	WarmRelayOff
)

// ParseWarmRelayMode parses "auto" and "off".
func ParseWarmRelayMode(s string) (WarmRelayMode, error) {
	switch s {
	case "auto", "":
		return WarmRelayAuto, nil
	case "off":
		return WarmRelayOff, nil
	}
	return 0, fmt.Errorf("warm relay mode %q: want auto or off", s)
}

// NeedsWarmRelay decides whether a node keeps an allocation warm: in auto
// mode, when the relay may be used at all, the node has no port mapping,
// and its NAT type leaves peers no direct way in: its UDP is blocked, or
// its NAT maps per destination (a peer of the same kind can then only
// meet it on a relay). An unknown type keeps none. It is a pure function.
func NeedsWarmRelay(mode WarmRelayMode, relay RelayMode, nat nattype.Type, portMapped bool) bool {
	if mode != WarmRelayAuto || relay == RelayNever || portMapped {
		return false
	}
	return nat.Filtering == nattype.FilteringBlocked || nat.Hard()
}

// warmRefreshAt is when a warm allocation made at made, whose credentials
// expire at expires, is replaced: two thirds into its lifetime, so that a
// failed replacement has a third of it to try again. It is a pure
// function.
func warmRefreshAt(made, expires time.Time) time.Time {
	return made.Add(expires.Sub(made) * 2 / 3)
}

// expiringSoon reports whether an allocation made at made, whose
// credentials expire at expires, is too close to its end at now to be
// shared by a new connection: within a third of its lifetime, at most 5
// minutes (the relay's MaxLifetime and the credentials end it). It is a
// pure function.
func expiringSoon(made, expires, now time.Time) bool {
	return expires.Sub(now) < min(5*time.Minute, expires.Sub(made)/3)
}

// warmBackoff is the wait before the next try after fails consecutive
// failures: 1 s doubling to at most 1 minute. It is a pure function.
func warmBackoff(fails int) time.Duration {
	d := time.Second
	for i := 1; i < fails && d < time.Minute; i++ {
		d *= 2
	}
	return min(d, time.Minute)
}

// Times of the keeper.
const (
	// warmPoll bounds the keeper's sleep while it holds an allocation:
	// a re-registration (a restarted bootstrap forgot the allocation) is
	// noticed within it.
	warmPoll = 2 * time.Second
	// warmIdle is the keeper's sleep while no allocation is wanted (a
	// classification or port mapping change wakes it sooner).
	warmIdle = 10 * time.Second
	// warmAllocTimeout bounds one allocation.
	warmAllocTimeout = 10 * time.Second
	// warmGrace bounds how long a replaced allocation is kept for the
	// introductions that carried its address (a sixth of its lifetime
	// when that is shorter).
	warmGrace = 10 * time.Second
)

// Warm relay states (WarmRelayStatus.State).
const (
	WarmStateOff      = "off"      // not wanted: reachable directly, mode off, or type unknown
	WarmStateReady    = "ready"    // an allocation is warm and announced
	WarmStateRetrying = "retrying" // wanted, the last allocation failed
)

// WarmRelayStatus is the warm relay's state.
type WarmRelayStatus struct {
	State     string
	Bootstrap string // label of the bootstrap whose relay holds it
	Relayed   netip.AddrPort
	TCP       bool
	Expires   time.Time // the credentials' expiry
	// Refreshes counts the allocations made after the first (before the
	// credentials expired, or because the previous one died or was made
	// before the bootstrap's client registered anew).
	Refreshes   int
	LastRefresh time.Time
	LastError   error
}

// warmRelay is the keeper of the warm allocation: one goroutine (run),
// started by New and stopped by Close (which waits for done before
// releasing the node's relays). It holds one reference on a shared
// allocation (see sharedRelay), which the node's relayed connections
// through the same relay share, replaces it before its credentials
// expire, when it died, or after the bootstrap's client registered anew,
// and gives the reference back when it is no longer wanted. Only run's
// goroutine touches r, old, oldUntil, held and fails; mu guards st.
type warmRelay struct {
	n    *Node
	kick chan struct{}
	done chan struct{}
	r    *sharedRelay
	// old is the replaced allocation, kept until oldUntil for the
	// introductions in flight that carried its address.
	old      *sharedRelay
	oldUntil time.Time
	held     bool // an allocation was held before: the next is a refresh
	fails    int
	mu       sync.Mutex
	st       WarmRelayStatus
	cur      *sharedRelay // r, for permit (under mu)
	prev     *sharedRelay // old, for permit (under mu)
	// lastKA is when the last keepalive of an allocation over UDP
	// started; kaBusy is set while one runs (on its own goroutine).
	lastKA time.Time
	kaBusy atomic.Bool
}

func newWarmRelay(n *Node) *warmRelay {
	return &warmRelay{n: n, kick: make(chan struct{}, 1), done: make(chan struct{}), st: WarmRelayStatus{State: WarmStateOff}}
}

// poke wakes the keeper (the NAT type or the port mapping changed).
func (w *warmRelay) poke() {
	select {
	case w.kick <- struct{}{}:
	default:
	}
}

// status returns a copy of the keeper's state.
func (w *warmRelay) status() WarmRelayStatus {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.st
}

// permit starts permissions for addrs on the warm allocation, if there
// is one (a target the bootstrap observed while it answers: the first
// packet through the relay then needs no permission round trip), and on
// the one it replaced while that is kept (an introduction in flight may
// carry the replaced address: its dial goes there).
func (w *warmRelay) permit(addrs []netip.AddrPort) {
	w.mu.Lock()
	r := w.cur
	w.mu.Unlock()
	if r != nil {
		r.alloc.PermitAsync(addrs...)
	}
	w.permitReplaced(addrs)
}

// permitReplaced starts permissions for addrs on the allocation the warm
// one replaced, while it is kept: a responder's relay leg permits its
// initiator on the warm allocation it runs on, and an initiator whose
// introduction carried the replaced address dials there.
func (w *warmRelay) permitReplaced(addrs []netip.AddrPort) {
	w.mu.Lock()
	r := w.prev
	w.mu.Unlock()
	if r != nil {
		r.alloc.PermitAsync(addrs...)
	}
}

// addr is the relayed address announced now (zero: none).
func (w *warmRelay) addr() netip.AddrPort {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.st.Relayed
}

func (w *warmRelay) run() {
	defer close(w.done)
	defer w.drop(true)
	for {
		wait := w.step()
		var dead <-chan struct{}
		if w.r != nil {
			dead = w.r.alloc.Dead()
		}
		t := time.NewTimer(wait)
		select {
		case <-w.n.ctx.Done():
			t.Stop()
			return
		case <-w.kick:
		case <-dead:
		case <-t.C:
		}
		t.Stop()
	}
}

// step brings the allocation to what is wanted now and returns how long
// to sleep.
func (w *warmRelay) step() time.Duration {
	n := w.n
	if w.old != nil && !time.Now().Before(w.oldUntil) {
		w.releaseOld()
	}
	nat := n.NAT()
	bc := n.home()
	want := bc != nil && NeedsWarmRelay(n.cfg.WarmRelay, n.cfg.Relay, nat, n.PortMapped())
	tcp := nat.Filtering == nattype.FilteringBlocked
	if w.r != nil && (!want || !w.usable(bc, tcp)) {
		w.drop(false)
	}
	if !want {
		w.fails = 0
		w.mu.Lock()
		w.st.State, w.st.LastError = WarmStateOff, nil
		w.mu.Unlock()
		return warmIdle
	}
	if w.r == nil || !time.Now().Before(warmRefreshAt(w.r.made, w.r.expires)) {
		err := w.replace(bc, tcp)
		if errors.Is(err, relay.ErrQuota) && (w.r != nil || w.old != nil) {
			// The relay's per-peer quota leaves no room for another
			// allocation: break before make.
			w.drop(false)
			err = w.replace(bc, tcp)
		}
		if err != nil {
			w.fails++
			return warmBackoff(w.fails)
		}
		w.fails = 0
	}
	if !tcp {
		w.keepalive()
	}
	wait := min(time.Until(warmRefreshAt(w.r.made, w.r.expires)), warmPoll)
	if w.old != nil {
		wait = min(wait, time.Until(w.oldUntil))
	}
	return max(wait, 10*time.Millisecond)
}

// keepalive keeps the NAT mapping of the allocation's socket (over UDP)
// open at the node's keepalive pace (the learned mapping lifetime): a
// warm allocation idles between connections, and one whose mapping the
// NAT forgot is dead at the relay. It runs on a goroutine of its own
// (pion's retransmissions can take seconds), one at a time, counted in
// the node's wait group; an unanswered one makes the allocation suspect,
// and the keeper replaces it.
func (w *warmRelay) keepalive() {
	n, r := w.n, w.r
	if time.Since(w.lastKA) < n.Keepalive() || !w.kaBusy.CompareAndSwap(false, true) {
		return
	}
	w.lastKA = time.Now()
	n.wg.Add(1)
	go func() {
		defer n.wg.Done()
		defer w.kaBusy.Store(false)
		if err := r.alloc.Keepalive(); err != nil && n.ctx.Err() == nil && !isClosed(r.alloc.Dead()) {
			n.markSuspect(r)
			n.log.Debug("traversal: warm relay keepalive", "err", err)
			w.poke()
		}
	}()
}

// releaseOld gives back the reference on the replaced allocation
// (connections on it keep theirs).
func (w *warmRelay) releaseOld() {
	if w.old != nil {
		w.mu.Lock()
		w.prev = nil
		w.mu.Unlock()
		w.n.releaseRelay(w.old, true)
		w.old = nil
	}
}

// usable says whether the held allocation can stay: alive, not suspect,
// on the relay of the home bootstrap bc over the transport wanted, and
// made in bc's current registration.
func (w *warmRelay) usable(bc *bootstrap.Client, tcp bool) bool {
	r := w.r
	w.n.relayMu.Lock()
	bad := r.detached || r.suspect
	w.n.relayMu.Unlock()
	return !bad && !isClosed(r.alloc.Dead()) && r.key == w.n.relayKey(bc, tcp) &&
		(r.session == 0 || r.session == bc.Status().Session)
}

// replace makes (or takes, if a connection made one already) a fresh
// allocation, announces its relayed address, and keeps the reference on
// the previous one for a grace time (make before break: an introduction
// in flight may carry its address; connections on it keep theirs).
func (w *warmRelay) replace(bc *bootstrap.Client, tcp bool) error {
	n := w.n
	ctx, cancel := context.WithTimeout(n.ctx, warmAllocTimeout)
	defer cancel()
	r, err := n.acquireShared(ctx, nil, bc, tcp, w.r)
	if err != nil {
		if n.ctx.Err() == nil {
			n.rec.Record(event.Event{Kind: event.KindRelay, Detail: "warm_allocate", Outcome: event.OutcomeFail,
				Reason: Reason(err), Bootstrap: bc.Label(), Err: err})
			n.log.Debug("traversal: warm relay", "bootstrap", bc.Label(), "err", err)
		}
		w.mu.Lock()
		w.st.State, w.st.LastError = WarmStateRetrying, err
		w.mu.Unlock()
		return err
	}
	old := w.r
	w.r = r
	detail := "warm_allocate"
	w.mu.Lock()
	w.cur = r
	w.st.State, w.st.LastError = WarmStateReady, nil
	w.st.Bootstrap, w.st.Relayed, w.st.TCP, w.st.Expires = bc.Label(), r.alloc.Relayed, tcp, r.expires
	if w.held {
		detail = "warm_refresh"
		w.st.Refreshes++
		w.st.LastRefresh = time.Now()
	}
	w.held = true
	w.mu.Unlock()
	n.announce()
	if old != nil {
		w.releaseOld() // a previous one still in its grace time
		w.old, w.oldUntil = old, time.Now().Add(min(warmGrace, old.expires.Sub(old.made)/6))
		w.mu.Lock()
		w.prev = old
		w.mu.Unlock()
	}
	n.rec.Record(event.Event{Kind: event.KindRelay, Detail: detail, Outcome: event.OutcomeOK, Bootstrap: bc.Label(), Addr: r.alloc.Relayed})
	return nil
}

// drop gives back the keeper's reference and withdraws the relayed
// address (final: the node is closing, nothing is announced).
func (w *warmRelay) drop(final bool) {
	w.releaseOld()
	if w.r == nil {
		return
	}
	r := w.r
	w.r = nil
	w.mu.Lock()
	w.cur = nil
	w.st.Relayed, w.st.Expires = netip.AddrPort{}, time.Time{}
	w.mu.Unlock()
	if !final {
		w.n.announce()
	}
	w.n.releaseRelay(r, true)
	w.n.rec.Record(event.Event{Kind: event.KindRelay, Detail: "warm_release", Outcome: event.OutcomeOK})
}

// WarmRelay returns the state of the node's warm relay allocation.
func (n *Node) WarmRelay() WarmRelayStatus { return n.warm.status() }

// WaitWarmRelay blocks until the warm relay is settled for the node's NAT
// type now: not wanted, ready, or its last allocation failed (the keeper
// retries in the background). For a node that connects once, right after
// it classified its NAT (antnode connect): its introduction then carries
// the warm relayed address, which saves an allocation and an
// announcement after it. It returns ctx's error if ctx ends first.
func (n *Node) WaitWarmRelay(ctx context.Context) error {
	t := time.NewTicker(10 * time.Millisecond)
	defer t.Stop()
	for {
		if st := n.warm.status().State; !n.wantsWarmRelay() || st == WarmStateReady || st == WarmStateRetrying {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("traversal: waiting for the warm relay: %w", context.Cause(ctx))
		case <-t.C:
		}
	}
}

// wantsWarmRelay says whether the node keeps a warm relay now: it has a
// home bootstrap and NeedsWarmRelay says so for its NAT type.
func (n *Node) wantsWarmRelay() bool {
	return n.home() != nil && NeedsWarmRelay(n.cfg.WarmRelay, n.cfg.Relay, n.NAT(), n.PortMapped())
}

// home is the bootstrap whose relay holds the warm allocation: the first
// configured one registered now (nil: none).
func (n *Node) home() *bootstrap.Client {
	for _, c := range n.registered() {
		if !onDemandLabel(c.Label()) {
			return c
		}
	}
	return nil
}

// warmCandidate is the relayed candidate of the warm allocation (none
// while there is no allocation).
func (n *Node) warmCandidate() []wire.Candidate {
	a := n.warm.addr()
	if !a.IsValid() {
		return nil
	}
	return []wire.Candidate{relayCandidate(a)}
}

// relayCandidate is a relayed address as a candidate (a warm relay's, or
// one announced during an attempt or a fallback).
func relayCandidate(a netip.AddrPort) wire.Candidate {
	return wire.Candidate{Kind: wire.KindRelay, Priority: holepunch.Priority(wire.KindRelay, 0xffff), Addr: a}
}

// relayCandidates is relayCandidate of each address.
func relayCandidates(as []netip.AddrPort) []wire.Candidate {
	out := make([]wire.Candidate, 0, len(as))
	for _, a := range as {
		out = append(out, relayCandidate(a))
	}
	return out
}

// withoutRelayed returns the candidates that are not relayed addresses:
// what a direct leg checks, primes and dials (a relay is no direct
// path, and a search or speculative dial must never aim at one).
func withoutRelayed(cands []wire.Candidate) []wire.Candidate {
	out := make([]wire.Candidate, 0, len(cands))
	for _, c := range cands {
		if c.Kind != wire.KindRelay {
			out = append(out, c)
		}
	}
	return out
}

// relayedOf returns the relayed addresses among candidates (a peer's warm
// relay), at most maxRelayed.
func relayedOf(cands []wire.Candidate) []netip.AddrPort {
	var out []netip.AddrPort
	for _, c := range cands {
		if c.Kind == wire.KindRelay && len(out) < maxRelayed {
			out = append(out, c.Addr)
		}
	}
	return out
}
