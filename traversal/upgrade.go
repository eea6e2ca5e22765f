package traversal

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"time"

	"github.com/quic-go/quic-go"

	"github.com/antnode/antnode/bootstrap/wire"
	"github.com/antnode/antnode/event"
	"github.com/antnode/antnode/migration"
)

// Moving a relayed connection to a direct path, make before break.
//
// The node that allocated and dialled through its relay is the QUIC
// client of the connection, whose remote address is the peer's own
// (direct) address as the relay forwards to it. To go direct, the client
// asks the peer (through a bootstrap) for a check round from both main
// sockets; once the pair towards that same remote address validates, it
// adds a path on its main socket, probes it (QUIC path validation),
// switches to it, tells the peer on a notice stream, and gives back its
// reference on the allocation, which is released if nobody else uses it.
// The streams of the connection carry on through all of it.

// ErrNoDirectYet is returned by an upgrade whose check round found no
// direct path to the connection's remote address.
var ErrNoDirectYet = errors.New("traversal: no direct path to the peer yet")

// upgrade makes one attempt to move c to a direct path.
func (n *Node) upgrade(c *Conn) (err error) {
	start := time.Now()
	remote := addrPortOf(c.qc.RemoteAddr())
	n.move(c.peer, StateUpgrading, event.ReasonNone, nil)
	defer func() {
		d := time.Since(start)
		o, to := event.OutcomeOK, event.PathDirect
		reason := event.ReasonDirectAvailable
		if err != nil {
			o, to = event.OutcomeFail, event.PathRelay
			reason = Reason(err)
			if errors.Is(err, ErrNoDirectYet) {
				reason = event.ReasonPunchTimeout
			}
			if c.qc.Context().Err() == nil {
				n.move(c.peer, StateConnectedRelay, reason, nil)
			}
		} else {
			n.move(c.peer, StateConnectedDirect, reason, nil)
		}
		n.rec.Record(event.Event{Kind: event.KindMigration, Outcome: o, Reason: reason, Detail: "upgrade",
			Duration: d, Path: to, Peer: c.peer.String(), Err: err})
		c.addMigration(Migration{At: start, Kind: "upgrade", Reason: reason, OK: err == nil, Duration: d,
			From: event.PathRelay, To: to})
	}()
	budget := max(3*time.Second, 10*c.RTT())
	ctx, cancel := context.WithTimeout(n.ctx, budget)
	defer cancel()
	res, err := n.checkRound(ctx, c.peer, wire.PurposeUpgrade, n.freshCandidates(ctx), []netip.AddrPort{remote})
	if err != nil {
		return err
	}
	ok := false
	for _, p := range res.Validated {
		ok = ok || p.Remote == remote
	}
	if !ok {
		return fmt.Errorf("%w: %s did not validate", ErrNoDirectYet, n.san(remote))
	}
	if c.reroute.Load() != nil {
		// QUIC never left the direct path (see fallback): stop rerouting
		// and its packets take the direct path again.
		n.unroute(c)
		c.setPath(event.PathDirect)
		n.leaveRelay(c.qc)
		n.notifyPath(c, event.PathDirect, event.ReasonDirectAvailable, time.Since(start))
		return nil
	}
	p, err := c.qc.AddPath(n.cfg.Endpoint.Transport())
	if err != nil {
		return fmt.Errorf("traversal: upgrade: add path: %w", err)
	}
	if err := p.Probe(ctx); err != nil {
		p.Close()
		return fmt.Errorf("traversal: upgrade: probe: %w", err)
	}
	if err := p.Switch(); err != nil {
		p.Close()
		return fmt.Errorf("traversal: upgrade: switch: %w", err)
	}
	c.setPath(event.PathDirect)
	n.leaveRelay(c.qc)
	n.notifyPath(c, event.PathDirect, event.ReasonDirectAvailable, time.Since(start))
	return nil
}

// san renders an address for error texts the way the logs do.
func (n *Node) san(a netip.AddrPort) string {
	if s, ok := n.rec.(event.AddrSanitizer); ok {
		return s.SanitizeAddrPort(a)
	}
	return a.String()
}

// Notices are one-way messages between the two ends of a connection, one
// per unidirectional stream: a type byte and its payload.
const (
	noticeNominate byte = nominationByte // the dialler keeps this connection: no payload
	noticePath     byte = 'P'            // the dialler moved the connection: payload is a migration.PathNotice
	noticePing     byte = 'K'            // a keepalive: no payload, nothing to do
)

