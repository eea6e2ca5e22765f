package migration

import (
	"context"
	"io"
	"sync"
	"sync/atomic"
	"time"

	"github.com/quic-go/quic-go"

	"github.com/antnode/antnode/event"
	"github.com/antnode/antnode/identity"
)

// Move is one move of a connection: a rebind after a network change, an
// upgrade from the relay, a fallback to it, or the peer's move of it.
type Move struct {
	At       time.Time
	Kind     string // rebind, upgrade, fallback, peer-moved
	Reason   event.Reason
	OK       bool
	Duration time.Duration
	From, To event.Path
}

// maxMoves bounds the history a connection keeps.
const maxMoves = 32

// Conn is one connection as its path manager sees it: the path it runs
// on, its recent moves, the notices its peer sends, and (for a
// connection this node dialled, the only side that can move one) the
// pacing of its moves.
type Conn struct {
	m    *Manager
	qc   *quic.Conn
	peer identity.PeerID
	path atomic.Uint32 // event.Path

	// pacer paces the moves of a connection this node dialled and lets one
	// run at a time; nil for accepted ones.
	pacer *Path
	// unrouter is set while the connection's packets go through a relay
	// behind QUIC's back (see fallback).
	unrouter atomic.Pointer[func()]
	// displaced: the connection's packets go to an IPv4 address of the
	// peer's behind QUIC's back while its remote address is IPv6 (its
	// IPv6 path died: otherFamily); it goes back when IPv6 validates
	// again (back). Cleared whenever the redirect goes (unroute).
	displaced atomic.Bool
	// onNominate is called once, when the dialler nominates the connection.
	onNominate   func()
	nominateOnce sync.Once
	ownSocket    bool // see Track.OwnSocket

	movesMu sync.Mutex
	moves   []Move
}

// Track describes a connection to Manager.Track.
type Track struct {
	Peer identity.PeerID
	// Path is the path the connection was made on.
	Path event.Path
	// Manage: this node dialled the connection and moves it (keepalive at
	// the learned pace, a dead direct path to the relay, a relayed one
	// upgraded).
	Manage bool
	// NoUpgrade: a managed relayed connection stays on the relay.
	NoUpgrade bool
	// OnNominate is called once when the dialler nominates the connection
	// (a notice). Nil: nothing.
	OnNominate func()
	// OwnSocket: the connection runs on a socket of its own (the birthday
	// search's winner), not the node's. A change of the node's socket or
	// its mapping is not the connection's, and a rebind round from the
	// node's socket cannot open a path for it: RebindAll leaves it to the
	// dead-path watch, whose fallback reroutes from its own socket.
	OwnSocket bool
}

// Track starts managing qc: it reads the peer's notices and, for a
// managed connection, runs its path manager, until qc or the manager ends.
func (m *Manager) Track(qc *quic.Conn, t Track) *Conn {
	c := &Conn{m: m, qc: qc, peer: t.Peer, onNominate: t.OnNominate, ownSocket: t.OwnSocket}
	c.path.Store(uint32(t.Path))
	if t.Manage {
		cfg := PathConfig{Check: m.cfg.Check, DeadAfter: m.cfg.DeadAfter, UpgradeBase: m.cfg.UpgradeBase,
			UpgradeMax: m.cfg.UpgradeMax, Keepalive: m.Keepalive, Busy: m.cfg.Busy}
		if t.NoUpgrade {
			cfg.UpgradeBase = -1
		}
		c.pacer = NewPath(cfg, conMover{c}, m.done(qc))
	}
	m.mu.Lock()
	m.conns[c] = struct{}{}
	m.mu.Unlock()
	context.AfterFunc(qc.Context(), func() {
		c.unroute() // the route dies with the connection
		m.mu.Lock()
		delete(m.conns, c)
		m.mu.Unlock()
	})
	m.goRun(c.serveNotices)
	if c.pacer != nil {
		m.goRun(c.pacer.Run)
	}
	return c
}

// done is closed when qc or the manager ends.
func (m *Manager) done(qc *quic.Conn) <-chan struct{} {
	ctx, stop := context.WithCancel(m.ctx)
	context.AfterFunc(qc.Context(), stop)
	return ctx.Done()
}

// Path returns the path the connection runs on.
func (c *Conn) Path() event.Path { return event.Path(c.path.Load()) }

// SetPath records the path the connection runs on, as the node learned it
// (an accepted connection that turned out to come through a relay).
func (c *Conn) SetPath(p event.Path) { c.path.Store(uint32(p)) }

