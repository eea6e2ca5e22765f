package traversal

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"time"

	"github.com/quic-go/quic-go"

	"github.com/antnode/antnode/bootstrap"
	"github.com/antnode/antnode/bootstrap/wire"
	"github.com/antnode/antnode/endpoint"
	"github.com/antnode/antnode/holepunch"
	"github.com/antnode/antnode/identity"
	"github.com/antnode/antnode/relay"
)

// Rerouting a connection through a relay behind QUIC's back: the
// fallback of a dead direct path (migration's). The connection keeps its
// QUIC path; its packets to the peer's address leave through an
// allocation, and the answers come back through it to the main socket,
// injected as if they had arrived there.

// reroute sends qc's packets to remote through an allocation on the first
// registered bootstrap's relay that grants one, and returns once packets
// come back that way. The connection owns the allocation from then on;
// the returned func sends its packets directly again.
func (n *Node) reroute(ctx context.Context, qc *quic.Conn, peer identity.PeerID, remote netip.AddrPort) (func(), error) {
	if n.cfg.Relay == RelayNever {
		return nil, fmt.Errorf("%w: relaying is off (--relay never)", ErrNoRelay)
	}
	// A connection the birthday search made runs on a socket of its own:
	// its packets are rerouted there.
	ep := n.endpointOf(qc)
	n.remember(qc, ep, remote)
	var r *sharedRelay
	var at netip.AddrPort
	var rt *endpoint.Route
	for try := 0; ; try++ {
		var bc *bootstrap.Client
		var err error
		if r, bc, err = n.anyRelay(ctx); err != nil {
			return nil, err
		}
		if at, rt, err = n.rerouteVia(ctx, qc, ep, peer, remote, r, bc); err == nil {
			break
		}
		again, suspect := rerouteAgain(try, err)
		if suspect && n.ctx.Err() == nil {
			n.markSuspect(r)
		}
		n.releaseRelay(r, false)
		if !again || ctx.Err() != nil {
			return nil, err
		}
	}
	n.ownRelay(qc, r) // the reference acquireRelay took is the connection's now
	ep.Forget(remote)
	return func() { n.unrouteVia(ep, remote, at, r, rt) }, nil
}

// remember makes ep keep what qc's QUIC sends to remote, its dead path,
// from a move's start until a move succeeds (Forget) or qc ends: what
// QUIC sent last goes again through the route once it is set
// (endpoint.Replay), as QUIC's own next probe may be seconds away by
// then (its probe timeout doubles at every unanswered probe). A move
// that fails leaves it on: the next one (the path is still dead) needs
// it all the more.
func (n *Node) remember(qc *quic.Conn, ep *endpoint.Endpoint, remote netip.AddrPort) {
	if ep.Remember(remote) {
		context.AfterFunc(qc.Context(), func() { ep.Forget(remote) })
	}
}

// rerouteTries bounds the tries of one fallback.
const rerouteTries = 2