// notifyPath tells the peer that this side moved c to path, and why.
func (n *Node) notifyPath(c *Conn, path event.Path, reason event.Reason, took time.Duration) {
	if err := sendNotice(c.qc, noticePath, migration.PathNotice{Path: path, Reason: reason, Duration: took}.Encode()...); err != nil {
		n.log.Debug("traversal: path notice", "peer", c.peer.Short(), "err", err)
	}
}

func sendNotice(qc *quic.Conn, typ byte, payload ...byte) error {
	str, err := qc.OpenUniStream()
	if err != nil {
		return err
	}
	if _, err := str.Write(append([]byte{typ}, payload...)); err != nil {
		return err
	}
	return str.Close()
}

// serveNotices reads the peer's notices until the connection ends.
func (c *Conn) serveNotices() {
	for {
		str, err := c.qc.AcceptUniStream(c.node.ctx)
		if err != nil {
			return
		}
		str.SetReadDeadline(time.Now().Add(5 * time.Second))
		var b [2]byte
		if _, err := io.ReadFull(str, b[:1]); err != nil {
			str.CancelRead(0)
			continue
		}
		switch b[0] {
		case noticeNominate:
			c.nominateOnce.Do(func() { close(c.nominated) })
		case noticePath:
			payload, err := io.ReadAll(io.LimitReader(str, migration.MaxNotice))
			if err != nil {
				str.CancelRead(0)
				continue
			}
			pn, err := migration.DecodePathNotice(payload)
			if err != nil {
				continue
			}
			from := c.Path()
			c.setPath(pn.Path)
			c.node.move(c.peer, connectedState(pn.Path), pn.Reason, nil)
			c.node.rec.Record(event.Event{Kind: event.KindMigration, Outcome: event.OutcomeOK, Reason: pn.Reason,
				Detail: "peer moved " + from.String() + "->" + pn.Path.String(), Duration: pn.Duration, Path: pn.Path, Peer: c.peer.String()})
			c.addMigration(Migration{At: time.Now(), Kind: "peer-moved", Reason: pn.Reason, OK: true, Duration: pn.Duration, From: from, To: pn.Path})
		case noticePing:
		default:
			str.CancelRead(0) // a newer peer's notice: ignore
		}
	}
}

// managePath starts the path manager of c, a connection this node
// dialled: it watches the direct path (keepalive at the learned pace, a
// dead path to the relay) and upgrades from the relay, until c or the
// node ends.
func (n *Node) managePath(c *Conn) {
	base := n.cfg.UpgradeBase
	if n.cfg.Relay == RelayForce {
		base = -1 // relayed on purpose: never upgrade
	}
	ctx, stop := context.WithCancel(n.ctx)
	context.AfterFunc(c.qc.Context(), stop)
	c.manager = migration.NewPath(migration.PathConfig{Check: n.cfg.DeadPathCheck, DeadAfter: n.cfg.DeadAfter,
		UpgradeBase: base, UpgradeMax: n.cfg.UpgradeMax, Keepalive: n.Keepalive,
		Busy: func() bool { return n.degrade.busy(n.cfg.MaxInflight) }}, connMover{n, c}, ctx.Done())
	n.wg.Add(1)
	go func() {
		defer n.wg.Done()
		defer stop()
		c.manager.Run()
	}()
}

// connMover is a connection's side of its path manager.
type connMover struct {
	n *Node
	c *Conn
}

func (m connMover) Stats() (sent, received uint64, rtt time.Duration) {
	st := m.c.qc.ConnectionStats()
	return st.PacketsSent, st.PacketsReceived, st.SmoothedRTT
}

func (m connMover) Direct() bool { return m.c.Path() == event.PathDirect }

// Ping is a notice the peer answers, which also refreshes its mapping.
func (m connMover) Ping() error {
	err := sendNotice(m.c.qc, noticePing)
	if err != nil {
		m.n.log.Debug("traversal: keepalive", "peer", m.c.peer.Short(), "err", err)
	}
	return err
}

func (m connMover) Fallback(silent time.Duration) error { return m.n.fallback(m.c, silent) }
func (m connMover) Upgrade() error                      { return m.n.upgrade(m.c) }
