package traversal

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"sync"
	"time"

	"github.com/antnode/antnode/bootstrap"
	"github.com/antnode/antnode/bootstrap/wire"
	"github.com/antnode/antnode/event"
	"github.com/antnode/antnode/holepunch"
	"github.com/antnode/antnode/identity"
	"github.com/antnode/antnode/migration"
)

// Keeping connections across network changes.
//
// The side that dials a connection is its QUIC client, and only a client
// can move a QUIC connection. When this host's addresses change, the NAT
// maps it anew; its QUIC packets then leave from a new public address,
// which the peer's quic-go validates and switches to by itself, if the
// packets get in: a peer behind a filtering NAT has never sent to the new
// address. So for every connection this node dialled, it asks the peer,
// through a bootstrap (the direct path is what broke), for a check round
// towards its new candidates (PurposeRebind): the peer's checks open its
// NAT, and the connection carries on. A connection this node accepted
// cannot be moved by this side; its peer's keepalives and the idle
// timeout decide its fate.

// ErrNoConnection is returned when a migration is asked for a peer this
// node has no connection with.
var ErrNoConnection = errors.New("traversal: no connection with the peer")

// startNetWatch starts the address watcher unless NetworkPoll is negative.
func (n *Node) startNetWatch() error {
	if n.cfg.NetworkPoll < 0 {
		return nil
	}
	w, err := migration.NewWatcher(migration.WatcherConfig{Interval: n.cfg.NetworkPoll, Addrs: n.cfg.Addrs,
		OnChange: n.onNetworkChange})
	if err != nil {
		return fmt.Errorf("traversal: watch addresses: %w", err)
	}
	n.netWatch = w
	return nil
}

// onNetworkChange runs on the watcher's goroutine.
func (n *Node) onNetworkChange(c migration.Change) {
	n.netGen.Add(1)
	n.rec.Record(event.Event{Kind: event.KindMigration, Reason: event.ReasonNetworkChanged, Outcome: event.OutcomeOK,
		Detail: fmt.Sprintf("addresses: %d added, %d removed", len(c.Added), len(c.Removed))})
	n.poke() // new candidates and NAT type, announced to the bootstraps
	n.rebindAll(event.ReasonNetworkChanged)
}

// observedFunc returns the OnObserved callback of one bootstrap client:
// a new NAT measurement always, and when the mapping changed under the
// same local addresses (the NAT rebound the socket: a mapping expired or
// conntrack was flushed), a rebind of the connections this node dialled.
// A mapping that changed because the local addresses did (a network
// change, handled by onNetworkChange) teaches nothing about the NAT.
func (n *Node) observedFunc(i int) func(netip.AddrPort) {
	var obs mappingObserver
	return func(addr netip.AddrPort) {
		n.poke()
		// Only the UDP mapping matters (a TCP registration's observed
		// address is another mapping altogether).
		clients := n.bootstrapClients()
		if i >= len(clients) || clients[i].Status().Transport != bootstrap.TransportQUIC {
			return
		}
		rebound, lifetime := obs.observe(addr, n.netGen.Load(), clients[i].Heartbeat())
		if !rebound {
			return
		}
		n.rec.Record(event.Event{Kind: event.KindMigration, Reason: event.ReasonMappingExpired, Outcome: event.OutcomeOK,
			Detail: "the NAT mapped this node anew", Addr: addr})
		n.learnMappingLifetime(lifetime)
		n.rebindAll(event.ReasonMappingExpired)
	}
}

// mappingObserver follows one bootstrap's observations of this node's
// address. It tells when the NAT mapped the socket anew under the same
// local addresses (a mapping expired, or conntrack was flushed), and
// bounds how long the old mapping lived: less than the longest gap
// between packets on the control connection since the last observation,
// which is the larger of the heartbeat then and now (a heartbeat is only
// ever shortened). The heartbeat now alone is not the bound: another
// bootstrap that saw the same rebinding a moment earlier may have just
// shortened it, and the lifetime would be learned twice over.
type mappingObserver struct {
	mu      sync.Mutex
	prev    netip.AddrPort
	prevGen uint64        // local address changes seen at prev
	prevHB  time.Duration // the heartbeat at prev
}

// observe takes an observed address, the count of local address changes
// and the heartbeat now.
func (o *mappingObserver) observe(addr netip.AddrPort, gen uint64, hb time.Duration) (rebound bool, lifetime time.Duration) {
	o.mu.Lock()
	defer o.mu.Unlock()
	rebound = o.prev.IsValid() && addr != o.prev && gen == o.prevGen
	lifetime = max(o.prevHB, hb)
	o.prev, o.prevGen, o.prevHB = addr, gen, hb
	return rebound, lifetime
}

