package main

import (
	"context"
	"errors"
	"log/slog"
	"net/netip"
	"slices"
	"testing"
	"time"

	"github.com/antnode/antnode/internal/testkit"
	"github.com/antnode/antnode/traversal"
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

// TestNAT64For: an IPv6 node with IPv4 bootstraps asks the DNS64 for its
// NAT64 prefix (a real DNS server on loopback); without one it is told
// the families differ; a node whose bootstraps share its family asks
// nothing.
func TestNAT64For(t *testing.T) {
	v4 := []traversal.Bootstrap{{Addr: netip.MustParseAddrPort("203.0.113.1:4433")}}
	v6 := []traversal.Bootstrap{{Addr: netip.MustParseAddrPort("[2001:db8::1]:4433")}}
	log := slog.New(slog.DiscardHandler)
	for _, tc := range []struct {
		name     string
		listen   string
		bs       []traversal.Bootstrap
		dns      string
		want     string // the prefix; empty: none
		mismatch bool
	}{
		{"IPv6 node, IPv4 bootstrap, DNS64", "[::]:0", v4, testkit.DNS64(t, "2001:db8:64::c000:aa"), "2001:db8:64::/96", false},
		{"IPv6 node, IPv4 bootstrap, no DNS64", "[::]:0", v4, testkit.DNS64(t), "", true},
		{"IPv6 node, IPv6 bootstrap: nothing asked", "[::]:0", v6, "127.0.0.1:1", "", false},
		{"IPv4 node, IPv4 bootstrap: nothing asked", "0.0.0.0:0", v4, "127.0.0.1:1", "", false},
		{"IPv4 node, IPv6 bootstrap", "0.0.0.0:0", v6, "127.0.0.1:1", "", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
			defer cancel()
			p, err := nat64For(ctx, tc.listen, tc.bs, tc.dns, log)
			if errors.Is(err, ErrFamilyMismatch) != tc.mismatch || (err != nil && !tc.mismatch) {
				t.Fatalf("err = %v, want mismatch %v", err, tc.mismatch)
			}
			got := ""
			if p.IsValid() {
				got = p.String()
			}
			if got != tc.want {
				t.Fatalf("prefix %q, want %q", got, tc.want)
			}
			if p.IsValid() {
				if got := traversal.MapBootstraps(p, tc.bs)[0].Addr.String(); got != "[2001:db8:64::cb00:7101]:4433" {
					t.Fatalf("bootstrap mapped to %s", got)
				}
			}
		})
	}
}
