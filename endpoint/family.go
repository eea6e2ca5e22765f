package endpoint

import (
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
