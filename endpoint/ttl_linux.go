package endpoint

import (
	"encoding/binary"
	"net/netip"
	"unsafe"

	"golang.org/x/sys/unix"
)

// ttlControl builds the control message that sets the TTL (IPv4) or hop
// limit (IPv6) of one packet.
func ttlControl(to netip.AddrPort, ttl int) []byte {
	level, typ := unix.IPPROTO_IP, unix.IP_TTL
	if to.Addr().Is6() && !to.Addr().Is4In6() {
		level, typ = unix.IPPROTO_IPV6, unix.IPV6_HOPLIMIT
	}
	oob := make([]byte, unix.CmsgSpace(4))
	h := (*unix.Cmsghdr)(unsafe.Pointer(&oob[0]))
	h.Level = int32(level)
	h.Type = int32(typ)
	h.SetLen(unix.CmsgLen(4))
	binary.NativeEndian.PutUint32(oob[unix.CmsgLen(0):], uint32(ttl))
	return oob
}

// gsoSegment returns the UDP_SEGMENT size (GSO: one write of several
// datagrams of that size) in a control message buffer, or 0.
func gsoSegment(oob []byte) int {
	msgs, err := unix.ParseSocketControlMessage(oob)
	if err != nil {
		return 0
	}
	for _, m := range msgs {
		if m.Header.Level == unix.SOL_UDP && m.Header.Type == unix.UDP_SEGMENT && len(m.Data) >= 2 {
			return int(binary.NativeEndian.Uint16(m.Data[:2]))
		}
	}
	return 0
}