// rerouteAgain is the plan after a fallback's try (0 the first) failed
// with err: whether to try again within the fallback's time, and whether
// the allocation is suspect (the next try allocates anew). A permission
// the relay did not answer in time suggests an allocation made before
// the NAT mapped its socket anew: suspect, try again. An introduction
// that expired found the peer's own registration broken by the same
// fault (both NATs flushed): its next keepalive mends it within seconds,
// and the allocation was not at fault: try again with it. It is a pure
// function.
func rerouteAgain(try int, err error) (again, suspect bool) {
	switch {
	case errors.Is(err, bootstrap.ErrExpired):
		return try+1 < rerouteTries, false
	case errors.Is(err, errPermitSlow):
		return try+1 < rerouteTries, true
	}
	return false, true
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

// rerouteVia sends qc's packets to remote through the allocation r (on
// bc's relay) and returns once packets come back that way, with the
// address the relay sends them to and ep's route. The peer learns the relayed address as
// a candidate and checks it from its main socket: its NAT opens to the
// relay. The path may have died because the peer's NAT mapped it anew (a
// conntrack flush, an expired mapping): QUIC's remote address is then
// stale, and the peer's checks arrive at the relay from its new mapping.
// The relay then sends to where the checks came from (atPeer).
func (n *Node) rerouteVia(ctx context.Context, qc *quic.Conn, ep *endpoint.Endpoint, peer identity.PeerID, remote netip.AddrPort,
	r *sharedRelay, bc *bootstrap.Client) (netip.AddrPort, *endpoint.Route, error) {
	creds := holepunch.NewCreds()
	relayCand := relayCandidate(r.alloc.Relayed)
	sess, err := bc.Connect(ctx, peer, bootstrap.Intro{NAT: n.NAT(), Candidates: []wire.Candidate{relayCand}, Creds: creds,
		Purpose: wire.PurposeFallback})
	if err != nil {
		return netip.AddrPort{}, nil, fmt.Errorf("traversal: fallback: introduction: %w", err)
	}
	defer sess.Close()
	rhp, err := r.agent.Open(creds, sess.Remote.Creds, nil)
	if err == nil {
		defer time.AfterFunc(2*time.Second, rhp.Close)
	}
	if err := permitWithin(ctx, r.alloc, permitWait, remote); err != nil {
		return netip.AddrPort{}, nil, fmt.Errorf("traversal: fallback: %w", err)
	}
	before := qc.ConnectionStats().PacketsReceived
	rt, err := n.routeVia(ep, remote, remote, r)
	if err != nil {
		n.unrouteVia(ep, remote, remote, r, nil)
		return netip.AddrPort{}, nil, fmt.Errorf("traversal: fallback: %w", err)
	}
	if ep.Replay(remote) {
		n.log.Debug("traversal: fallback: QUIC's last packet to the dead path sent again through the relay", "peer", peer.Short())
	}
	// Packets flowing again is the proof (the lost ones are retransmitted
	// by QUIC's probe timeout, now through the relay; see awaitPackets).
	// Meanwhile the peer's checks may show it at a new mapping: the relay
	// then sends there.
	at := remote
	var poll func()
	if rhp != nil {
		poll = func() {
			if moved, ok := atPeer(rhp.Sources(), at); ok {
				if mrt, err := n.routeVia(ep, remote, moved, r); err == nil {
					at, rt = moved, mrt
					ep.Replay(remote) // the first went to the old mapping
				}
			}
		}
	}
	if err := awaitPackets(ctx, qc, before, poll); err != nil {
		n.unrouteVia(ep, remote, at, r, rt)
		return netip.AddrPort{}, nil, fmt.Errorf("traversal: fallback: nothing came back through the relay: %w", err)
	}
	return at, rt, nil
}

// fallbackPings bounds the pings a fallback sends through the relay.
const fallbackPings = 3

// permitWait bounds a fallback's wait for its permission: the relay
// answers within a round trip, and one that does not answer for this long
// is likely answering for an allocation whose socket the NAT mapped anew,
// that is for nothing (pion would retransmit for about 12 s).
const permitWait = 2 * time.Second

// errPermitSlow is a permission the relay did not grant within
// permitWait.
var errPermitSlow = errors.New("traversal: the relay did not answer the permission in time")

// permitWithin asks alloc for a permission to addr and waits at most d
// (and ctx) for the relay's answer; pion's transaction goes on in the
// background until its retransmissions end.
func permitWithin(ctx context.Context, alloc *relay.Allocation, d time.Duration, addr netip.AddrPort) error {
	done := make(chan error, 1)
	go func() { done <- alloc.Permit(addr) }()
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case err := <-done:
		return err
	case <-t.C:
		return fmt.Errorf("%w (%v)", errPermitSlow, d)
	case <-ctx.Done():
		return context.Cause(ctx)
	}
}

// atPeer returns where the relay should send the connection's packets,
// given the sources of the peer's checks that reached the relay so far and
// the address it sends to now: unchanged while the checks come from there
// (or none came yet), else the latest source. It is a pure function.
func atPeer(sources []netip.AddrPort, now netip.AddrPort) (netip.AddrPort, bool) {
	if len(sources) == 0 || slices.Contains(sources, now) {
		return now, false
	}
	return sources[len(sources)-1], true
}

// routeVia sends the QUIC packets for remote that leave ep through r's
// allocation to at, and hands what comes back from at (and from remote)
// to ep's socket. It returns ep's route.
func (n *Node) routeVia(ep *endpoint.Endpoint, remote, at netip.AddrPort, r *sharedRelay) (*endpoint.Route, error) {
	inj, err := n.injector(ep)
	if err != nil {
		return nil, err
	}
	back := func(b []byte) { inj.Inject(b) }
	r.conn.Intercept(remote, back)
	if at != remote {
		r.conn.Intercept(at, back)
	}
	dst := net.UDPAddrFromAddrPort(at)
	rt, err := ep.Reroute(remote, func(b []byte) error {
		_, err := r.conn.WriteTo(b, dst)
		return err
	})
	if err != nil {
		r.conn.Intercept(at, nil) // the route to remote, if any, stays as it was
		return nil, err
	}
	return rt, nil
}

// unrouteVia undoes routeVia: the packets for remote go directly again,
// unless a route set since (a redirect to a direct address, proven)
// replaced rt; the relay hands back nothing more.
func (n *Node) unrouteVia(ep *endpoint.Endpoint, remote, at netip.AddrPort, r *sharedRelay, rt *endpoint.Route) {
	if rt != nil {
		ep.Unroute(remote, rt)
	}
	r.conn.Intercept(remote, nil)
	if at != remote {
		r.conn.Intercept(at, nil)
	}
}

// injector returns ep's injector (created on first use; closed with the
// node, or with ep if it is a connection's own).
func (n *Node) injector(ep *endpoint.Endpoint) (*endpoint.Injector, error) {
	n.injMu.Lock()
	defer n.injMu.Unlock()
	if inj := n.injs[ep]; inj != nil {
		return inj, nil
	}
	inj, err := ep.NewInjector()
	if err != nil {
		return nil, err
	}
	n.injs[ep] = inj
	return inj, nil
}