// rebindAll rebinds every direct connection this node dialled (one
// migration per connection at a time).
func (n *Node) rebindAll(reason event.Reason) {
	for _, conn := range n.Conns() {
		if conn.outgoing && conn.Path() == event.PathDirect && conn.manager != nil && conn.manager.Begin() {
			n.wg.Add(1)
			go func() {
				defer n.wg.Done()
				defer conn.manager.End()
				n.rebind(conn, reason)
			}()
		}
	}
}

// rebind asks the peer of conn for a check round towards this node's
// current candidates, so that its NAT lets the connection's packets from
// the new address in. It reports a migration event either way.
func (n *Node) rebind(conn *Conn, reason event.Reason) error {
	start := time.Now()
	before := conn.qc.ConnectionStats()
	n.move(conn.peer, StateMigrating, reason, nil)
	ctx, cancel := context.WithTimeout(n.ctx, n.cfg.ConnectTimeout)
	defer cancel()
	_, err := n.checkRound(ctx, conn.peer, wire.PurposeRebind, n.freshCandidates(ctx), []netip.AddrPort{addrPortOf(conn.qc.RemoteAddr())})
	o := event.OutcomeOK
	if err != nil {
		o = event.OutcomeFail
	}
	d := time.Since(start)
	n.rec.Record(event.Event{Kind: event.KindMigration, Reason: reason, Outcome: o, Detail: "rebind",
		Duration: d, Path: conn.Path(), Peer: conn.peer.String(), Err: err})
	conn.addMigration(Migration{At: start, Kind: "rebind", Reason: reason, OK: err == nil, Duration: d, From: conn.Path(), To: conn.Path()})
	if conn.qc.Context().Err() == nil {
		n.move(conn.peer, connectedState(conn.Path()), event.ReasonNone, nil)
	}
	// No direct path remains: the rebind round failed and the connection
	// heard nothing back all along while it kept sending. Go to the relay
	// now rather than after the dead-path watch's silence as well.
	if after := conn.qc.ConnectionStats(); err != nil && conn.Path() == event.PathDirect && conn.qc.Context().Err() == nil &&
		after.PacketsReceived == before.PacketsReceived && after.PacketsSent > before.PacketsSent {
		n.fallback(conn, d) // then the connection's path manager tries to upgrade
	}
	return err
}

// freshCandidates returns the node's candidates with its current mapping
// (asked of a bootstrap's STUN responder now, not remembered) first.
func (n *Node) freshCandidates(ctx context.Context) []wire.Candidate {
	cands := n.candidates()
	for _, c := range n.registered() {
		st := c.Status()
		if m := n.stunMapped(ctx, c.Addr(), st.RTT); m.IsValid() {
			fresh := wire.Candidate{Kind: wire.KindServerReflexive, Priority: holepunch.Priority(wire.KindServerReflexive, 0xffff), Addr: m}
			out := []wire.Candidate{fresh}
			for _, o := range cands {
				if o.Addr != m {
					out = append(out, o)
				}
			}
			return out
		}
	}
	return cands
}

// checkRound asks peer, through a bootstrap, for a check round of the
// given purpose and runs this side's: checks to the peer's candidates and
// to extra (the connection's current remote address), answering the
// peer's. It returns once a pair validated or (with no pair) the peer's
// check arrived.
func (n *Node) checkRound(ctx context.Context, peer identity.PeerID, purpose wire.Purpose, cands []wire.Candidate, extra []netip.AddrPort) (holepunch.Result, error) {
	creds := holepunch.NewCreds()
	sess, err := n.introduce(ctx, peer, bootstrap.Intro{NAT: n.NAT(), Candidates: cands, Creds: creds, Purpose: purpose}, "")
	if err != nil {
		return holepunch.Result{}, fmt.Errorf("traversal: %s: introduction: %w", purpose, err)
	}
	defer sess.Close()
	hp, err := n.agent.Open(creds, sess.Remote.Creds, nil)
	if err != nil {
		return holepunch.Result{}, fmt.Errorf("traversal: %s: %w", purpose, err)
	}
	defer time.AfterFunc(2*time.Second, hp.Close)
	p, err := waitPunch(ctx, sess)
	if err != nil {
		return holepunch.Result{}, fmt.Errorf("traversal: %s: %w", purpose, err)
	}
	targets := sess.Remote.Candidates
	for _, a := range extra {
		targets = append(targets, wire.Candidate{Kind: wire.KindPeerReflexive, Priority: holepunch.Priority(wire.KindPeerReflexive, 0xffff), Addr: a})
	}
	heard := make(chan struct{}, 1)
	res, err := hp.Punch(ctx, targets, holepunch.PunchConfig{Start: p.At.Add(p.Delay), Round: p.Round,
		OnPeerCheck: func(netip.AddrPort) {
			select {
			case heard <- struct{}{}:
			default:
			}
		}})
	if err != nil {
		select {
		case <-heard: // the peer's check got through: its NAT is open to us
			return res, nil
		default:
		}
		return res, fmt.Errorf("traversal: %s: %w", purpose, err)
	}
	return res, nil
}

