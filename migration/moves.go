package migration

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"time"

	"github.com/antnode/antnode/bootstrap/wire"
	"github.com/antnode/antnode/event"
)

// The moves of a connection this node dialled. Only the side that dialled
// a QUIC connection (its client) can move it, so only it moves:
//
//   - A rebind, when this host's addresses changed or the NAT mapped the
//     socket anew: QUIC's packets now leave from a new public address,
//     which the peer's quic-go validates and switches to by itself if the
//     packets get in. A peer behind a filtering NAT has never sent to the
//     new address, so the rebind asks it, through a bootstrap (the direct
//     path is what broke), for a check round towards this node's new
//     candidates (PurposeRebind): the peer's checks open its NAT.
//   - A fallback, when a direct path carries nothing back any more (a
//     firewall change, a NAT that drops the mapping's traffic: packets
//     vanish with no error). The connection's packets go through a relay
//     allocation behind QUIC's back (Node.Reroute): quic-go sends no path
//     probe while the dead path holds the congestion window, so a new
//     QUIC path could not be validated; the rerouted packets need none.
//   - An upgrade, make before break, from the relay to a direct path. A
//     rerouted connection never left its direct QUIC path: the reroute is
//     undone once a check round validates it. A connection dialled through
//     the relay's own socket runs on a QUIC path over the allocation: the
//     upgrade adds a path on the main socket with quic-go's AddPath,
//     probes it (QUIC path validation) and switches to it. The upgrade
//     goes to the best validated address (upgradeTarget); one other
//     than QUIC's remote address gets the packets behind QUIC's back.
//   - A family move, when a dual-stack connection's direct path died in
//     one address family: its packets go to the peer's address in the
//     other family behind QUIC's back (otherFamily); one moved from IPv6
//     to IPv4 goes back when IPv6 validates again (back).
//
// Every move tells the peer on a notice stream, reports its steps to the
// node (its state machine), records a migration event and is kept in the
// connection's history.

// ErrNoDirectYet is returned by an upgrade whose check round found no
// direct path to the connection's remote address.
var ErrNoDirectYet = errors.New("migration: no direct path to the peer yet")

// remote is the connection's remote address on its current path
// (unmapped: on a dual-stack socket quic-go reports an IPv4 peer as
// ::ffff:a.b.c.d).
func (c *Conn) remote() netip.AddrPort {
	if ua, ok := c.qc.RemoteAddr().(*net.UDPAddr); ok {
		ap := ua.AddrPort()
		return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
	}
	return netip.AddrPort{}
}

// finish ends a move: the node's state (settled, for settle), the event
// and the history (for reason).
func (c *Conn) finish(kind string, start time.Time, reason, settle event.Reason, from, to event.Path, err error) {
	d := time.Since(start)
	o := event.OutcomeOK
	if err != nil {
		o = event.OutcomeFail
	}
	if c.qc.Context().Err() == nil {
		c.m.cfg.Node.Moved(c.peer, settled(c.Path()), settle)
	}
	c.m.rec.Record(event.Event{Kind: event.KindMigration, Outcome: o, Reason: reason, Detail: kind,
		Duration: d, Path: to, Peer: c.peer.String(), Err: err})
	c.addMove(Move{At: start, Kind: kind, Reason: reason, OK: err == nil, Duration: d, From: from, To: to})
}

// Rebind asks the peer for a check round towards this node's current
// candidates, so that its NAT lets the connection's packets from a new
// address in; when no direct path remains, it falls back to the relay at
// once. The caller holds the move (Path.Begin).
func (c *Conn) Rebind(reason event.Reason) error {
	start := time.Now()
	before := c.qc.ConnectionStats()
	c.m.cfg.Node.Moved(c.peer, StepMigrating, reason)
	ctx, cancel := context.WithTimeout(c.m.ctx, c.m.cfg.MoveTimeout)
	defer cancel()
	remote := c.remote()
	validated, err := c.m.cfg.Node.CheckRound(ctx, c.peer, wire.PurposeRebind, []netip.AddrPort{remote})
	c.finish("rebind", start, reason, event.ReasonNone, c.Path(), c.Path(), err)
	// The host has no address left in the connection's family (a
	// dual-stack host that lost IPv6): move to the other family now,
	// before QUIC's probe timeouts back off (see otherFamily).
	if c.Path() == event.PathDirect && c.qc.Context().Err() == nil && !slices.Contains(validated, remote) &&
		c.m.familyGone(remote.Addr()) && c.otherFamily(reason, time.Since(start)) == nil {
		return nil
	}
	// No direct path remains: the rebind round failed and the connection
	// heard nothing back all along while it kept sending. Go to the relay
	// now rather than after the dead-path watch's silence as well.
	if after := c.qc.ConnectionStats(); err != nil && c.Path() == event.PathDirect && c.qc.Context().Err() == nil &&
		after.PacketsReceived == before.PacketsReceived && after.PacketsSent > before.PacketsSent {
		c.fallback(time.Since(start)) // then the pacer tries to upgrade
	}
	return err
}

