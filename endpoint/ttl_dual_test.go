package endpoint_test

import (
	"encoding/binary"
	"net"
	"net/netip"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/antnode/antnode/internal/testkit"
)

// TestWriteTTLFromDualStack: a dual-stack socket (AF_INET6, IPV6_V6ONLY
// off) sends TTL-limited packets to an IPv4 address (the birthday
// search's priming towards an IPv4 peer) and to an IPv6 one with the TTL
// or hop limit asked for, as the receiver reads it from the packet
// (IP_RECVTTL, IPV6_RECVHOPLIMIT), on loopback.
func TestWriteTTLFromDualStack(t *testing.T) {
	ep := testkit.DualStackEndpoint(t)
	for _, tc := range []struct {
		name, network, addr string
		level, opt, typ     int
	}{
		{"IPv4", "udp4", "127.0.0.1:0", unix.IPPROTO_IP, unix.IP_RECVTTL, unix.IP_TTL},
		{"IPv6", "udp6", "[::1]:0", unix.IPPROTO_IPV6, unix.IPV6_RECVHOPLIMIT, unix.IPV6_HOPLIMIT},
	} {
		t.Run(tc.name, func(t *testing.T) {
			sink, err := net.ListenUDP(tc.network, net.UDPAddrFromAddrPort(netip.MustParseAddrPort(tc.addr)))
			if err != nil {
				t.Fatal(err)
			}
			defer sink.Close()
			rc, err := sink.SyscallConn()
			if err != nil {
				t.Fatal(err)
			}
			var serr error
			rc.Control(func(fd uintptr) { serr = unix.SetsockoptInt(int(fd), tc.level, tc.opt, 1) })
			if serr != nil {
				t.Fatal(serr)
			}
			to := sink.LocalAddr().(*net.UDPAddr).AddrPort()
			if err := ep.WriteTTL([]byte("primed"), to, 7); err != nil {
				t.Fatal(err)
			}
			buf, oob := make([]byte, 64), make([]byte, 128)
			sink.SetReadDeadline(time.Now().Add(5 * time.Second))
			_, oobn, _, _, err := sink.ReadMsgUDPAddrPort(buf, oob)
			if err != nil {
				t.Fatal(err)
			}
			msgs, err := unix.ParseSocketControlMessage(oob[:oobn])
			if err != nil {
				t.Fatal(err)
			}
			got := -1
			for _, m := range msgs {
				if int(m.Header.Level) == tc.level && int(m.Header.Type) == tc.typ && len(m.Data) >= 4 {
					got = int(binary.NativeEndian.Uint32(m.Data[:4]))
				}
			}
			if got != 7 {
				t.Fatalf("the packet arrived with TTL %d, want 7", got)
			}
		})
	}
}
