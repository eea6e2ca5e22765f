package bootstrap

import (
	"crypto/tls"
	"io"
	"net"
	"net/netip"
	"sync"
	"syscall"
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

// RTT reads the kernel's RTT of the TCP connection (TCP_INFO): its
// minimum (tcpi_min_rtt, a windowed minimum), not its smoothed RTT. The
// control connection's messages are small and mostly one way, so the
// other side may delay its ACKs (up to 40 ms on Linux), which a smoothed
// RTT carries and the minimum does not; an early introduction's start
// delays and warm-relay waits are computed from it. A kernel without the
// field (0) gives the smoothed RTT. The socket is found under the
// listener's wrappers (NetConn): the RTT of every peer accepted over TCP
// was 0 before, and a requester dialled its warm relay at once, before
// the peer's permission reached the relay (the testbed's warm-relay
// scenario: 2.5 round trips in 5 of 10 runs, 1.5 otherwise).
func (t *tcpCtl) RTT() time.Duration {
	raw := t.raw
	for i := 0; i < 4; i++ { // a listener's wrappers (netguard), a few at most
		u, ok := raw.(interface{ NetConn() net.Conn })
		if !ok {
			break
		}
		raw = u.NetConn()
	}
	tc, ok := raw.(syscall.Conn)
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
			if info.Min_rtt > 0 {
				rtt = time.Duration(info.Min_rtt) * time.Microsecond
			}
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
