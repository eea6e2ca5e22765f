package bootstrap

import (
	"net/netip"
	"reflect"
	"testing"

	"github.com/antnode/antnode/bootstrap/wire"
	"github.com/antnode/antnode/nat64"
)

// TestMapAddrs: a client behind NAT64 maps every address a bootstrap
// tells of other hosts into its prefix, and leaves its own observed
// address as the bootstrap saw it.
func TestMapAddrs(t *testing.T) {
	p, err := nat64.ParsePrefix("2001:db8:64::/96")
	if err != nil {
		t.Fatal(err)
	}
	v4 := netip.MustParseAddrPort("198.51.100.5:4000")
	v6 := netip.MustParseAddrPort("[2001:db8:64::c633:6405]:4000")
	own := netip.MustParseAddrPort("198.51.100.9:5000")
	cand := func(a netip.AddrPort) []wire.Candidate {
		return []wire.Candidate{{Kind: wire.KindServerReflexive, Addr: a, Origin: wire.OriginObserved}}
	}
	tests := []struct {
		name    string
		in, out wire.Message
	}{
		{"registered: alternate STUN, not the observed address",
			&wire.Registered{Observed: own, AltSTUN: []netip.AddrPort{v4}},
			&wire.Registered{Observed: own, AltSTUN: []netip.AddrPort{v6}}},
		{"offer", &wire.ConnectOffer{Candidates: cand(v4)}, &wire.ConnectOffer{Candidates: cand(v6)}},
		{"result", &wire.ConnectResult{Candidates: cand(v4)}, &wire.ConnectResult{Candidates: cand(v6)}},
		{"early", &wire.ConnectEarly{Candidates: cand(v4)}, &wire.ConnectEarly{Candidates: cand(v6)}},
		{"relay grant, an invalid TCP address stays invalid", &wire.RelayGrant{UDP: v4}, &wire.RelayGrant{UDP: v6}},
		{"relayed address", &wire.RelayAddress{Addr: v4}, &wire.RelayAddress{Addr: v6}},
		{"observed address change: untouched", &wire.ObservedAddress{Addr: own}, &wire.ObservedAddress{Addr: own}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			mapAddrs(tc.in, p.Map)
			if !reflect.DeepEqual(tc.in, tc.out) {
				t.Fatalf("got %+v, want %+v", tc.in, tc.out)
			}
		})
	}
	// Without a function nothing changes.
	m := &wire.RelayAddress{Addr: v4}
	mapAddrs(m, nil)
	if m.Addr != v4 {
		t.Fatalf("nil function changed %s to %s", v4, m.Addr)
	}
}