// fallbackTimeout bounds a fallback: the introduction that brings the
// peer's checks to the relay, and then the first packet back through it.
// That packet answers QUIC's next probe, which comes at QUIC's probe
// timeout, doubled at every unanswered probe since the path died (1.5 s
// of silence before the fallback, seconds more under loss): at 2 % loss a
// fallback whose introduction took 3.4 s had rerouted to the peer's new
// mapping but heard nothing back within 5 s.
const fallbackTimeout = 10 * time.Second

// fallback moves the connection from its dead direct path to a direct
// path in the other address family, or else to the relay.
func (c *Conn) fallback(silent time.Duration) (err error) {
	if c.otherFamily(event.ReasonPathBlackholed, silent) == nil {
		return nil
	}
	start := time.Now()
	c.m.rec.Record(event.Event{Kind: event.KindFallback, Reason: event.ReasonPathBlackholed, Detail: "direct->relay",
		Peer: c.peer.String(), Duration: silent})
	c.m.cfg.Node.Moved(c.peer, StepMigrating, event.ReasonPathBlackholed)
	defer func() {
		to := event.PathRelay
		if err != nil {
			to = event.PathDirect
		}
		c.finish("fallback", start, event.ReasonPathBlackholed, event.ReasonPathBlackholed, event.PathDirect, to, err)
	}()
	ctx, cancel := context.WithTimeout(c.m.ctx, fallbackTimeout)
	defer cancel()
	c.unroute() // a redirect (another family, another address) died too
	unroute, err := c.m.cfg.Node.Reroute(ctx, c.qc, c.peer, c.remote())
	if err != nil {
		return fmt.Errorf("migration: fallback: %w", err)
	}
	c.unrouter.Store(&unroute)
	if c.qc.Context().Err() != nil {
		c.unroute() // ended meanwhile: its AfterFunc may have run already
	}
	c.SetPath(event.PathRelay)
	c.notify(event.PathRelay, event.ReasonPathBlackholed, time.Since(start))
	return nil
}

// otherFamily moves the connection from its dead direct path to a direct
// path in the other address family (Node.OtherFamily). The connection
// stays direct; its move is recorded as kind "family", with reason (why
// it moved: path_blackholed, network_changed).
func (c *Conn) otherFamily(reason event.Reason, silent time.Duration) (err error) {
	start := time.Now()
	ctx, cancel := context.WithTimeout(c.m.ctx, fallbackTimeout)
	defer cancel()
	to, unroute, err := c.m.cfg.Node.OtherFamily(ctx, c.qc, c.peer, c.remote())
	if err != nil {
		c.m.log.Debug("migration: no move to the other family", "peer", c.peer.Short(), "silent", silent, "err", err)
		return err
	}
	c.unrouter.Store(&unroute)
	c.displaced.Store(displacedBy(c.remote(), to))
	if c.qc.Context().Err() != nil {
		c.unroute()
	}
	c.m.log.Info("migration: moved to the other address family", "peer", c.peer.Short(), "to", c.m.san(to), "silent", silent)
	c.finish("family", start, reason, reason, event.PathDirect, event.PathDirect, nil)
	c.notify(event.PathDirect, reason, time.Since(start))
	return nil
}

// displacedBy reports whether a connection whose remote address is remote
// and whose packets go to to instead left its preferred family: IPv6 for
// IPv4. It is a pure function.
func displacedBy(remote, to netip.AddrPort) bool {
	return remote.Addr().Unmap().Is6() && to.Addr().Unmap().Is4()
}

