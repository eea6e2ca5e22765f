package traversal

import (
	"errors"
	"fmt"
	"net/netip"
	"testing"

	"github.com/antnode/antnode/bootstrap"
	"github.com/antnode/antnode/bootstrap/wire"
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

func TestRerouteAgain(t *testing.T) {
	expired := fmt.Errorf("traversal: fallback: introduction: %w", &bootstrap.RequestError{Code: wire.CodeExpired})
	slow := fmt.Errorf("traversal: fallback: %w", errPermitSlow)
	for _, tc := range []struct {
		name           string
		try            int
		err            error
		again, suspect bool
	}{
		{"the peer's registration was broken too", 0, expired, true, false},
		{"expired again", 1, expired, false, false},
		{"a permission the relay did not answer", 0, slow, true, true},
		{"a slow permission again", 1, slow, false, true},
		{"nothing came back", 0, errors.New("traversal: fallback: nothing came back through the relay"), false, true},
		{"the peer refused", 0, &bootstrap.RequestError{Code: wire.CodeRefused}, false, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			again, suspect := rerouteAgain(tc.try, tc.err)
			if again != tc.again || suspect != tc.suspect {
				t.Fatalf("rerouteAgain(%d, %v) = %v, %v; want %v, %v", tc.try, tc.err, again, suspect, tc.again, tc.suspect)
			}
		})
	}
}
