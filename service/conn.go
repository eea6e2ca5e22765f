package service

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/quic-go/quic-go"

	"github.com/antnode/antnode/identity"
)

// Addr is one end of a service stream: a peer and a service name.
type Addr struct {
	Peer    identity.PeerID
	Service string
}

// Network implements net.Addr.
func (Addr) Network() string { return "antnode" }

// String is "PEERID/service" (the service is left out when empty).
func (a Addr) String() string {
	if a.Service == "" {
		return a.Peer.String()
	}
	return a.Peer.String() + "/" + a.Service
}

// Conn is one stream between this node and a peer's service, as a
// net.Conn. Its remote address is the peer's authenticated ID.
//
// Close ends both directions (unread incoming bytes are refused);
// CloseWrite ends only the sending direction, like a TCP FIN; Reset ends
// both with CodeReset, like a TCP RST. A Conn that this node dialled reads
// the service's answer before its first byte: a refusal surfaces there as
// a *StreamError.
type Conn struct {
	str      *quic.Stream
	local    Addr
	remote   Addr
	outgoing bool
	st       *stats

	statusOnce sync.Once
	statusErr  error

	lastActive atomic.Int64 // unix nanoseconds of the last byte moved
	idle       time.Duration
	idleTimer  *time.Timer
	closeOnce  sync.Once
	release    func()     // returns the stream's slot; nil when it holds none
	refused    func(Code) // hears the peer's refusal of a stream this node opened
}

func newConn(str *quic.Stream, local, remote Addr, outgoing bool, st *stats, idle time.Duration, release func()) *Conn {
	c := &Conn{str: str, local: local, remote: remote, outgoing: outgoing, st: st, idle: idle, release: release}
	st.active.Add(1)
	c.lastActive.Store(time.Now().UnixNano())
	if idle > 0 {
		c.idleTimer = time.AfterFunc(idle, c.checkIdle)
	}
	return c
}

// checkIdle ends the stream when nothing moved for the idle timeout, and
// otherwise waits for the rest of it.
func (c *Conn) checkIdle() {
	quiet := time.Since(time.Unix(0, c.lastActive.Load()))
	if quiet < c.idle {
		c.idleTimer.Reset(c.idle - quiet)
		return
	}
	c.st.idle.Add(1)
	c.abort(CodeIdle)
}

func (c *Conn) touch() { c.lastActive.Store(time.Now().UnixNano()) }

// Peer returns the authenticated ID of the peer at the other end.
func (c *Conn) Peer() identity.PeerID { return c.remote.Peer }

// Service returns the service the stream was opened to.
func (c *Conn) Service() string { return c.remote.Service }

// LocalAddr implements net.Conn: this node's ID and the service.
func (c *Conn) LocalAddr() net.Addr { return c.local }

// RemoteAddr implements net.Conn: the peer's ID and the service.
func (c *Conn) RemoteAddr() net.Addr { return c.remote }

// awaitStatus reads the service's answer to a stream this node opened.
func (c *Conn) awaitStatus() error {
	c.statusOnce.Do(func() {
		var b [1]byte
		_, err := io.ReadFull(c.str, b[:])
		switch {
		case err != nil:
			c.statusErr = c.streamErr(err)
			if code, ok := codeOf(err); ok && code.Refusal() {
				c.st.peerRefused.Add(1)
				if c.refused != nil {
					c.refused(code)
				}
			}
		case b[0] != statusAccepted:
			c.statusErr = fmt.Errorf("%w: status %d", ErrBadHeader, b[0])
			c.abort(CodeBadHeader)
		}
	})
	return c.statusErr
}

