package migration

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/quic-go/quic-go"

	"github.com/antnode/antnode/bootstrap/wire"
	"github.com/antnode/antnode/event"
	"github.com/antnode/antnode/identity"
)

// Node is the node's side of the moves: what only the node that owns the
// connections can do. traversal implements it; a Manager acts through it
// and through quic-go, nothing else.
type Node interface {
	// CheckRound asks peer, through a bootstrap, for a check round of
	// purpose towards this node's current candidates, and runs this side's
	// checks: to the peer's candidates and to extra. It returns the remote
	// addresses that validated; a round in which none did but the peer's
	// check got through returns none and no error.
	CheckRound(ctx context.Context, peer identity.PeerID, purpose wire.Purpose, extra []netip.AddrPort) ([]netip.AddrPort, error)
	// Reroute sends qc's packets to remote through a relay allocation,
	// which it announces to peer (whose checks open its NAT to it), and
	// returns once packets come back that way. The allocation is qc's from
	// then on (LeaveRelay gives it back); unroute sends qc's packets
	// directly again.
	Reroute(ctx context.Context, qc *quic.Conn, peer identity.PeerID, remote netip.AddrPort) (unroute func(), err error)
	// OtherFamily moves qc's packets for remote, whose direct path died,
	// to a direct path to peer in the other address family (a dual-stack
	// node's), and returns the address they go to now and unroute, which
	// sends them to remote again. It fails at once where there is no
	// other family to try.
	OtherFamily(ctx context.Context, qc *quic.Conn, peer identity.PeerID, remote netip.AddrPort) (to netip.AddrPort, unroute func(), err error)
	// Redirect sends qc's QUIC packets for remote to to instead, from the
	// socket of qc's direct path, behind QUIC's back, and returns unroute,
	// which sends them to remote again. With await it returns once a
	// packet came back (undoing the change when none did).
	Redirect(ctx context.Context, qc *quic.Conn, remote, to netip.AddrPort, await bool) (unroute func(), err error)
	// LeaveRelay gives back qc's reference on its relay allocation: qc
	// runs on a direct path now.
	LeaveRelay(qc *quic.Conn)
	// Moved reports a step of a move of a connection with peer; the node's
	// state machine follows.
	Moved(peer identity.PeerID, s Step, reason event.Reason)
}

// Step is a step of a move as the node's state machine sees it.
type Step uint8

// Steps of a move.
const (
	StepMigrating Step = iota + 1 // a rebind or a fallback began
	StepUpgrading                 // an upgrade began
	StepDirect                    // the connection runs direct
	StepRelay                     // the connection runs on the relay
)

// settled is the step of a connection that runs on p.
func settled(p event.Path) Step {
	if p == event.PathRelay {
		return StepRelay
	}
	return StepDirect
}

// Config configures a Manager. Durations of zero take the default named.
type Config struct {
	// Node does the node's part of the moves. Required.
	Node Node
	// Transport is the main socket's QUIC transport: an upgrade adds the
	// connection's new path on it. Required.
	Transport *quic.Transport
	// Recorder receives the migration events. Nil: discarded.
	Recorder event.Recorder
	// Logger logs what no event says. Nil: discarded.
	Logger *slog.Logger
	// Check, DeadAfter, UpgradeBase and UpgradeMax pace each connection's
	// path manager (PathConfig). Zero: 250 ms, 1.5 s, 1 s and 60 s;
	// negative Check: direct paths are not watched; negative UpgradeBase:
	// relayed connections never upgrade.
	Check, DeadAfter, UpgradeBase, UpgradeMax time.Duration
	// KeepAlive is the slowest keepalive pace, used while no NAT mapping
	// lifetime is learned. Zero: 10 s.
	KeepAlive time.Duration
	// MoveTimeout bounds a rebind. Zero: 15 s.
	MoveTimeout time.Duration
	// NetworkPoll is how often the host's addresses are read for a change.
	// Zero: 1 s; negative: not watched.
	NetworkPoll time.Duration
	// Addrs reads the host's addresses. Nil: Addrs.
	Addrs func() ([]netip.Addr, error)
	// OnNetworkChange is called on the watcher's goroutine when the host's
	// addresses change, before the rebinds start. Nil: nothing.
	OnNetworkChange func()
	// OnKeepalive is called with the new pace when a shorter mapping
	// lifetime is learned (the bootstrap heartbeats follow it). Nil:
	// nothing.
	OnKeepalive func(time.Duration)
	// Busy says the node is under load: upgrades wait. Nil: never.
	Busy func() bool
	// Reason maps a failed move's error to its reason (the node's one
	// table). Nil: the error's own (event.ReasonOf), else internal.
	Reason func(error) event.Reason
}

// ErrConfig is returned by New for a configuration it cannot run.
var ErrConfig = errors.New("migration: invalid config")

