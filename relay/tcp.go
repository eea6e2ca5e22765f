package relay

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/antnode/antnode/event"
	"github.com/antnode/antnode/internal/netguard"
)

// TURN over TCP (RFC 6062's control connection): pion's server reads each
// accepted connection until it fails and buffers a frame until it is
// complete. The relay wraps the connections so that none is held longer
// than its use: a deadline before the first authenticated request, an idle
// timeout after it, a deadline on each frame from its first byte, and no
// frame pion would drop anyway (larger than its inbound MTU).

// maxTURNFrame is the largest TURN frame (STUN message or ChannelData,
// with its header) that pion's server handles: it drops a frame of its
// inbound MTU (1600 bytes) or more. A connection announcing a larger one
// is closed at once instead of buffering up to 64 KiB for nothing.
const maxTURNFrame = 1600 - 1

// Errors that end a TURN-over-TCP connection.
var (
	ErrFrameTooLarge = errors.New("relay: TURN frame larger than the relay handles")
	ErrBadFrame      = errors.New("relay: not a TURN frame (STUN or ChannelData)")
)

// frameTracker follows TURN framing on a byte stream (the framing of
// pion's STUNConn: a STUN message is 20 bytes of header and its length; a
// ChannelData message 4 bytes and its length padded to 4).
type frameTracker struct {
	hdr     [8]byte
	nh      int // header bytes seen of the current frame
	left    int // bytes of the current frame after its header still to come
	started time.Time
}

// midFrame reports whether a frame has begun and not ended, and when it
// began.
func (f *frameTracker) midFrame() (time.Time, bool) { return f.started, !f.started.IsZero() }

// feed advances over b, read at now.
func (f *frameTracker) feed(b []byte, now time.Time) error {
	for len(b) > 0 {
		if f.left > 0 {
			k := min(f.left, len(b))
			f.left -= k
			b = b[k:]
			if f.left == 0 {
				f.started = time.Time{}
			}
			continue
		}
		first := b[0]
		if f.nh > 0 {
			first = f.hdr[0]
		} else {
			f.started = now
		}
		need := 8 // STUN: up to the magic cookie
		if first&0xC0 == 0x40 {
			need = 4 // ChannelData: number and length
		}
		k := copy(f.hdr[f.nh:need], b)
		f.nh += k
		b = b[k:]
		if f.nh < need {
			continue
		}
		if err := f.header(); err != nil {
			return err
		}
	}
	return nil
}

// header sizes the frame whose header is complete.
func (f *frameTracker) header() error {
	var total int
	switch f.hdr[0] & 0xC0 {
	case 0x00: // STUN
		if binary.BigEndian.Uint32(f.hdr[4:8]) != 0x2112A442 {
			return ErrBadFrame
		}
		total = 20 + int(binary.BigEndian.Uint16(f.hdr[2:4]))
	case 0x40: // ChannelData
		total = 4 + (int(binary.BigEndian.Uint16(f.hdr[2:4]))+3)&^3
	default:
		return ErrBadFrame
	}
	if total > maxTURNFrame {
		return fmt.Errorf("%w: %d bytes", ErrFrameTooLarge, total)
	}
	f.left = total - f.nh
	f.nh = 0
	if f.left == 0 {
		f.started = time.Time{}
	}
	return nil
}

// turnListener hands pion guarded connections, and finds them again by
// their remote address when pion authenticates a request on one.
type turnListener struct {
	*netguard.Listener
	s *Server

	mu    sync.Mutex
	conns map[string]*turnConn // remote address -> connection
}

func (l *turnListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	tc := &turnConn{Conn: c, l: l, accepted: time.Now(), key: c.RemoteAddr().String()}
	l.mu.Lock()
	l.conns[tc.key] = tc
	l.mu.Unlock()
	return tc, nil
}

// authenticated marks the connection from src as authenticated.
func (l *turnListener) authenticated(src net.Addr) {
	l.mu.Lock()
	c := l.conns[src.String()]
	l.mu.Unlock()
	if c != nil {
		c.authed.Store(true)
	}
}

// turnConn is one TURN-over-TCP connection with its deadlines. Only pion's
// read loop calls Read.
type turnConn struct {
	net.Conn
	l        *turnListener
	key      string
	accepted time.Time
	authed   atomic.Bool
	frames   frameTracker
	once     sync.Once
}

// deadline is the read deadline at now: before authentication the
// pre-authentication deadline; within a frame, the frame's deadline; else
// the idle timeout.
func (c *turnConn) deadline(now time.Time) time.Time {
	cfg := &c.l.s.cfg
	d := now.Add(cfg.TCPIdleTimeout)
	if !c.authed.Load() {
		d = c.accepted.Add(cfg.TCPAuthTimeout)
	}
	if start, mid := c.frames.midFrame(); mid {
		d = minTime(d, start.Add(cfg.TCPFrameTimeout))
	}
	return d
}

func (c *turnConn) Read(b []byte) (int, error) {
	now := time.Now()
	if err := c.Conn.SetReadDeadline(c.deadline(now)); err != nil {
		return 0, err
	}
	n, err := c.Conn.Read(b)
	if n > 0 {
		if ferr := c.frames.feed(b[:n], time.Now()); ferr != nil {
			c.l.s.audit.Record(event.Event{Kind: event.KindSecurity, Reason: event.ReasonProtocolError,
				Addr: addrPort(c.RemoteAddr()), Detail: "relay TCP: bad frame"})
			return 0, ferr
		}
	}
	if err != nil {
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			c.l.s.audit.Record(event.Event{Kind: event.KindSecurity, Reason: event.ReasonTimeout,
				Addr: addrPort(c.RemoteAddr()), Detail: c.timeoutDetail()})
		}
	}
	return n, err
}

// timeoutDetail says which deadline ended a connection.
func (c *turnConn) timeoutDetail() string {
	switch _, mid := c.frames.midFrame(); {
	case mid:
		return "relay TCP: frame deadline"
	case !c.authed.Load():
		return "relay TCP: no authenticated request in time"
	}
	return "relay TCP: idle"
}

func (c *turnConn) Close() error {
	c.once.Do(func() {
		c.l.mu.Lock()
		if c.l.conns[c.key] == c {
			delete(c.l.conns, c.key)
		}
		c.l.mu.Unlock()
	})
	return c.Conn.Close()
}

func minTime(a, b time.Time) time.Time {
	if b.Before(a) {
		return b
	}
	return a
}

// refusedTCP records a connection the caps closed at once.
func (s *Server) refusedTCP(src netip.AddrPort, perIP bool) {
	detail := "relay TCP: connection cap"
	if perIP {
		detail = "relay TCP: per-IP connection cap"
	}
	s.audit.Record(event.Event{Kind: event.KindSecurity, Reason: event.ReasonOverloaded, Addr: src, Detail: detail})
}
