package traversal

import (
	"context"
	"fmt"
	"net"
	"time"

	"github.com/quic-go/quic-go"

	"github.com/antnode/antnode/endpoint"
	"github.com/antnode/antnode/event"
	"github.com/antnode/antnode/holepunch"
	"github.com/antnode/antnode/identity"
	"github.com/antnode/antnode/migration"
)

// Peer connections: tracking, their streams, their path (migration's).

// track records a peer connection and serves its incoming streams until it
// closes.
func (n *Node) track(qc *quic.Conn, peer identity.PeerID, path event.Path, outgoing bool) *Conn {
	c := &Conn{node: n, qc: qc, peer: peer, outgoing: outgoing, since: time.Now(), nominated: make(chan struct{})}
	nominated := func() {
		close(c.nominated)
		n.memory.keep(peer) // expected from now on; its address once it ends
	}
	c.mc = n.paths.Track(qc, migration.Track{Peer: peer, Path: path,
		Manage:     outgoing && (path == event.PathDirect || n.relayOf(qc) != nil),
		NoUpgrade:  n.cfg.Relay == RelayForce, // relayed on purpose: never upgrade
		OwnSocket:  n.endpointOf(qc) != n.cfg.Endpoint,
		OnNominate: nominated})
	if outgoing {
		n.memory.keep(peer) // expected from now on; its address once Connect returns or it ends
	}
	n.connsMu.Lock()
	n.conns[qc] = c
	n.connsMu.Unlock()
	n.wg.Add(1)
	go func() {
		defer n.wg.Done()
		defer func() {
			n.connsMu.Lock()
			delete(n.conns, qc)
			n.connsMu.Unlock()
			if c.kept() {
				n.rememberConn(c) // the last path it ran on
			}
			n.closedIfGone(peer)
		}()
		c.serveStreams()
	}()
	return c
}

// ownEndpoint closes ep (a socket of its own, from the birthday search)
// when qc ends, or when the node closes.
func (n *Node) ownEndpoint(qc *quic.Conn, ep *endpoint.Endpoint) {
	n.injMu.Lock()
	n.owned[qc] = ep
	n.injMu.Unlock()
	n.wg.Add(1)
	go func() {
		defer n.wg.Done()
		select {
		case <-qc.Context().Done():
		case <-n.ctx.Done():
		}
		ep.Close()
		n.injMu.Lock()
		delete(n.owned, qc)
		if inj := n.injs[ep]; inj != nil {
			inj.Close()
			delete(n.injs, ep)
		}
		n.injMu.Unlock()
	}()
}

// endpointOf returns the endpoint qc runs on: its own socket's (the
// birthday search's) or the node's.
func (n *Node) endpointOf(qc *quic.Conn) *endpoint.Endpoint {
	n.injMu.Lock()
	defer n.injMu.Unlock()
	if ep := n.owned[qc]; ep != nil {
		return ep
	}
	return n.cfg.Endpoint
}

// Conns returns the node's peer connections.
func (n *Node) Conns() []*Conn {
	n.connsMu.Lock()
	defer n.connsMu.Unlock()
	out := make([]*Conn, 0, len(n.conns))
	for _, c := range n.conns {
		out = append(out, c)
	}
	return out
}

// Migration is one move of a connection: a rebind after a network
// change, an upgrade from the relay, a fallback to it, the peer's move.
type Migration = migration.Move

// Migrations returns the connection's recent migrations, oldest first.
func (c *Conn) Migrations() []Migration { return c.mc.Moves() }

// Conn is an authenticated QUIC connection to a peer.
type Conn struct {
	node     *Node
	qc       *quic.Conn
	peer     identity.PeerID
	outgoing bool
	since    time.Time
	// mc is the connection's path, which its path manager owns: the path
	// it runs on, its moves, the peer's notices.
	mc *migration.Conn
	// nominated is closed when the dialler nominates the connection (once:
	// the notice reader calls OnNominate once).
	nominated chan struct{}

	attempt       event.AttemptID
	timeToConnect time.Duration
}

// Attempt returns the ID of the attempt that created the connection (zero
// for accepted connections).
func (c *Conn) Attempt() event.AttemptID { return c.attempt }

// TimeToConnect returns how long the attempt that created the connection
// took, from the connect call to the completed handshake.
func (c *Conn) TimeToConnect() time.Duration { return c.timeToConnect }

