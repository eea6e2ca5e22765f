package traversal

import (
	"net/netip"
	"testing"
	"time"

	"github.com/antnode/antnode/holepunch"
	"github.com/antnode/antnode/nattype"
)

func TestBestOtherFamily(t *testing.T) {
	pair := func(addr string, pri uint32, rtt time.Duration) holepunch.Pair {
		return holepunch.Pair{Remote: netip.MustParseAddrPort(addr), Priority: pri, RTT: rtt}
	}
	v6 := pair("[2001:db8::1]:4000", 300, time.Millisecond)
	host4, srflx4 := pair("192.168.1.10:4000", 200, 40*time.Millisecond), pair("198.51.100.5:4000", 100, 40*time.Millisecond)
	fast4 := pair("198.51.100.6:4000", 100, 10*time.Millisecond)
	for _, tc := range []struct {
		name      string
		validated []holepunch.Pair
		dead      holepunch.Family
		want      string // "": none
	}{
		{"none validated", nil, holepunch.IPv6, ""},
		{"only the dead family", []holepunch.Pair{v6}, holepunch.IPv6, ""},
		{"the other family's best priority", []holepunch.Pair{v6, srflx4, host4}, holepunch.IPv6, "192.168.1.10:4000"},
		{"equal priority: the faster", []holepunch.Pair{srflx4, fast4}, holepunch.IPv6, "198.51.100.6:4000"},
		{"IPv4 dead: IPv6", []holepunch.Pair{host4, v6}, holepunch.IPv4, "[2001:db8::1]:4000"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, ok := bestOtherFamily(tc.validated, tc.dead)
			if (tc.want == "") == ok || (ok && got.String() != tc.want) {
				t.Fatalf("bestOtherFamily = %v, %v; want %q", got, ok, tc.want)
			}
		})
	}
}

// TestFamilyReport: a family's report counts the servers that answered in
// it, keeps the first address one saw, and classifies the NAT there from
// those observations alone.
func TestFamilyReport(t *testing.T) {
	obs := func(server, mapped string) Observation {
		o := Observation{Server: netip.MustParseAddrPort(server)}
		if mapped != "" {
			o.Mapped = netip.MustParseAddrPort(mapped)
		}
		return o
	}
	local := netip.MustParseAddrPort("[::]:4000")
	for _, tc := range []struct {
		name        string
		o           NATObservations
		works       bool
		answered    int
		observed    string
		wantMapping nattype.Mapping
	}{
		{"nothing answered", NATObservations{Local: local, Mapped: []Observation{obs("[2001:db8::1]:4433", "")}}, false, 0, "", nattype.MappingUnknown},
		{"no NAT: the host's own address", NATObservations{Local: local, LocalAddrs: []netip.Addr{netip.MustParseAddr("2001:db8:14::10")},
			Mapped: []Observation{obs("[2001:db8::1]:4433", "[2001:db8:14::10]:4000"), obs("[2001:db8::1]:4434", "[2001:db8:14::10]:4000")}},
			true, 2, "[2001:db8:14::10]:4000", nattype.MappingNone},
		{"behind a NAT, one of two answered", NATObservations{Local: netip.MustParseAddrPort("0.0.0.0:4000"),
			Mapped: []Observation{obs("203.0.113.1:4433", ""), obs("203.0.113.1:4434", "198.51.100.9:61000")}},
			true, 1, "198.51.100.9:61000", nattype.MappingUnknown},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := familyReport(holepunch.IPv6, tc.o)
			if r.Works() != tc.works || r.Answered != tc.answered || r.Asked != len(tc.o.Mapped) || r.NAT.Mapping != tc.wantMapping {
				t.Fatalf("report %+v; want works %v, %d answered of %d, mapping %s", r, tc.works, tc.answered, len(tc.o.Mapped), tc.wantMapping)
			}
			if got := r.Observed; (tc.observed == "") == got.IsValid() || (got.IsValid() && got.String() != tc.observed) {
				t.Fatalf("observed %v, want %q", got, tc.observed)
			}
		})
	}
}