// handleMigrationOffer answers an offer whose purpose is not a new
// connection: the requester has a connection with this node and needs
// this side's NAT opened towards its (new or relayed) candidates. This
// side sends checks there and answers the requester's; nobody dials.
func (n *Node) handleMigrationOffer(o *bootstrap.Offer) {
	start := time.Now()
	have := false
	for _, c := range n.Conns() {
		if c.peer == o.From && c.qc.Context().Err() == nil {
			have = true
			break
		}
	}
	if !have {
		o.Decline(wire.CodeRefused)
		n.rec.Record(event.Event{Kind: event.KindMigration, Outcome: event.OutcomeFail, Reason: event.ReasonRefused,
			Detail: "peer " + o.Remote.Purpose.String() + ": no connection", Peer: o.From.String()})
		return
	}
	ctx, cancel := context.WithTimeout(n.ctx, n.cfg.ConnectTimeout)
	defer cancel()
	creds := holepunch.NewCreds()
	hp, err := n.agent.Open(creds, o.Remote.Creds, nil)
	if err != nil {
		o.Decline(wire.CodeOverloaded)
		return
	}
	defer time.AfterFunc(2*time.Second, hp.Close)
	sess, err := o.Accept(bootstrap.Intro{NAT: n.NAT(), Candidates: n.candidates(), Creds: creds})
	if err != nil {
		return
	}
	defer sess.Close()
	p, err := waitPunch(ctx, sess)
	if err == nil {
		_, err = hp.Punch(ctx, o.Remote.Candidates, holepunch.PunchConfig{Start: p.At.Add(p.Delay), Round: p.Round})
	}
	outcome, reason := event.OutcomeOK, purposeReason(o.Remote.Purpose)
	if err != nil {
		outcome, reason = event.OutcomeFail, Reason(err)
	}
	n.rec.Record(event.Event{Kind: event.KindMigration, Outcome: outcome, Reason: reason,
		Detail: "peer " + o.Remote.Purpose.String(), Duration: time.Since(start), Peer: o.From.String(), Err: err})
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

// Keepalive returns the pace at which the node keeps its NAT mappings
// alive (bootstrap heartbeats, new connections' QUIC keepalive, pings of
// older connections): under the learned mapping lifetime, at most
// Config.KeepAlive.
func (n *Node) Keepalive() time.Duration {
	return migration.KeepaliveFor(time.Duration(n.mapLife.Load()), time.Second, n.cfg.KeepAlive)
}

// learnMappingLifetime records that a NAT mapping of this node expired
// within upper: new connections and the bootstrap heartbeats then keep
// their mappings alive faster than that.
func (n *Node) learnMappingLifetime(upper time.Duration) {
	if upper <= 0 {
		return
	}
	for {
		cur := n.mapLife.Load()
		if cur != 0 && time.Duration(cur) <= upper {
			return // already knew as much
		}
		if n.mapLife.CompareAndSwap(cur, int64(upper)) {
			break
		}
	}
	ka := n.Keepalive()
	for _, c := range n.bootstrapClients() {
		c.SetHeartbeat(ka)
	}
	n.rec.Record(event.Event{Kind: event.KindMigration, Reason: event.ReasonMappingExpired, Outcome: event.OutcomeOK,
		Detail: fmt.Sprintf("NAT mapping lifetime under %v: keepalives every %v", upper, ka), Duration: upper})
}

// MappingLifetime returns the learned upper bound of the NAT mapping
// lifetime (zero: none learned).
func (n *Node) MappingLifetime() time.Duration { return time.Duration(n.mapLife.Load()) }
