package bootstrap

import (
	"crypto/tls"
	"io"
	"net"
	"net/netip"
	"sync"
	"time"

	"github.com/quic-go/quic-go"
	"golang.org/x/sys/unix"
)

// Control connections run over QUIC (the normal case: the bootstrap then
// observes the peer's UDP mapping) or over TLS on TCP (for peers whose UDP
// is blocked; they can still get relay credentials and be introduced).
// Both carry the same control stream and are mutually authenticated the
// same way.

// Transports of control connections.
const (
	TransportQUIC = "quic"
	TransportTCP  = "tcp"
)

// ctlConn is one control connection.
type ctlConn interface {
	RemoteAddr() netip.AddrPort
	// Close ends the connection with an application code and reason.
	Close(code quic.ApplicationErrorCode, reason string)
	// Done is closed when the connection has ended.
	Done() <-chan struct{}
	// RTT is the transport's current round-trip estimate.
	RTT() time.Duration
	Transport() string
}

// streamRW is the control stream: a QUIC stream or the TLS connection.
type streamRW interface {
	io.ReadWriter
	SetReadDeadline(time.Time) error
	SetWriteDeadline(time.Time) error
}

func unmapAddrPort(a net.Addr) netip.AddrPort {
	ap, err := netip.ParseAddrPort(a.String())
	if err != nil {
		return netip.AddrPort{}
	}
	return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
}

type quicCtl struct{ c *quic.Conn }

func (q quicCtl) RemoteAddr() netip.AddrPort { return unmapAddrPort(q.c.RemoteAddr()) }
func (q quicCtl) Close(code quic.ApplicationErrorCode, reason string) {
	q.c.CloseWithError(code, reason)
}
func (q quicCtl) Done() <-chan struct{} { return q.c.Context().Done() }
func (q quicCtl) RTT() time.Duration    { return q.c.ConnectionStats().SmoothedRTT }
func (q quicCtl) Transport() string     { return TransportQUIC }

// tcpCtl is a control connection over TLS on TCP. It ends when Close is
// called or when the stream fails (its reader or writer calls fail).
type tcpCtl struct {
	c    *tls.Conn
	raw  net.Conn
	done chan struct{}
	once sync.Once
}

func newTCPCtl(c *tls.Conn, raw net.Conn) *tcpCtl {
	return &tcpCtl{c: c, raw: raw, done: make(chan struct{})}
}

func (t *tcpCtl) RemoteAddr() netip.AddrPort { return unmapAddrPort(t.c.RemoteAddr()) }
func (t *tcpCtl) Transport() string          { return TransportTCP }
func (t *tcpCtl) Done() <-chan struct{}      { return t.done }

// Close sends nothing more and closes: TLS on TCP carries no close code
// (the caller wrote any Error frame, which does).
func (t *tcpCtl) Close(quic.ApplicationErrorCode, string) { t.fail() }

func (t *tcpCtl) fail() {
	t.once.Do(func() {
		t.c.Close()
		close(t.done)
	})
}

// RTT reads the kernel's smoothed RTT of the TCP connection (TCP_INFO).
func (t *tcpCtl) RTT() time.Duration {
	tc, ok := t.raw.(*net.TCPConn)
	if !ok {
		return 0
	}
	sc, err := tc.SyscallConn()
	if err != nil {
		return 0
	}
	var rtt time.Duration
	sc.Control(func(fd uintptr) {
		if info, err := unix.GetsockoptTCPInfo(int(fd), unix.IPPROTO_TCP, unix.TCP_INFO); err == nil {
			rtt = time.Duration(info.Rtt) * time.Microsecond
		}
	})
	return rtt
}

// failingRW wraps the TLS connection so that an I/O error ends the
// control connection.
type failingRW struct{ t *tcpCtl }

func (f failingRW) Read(b []byte) (int, error) {
	n, err := f.t.c.Read(b)
	if err != nil {
		f.t.fail()
	}
	return n, err
}

func (f failingRW) Write(b []byte) (int, error) {
	n, err := f.t.c.Write(b)
	if err != nil {
		f.t.fail()
	}
	return n, err
}

func (f failingRW) SetReadDeadline(d time.Time) error  { return f.t.c.SetReadDeadline(d) }
func (f failingRW) SetWriteDeadline(d time.Time) error { return f.t.c.SetWriteDeadline(d) }
