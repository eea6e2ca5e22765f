package endpoint

import (
	"errors"
	"maps"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"syscall"
)

// Rerouting QUIC packets around a dead path.
//
// quic-go moves a connection to a new path only after probing it, and it
// sends no probe while the old path holds the congestion window: a path
// that silently drops everything in the middle of a transfer cannot be
// left that way. The endpoint can instead send the QUIC packets for one
// remote address another way (through a relay allocation) while QUIC
// goes on believing in its path; the answers come back through the
// caller, which hands them to the socket. The socket stays a UDP socket
// to quic-go (batched reads, GSO and ECN intact); only the write side is
// wrapped, and it costs one atomic load per packet while no route is set.

// ErrNoRouting is returned by Reroute on an endpoint without a router
// (never, for endpoints made by New).
var ErrNoRouting = errors.New("endpoint: no router on this socket")

// A Route is one rerouting of a destination's packets, as Reroute set
// it: its owner removes it with Unroute, which leaves a route set since
// by someone else in place.
type Route struct{ send func([]byte) error }

// router holds the routes.
type router struct {
	routes atomic.Pointer[map[netip.AddrPort]*Route]
	kept   atomic.Pointer[map[netip.AddrPort]*remembered] // Remember's
	mu     sync.Mutex                                     // serialises route changes
	lost   atomic.Uint64                                  // QUIC packets whose send failed transiently
}

// transientSend reports whether a failed send is the network under the
// socket changing: no route for a moment, an interface down, the source
// address just removed (EADDRNOTAVAIL, or EINVAL when quic-go's
// packet-info control message still names it as the source: a dual-stack
// host that lost its IPv6 address), a local firewall dropping the packet. To QUIC
// that is a lost packet; quic-go closes a connection whose socket write
// fails with anything but EMSGSIZE, which would turn every address
// change into a dead connection before migration could act.
func transientSend(err error) bool {
	for _, e := range []syscall.Errno{syscall.ENETUNREACH, syscall.EHOSTUNREACH, syscall.ENETDOWN,
		syscall.EADDRNOTAVAIL, syscall.EINVAL, syscall.EPERM, syscall.ENOBUFS} {
		if errors.Is(err, e) {
			return true
		}
	}
	return false
}

// sent maps the error of a direct QUIC send: transient ones are counted
// and become a loss.
func (c *router) sent(b []byte, err error) error {
	if err != nil && isQUIC(b) && transientSend(err) {
		c.lost.Add(1)
		return nil
	}
	return err
}

// routedConn is a UDP socket as quic-go sees it: still OOB-capable.
type routedConn struct {
	*net.UDPConn
	router
}

// routedPacketConn is any other socket (a relayed one, an in-process
// model) with the same routes.
type routedPacketConn struct {
	net.PacketConn
	router
}

// SetReadBuffer and SetWriteBuffer let quic-go size the socket's buffers
// when the socket can (a relayed conn over a UDP socket that forwards
// them); a socket that cannot (an in-process one, a TURN conn over TCP)
// has no kernel buffer to size, and saying so would only make quic-go
// print a warning on the standard logger, outside the node's logs.
func (c *routedPacketConn) SetReadBuffer(n int) error {
	if b, ok := c.PacketConn.(interface{ SetReadBuffer(int) error }); ok {
		return b.SetReadBuffer(n)
	}
	return nil
}

// SetWriteBuffer: see SetReadBuffer.
func (c *routedPacketConn) SetWriteBuffer(n int) error {
	if b, ok := c.PacketConn.(interface{ SetWriteBuffer(int) error }); ok {
		return b.SetWriteBuffer(n)
	}
	return nil
}

func (c *routedPacketConn) WriteTo(b []byte, addr net.Addr) (int, error) {
	if send := c.route(addr, b); send != nil {
		if err := send(b); err != nil {
			return 0, err
		}
		return len(b), nil
	}
	c.keep(addr, b, nil)
	return c.PacketConn.WriteTo(b, addr)
}

// routerOf returns the endpoint's router.
func (e *Endpoint) routerOf() *router {
	switch c := e.tr.Conn.(type) {
	case *routedConn:
		return &c.router
	case *routedPacketConn:
		return &c.router
	}
	return nil
}

// isQUIC reports whether b is a QUIC packet (the fixed bit; STUN starts
// with two zero bits).
func isQUIC(b []byte) bool { return len(b) > 0 && b[0]&0x40 != 0 }

func (c *router) route(addr net.Addr, b []byte) func([]byte) error {
	m := c.routes.Load()
	if m == nil || !isQUIC(b) {
		return nil
	}
	ua, ok := addr.(*net.UDPAddr)
	if !ok {
		return nil
	}
	ap := ua.AddrPort()
	if r := (*m)[netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())]; r != nil {
		return r.send
	}
	return nil
}

