package relay

import (
	"net"
	"net/netip"

	"github.com/antnode/antnode/nat64"
)

// nat64Conn is an allocation's relayed socket for a node behind NAT64
// (ClientConfig.NAT64): the node knows IPv4 peers by their synthesised
// IPv6 addresses, but the relay sends to and receives from the IPv4
// addresses themselves. It writes to the IPv4 address embedded under the
// prefix, and reports an IPv4 source at its synthesised address, so
// that the node sees one address per peer whichever way it reaches it.
type nat64Conn struct {
	net.PacketConn
	p nat64.Prefix
}

func (c nat64Conn) WriteTo(b []byte, addr net.Addr) (int, error) {
	if ua, ok := addr.(*net.UDPAddr); ok {
		addr = net.UDPAddrFromAddrPort(unmap64(c.p, ua.AddrPort()))
	}
	return c.PacketConn.WriteTo(b, addr)
}

func (c nat64Conn) ReadFrom(b []byte) (int, net.Addr, error) {
	n, from, err := c.PacketConn.ReadFrom(b)
	if ua, ok := from.(*net.UDPAddr); ok {
		from = net.UDPAddrFromAddrPort(c.p.Map(ua.AddrPort()))
	}
	return n, from, err
}

// unmap64 is the IPv4 address ap embeds under p, or ap when it embeds
// none.
func unmap64(p nat64.Prefix, ap netip.AddrPort) netip.AddrPort {
	if !p.IsValid() {
		return ap
	}
	v4, err := p.Extract(ap.Addr())
	if err != nil {
		return ap
	}
	return netip.AddrPortFrom(v4, ap.Port())
}