// Peer returns the peer's ID.
func (c *Conn) Peer() identity.PeerID { return c.peer }

// Path returns whether the connection runs direct or over a relay.
func (c *Conn) Path() event.Path { return c.mc.Path() }

// kept reports whether the node kept c: it dialled it (only the winner
// of an attempt is tracked) or the dialler nominated it.
func (c *Conn) kept() bool {
	if c.outgoing {
		return true
	}
	select {
	case <-c.nominated:
		return true
	default:
		return false
	}
}

// connOf returns the tracked connection of qc (nil: not tracked).
func (n *Node) connOf(qc *quic.Conn) *Conn {
	n.connsMu.Lock()
	defer n.connsMu.Unlock()
	return n.conns[qc]
}

// setPath records the path of a tracked connection.
func (n *Node) setPath(qc *quic.Conn, p event.Path) *Conn {
	c := n.connOf(qc)
	if c != nil {
		c.mc.SetPath(p)
	}
	return c
}

// RTT returns QUIC's smoothed RTT estimate.
func (c *Conn) RTT() time.Duration { return c.qc.ConnectionStats().SmoothedRTT }

// RemoteAddr returns the peer's address on the current path.
func (c *Conn) RemoteAddr() net.Addr { return c.qc.RemoteAddr() }

// Family is the address family this node's packets of the connection
// travel in now (see Node.familyOf).
func (c *Conn) Family() holepunch.Family { return c.node.familyOf(c.qc) }

// familyOf is the address family this node's packets of qc travel in
// now: on a connection redirected behind QUIC's back (moved to the other
// family), the address's; on a connection through its own relay allocation, the family it
// reaches the relay in; else its remote address's (the peer's address on
// a direct path, a relayed address it sends to from its own socket; an
// address synthesised through NAT64 is IPv6).
func (n *Node) familyOf(qc *quic.Conn) holepunch.Family {
	n.connsMu.Lock()
	to, crossed := n.crossed[qc]
	n.connsMu.Unlock()
	if crossed { // redirected behind QUIC's back
		return holepunch.FamilyOf(to.Addr())
	}
	if u := n.relayOf(qc); u != nil && !u.released.Load() {
		return holepunch.FamilyOf(u.r.alloc.Server.Addr())
	}
	return holepunch.FamilyOf(addrPortOf(qc.RemoteAddr()).Addr())
}

// socketFamilies names the families the node's socket serves, as the
// attempts metric labels them: "ipv4", "ipv6" or "dual-stack".
func (n *Node) socketFamilies() string {
	if n.cfg.Endpoint.DualStack() {
		return "dual-stack"
	}
	return holepunch.FamilyOf(n.cfg.Endpoint.LocalAddr().Addr()).String()
}

// QUIC returns the underlying QUIC connection.
func (c *Conn) QUIC() *quic.Conn { return c.qc }

// Close closes the connection.
func (c *Conn) Close() error { return c.qc.CloseWithError(0, "closed") }

// SendVerified sends size pseudo-random bytes to the peer's transfer
// service, which verifies them by SHA-256; it fails unless the peer
// confirms exactly what was sent.
func (c *Conn) SendVerified(ctx context.Context, size int64) (TransferResult, error) {
	str, err := c.node.services.Open(ctx, c.qc, c.peer, TransferService)
	if err != nil {
		return TransferResult{}, fmt.Errorf("traversal: transfer: %w", err)
	}
	res, err := sendVerified(ctx, str, size)
	if err == nil {
		c.node.rec.Record(event.Event{Kind: event.KindThroughput, Path: c.Path(), Value: res.Mbps,
			Duration: res.Duration, Peer: c.peer.String(), Detail: "sent"})
	}
	return res, err
}

// serveStreams hands every stream the peer opens to the node's services,
// each on a goroutine of its own, until the connection closes.
func (c *Conn) serveStreams() {
	ctx := context.WithValue(c.qc.Context(), connKey{}, c)
	for {
		str, err := c.qc.AcceptStream(c.node.ctx)
		if err != nil {
			return
		}
		c.node.wg.Add(1)
		go func() {
			defer c.node.wg.Done()
			c.node.services.Serve(ctx, c.peer, str)
		}()
	}
}