func (c *Config) validate() error {
	switch {
	case c.Node == nil:
		return fmt.Errorf("%w: Node is required", ErrConfig)
	case c.Transport == nil:
		return fmt.Errorf("%w: Transport is required", ErrConfig)
	case c.DeadAfter < 0, c.UpgradeMax < 0, c.KeepAlive < 0, c.MoveTimeout < 0:
		return fmt.Errorf("%w: negative duration", ErrConfig)
	}
	if c.Recorder == nil {
		c.Recorder = event.Nop{}
	}
	if c.Reason == nil {
		c.Reason = func(err error) event.Reason {
			if r, ok := event.ReasonOf(err); ok {
				return r
			}
			return event.ReasonInternal
		}
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	for _, d := range []struct {
		v   *time.Duration
		def time.Duration
	}{{&c.Check, 250 * time.Millisecond}, {&c.DeadAfter, 1500 * time.Millisecond}, {&c.UpgradeBase, time.Second},
		{&c.UpgradeMax, time.Minute}, {&c.KeepAlive, 10 * time.Second}, {&c.MoveTimeout, 15 * time.Second},
		{&c.NetworkPoll, time.Second}} {
		if *d.v == 0 {
			*d.v = d.def
		}
	}
	return nil
}

// Manager owns the paths of a node's connections: one Conn per
// connection, the network watcher, the learned NAT mapping lifetime and
// the rebinds that follow a change.
//
// It starts the watcher's goroutine (unless NetworkPoll is negative), and
// per tracked connection a notice reader, for one this node dialled its
// path manager, and one goroutine per rebind; Close stops them all and
// returns once they have exited.
type Manager struct {
	cfg     Config
	rec     event.Recorder
	log     *slog.Logger
	watcher *Watcher // nil: not watching

	mapLife atomic.Int64  // learned NAT mapping lifetime bound, ns (0: none)
	netGen  atomic.Uint64 // local address changes seen

	mu    sync.Mutex
	conns map[*Conn]struct{}

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
	once   sync.Once
}

// New returns a Manager and starts its network watcher.
func New(cfg Config) (*Manager, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	m := &Manager{cfg: cfg, rec: cfg.Recorder, log: cfg.Logger, conns: make(map[*Conn]struct{}), ctx: ctx, cancel: cancel}
	if cfg.NetworkPoll > 0 {
		w, err := NewWatcher(WatcherConfig{Interval: cfg.NetworkPoll, Addrs: cfg.Addrs, OnChange: m.networkChanged})
		if err != nil {
			cancel()
			return nil, fmt.Errorf("migration: watch addresses: %w", err)
		}
		m.watcher = w
	}
	return m, nil
}

// Close stops the watcher, every path manager and notice reader, undoes
// the reroutes, and returns once the goroutines have exited. It is
// idempotent.
func (m *Manager) Close() error {
	m.once.Do(func() {
		// Under mu: a goRun that saw the manager running has added to
		// wg before this, and none adds after it (Add racing Wait).
		m.mu.Lock()
		m.cancel()
		m.mu.Unlock()
		if m.watcher != nil {
			m.watcher.Close()
		}
		m.wg.Wait()
		for _, c := range m.Conns() {
			c.unroute()
		}
	})
	return nil
}

// Conns returns the tracked connections.
func (m *Manager) Conns() []*Conn {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make([]*Conn, 0, len(m.conns))
	for c := range m.conns {
		out = append(out, c)
	}
	return out
}

// go runs f on a goroutine of the manager's unless it is closed.
func (m *Manager) goRun(f func()) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.ctx.Err() != nil {
		return false
	}
	m.wg.Add(1)
	go func() {
		defer m.wg.Done()
		f()
	}()
	return true
}

// networkChanged runs on the watcher's goroutine.
func (m *Manager) networkChanged(c Change) {
	m.netGen.Add(1)
	m.rec.Record(event.Event{Kind: event.KindMigration, Reason: event.ReasonNetworkChanged, Outcome: event.OutcomeOK,
		Detail: fmt.Sprintf("addresses: %d added, %d removed", len(c.Added), len(c.Removed))})
	if m.cfg.OnNetworkChange != nil {
		m.cfg.OnNetworkChange()
	}
	m.RebindAll(event.ReasonNetworkChanged)
}

// NetworkChanged tells the manager that the host's addresses changed, as
// its watcher would (for a node that does not poll them).
func (m *Manager) NetworkChanged(c Change) { m.networkChanged(c) }

// RebindAll rebinds every direct connection this node dialled on its
// socket (not those on a socket of their own: Track.OwnSocket), each on a
// goroutine of its own, one move per connection at a time.
func (m *Manager) RebindAll(reason event.Reason) {
	for _, c := range m.Conns() {
		if c.pacer == nil || c.ownSocket || c.Path() != event.PathDirect || !c.pacer.Begin() {
			continue
		}
		if !m.goRun(func() {
			defer c.pacer.End()
			c.Rebind(reason)
		}) {
			c.pacer.End()
		}
	}
}