// back makes one attempt to move a displaced connection (see
// otherFamily) back to its remote address, in its preferred family: a
// check round towards it and, once it validates, the redirect goes and
// QUIC's packets go there again (a path that died after all is the
// dead-path watch's: the move to the other family again). It is recorded
// as a "family" move, reason direct_available.
func (c *Conn) back() (err error) {
	start := time.Now()
	remote := c.remote()
	c.m.cfg.Node.Moved(c.peer, StepMigrating, event.ReasonDirectAvailable)
	defer func() {
		reason := c.upgradeReason(err)
		c.finish("family", start, reason, reason, event.PathDirect, event.PathDirect, err)
	}()
	ctx, cancel := c.upgradeContext()
	defer cancel()
	validated, err := c.m.cfg.Node.CheckRound(ctx, c.peer, wire.PurposeUpgrade, []netip.AddrPort{remote})
	if err != nil {
		return err
	}
	if !slices.Contains(validated, remote) {
		return fmt.Errorf("%w: %s did not validate", ErrNoDirectYet, c.m.san(remote))
	}
	c.unroute()
	c.m.log.Info("migration: back to the preferred address family", "peer", c.peer.Short(), "to", c.m.san(remote))
	c.notify(event.PathDirect, event.ReasonDirectAvailable, time.Since(start))
	return nil
}

// familyGone reports whether the host has no address of a's family left
// (loopback and link-local ones do not count); unknown addresses: false.
func (m *Manager) familyGone(a netip.Addr) bool {
	read := m.cfg.Addrs
	if read == nil {
		read = Addrs
	}
	addrs, err := read()
	if err != nil {
		return false
	}
	v4 := a.Unmap().Is4()
	for _, h := range addrs {
		if h.IsGlobalUnicast() && h.Unmap().Is4() == v4 {
			return false
		}
	}
	return true
}

// upgradeContext bounds an upgrade or a return (back): 10 RTT, at least
// 3 s.
func (c *Conn) upgradeContext() (context.Context, context.CancelFunc) {
	rtt := c.qc.ConnectionStats().SmoothedRTT
	return context.WithTimeout(c.m.ctx, max(3*time.Second, 10*rtt))
}

// upgradeReason is the reason an upgrade or a return ended with:
// direct_available, punch_timeout when its round validated nothing to go
// to, else its error's.
func (c *Conn) upgradeReason(err error) event.Reason {
	switch {
	case err == nil:
		return event.ReasonDirectAvailable
	case errors.Is(err, ErrNoDirectYet):
		return event.ReasonPunchTimeout
	}
	return c.m.cfg.Reason(err)
}

// upgrade makes one attempt to move the connection to a direct path.
func (c *Conn) upgrade() (err error) {
	start := time.Now()
	remote := c.remote()
	c.m.cfg.Node.Moved(c.peer, StepUpgrading, event.ReasonNone)
	defer func() {
		to := event.PathDirect
		if err != nil {
			to = event.PathRelay
		}
		reason := c.upgradeReason(err)
		c.finish("upgrade", start, reason, reason, event.PathRelay, to, err)
	}()
	ctx, cancel := c.upgradeContext()
	defer cancel()
	validated, err := c.m.cfg.Node.CheckRound(ctx, c.peer, wire.PurposeUpgrade, []netip.AddrPort{remote})
	if err != nil {
		return err
	}
	to, ok := upgradeTarget(validated, remote)
	if !ok {
		return fmt.Errorf("%w: %s did not validate", ErrNoDirectYet, c.m.san(remote))
	}
	if err := c.goDirect(ctx, remote, to); err != nil {
		return err
	}
	c.SetPath(event.PathDirect)
	c.m.cfg.Node.LeaveRelay(c.qc)
	c.notify(event.PathDirect, event.ReasonDirectAvailable, time.Since(start))
	return nil
}

// goDirect moves the connection from the relay to the validated direct
// address to, its remote address or another (see upgradeTarget).
//
// A connection on a QUIC path over the allocation gets a path on the main
// socket (switchPath); its packets for remote go to to (Node.Redirect)
// when to is another, and the path's probe proves that route. A rerouted
// connection never left its direct QUIC path: the reroute through the
// relay is undone; when to is another address, a route to it is proven
// by a packet back first (the relay's comes back if none does).
func (c *Conn) goDirect(ctx context.Context, remote, to netip.AddrPort) error {
	if relay := c.unrouter.Swap(nil); relay != nil { // rerouted through the relay
		if to != remote {
			// Proven while the relay's route waits to come back; the
			// relay's cleanup then leaves the redirect's route alone.
			if err := c.redirect(ctx, remote, to, true); err != nil {
				c.unrouter.Store(relay)
				return err
			}
		}
		(*relay)()
		return nil
	}
	if to != remote {
		if err := c.redirect(ctx, remote, to, false); err != nil {
			return err
		}
	}
	if err := c.switchPath(ctx); err != nil {
		c.unroute()
		return err
	}
	return nil
}

