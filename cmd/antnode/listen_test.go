package main

import (
	"errors"
	"net/netip"
	"slices"
	"testing"
)

func TestSplitListen(t *testing.T) {
	for _, tc := range []struct {
		in      string
		want    []string
		wantErr bool
	}{
		{"0.0.0.0:4433", []string{"0.0.0.0:4433"}, false},
		{"0.0.0.0:4433,[::]:4433", []string{"0.0.0.0:4433", "[::]:4433"}, false},
		{"[::]:4433, 0.0.0.0:4433", []string{"[::]:4433", "0.0.0.0:4433"}, false},
		{"0.0.0.0:1,127.0.0.1:2", nil, true},
		{"0.0.0.0:1,[::]:2,[::1]:3", nil, true},
		{"nonsense", nil, true},
		{"0.0.0.0:1,", nil, true},
	} {
		t.Run(tc.in, func(t *testing.T) {
			got, err := splitListen(tc.in)
			if (err != nil) != tc.wantErr || !slices.Equal(got, tc.want) {
				t.Fatalf("splitListen = %v, %v; want %v (error %v)", got, err, tc.want, tc.wantErr)
			}
		})
	}
}

// TestProbeAddrPerFamily: --probe-addr takes one address per --listen
// family, and each family's socket gets its own.
func TestProbeAddrPerFamily(t *testing.T) {
	dual := nodeOptions{listen: "0.0.0.0:4433", alsoListen: []string{"[::]:4433"}}
	v4 := nodeOptions{listen: "0.0.0.0:4433"}
	for _, tc := range []struct {
		name     string
		o        nodeOptions
		probe    string
		mismatch bool // ErrFamilyMismatch
		bad      bool // another error
		want4    string
		want6    string
	}{
		{"none", dual, "", false, false, "", ""},
		{"one IPv4", v4, "203.0.113.3", false, false, "203.0.113.3", ""},
		{"one per family", dual, "203.0.113.3,2001:db8::3", false, false, "203.0.113.3", "2001:db8::3"},
		{"IPv6 only on a dual bootstrap", dual, "2001:db8::3", false, false, "", "2001:db8::3"},
		{"IPv6 on an IPv4 bootstrap", v4, "2001:db8::3", true, false, "", ""},
		{"two IPv4", dual, "203.0.113.3,203.0.113.4", false, true, "", ""},
		{"not an address", dual, "probe", false, true, "", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			o := tc.o
			o.probeAddr = tc.probe
			err := o.checkProbeAddr()
			if errors.Is(err, ErrFamilyMismatch) != tc.mismatch || (err != nil && !tc.mismatch) != tc.bad {
				t.Fatalf("err = %v, want mismatch %v, other %v", err, tc.mismatch, tc.bad)
			}
			if err != nil {
				return
			}
			for _, c := range []struct{ local, want string }{{"0.0.0.0:4433", tc.want4}, {"[::]:4433", tc.want6}} {
				got := o.probeAddrFor(netip.MustParseAddrPort(c.local))
				if (c.want == "" && got.IsValid()) || (c.want != "" && got.String() != c.want) {
					t.Errorf("probe address for %s = %v, want %q", c.local, got, c.want)
				}
			}
		})
	}
}