// Accepted waits until the peer's service has taken the stream, and
// returns its refusal if it did not. It returns at once for a stream this
// node accepted.
func (c *Conn) Accepted(ctx context.Context) error {
	if !c.outgoing {
		return nil
	}
	stop := context.AfterFunc(ctx, func() { c.str.SetReadDeadline(time.Now()) })
	err := c.awaitStatus()
	if !stop() {
		c.str.SetReadDeadline(time.Time{})
		if err != nil && ctx.Err() != nil {
			return fmt.Errorf("service: waiting for %s: %w", c.remote, context.Cause(ctx))
		}
	}
	return err
}

// Read implements net.Conn.
func (c *Conn) Read(p []byte) (int, error) {
	if c.outgoing {
		if err := c.awaitStatus(); err != nil {
			return 0, err
		}
	}
	n, err := c.str.Read(p)
	if n > 0 {
		c.st.bytesIn.Add(uint64(n))
		c.touch()
	}
	if err != nil && !errors.Is(err, io.EOF) {
		err = c.streamErr(err)
	}
	return n, err
}

// Write implements net.Conn. On a stream this node dialled, bytes may be
// written before the service has answered: they go out with the header.
func (c *Conn) Write(p []byte) (int, error) {
	n, err := c.str.Write(p)
	if n > 0 {
		c.st.bytesOut.Add(uint64(n))
		c.touch()
	}
	if err != nil {
		err = c.streamErr(err)
	}
	return n, err
}

// streamErr turns a reset that carries one of this package's codes into a
// *StreamError.
func (c *Conn) streamErr(err error) error {
	if code, ok := codeOf(err); ok {
		return &StreamError{Service: c.remote.Service, Code: code}
	}
	return err
}

// CloseWrite ends the sending direction (the peer reads EOF).
func (c *Conn) CloseWrite() error { return c.str.Close() }

// Close ends both directions: what was written is still delivered, what
// the peer still sends is refused. Close is idempotent.
func (c *Conn) Close() error {
	c.str.CancelRead(quic.StreamErrorCode(CodeClosed))
	err := c.str.Close()
	c.done()
	return err
}

// Reset ends both directions at once with CodeReset: bytes not yet
// delivered are dropped, as with a TCP RST.
func (c *Conn) Reset() { c.abort(CodeReset) }

// Abort ends both directions at once with code (a QUIC stream error code
// of the caller's protocol, or one of this package's Codes).
func (c *Conn) Abort(code quic.StreamErrorCode) {
	c.str.CancelWrite(code)
	c.str.CancelRead(code)
	c.done()
}

func (c *Conn) abort(code Code) { c.Abort(quic.StreamErrorCode(code)) }

// done releases what the stream holds, once.
func (c *Conn) done() {
	c.closeOnce.Do(func() {
		if c.idleTimer != nil {
			c.idleTimer.Stop()
		}
		c.st.active.Add(-1)
		if c.release != nil {
			c.release()
		}
	})
}

// SetDeadline implements net.Conn.
func (c *Conn) SetDeadline(t time.Time) error { return c.str.SetDeadline(t) }

// SetReadDeadline implements net.Conn.
func (c *Conn) SetReadDeadline(t time.Time) error { return c.str.SetReadDeadline(t) }

// SetWriteDeadline implements net.Conn.
func (c *Conn) SetWriteDeadline(t time.Time) error { return c.str.SetWriteDeadline(t) }

// StreamError is a stream that the peer refused, or ended with a code of
// this package. errors.Is(err, ErrRefused) is true for refusals.
type StreamError struct {
	Service string
	Code    Code
}

func (e *StreamError) Error() string {
	if e.Code.Refusal() {
		return fmt.Sprintf("service %q refused by peer: %s", e.Service, e.Code)
	}
	return fmt.Sprintf("service %q: stream ended by peer: %s", e.Service, e.Code)
}

// Is makes errors.Is(err, ErrRefused) true for every refusal.
func (e *StreamError) Is(target error) bool { return target == ErrRefused && e.Code.Refusal() }

// ErrRefused matches every *StreamError that refused a stream.
var ErrRefused = errors.New("service: stream refused")
