package traversal

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"time"

	"github.com/quic-go/quic-go"

	"github.com/antnode/antnode/bootstrap"
	"github.com/antnode/antnode/bootstrap/wire"
	"github.com/antnode/antnode/endpoint"
	"github.com/antnode/antnode/holepunch"
	"github.com/antnode/antnode/identity"
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
	r, bc, err := n.anyRelay(ctx)
	if err != nil {
		return nil, err
	}
	if err := n.rerouteVia(ctx, qc, peer, remote, r, bc); err != nil {
		n.releaseRelay(r, false)
		return nil, err
	}
	n.ownRelay(qc, r) // the reference acquireRelay took is the connection's now
	return func() {
		n.cfg.Endpoint.Unroute(remote)
		r.conn.Intercept(remote, nil)
	}, nil
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
// bc's relay) and returns once packets come back that way. The peer
// learns the relayed address as a candidate and checks it from its main
// socket: its NAT opens to the relay.
func (n *Node) rerouteVia(ctx context.Context, qc *quic.Conn, peer identity.PeerID, remote netip.AddrPort, r *sharedRelay, bc *bootstrap.Client) error {
	creds := holepunch.NewCreds()
	relayCand := wire.Candidate{Kind: wire.KindRelay, Priority: holepunch.Priority(wire.KindRelay, 0xffff), Addr: r.alloc.Relayed}
	sess, err := bc.Connect(ctx, peer, bootstrap.Intro{NAT: n.NAT(), Candidates: []wire.Candidate{relayCand}, Creds: creds,
		Purpose: wire.PurposeFallback})
	if err != nil {
		return fmt.Errorf("traversal: fallback: introduction: %w", err)
	}
	defer sess.Close()
	if rhp, err := r.agent.Open(creds, sess.Remote.Creds, nil); err == nil {
		defer time.AfterFunc(2*time.Second, rhp.Close)
	}
	if err := r.alloc.Permit(remote); err != nil {
		return fmt.Errorf("traversal: fallback: %w", err)
	}
	inj, err := n.injector()
	if err != nil {
		return fmt.Errorf("traversal: fallback: %w", err)
	}
	before := qc.ConnectionStats().PacketsReceived
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
	for qc.ConnectionStats().PacketsReceived <= before {
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
