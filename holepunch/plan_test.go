package holepunch

import (
	"net/netip"
	"testing"
	"time"

	"github.com/antnode/antnode/bootstrap/wire"
)

func cand(kind wire.CandidateKind, pref uint16, addr string) wire.Candidate {
	return wire.Candidate{Kind: kind, Priority: Priority(kind, pref), Addr: netip.MustParseAddrPort(addr)}
}

func TestTargets(t *testing.T) {
	host := cand(wire.KindHost, 65535, "192.168.1.10:4000")
	srflx := cand(wire.KindServerReflexive, 65535, "198.51.100.1:4000")
	relay := cand(wire.KindRelay, 65535, "203.0.113.1:50000")
	tests := []struct {
		name   string
		in     []wire.Candidate
		family netip.Addr
		want   []netip.AddrPort
	}{
		{"priority order", []wire.Candidate{relay, srflx, host}, netip.Addr{}, []netip.AddrPort{host.Addr, srflx.Addr, relay.Addr}},
		{"duplicates removed", []wire.Candidate{srflx, srflx, host}, netip.Addr{}, []netip.AddrPort{host.Addr, srflx.Addr}},
		{"unusable removed", []wire.Candidate{
			cand(wire.KindHost, 1, "0.0.0.0:4000"), cand(wire.KindHost, 1, "224.0.0.1:4000"),
			cand(wire.KindHost, 1, "10.0.0.1:0"), srflx}, netip.Addr{}, []netip.AddrPort{srflx.Addr}},
		{"other family removed", []wire.Candidate{cand(wire.KindHost, 1, "[2001:db8::1]:5"), srflx},
			netip.MustParseAddr("0.0.0.0"), []netip.AddrPort{srflx.Addr}},
		{"mapped v4 normalised", []wire.Candidate{{Kind: wire.KindHost, Priority: 1, Addr: netip.MustParseAddrPort("[::ffff:10.0.0.1]:5")}},
			netip.MustParseAddr("0.0.0.0"), []netip.AddrPort{netip.MustParseAddrPort("10.0.0.1:5")}},
		{"empty", nil, netip.Addr{}, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := Targets(tc.in, tc.family)
			if len(got) != len(tc.want) {
				t.Fatalf("got %v, want %v", got, tc.want)
			}
			for i := range got {
				if got[i].Addr != tc.want[i] {
					t.Fatalf("target %d = %v, want %v", i, got[i].Addr, tc.want[i])
				}
			}
		})
	}
}

func TestPlan(t *testing.T) {
	a := cand(wire.KindHost, 65535, "192.168.1.10:4000")
	b := cand(wire.KindServerReflexive, 65535, "198.51.100.1:4000")
	ms := time.Millisecond
	tests := []struct {
		name string
		in   []wire.Candidate
		cfg  PlanConfig
		want []Probe
	}{
		{"two targets, doubling RTO", []wire.Candidate{b, a}, PlanConfig{Pace: 2 * ms, FirstRTO: 50 * ms, MaxRTO: 100 * ms, Budget: 300 * ms}, []Probe{
			{At: 0, Target: a.Addr}, {At: 2 * ms, Target: b.Addr},
			{At: 50 * ms, Target: a.Addr}, {At: 52 * ms, Target: b.Addr},
			{At: 150 * ms, Target: a.Addr}, {At: 152 * ms, Target: b.Addr},
			{At: 250 * ms, Target: a.Addr}, {At: 252 * ms, Target: b.Addr},
		}},
		{"max probes", []wire.Candidate{a, b}, PlanConfig{MaxProbes: 3}, []Probe{
			{At: 0, Target: a.Addr}, {At: 2 * ms, Target: b.Addr}, {At: 50 * ms, Target: a.Addr},
		}},
		{"budget cuts a sweep", []wire.Candidate{a, b}, PlanConfig{Pace: 10 * ms, FirstRTO: 10 * ms, Budget: 15 * ms}, []Probe{
			{At: 0, Target: a.Addr}, {At: 10 * ms, Target: b.Addr},
		}},
		{"no targets", nil, PlanConfig{}, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := Plan(tc.in, tc.cfg)
			if len(got) != len(tc.want) {
				t.Fatalf("got %d probes %v, want %d", len(got), got, len(tc.want))
			}
			for i := range got {
				if got[i].At != tc.want[i].At || got[i].Target != tc.want[i].Target {
					t.Fatalf("probe %d = {%v %v}, want {%v %v}", i, got[i].At, got[i].Target, tc.want[i].At, tc.want[i].Target)
				}
			}
		})
	}
}

func TestPlanIsBounded(t *testing.T) {
	var many []wire.Candidate
	for i := range 32 {
		many = append(many, wire.Candidate{Kind: wire.KindHost, Priority: uint32(i), Addr: netip.AddrPortFrom(netip.AddrFrom4([4]byte{10, 0, byte(i), 1}), 1)})
	}
	for _, cfg := range []PlanConfig{{}, {Budget: time.Hour}, {Pace: time.Nanosecond, Budget: time.Hour}} {
		if got := len(Plan(many, cfg)); got > 512 {
			t.Fatalf("%+v: %d probes", cfg, got)
		}
	}
}

func TestPriorityOrder(t *testing.T) {
	if !(Priority(wire.KindHost, 0) > Priority(wire.KindPeerReflexive, 65535) &&
		Priority(wire.KindPeerReflexive, 0) > Priority(wire.KindServerReflexive, 65535) &&
		Priority(wire.KindServerReflexive, 0) > Priority(wire.KindRelay, 65535)) {
		t.Fatal("type preference does not dominate local preference")
	}
}