func (c *routedConn) WriteTo(b []byte, addr net.Addr) (int, error) {
	if send := c.route(addr, b); send != nil {
		if err := send(b); err != nil {
			return 0, err
		}
		return len(b), nil
	}
	c.keep(addr, b, nil)
	n, err := c.UDPConn.WriteTo(b, addr)
	if err = c.sent(b, err); err == nil {
		n = len(b)
	}
	return n, err
}

func (c *routedConn) WriteMsgUDP(b, oob []byte, addr *net.UDPAddr) (int, int, error) {
	if send := c.route(addr, b); send != nil {
		seg := gsoSegment(oob)
		if seg <= 0 || seg >= len(b) {
			seg = len(b)
		}
		for off := 0; off < len(b); off += seg {
			if err := send(b[off:min(off+seg, len(b))]); err != nil {
				return 0, 0, err
			}
		}
		return len(b), len(oob), nil
	}
	c.keep(addr, b, oob)
	n, oobn, err := c.UDPConn.WriteMsgUDP(b, oob, addr)
	if err = c.sent(b, err); err == nil {
		n, oobn = len(b), len(oob)
	}
	return n, oobn, err
}

// Reroute sends the QUIC packets that the socket would send to dst through
// send instead (STUN and other packets still go directly), in place of
// any route dst had, and returns the new route. The answers
// must be handed back with Inject.
func (e *Endpoint) Reroute(dst netip.AddrPort, send func([]byte) error) (*Route, error) {
	r := &Route{send: send}
	if err := e.SetRoute(dst, r); err != nil {
		return nil, err
	}
	return r, nil
}

// SetRoute makes r, a route of Reroute's that another replaced, dst's
// route again.
func (e *Endpoint) SetRoute(dst netip.AddrPort, r *Route) error {
	rc := e.routerOf()
	if rc == nil {
		return ErrNoRouting
	}
	rc.update(func(m map[netip.AddrPort]*Route) { m[unmapped(dst)] = r })
	return nil
}

// Unroute sends dst's packets directly again if its route is r (nil: any
// route), and reports whether it removed one: a route that replaced r
// since stays.
func (e *Endpoint) Unroute(dst netip.AddrPort, r *Route) bool {
	rc := e.routerOf()
	if rc == nil {
		return false
	}
	dst = unmapped(dst)
	removed := false
	rc.update(func(m map[netip.AddrPort]*Route) {
		if cur, ok := m[dst]; ok && (r == nil || cur == r) {
			delete(m, dst)
			removed = true
		}
	})
	return removed
}

// update replaces the routes with a copy that change edited.
func (c *router) update(change func(map[netip.AddrPort]*Route)) {
	c.mu.Lock()
	defer c.mu.Unlock()
	m := map[netip.AddrPort]*Route{}
	if old := c.routes.Load(); old != nil {
		maps.Copy(m, *old)
	}
	change(m)
	if len(m) == 0 {
		c.routes.Store(nil)
		return
	}
	c.routes.Store(&m)
}

func unmapped(a netip.AddrPort) netip.AddrPort { return netip.AddrPortFrom(a.Addr().Unmap(), a.Port()) }

// Route returns dst's route (nil: its QUIC packets go directly).
func (e *Endpoint) Route(dst netip.AddrPort) *Route {
	rc := e.routerOf()
	if rc == nil {
		return nil
	}
	m := rc.routes.Load()
	if m == nil {
		return nil
	}
	return (*m)[unmapped(dst)]
}

// Rerouted reports whether dst's QUIC packets are rerouted.
func (e *Endpoint) Rerouted(dst netip.AddrPort) bool { return e.Route(dst) != nil }

// Injector hands packets that arrived another way (rerouted answers) to
// the socket, as datagrams from a local socket of its own: QUIC finds the
// connection by its connection ID, whatever the source.
type Injector struct {
	conn *net.UDPConn
	to   *net.UDPAddr
}

// NewInjector returns an Injector for the endpoint; Close it when done.
func (e *Endpoint) NewInjector() (*Injector, error) {
	to := e.local
	if to.Addr().IsUnspecified() {
		lo := netip.MustParseAddr("127.0.0.1")
		if Family(to.Addr()) == "6" {
			lo = netip.IPv6Loopback()
		}
		to = netip.AddrPortFrom(lo, to.Port())
	}
	c, err := net.ListenUDP("udp"+Family(to.Addr()), nil)
	if err != nil {
		return nil, err
	}
	return &Injector{conn: c, to: net.UDPAddrFromAddrPort(to)}, nil
}

// Inject delivers b to the endpoint's socket.
func (i *Injector) Inject(b []byte) error {
	_, err := i.conn.WriteTo(b, i.to)
	return err
}

// Close closes the injector's socket.
func (i *Injector) Close() error { return i.conn.Close() }
