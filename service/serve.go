package service

import (
	"context"
	"fmt"
	"net"
	"sync"
	"time"

	"github.com/quic-go/quic-go"

	"github.com/antnode/antnode/identity"
)

// Serve routes one stream that peer opened: it reads the header, checks
// the service, the peer's permission and the peer's stream limit, and
// hands the stream to the service's handler, or refuses it with the code
// that says why. It returns when the handler does. Call it on a goroutine
// of its own per stream; ctx (the peer connection's, usually) is the
// Request's context.
func (m *Mux) Serve(ctx context.Context, peer identity.PeerID, str *quic.Stream) {
	str.SetReadDeadline(time.Now().Add(m.cfg.HeaderTimeout))
	name, err := ReadHeader(str)
	str.SetReadDeadline(time.Time{})
	if err != nil {
		st, _ := m.labels.get("")
		m.refuse(str, st, peer, "", CodeBadHeader, err)
		return
	}
	st, _ := m.labels.get(name)
	m.mu.Lock()
	e, closed := m.services[name], m.closed
	m.mu.Unlock()
	switch {
	case closed:
		m.refuse(str, st, peer, name, CodeShutdown, nil)
		return
	case e == nil:
		m.refuse(str, st, peer, name, CodeUnknownService, nil)
		return
	case !e.allow.Allows(peer):
		m.refuse(str, st, peer, name, CodeNotAllowed, nil)
		return
	}
	release, ok := m.acquire(peer)
	if !ok {
		m.refuse(str, st, peer, name, CodeStreamLimit, nil)
		return
	}
	r := &Request{ctx: ctx, m: m, str: str, st: st, release: release, answered: make(chan struct{}),
		Local: Addr{m.cfg.Local, name}, Remote: Addr{peer, name}}
	e.handler(r)
	r.Refuse(CodeShutdown) // a handler that returned without an answer

}

// refuse resets both directions of str with code, and counts it.
func (m *Mux) refuse(str *quic.Stream, st *stats, peer identity.PeerID, name string, code Code, err error) {
	if code.Refusal() {
		st.refused[refusalIndex(code)].Add(1)
		m.recordRefusal(peer, name, code, true)
	}
	str.CancelWrite(quic.StreamErrorCode(code))
	str.CancelRead(quic.StreamErrorCode(code))
	m.cfg.Logger.Debug("service: stream refused", "peer", peer.Short(), "service", name, "code", code.String(), "err", err)
}

// Request is a stream a peer opened to a service, before the service has
// accepted or refused it.
type Request struct {
	// Local is this node and the service; Remote the peer and the service.
	Local, Remote Addr

	ctx     context.Context
	m       *Mux
	str     *quic.Stream
	st      *stats
	release func()

	once     sync.Once
	answered chan struct{} // closed by the answer
}

// Context is the context Serve was given: it ends when the peer
// connection does.
func (r *Request) Context() context.Context { return r.ctx }

// answer claims the one answer a request gets.
func (r *Request) answer() bool {
	first := false
	r.once.Do(func() {
		first = true
		close(r.answered)
	})
	return first
}

// Accept tells the peer the service has taken the stream, and returns it.
func (r *Request) Accept() (*Conn, error) {
	if !r.answer() {
		return nil, fmt.Errorf("service: %s: request already answered", r.Remote)
	}
	r.str.SetWriteDeadline(time.Now().Add(r.m.cfg.HeaderTimeout))
	_, err := r.str.Write([]byte{statusAccepted})
	r.str.SetWriteDeadline(time.Time{})
	if err != nil {
		r.str.CancelRead(quic.StreamErrorCode(CodeClosed))
		r.str.CancelWrite(quic.StreamErrorCode(CodeClosed))
		r.release()
		return nil, fmt.Errorf("service: accept %s: %w", r.Remote, err)
	}
	r.st.accepted.Add(1)
	return newConn(r.str, r.Local, r.Remote, false, r.st, r.m.cfg.IdleTimeout, r.release), nil
}

// Refuse refuses the stream with code (one of the refusal codes, or
// CodeShutdown).
func (r *Request) Refuse(code Code) {
	if !r.answer() {
		return
	}
	r.m.refuse(r.str, r.st, r.Remote.Peer, r.Remote.Service, code, nil)
	r.release()
}

// Listener is a service served through the net.Listener interface: each
// Accept returns one stream a permitted peer opened to it.
type Listener struct {
	m       *Mux
	e       *entry
	addr    Addr
	backlog chan *Request
	closed  chan struct{}
	once    sync.Once
}

// Listen serves the service name through a net.Listener, for the peers
// allow lets in. Streams wait in a backlog until Accept takes them; one
// that waits longer than the header timeout is refused with
// CodeStreamLimit.
func (m *Mux) Listen(name string, allow Allow) (*Listener, error) {
	l := &Listener{m: m, addr: Addr{m.cfg.Local, name}, backlog: make(chan *Request, 64), closed: make(chan struct{})}
	if err := m.Handle(name, allow, "", l.handle); err != nil {
		return nil, err
	}
	m.mu.Lock()
	l.e = m.services[name]
	m.mu.Unlock()
	return l, nil
}

// handle queues r for Accept and waits until Accept (or Close) has
// answered it, within the header timeout.
func (l *Listener) handle(r *Request) {
	t := time.NewTimer(l.m.cfg.HeaderTimeout)
	defer t.Stop()
	select {
	case l.backlog <- r:
	case <-l.closed:
		r.Refuse(CodeShutdown)
		return
	case <-t.C:
		r.Refuse(CodeStreamLimit)
		return
	}
	select {
	case <-r.answered:
	case <-l.closed:
		r.Refuse(CodeShutdown)
	case <-t.C:
		r.Refuse(CodeStreamLimit) // queued, but not taken in time
	}
}

// Accept waits for the next stream and accepts it.
func (l *Listener) Accept() (net.Conn, error) {
	for {
		select {
		case r := <-l.backlog:
			c, err := r.Accept()
			if err != nil {
				continue // the peer went away while the stream waited
			}
			return c, nil
		case <-l.closed:
			return nil, net.ErrClosed
		}
	}
}

// Close stops the service: waiting streams are refused, and Accept
// returns net.ErrClosed. Streams already accepted stay open.
func (l *Listener) Close() error {
	l.once.Do(func() {
		l.m.remove(l.addr.Service, l.e)
		close(l.closed)
		for {
			select {
			case r := <-l.backlog:
				r.Refuse(CodeShutdown)
			default:
				return
			}
		}
	})
	return nil
}

// Addr is this node's ID and the service name.
func (l *Listener) Addr() net.Addr { return l.addr }
