package traversal

import (
	"context"
	"errors"
	"net/netip"
	"time"

	"github.com/quic-go/quic-go"

	"github.com/antnode/antnode/bootstrap"
	"github.com/antnode/antnode/bootstrap/wire"
	"github.com/antnode/antnode/event"
	"github.com/antnode/antnode/identity"
	"github.com/antnode/antnode/migration"
)

// The node's side of its connections' paths. migration.Manager owns them
// (watching, keepalive, rebind, fallback, upgrade, the peer notices); the
// node gives it what only the node has: check rounds through its
// bootstraps, relay allocations, and its state machines.

// ErrNoConnection is returned when a migration is asked for a peer this
// node has no connection with.
var ErrNoConnection = errors.New("traversal: no connection with the peer")

// newPaths returns the node's path manager.
func (n *Node) newPaths() (*migration.Manager, error) {
	base := n.cfg.UpgradeBase
	if n.cfg.Relay == RelayForce {
		base = -1 // relayed on purpose: never upgrade
	}
	return migration.New(migration.Config{Node: pathsNode{n}, Transport: n.cfg.Endpoint.Transport(),
		Recorder: n.rec, Logger: n.log, Check: n.cfg.DeadPathCheck, DeadAfter: n.cfg.DeadAfter,
		UpgradeBase: base, UpgradeMax: n.cfg.UpgradeMax, KeepAlive: n.cfg.KeepAlive, MoveTimeout: n.cfg.ConnectTimeout,
		NetworkPoll: n.cfg.NetworkPoll, Addrs: n.cfg.Addrs, OnNetworkChange: n.networkChanged, OnKeepalive: n.setHeartbeats,
		Busy: func() bool { return n.degrade.busy(n.cfg.MaxInflight) }, Reason: Reason})
}

// setHeartbeats paces every bootstrap registration's heartbeat.
func (n *Node) setHeartbeats(d time.Duration) {
	for _, c := range n.bootstrapClients() {
		c.SetHeartbeat(d)
	}
}

// observedFunc returns the OnObserved callback of the bootstrap client
// labelled label: a new NAT measurement always, and the observation of
// the UDP mapping (a TCP registration's observed address is another
// mapping altogether), which rebinds the connections when the NAT mapped
// the socket anew.
func (n *Node) observedFunc(label string) func(netip.AddrPort) {
	obs := n.paths.NewObserver()
	return func(addr netip.AddrPort) {
		n.poke()
		for _, c := range n.bootstrapClients() {
			if c.Label() == label && c.Status().Transport == bootstrap.TransportQUIC {
				if obs.Observe(addr, c.Heartbeat()) {
					n.suspectRelays()
				}
				return
			}
		}
	}
}

// Keepalive returns the pace at which the node keeps its NAT mappings
// alive: under the learned mapping lifetime, at most Config.KeepAlive.
func (n *Node) Keepalive() time.Duration { return n.paths.Keepalive() }

// MappingLifetime returns the learned upper bound of the NAT mapping
// lifetime (zero: none learned).
func (n *Node) MappingLifetime() time.Duration { return n.paths.MappingLifetime() }

// pathsNode is the node as its path manager sees it (migration.Node).
type pathsNode struct{ n *Node }

func (p pathsNode) CheckRound(ctx context.Context, peer identity.PeerID, purpose wire.Purpose, extra []netip.AddrPort) ([]netip.AddrPort, error) {
	res, err := p.n.checkRound(ctx, peer, purpose, p.n.freshCandidates(ctx), extra)
	var out []netip.AddrPort
	for _, v := range res.Validated {
		out = append(out, v.Remote)
	}
	return out, err
}

func (p pathsNode) Reroute(ctx context.Context, qc *quic.Conn, peer identity.PeerID, remote netip.AddrPort) (func(), error) {
	return p.n.reroute(ctx, qc, peer, remote)
}

func (p pathsNode) OtherFamily(ctx context.Context, qc *quic.Conn, peer identity.PeerID, remote netip.AddrPort) (netip.AddrPort, func(), error) {
	return p.n.otherFamily(ctx, qc, peer, remote)
}

func (p pathsNode) Redirect(ctx context.Context, qc *quic.Conn, remote, to netip.AddrPort, await bool) (func(), error) {
	return p.n.redirect(ctx, qc, remote, to, await)
}

func (p pathsNode) LeaveRelay(qc *quic.Conn) { p.n.leaveRelay(qc) }

func (p pathsNode) Moved(peer identity.PeerID, s migration.Step, reason event.Reason) {
	st := StateConnectedDirect
	switch s {
	case migration.StepMigrating:
		st = StateMigrating
	case migration.StepUpgrading:
		st = StateUpgrading
	case migration.StepRelay:
		st = StateConnectedRelay
	}
	p.n.move(peer, st, reason, nil)
}

// san renders an address for error texts the way the logs do.
func (n *Node) san(a netip.AddrPort) string {
	if s, ok := n.rec.(event.AddrSanitizer); ok {
		return s.SanitizeAddrPort(a)
	}
	return a.String()
}