// Moves returns the connection's recent moves, oldest first.
func (c *Conn) Moves() []Move {
	c.movesMu.Lock()
	defer c.movesMu.Unlock()
	return append([]Move(nil), c.moves...)
}

func (c *Conn) addMove(mv Move) {
	c.movesMu.Lock()
	defer c.movesMu.Unlock()
	if len(c.moves) == maxMoves {
		copy(c.moves, c.moves[1:])
		c.moves = c.moves[:maxMoves-1]
	}
	c.moves = append(c.moves, mv)
}

// unroute sends the connection's packets directly again, if they went
// through a relay.
func (c *Conn) unroute() {
	c.displaced.Store(false)
	if f := c.unrouter.Swap(nil); f != nil {
		(*f)()
	}
}

// serveNotices reads the peer's notices until the connection or the
// manager ends.
func (c *Conn) serveNotices() {
	for {
		str, err := c.qc.AcceptUniStream(c.m.ctx)
		if err != nil {
			return
		}
		str.SetReadDeadline(time.Now().Add(5 * time.Second))
		var b [1]byte
		if _, err := io.ReadFull(str, b[:]); err != nil {
			str.CancelRead(0)
			continue
		}
		switch b[0] {
		case NoticeNominate:
			c.nominatedBy(str)
		case NoticePath:
			c.peerMoved(str)
		case NoticePing:
		default:
			str.CancelRead(0) // a newer peer's notice: ignore
		}
	}
}

// nominatedBy takes the dialler's nomination. Its payload, if any, is the
// path the dialler made the connection on: a dialler that dialled through
// its own relay allocation knows the connection is relayed, which this
// side cannot tell from the remote address (a relayed address looks like
// any other) until the peer's relayed candidate reaches it, if it ever
// does before the attempt ends. A claim of a direct path changes nothing:
// this side may know of a relay the dialler does not (its own).
func (c *Conn) nominatedBy(str *quic.ReceiveStream) {
	payload, err := io.ReadAll(io.LimitReader(str, MaxNotice))
	if err != nil {
		str.CancelRead(0)
	}
	if len(payload) > 0 && event.Path(payload[0]) == event.PathRelay {
		c.SetPath(event.PathRelay)
	}
	if c.onNominate != nil {
		c.nominateOnce.Do(c.onNominate)
	}
}

// peerMoved takes the peer's path notice: the peer moved the connection.
func (c *Conn) peerMoved(str *quic.ReceiveStream) {
	payload, err := io.ReadAll(io.LimitReader(str, MaxNotice))
	if err != nil {
		str.CancelRead(0)
		return
	}
	pn, err := DecodePathNotice(payload)
	if err != nil {
		c.m.log.Debug("migration: peer's path notice", "peer", c.peer.Short(), "err", err)
		return
	}
	from := c.Path()
	c.SetPath(pn.Path)
	c.m.cfg.Node.Moved(c.peer, settled(pn.Path), pn.Reason)
	c.m.rec.Record(event.Event{Kind: event.KindMigration, Outcome: event.OutcomeOK, Reason: pn.Reason,
		Detail: "peer moved " + from.String() + "->" + pn.Path.String(), Duration: pn.Duration, Path: pn.Path, Peer: c.peer.String()})
	c.addMove(Move{At: time.Now(), Kind: "peer-moved", Reason: pn.Reason, OK: true, Duration: pn.Duration, From: from, To: pn.Path})
}

// conMover is a connection's side of its pacer.
type conMover struct{ c *Conn }

func (m conMover) Stats() (sent, received uint64, rtt time.Duration) {
	st := m.c.qc.ConnectionStats()
	return st.PacketsSent, st.PacketsReceived, st.SmoothedRTT
}

func (m conMover) Direct() bool { return m.c.Path() == event.PathDirect }

// Ping is a notice the peer answers, which also refreshes its mapping.
func (m conMover) Ping() error {
	err := SendNotice(m.c.qc, NoticePing)
	if err != nil {
		m.c.m.log.Debug("migration: keepalive", "peer", m.c.peer.Short(), "err", err)
	}
	return err
}

func (m conMover) Fallback(silent time.Duration) error { return m.c.fallback(silent) }
func (m conMover) Upgrade() error                      { return m.c.upgrade() }
func (m conMover) Displaced() bool                     { return m.c.displaced.Load() }
func (m conMover) Return() error                       { return m.c.back() }
