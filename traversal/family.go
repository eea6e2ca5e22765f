package traversal

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"time"

	"github.com/quic-go/quic-go"

	"github.com/antnode/antnode/bootstrap/wire"
	"github.com/antnode/antnode/holepunch"
	"github.com/antnode/antnode/identity"
	"github.com/antnode/antnode/migration"
)

// Moving a connection to the other address family. A dual-stack node's
// connection whose direct path died (IPv6 went away on either side) is
// checked again in the other family before the relay: a check round
// (purpose rebind: the peer checks this node's current candidates) and,
// on a pair validated in the other family, the connection's packets to
// its old remote address go to the validated one instead, from the same
// socket, behind QUIC's back (as a fallback's go through a relay). The
// peer's QUIC sees this node's new address and validates it (RFC 9000
// section 9); this node's QUIC accepts its packets by connection ID
// whatever their source. The connection stays on a direct path.

// ErrNoOtherFamily is returned when a connection cannot move to the other
// address family: the socket serves one family, the connection was moved
// already, or no pair in the other family validated.
var ErrNoOtherFamily = errors.New("traversal: no direct path in the other address family")

// otherFamily moves qc's packets for remote (its dead direct path) to a
// validated address of the peer in the other family, and returns it and
// the func that sends them to remote again.
func (n *Node) otherFamily(ctx context.Context, qc *quic.Conn, peer identity.PeerID, remote netip.AddrPort) (netip.AddrPort, func(), error) {
	ep := n.endpointOf(qc)
	if !ep.DualStack() || ep.Rerouted(remote) {
		return netip.AddrPort{}, nil, ErrNoOtherFamily
	}
	n.remember(qc, ep, remote)
	res, err := n.checkRound(ctx, peer, wire.PurposeRebind, n.freshCandidates(ctx), nil)
	if err != nil {
		return netip.AddrPort{}, nil, fmt.Errorf("%w: %w", ErrNoOtherFamily, err)
	}
	to, ok := bestOtherFamily(res.Validated, holepunch.FamilyOf(remote.Addr()))
	if !ok {
		return netip.AddrPort{}, nil, fmt.Errorf("%w: %d pairs validated, none in the other family", ErrNoOtherFamily, len(res.Validated))
	}
	unroute, err := n.redirect(ctx, qc, remote, to, true)
	if err != nil {
		return netip.AddrPort{}, nil, fmt.Errorf("%w: %w", ErrNoOtherFamily, err)
	}
	ep.Forget(remote)
	return to, unroute, nil
}

// redirect sends the QUIC packets that qc's socket would send to remote to
// to instead, behind QUIC's back (a route of the endpoint's, replacing
// any), and returns the func that sends them to remote again (unless a
// route set since replaced it). With await
// it returns once a packet came back after the change (restoring the
// route it replaced when none did): qc's QUIC path runs on that socket. Without, the caller
// proves the route itself (a QUIC path it adds and probes).
func (n *Node) redirect(ctx context.Context, qc *quic.Conn, remote, to netip.AddrPort, await bool) (func(), error) {
	ep := n.endpointOf(qc)
	before := qc.ConnectionStats().PacketsReceived
	prev := ep.Route(remote)
	rt, err := ep.Reroute(remote, func(b []byte) error { return ep.WriteTo(b, to) })
	if err != nil {
		return nil, fmt.Errorf("traversal: redirect: %w", err)
	}
	if ep.Replay(remote) { // remembered: a family move
		n.log.Debug("traversal: redirect: QUIC's last packet to the dead path sent again", "to", n.san(to))
	}
	n.connsMu.Lock()
	n.crossed[qc] = to
	n.connsMu.Unlock()
	unroute := func() {
		ep.Unroute(remote, rt) // a route set since stays
		n.connsMu.Lock()
		if n.crossed[qc] == to {
			delete(n.crossed, qc)
		}
		n.connsMu.Unlock()
	}
	context.AfterFunc(qc.Context(), unroute) // the map keeps no ended connection
	if !await {
		return unroute, nil
	}
	if err := awaitPackets(ctx, qc, before, nil); err != nil {
		unroute()
		if prev != nil { // the relay's route, say: its owner removes it
			ep.SetRoute(remote, prev)
		}
		return nil, fmt.Errorf("traversal: redirect: nothing came back from %s: %w", n.san(to), err)
	}
	return unroute, nil
}

// bestOtherFamily is the best validated pair (priority, then RTT) whose
// address is not of family fam. It is a pure function.
func bestOtherFamily(validated []holepunch.Pair, fam holepunch.Family) (netip.AddrPort, bool) {
	var best holepunch.Pair
	for _, p := range validated {
		if holepunch.FamilyOf(p.Remote.Addr()) == fam {
			continue
		}
		if !best.Remote.IsValid() || p.Priority > best.Priority || (p.Priority == best.Priority && p.RTT < best.RTT) {
			best = p
		}
	}
	return best.Remote, best.Remote.IsValid()
}

// awaitPackets waits until qc receives a packet after before of them:
// packets flowing again is the proof of a new route (the lost ones are
// retransmitted at QUIC's probe timeout, now the new way). A ping asks for
// an answer at once, and twice more a second apart while none came: a
// side with nothing to send (the receiver of a transfer) would otherwise
// send nothing back. Each ping is a notice stream of the peer's few (a
// dead path piles them up): three at most. poll, if set, runs every 20 ms
// meanwhile.
func awaitPackets(ctx context.Context, qc *quic.Conn, before uint64, poll func()) error {
	pings := 0
	ping := func() {
		if pings < fallbackPings {
			pings++
			_ = migration.SendNotice(qc, migration.NoticePing) // best effort
		}
	}
	ping()
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	again := time.NewTicker(time.Second)
	defer again.Stop()
	for qc.ConnectionStats().PacketsReceived <= before {
		select {
		case <-again.C:
			ping()
		case <-tick.C:
			if poll != nil {
				poll()
			}
		case <-ctx.Done():
			return context.Cause(ctx)
		}
	}
	return nil
}
