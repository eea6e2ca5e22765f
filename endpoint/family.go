package endpoint

import (
	"errors"
	"net"
	"net/netip"
)

// Family is the address family of a for a socket: "6" for an IPv6
// address, "4" for an IPv4 one (an IPv4-mapped IPv6 address included).
// Append it to "udp" or "tcp".
func Family(a netip.Addr) string {
	if a.Is6() && !a.Is4In6() {
		return "6"
	}
	return "4"
}

// ListenUDP opens a UDP socket of ap's family on ap (port 0: any).
func ListenUDP(ap netip.AddrPort) (*net.UDPConn, error) {
	return net.ListenUDP("udp"+Family(ap.Addr()), net.UDPAddrFromAddrPort(ap))
}

// ListenDualStack opens one UDP socket that serves both families on port
// (0: any): an IPv6 socket on the unspecified address with IPV6_V6ONLY
// off, so IPv4 peers reach it at the host's IPv4 addresses (as
// IPv4-mapped IPv6 addresses, which the endpoint unmaps). A host without
// IPv6 cannot open one.
func ListenDualStack(port uint16) (*net.UDPConn, error) {
	// Network "udp" on the unspecified IPv6 address is dual-stack in Go
	// (it clears IPV6_V6ONLY whatever net.ipv6.bindv6only says).
	c, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv6unspecified, Port: int(port)})
	if err != nil {
		return nil, err
	}
	if !dualStack(c) {
		c.Close()
		return nil, ErrNotDualStack
	}
	return c, nil
}

// ErrNotDualStack is returned by ListenDualStack when the socket it opened
// serves one family only.
var ErrNotDualStack = errors.New("endpoint: the socket is not dual-stack (IPV6_V6ONLY is on)")

// dualStack reports whether c is an IPv6 socket on the unspecified
// address that also serves IPv4 (IPV6_V6ONLY off).
func dualStack(c net.PacketConn) bool {
	uc, ok := c.(*net.UDPConn)
	if !ok {
		return false
	}
	la, ok := uc.LocalAddr().(*net.UDPAddr)
	if !ok || la.IP.To4() != nil || !la.IP.IsUnspecified() {
		return false
	}
	raw, err := uc.SyscallConn()
	if err != nil {
		return false
	}
	only := 1
	if cerr := raw.Control(func(fd uintptr) { only, err = v6only(fd) }); cerr != nil || err != nil {
		return false
	}
	return only == 0
}

// DualStack reports whether the endpoint's socket serves both families
// (see ListenDualStack).
func (e *Endpoint) DualStack() bool { return e.dual }

// Serves reports whether the socket can exchange packets with a: a
// dual-stack socket with both families, any other with its own.
func (e *Endpoint) Serves(a netip.Addr) bool {
	return e.dual || Family(a) == Family(e.local.Addr())
}
