package migration

import (
	"sync/atomic"
	"time"
)

// Mover is what a connection's path manager acts through: the node's
// side of one connection that this node dialled (the side that can move
// it). The node implements it; the moves themselves (a relay allocation
// and a reroute, a check round and QUIC's AddPath/Probe/Switch) are its.
type Mover interface {
	// Stats returns the connection's packet counters and smoothed RTT.
	Stats() (sent, received uint64, rtt time.Duration)
	// Direct says whether the connection runs on a direct path now.
	Direct() bool
	// Ping sends a keepalive that the peer answers.
	Ping() error
	// Fallback moves the connection from its dead direct path to the
	// relay; silent is how long the path had been silent.
	Fallback(silent time.Duration) error
	// Upgrade makes one attempt to move the connection to a direct path.
	Upgrade() error
	// Displaced says whether the connection runs direct outside its
	// preferred address family (moved to IPv4 when IPv6 died).
	Displaced() bool
	// Return makes one attempt to move a displaced connection back.
	Return() error
}

// PathConfig paces a path manager.
type PathConfig struct {
	// Check is how often a direct path is looked at (its counters, the
	// keepalive). Negative: direct paths are not watched.
	Check time.Duration
	// DeadAfter is how long a direct path may carry nothing back while
	// this side sends before it is dead (at least 4 RTT).
	DeadAfter time.Duration
	// UpgradeBase and UpgradeMax pace the upgrade attempts of a relayed
	// connection (migration.UpgradeDelay). Negative UpgradeBase: never.
	UpgradeBase, UpgradeMax time.Duration
	// Keepalive is the pace at which an idle connection is pinged (it
	// follows the learned NAT mapping lifetime).
	Keepalive func() time.Duration
	// Busy says the node is under load: upgrades, optional work, wait.
	Busy func() bool
}

// Path manages the path of one connection this node dialled, for the
// connection's life: while it runs direct, it keeps the NAT mapping open
// at the learned pace and watches for a dead path (Silence), which it
// moves to the relay, and a displaced connection (outside its preferred
// address family) tries to go back; while it runs on the relay, it tries
// to go direct. Upgrades and returns are paced by UpgradeDelay. One move runs at a time: every move, this
// manager's or another's (a rebind after a network change), first claims
// the path with Begin.
//
// Run blocks on the caller's goroutine until done is closed; the manager
// starts no goroutine of its own.
type Path struct {
	cfg    PathConfig
	m      Mover
	done   <-chan struct{}
	moving atomic.Bool
}

// NewPath returns the manager of m's path; done ends it.
func NewPath(cfg PathConfig, m Mover, done <-chan struct{}) *Path {
	return &Path{cfg: cfg, m: m, done: done}
}

// Begin claims the path for a move; false: another move runs.
func (p *Path) Begin() bool { return p.moving.CompareAndSwap(false, true) }

// End releases the path after a move.
func (p *Path) End() { p.moving.Store(false) }

// Moving says whether a move runs.
func (p *Path) Moving() bool { return p.moving.Load() }

// Run manages the path until done is closed, or until it has nothing
// left to do (a relayed connection that may not upgrade, a direct one that
// is not watched).
func (p *Path) Run() {
	for {
		var more bool
		if p.m.Direct() {
			more = p.watch()
		} else {
			more = p.upgrade()
		}
		if !more {
			return
		}
	}
}

// watch keeps a direct path alive and moves it to the relay when it dies.
// It returns true when the connection left the direct path, false when it
// is done.
func (p *Path) watch() bool {
	if p.cfg.Check < 0 {
		return false
	}
	t := time.NewTicker(p.cfg.Check)
	defer t.Stop()
	var silence Silence
	var sent uint64        // packets sent at the last look
	lastSend := time.Now() // when that count last grew
	var stall Stall
	var back returns
	for {
		select {
		case <-t.C:
		case <-p.done:
			return false
		}
		if !p.m.Direct() && !p.Moving() {
			return true
		}
		if p.Moving() {
			silence.Reset()
			continue
		}
		if back.due(time.Now(), p.m.Displaced(), p.cfg) && !(p.cfg.Busy != nil && p.cfg.Busy()) && p.Begin() {
			_ = p.m.Return() // a failure stays put; the next attempt is paced
			p.End()
			silence.Reset()
			continue
		}
		s, r, rtt := p.m.Stats()
		// Keepalive at the learned pace: QUIC's own keepalive period was
		// fixed when the connection was made, and the NAT's mapping
		// lifetime may have been learned (shorter) since.
		if now := time.Now(); s != sent {
			sent, lastSend = s, now
		} else if now.Sub(lastSend) >= p.cfg.Keepalive() {
			p.m.Ping() // best effort: a lost ping is the next one's job
			lastSend = now
		}
		// A flow that stopped coming in: ask for an answer, so that a
		// path that died under a side with nothing to send (the receiver
		// of a transfer) goes silent in Silence's terms too.
		if stall.Observe(time.Now(), r, StallAfter(p.cfg.Check, rtt)) {
			p.m.Ping()
		}
		threshold := DeadAfter(p.cfg.DeadAfter/3, rtt, 3)
		if !silence.Observe(time.Now(), s, r, threshold) {
			continue
		}
		silence.Reset()
		if !p.Begin() {
			continue
		}
		err := p.m.Fallback(threshold)
		p.End()
		if err == nil && !p.m.Direct() {
			return true // on the relay now: upgrade from there
		}
		// A failure stays direct, and is watched on.
	}
}

// returns paces the attempts of a displaced direct connection to go back
// to its preferred family, as upgrades are paced (UpgradeDelay).
type returns struct {
	n    int
	next time.Time
}

// due reports whether an attempt is due at now; a connection that is not
// displaced starts the pace over.
func (r *returns) due(now time.Time, displaced bool, cfg PathConfig) bool {
	if !displaced || cfg.UpgradeBase < 0 {
		*r = returns{}
		return false
	}
	if r.next.IsZero() {
		r.next = now.Add(UpgradeDelay(0, cfg.UpgradeBase, cfg.UpgradeMax))
		return false
	}
	if now.Before(r.next) {
		return false
	}
	r.n++
	r.next = now.Add(UpgradeDelay(r.n, cfg.UpgradeBase, cfg.UpgradeMax))
	return true
}

// upgrade tries to move a relayed connection to a direct path. It returns
// true when the connection runs direct again, false when it is done or
// may not upgrade.
func (p *Path) upgrade() bool {
	if p.cfg.UpgradeBase < 0 {
		return false
	}
	for i := 0; ; i++ {
		t := time.NewTimer(UpgradeDelay(i, p.cfg.UpgradeBase, p.cfg.UpgradeMax))
		select {
		case <-t.C:
		case <-p.done:
			t.Stop()
			return false
		}
		if p.m.Direct() {
			return true
		}
		if p.cfg.Busy != nil && p.cfg.Busy() {
			continue // under load: upgrades are optional work and wait
		}
		if !p.Begin() {
			continue
		}
		err := p.m.Upgrade()
		p.End()
		if err == nil {
			return true
		}
	}
}
