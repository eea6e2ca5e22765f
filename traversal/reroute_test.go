package traversal

import (
	"net/netip"
	"testing"
)

func TestAtPeer(t *testing.T) {
	old := netip.MustParseAddrPort("198.51.100.45:4000")
	moved := netip.MustParseAddrPort("198.51.100.45:43454")
	later := netip.MustParseAddrPort("198.51.100.45:50000")
	for _, tc := range []struct {
		name    string
		sources []netip.AddrPort
		want    netip.AddrPort
		moved   bool
	}{
		{"no check yet", nil, old, false},
		{"checks from where QUIC sends", []netip.AddrPort{old}, old, false},
		{"old address among the sources", []netip.AddrPort{moved, old}, old, false},
		{"the peer's NAT mapped it anew", []netip.AddrPort{moved}, moved, true},
		{"the latest mapping wins", []netip.AddrPort{moved, later}, later, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, ok := atPeer(tc.sources, old)
			if got != tc.want || ok != tc.moved {
				t.Fatalf("atPeer(%v) = %v, %v; want %v, %v", tc.sources, got, ok, tc.want, tc.moved)
			}
		})
	}
}