// redirect sends the connection's packets for remote to to (see
// Node.Redirect) and keeps the func that undoes it.
func (c *Conn) redirect(ctx context.Context, remote, to netip.AddrPort, await bool) error {
	unroute, err := c.m.cfg.Node.Redirect(ctx, c.qc, remote, to, await)
	if err != nil {
		return fmt.Errorf("migration: upgrade to %s: %w", c.m.san(to), err)
	}
	c.unrouter.Store(&unroute)
	if c.qc.Context().Err() != nil {
		c.unroute()
	}
	c.m.log.Info("migration: upgrade to another address of the peer", "peer", c.peer.Short(), "from", c.m.san(remote), "to", c.m.san(to))
	return nil
}

// upgradeTarget is the address an upgrade moves a connection to, of
// validated, the addresses its check round validated in the order they
// did: an IPv6 one for a connection whose remote address is IPv4 (on a
// dual-stack socket IPv6 is preferred, RFC 8305), else remote itself,
// else the first (the peer's address changed while the connection ran on
// the relay, or it was dialled at an address the peer does not answer
// at directly). ok is false when none validated. It is a pure function.
func upgradeTarget(validated []netip.AddrPort, remote netip.AddrPort) (to netip.AddrPort, ok bool) {
	if remote.Addr().Unmap().Is4() {
		for _, v := range validated {
			if v.Addr().Is6() && !v.Addr().Is4In6() {
				return v, true
			}
		}
	}
	if slices.Contains(validated, remote) {
		return remote, true
	}
	if len(validated) > 0 {
		return validated[0], true
	}
	return netip.AddrPort{}, false
}

// switchPath adds a path on the main socket, probes it and switches to it.
func (c *Conn) switchPath(ctx context.Context) error {
	p, err := c.qc.AddPath(c.m.cfg.Transport)
	if err != nil {
		return fmt.Errorf("migration: upgrade: add path: %w", err)
	}
	if err := p.Probe(ctx); err != nil {
		p.Close()
		return fmt.Errorf("migration: upgrade: probe: %w", err)
	}
	if err := p.Switch(); err != nil {
		p.Close()
		return fmt.Errorf("migration: upgrade: switch: %w", err)
	}
	return nil
}

// notify tells the peer that this side moved the connection, and why.
func (c *Conn) notify(path event.Path, reason event.Reason, took time.Duration) {
	if err := SendNotice(c.qc, NoticePath, PathNotice{Path: path, Reason: reason, Duration: took}.Encode()...); err != nil {
		c.m.log.Debug("migration: path notice", "peer", c.peer.Short(), "err", err)
	}
}

// san renders an address for error texts the way the logs do.
func (m *Manager) san(a netip.AddrPort) string {
	if s, ok := m.rec.(event.AddrSanitizer); ok {
		return s.SanitizeAddrPort(a)
	}
	return a.String()
}

// Answered records this side's part of a check round the peer asked for
// under a connection (the peer rebinds, falls back or upgrades: this
// side's checks open its NAT).
func (m *Manager) Answered(peer string, purpose wire.Purpose, took time.Duration, err error) {
	outcome, reason := event.OutcomeOK, purposeReason(purpose)
	if err != nil {
		outcome, reason = event.OutcomeFail, m.cfg.Reason(err)
	}
	m.rec.Record(event.Event{Kind: event.KindMigration, Outcome: outcome, Reason: reason,
		Detail: "peer " + purpose.String(), Duration: took, Peer: peer, Err: err})
}

// purposeReason is why a peer asks for a check round under a connection.
func purposeReason(p wire.Purpose) event.Reason {
	switch p {
	case wire.PurposeUpgrade:
		return event.ReasonDirectAvailable
	case wire.PurposeFallback:
		return event.ReasonPathBlackholed
	}
	return event.ReasonNetworkChanged
}
