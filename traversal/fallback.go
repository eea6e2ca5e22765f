package traversal

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"time"

	"github.com/antnode/antnode/bootstrap"
	"github.com/antnode/antnode/bootstrap/wire"
	"github.com/antnode/antnode/endpoint"
	"github.com/antnode/antnode/event"
	"github.com/antnode/antnode/holepunch"
)

// Dead direct paths and the move to the relay.
//
// A direct path can stop carrying anything (a firewall change, a NAT that
// drops the mapping's traffic) without any error: packets simply vanish.
// The dialling side watches its QUIC packet counters (migration.Silence):
// when it has been sending for DeadAfter without receiving a single
// packet, the path is dead. It then allocates on a relay, asks the peer
// through a bootstrap to send checks to the relayed address (opening the
// peer's NAT to it), adds a QUIC path over the allocation, probes it and
// switches: the connection and its streams carry on through the relay,
// and the upgrade loop tries to go direct again later. The watching and
// the pacing are the connection's migration.Path; this file has the move.

// fallback moves c from its dead direct path to the relay.
func (n *Node) fallback(c *Conn, silent time.Duration) (err error) {
	start := time.Now()
	n.rec.Record(event.Event{Kind: event.KindFallback, Reason: event.ReasonPathBlackholed, Detail: "direct->relay",
		Peer: c.peer.String(), Duration: silent})
	n.move(c.peer, StateMigrating, event.ReasonPathBlackholed, nil)
	defer func() {
		d := time.Since(start)
		o, to := event.OutcomeOK, event.PathRelay
		if err != nil {
			o, to = event.OutcomeFail, event.PathDirect
		}
		if c.qc.Context().Err() == nil {
			n.move(c.peer, connectedState(to), event.ReasonPathBlackholed, nil)
		}
		n.rec.Record(event.Event{Kind: event.KindMigration, Outcome: o, Reason: event.ReasonPathBlackholed, Detail: "fallback",
			Duration: d, Path: to, Peer: c.peer.String(), Err: err})
		c.addMigration(Migration{At: start, Kind: "fallback", Reason: event.ReasonPathBlackholed, OK: err == nil,
			Duration: d, From: event.PathDirect, To: to})
	}()
	if n.cfg.Relay == RelayNever {
		return fmt.Errorf("%w: relaying is off (--relay never)", ErrNoRelay)
	}
	ctx, cancel := context.WithTimeout(n.ctx, 5*time.Second)
	defer cancel()
	r, bc, err := n.anyRelay(ctx)
	if err != nil {
		return err
	}
	if err := n.rerouteVia(ctx, c, r, bc); err != nil {
		n.releaseRelay(r, false)
		return err
	}
	c.reroute.Store(&rerouted{r: r, dst: addrPortOf(c.qc.RemoteAddr())})
	c.setPath(event.PathRelay)
	n.ownRelay(c.qc, r) // the reference acquireRelay took is the connection's now
	n.wg.Add(1)
	go func() { // the route dies with the connection
		defer n.wg.Done()
		select {
		case <-c.qc.Context().Done():
		case <-n.ctx.Done():
		}
		n.unroute(c)
	}()
	n.notifyPath(c, event.PathRelay, event.ReasonPathBlackholed, time.Since(start))
	return nil
}

// anyRelay acquires an allocation on the first registered bootstrap's
// relay that grants one.
func (n *Node) anyRelay(ctx context.Context) (*sharedRelay, *bootstrap.Client, error) {
	var errs []error
	for _, cl := range n.registered() {
		r, err := n.acquireRelay(ctx, nil, cl, false)
		if err == nil {
			return r, cl, nil
		}
		errs = append(errs, err)
	}
	return nil, nil, fmt.Errorf("%w: %w", ErrNoRelay, errors.Join(errs...))
}

// rerouteVia sends c's QUIC packets through the allocation r (on bc's
// relay) and returns once packets come back that way. The peer learns the
// relayed address as a candidate and checks it from its main socket: its
// NAT opens to the relay. The connection keeps its QUIC path; its packets
// to the peer's address leave through the allocation and the answers come
// back through it to the main socket.
func (n *Node) rerouteVia(ctx context.Context, c *Conn, r *sharedRelay, bc *bootstrap.Client) error {
	creds := holepunch.NewCreds()
	relayCand := wire.Candidate{Kind: wire.KindRelay, Priority: holepunch.Priority(wire.KindRelay, 0xffff), Addr: r.alloc.Relayed}
	sess, err := bc.Connect(ctx, c.peer, bootstrap.Intro{NAT: n.NAT(), Candidates: []wire.Candidate{relayCand}, Creds: creds,
		Purpose: wire.PurposeFallback})
	if err != nil {
		return fmt.Errorf("traversal: fallback: introduction: %w", err)
	}
	defer sess.Close()
	if rhp, err := r.agent.Open(creds, sess.Remote.Creds, nil); err == nil {
		defer time.AfterFunc(2*time.Second, rhp.Close)
	}
	remote := addrPortOf(c.qc.RemoteAddr())
	if err := r.alloc.Permit(remote); err != nil {
		return fmt.Errorf("traversal: fallback: %w", err)
	}
	inj, err := n.injector()
	if err != nil {
		return fmt.Errorf("traversal: fallback: %w", err)
	}
	before := c.qc.ConnectionStats().PacketsReceived
	r.conn.Intercept(remote, func(b []byte) { inj.Inject(b) })
	dst := net.UDPAddrFromAddrPort(remote)
	if err := n.cfg.Endpoint.Reroute(remote, func(b []byte) error {
		_, err := r.conn.WriteTo(b, dst)
		return err
	}); err != nil {
		r.conn.Intercept(remote, nil)
		return fmt.Errorf("traversal: fallback: %w", err)
	}
	// Packets flowing again is the proof (the lost ones are retransmitted
	// by QUIC's probe timeout, now through the relay).
	wait := time.NewTicker(20 * time.Millisecond)
	defer wait.Stop()
	for c.qc.ConnectionStats().PacketsReceived <= before {
		select {
		case <-wait.C:
		case <-ctx.Done():
			n.cfg.Endpoint.Unroute(remote)
			r.conn.Intercept(remote, nil)
			return fmt.Errorf("traversal: fallback: nothing came back through the relay: %w", context.Cause(ctx))
		}
	}
	return nil
}

// rerouted is a connection whose QUIC packets go through a relay while
// QUIC keeps its direct path (see fallback).
type rerouted struct {
	r   *sharedRelay
	dst netip.AddrPort
}

// unroute sends c's packets directly again.
func (n *Node) unroute(c *Conn) {
	if rr := c.reroute.Swap(nil); rr != nil {
		n.cfg.Endpoint.Unroute(rr.dst)
		rr.r.conn.Intercept(rr.dst, nil)
	}
}

// injector returns the node's injector (created on first use).
func (n *Node) injector() (*endpoint.Injector, error) {
	n.injMu.Lock()
	defer n.injMu.Unlock()
	if n.inj == nil {
		inj, err := n.cfg.Endpoint.NewInjector()
		if err != nil {
			return nil, err
		}
		n.inj = inj
	}
	return n.inj, nil
}
