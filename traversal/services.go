package traversal

import (
	"context"
	"fmt"
	"net"
	"strings"
	"time"

	"github.com/antnode/antnode/event"
	"github.com/antnode/antnode/identity"
	"github.com/antnode/antnode/service"
)

// TransferService is the name of the built-in verified transfer service
// (Conn.SendVerified): every node serves it to every authenticated peer.
const TransferService = "transfer"

// connKey is the context key under which a service request finds the
// *Conn it arrived on.
type connKey struct{}

// newServices builds the node's service mux and serves the built-in
// transfer on it.
func (n *Node) newServices() (*service.Mux, error) {
	sc := n.cfg.Services
	sc.Local = n.ID()
	sc.Names = append([]string{TransferService}, sc.Names...)
	if sc.Recorder == nil {
		sc.Recorder = n.rec
	}
	if sc.Logger == nil {
		sc.Logger = n.log
	}
	mux, err := service.New(sc)
	if err != nil {
		return nil, fmt.Errorf("traversal: %w", err)
	}
	if err := mux.Handle(TransferService, service.AllowAny, "verified transfer", n.serveTransfer); err != nil {
		return nil, fmt.Errorf("traversal: %w", err)
	}
	return mux, nil
}

// serveTransfer receives one verified transfer.
func (n *Node) serveTransfer(r *service.Request) {
	s, err := r.Accept()
	if err != nil {
		return
	}
	start := time.Now()
	size, err := receiveVerified(s, n.cfg.MaxTransfer, n.cfg.IdleTimeout)
	if err != nil {
		n.log.Info("traversal: transfer from peer failed", "peer", r.Remote.Peer.Short(), "err", err)
		return
	}
	path := event.PathNone
	if c, ok := r.Context().Value(connKey{}).(*Conn); ok {
		path = c.Path()
	}
	if d := time.Since(start); d > 0 && size > 0 {
		n.rec.Record(event.Event{Kind: event.KindThroughput, Path: path,
			Value: float64(size) * 8 / d.Seconds() / 1e6, Duration: d, Peer: r.Remote.Peer.String(), Detail: "received"})
	}
}

// Services returns the node's service mux: what it serves, its limits and
// its counters.
func (n *Node) Services() *service.Mux { return n.services }

// Listen serves the service name to the peers allow lets in: each Accept
// of the returned listener is one stream such a peer opened, as a
// net.Conn whose RemoteAddr is a service.Addr naming the peer.
func (n *Node) Listen(name string, allow service.Allow) (*service.Listener, error) {
	return n.services.Listen(name, allow)
}

// Dial opens a stream to peer's service name and waits until the service
// has taken it. It uses the node's connection to peer when there is one
// and establishes one otherwise (traversal, then relay); the connection
// is kept for the next Dial. A refusal is a *service.StreamError
// (errors.Is service.ErrRefused); a failed connection a *ConnectError.
func (n *Node) Dial(ctx context.Context, peer identity.PeerID, name string) (*service.Conn, error) {
	s, err := n.DialEarly(ctx, peer, name)
	if err != nil {
		return nil, err
	}
	if err := s.Accepted(ctx); err != nil {
		s.Close()
		return nil, err
	}
	return s, nil
}

// DialEarly is Dial without the wait for the service's answer: the
// caller may write at once, and a refusal surfaces on the first Read.
// A forwarded TCP connection's first bytes leave with the stream's
// header this way, one round trip sooner.
func (n *Node) DialEarly(ctx context.Context, peer identity.PeerID, name string) (*service.Conn, error) {
	if err := service.ValidName(name); err != nil {
		return nil, err
	}
	c, err := n.PeerConn(ctx, peer)
	if err != nil {
		return nil, err
	}
	return n.services.Open(ctx, c.qc, peer, name)
}

// HTTPDialer returns a DialContext for an http.Transport that reaches the
// service name of the peer named by a URL's host (http://PEERID/...; the
// port is ignored).
func (n *Node) HTTPDialer(name string) func(ctx context.Context, network, addr string) (net.Conn, error) {
	return func(ctx context.Context, _, addr string) (net.Conn, error) {
		host := addr
		if h, _, err := net.SplitHostPort(addr); err == nil {
			host = h
		}
		peer, err := identity.ParsePeerID(strings.ToLower(host))
		if err != nil {
			return nil, fmt.Errorf("traversal: dial %q: %w", addr, err)
		}
		return n.Dial(ctx, peer, name)
	}
}

// PeerConn returns the node's live connection to peer, the newest if it
// has several, or establishes one (Connect). Concurrent calls for a peer
// share one attempt.
func (n *Node) PeerConn(ctx context.Context, peer identity.PeerID) (*Conn, error) {
	if c := n.liveConn(peer); c != nil {
		return c, nil
	}
	n.dialMu.Lock()
	call := n.dialing[peer]
	if call == nil {
		call = &connCall{done: make(chan struct{})}
		n.dialing[peer] = call
		n.wg.Add(1)
		go func() {
			defer n.wg.Done()
			call.c, call.err = n.Connect(n.ctx, peer)
			n.dialMu.Lock()
			delete(n.dialing, peer)
			n.dialMu.Unlock()
			close(call.done)
		}()
	}
	n.dialMu.Unlock()
	select {
	case <-call.done:
		return call.c, call.err
	case <-ctx.Done():
		return nil, &ConnectError{Phase: event.PhaseCoordinate, Reason: Reason(ctx.Err()), Err: context.Cause(ctx)}
	}
}

// connCall is one Connect shared by the PeerConn calls that wait for it.
type connCall struct {
	done chan struct{}
	c    *Conn
	err  error
}

// liveConn returns the newest open connection to peer, or nil.
func (n *Node) liveConn(peer identity.PeerID) *Conn {
	var best *Conn
	for _, c := range n.Conns() {
		if c.peer != peer || c.qc.Context().Err() != nil {
			continue
		}
		if best == nil || c.since.After(best.since) {
			best = c
		}
	}
	return best
}
