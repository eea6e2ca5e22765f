package holepunch

import (
	"fmt"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/antnode/antnode/bootstrap/wire"
)

// schedule renders probes as "at:target" for comparison.
func schedule(ps []Probe) string {
	var b []string
	for _, p := range ps {
		b = append(b, fmt.Sprintf("%s:%s", p.At, p.Target))
	}
	return strings.Join(b, " ")
}

func TestRacePlan(t *testing.T) {
	v6host := cand(wire.KindHost, 0, "[2001:db8:1::10]:4000")
	v4srflx := cand(wire.KindServerReflexive, 0, "198.51.100.5:4000")
	v4host := cand(wire.KindHost, 0, "192.168.1.10:4000")
	once := PlanConfig{Pace: 2 * time.Millisecond, FirstRTO: time.Second, Budget: time.Second}
	tests := []struct {
		name   string
		remote []wire.Candidate
		local  []Family
		cfg    RaceConfig
		want   string
	}{
		{"dual-stack both sides: IPv6 first, IPv4 after the delay",
			[]wire.Candidate{v4srflx, v6host, v4host}, []Family{IPv4, IPv6}, RaceConfig{Plan: once},
			"0s:[2001:db8:1::10]:4000 50ms:192.168.1.10:4000 52ms:198.51.100.5:4000"},
		{"a shorter delay",
			[]wire.Candidate{v4srflx, v6host}, []Family{IPv6, IPv4}, RaceConfig{Plan: once, Delay: 10 * time.Millisecond},
			"0s:[2001:db8:1::10]:4000 10ms:198.51.100.5:4000"},
		{"IPv4-only node: IPv4 at once",
			[]wire.Candidate{v4srflx, v6host}, []Family{IPv4}, RaceConfig{Plan: once},
			"0s:198.51.100.5:4000"},
		{"IPv4-only peer: IPv4 at once",
			[]wire.Candidate{v4srflx}, []Family{IPv6, IPv4}, RaceConfig{Plan: once},
			"0s:198.51.100.5:4000"},
		{"IPv6-only node",
			[]wire.Candidate{v4srflx, v6host}, []Family{IPv6}, RaceConfig{Plan: once},
			"0s:[2001:db8:1::10]:4000"},
		{"no family in common", []wire.Candidate{v6host}, []Family{IPv4}, RaceConfig{Plan: once}, ""},
		{"interleaved retransmissions",
			[]wire.Candidate{v6host, v4srflx}, []Family{IPv6, IPv4},
			RaceConfig{Plan: PlanConfig{Pace: time.Millisecond, FirstRTO: 20 * time.Millisecond, MaxRTO: 20 * time.Millisecond, Budget: 61 * time.Millisecond}, Delay: 30 * time.Millisecond},
			"0s:[2001:db8:1::10]:4000 20ms:[2001:db8:1::10]:4000 30ms:198.51.100.5:4000 40ms:[2001:db8:1::10]:4000 50ms:198.51.100.5:4000 60ms:[2001:db8:1::10]:4000"},
		{"capped at MaxProbes across families",
			[]wire.Candidate{v6host, v4srflx, v4host}, []Family{IPv6, IPv4},
			RaceConfig{Plan: PlanConfig{Pace: time.Millisecond, FirstRTO: time.Second, Budget: time.Second, MaxProbes: 2}},
			"0s:[2001:db8:1::10]:4000 50ms:192.168.1.10:4000"},
		{"a delay past the budget leaves IPv4 out",
			[]wire.Candidate{v6host, v4srflx}, []Family{IPv6, IPv4},
			RaceConfig{Plan: PlanConfig{FirstRTO: time.Second, Budget: 40 * time.Millisecond}},
			"0s:[2001:db8:1::10]:4000"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := schedule(RacePlan(tc.remote, tc.local, tc.cfg)); got != tc.want {
				t.Fatalf("plan\n got %s\nwant %s", got, tc.want)
			}
		})
	}
}

func TestPick(t *testing.T) {
	ms := time.Millisecond
	v4 := func(at, rtt time.Duration) Validated { return Validated{Family: IPv4, At: at, RTT: rtt} }
	v6 := func(at, rtt time.Duration) Validated { return Validated{Family: IPv6, At: at, RTT: rtt} }
	tests := []struct {
		name    string
		v       []Validated
		now     time.Duration
		pending bool
		want    int // -1: undecided
	}{
		{"nothing yet", nil, 100 * ms, true, -1},
		{"IPv6 first wins at once", []Validated{v6(80*ms, 40*ms)}, 80 * ms, true, 0},
		{"IPv4 first waits its RTT for IPv6", []Validated{v4(80*ms, 40*ms)}, 100 * ms, true, -1},
		{"IPv6 within the grace wins", []Validated{v4(80*ms, 40*ms), v6(110*ms, 40*ms)}, 110 * ms, true, 1},
		{"IPv6 on the deadline wins", []Validated{v4(80*ms, 40*ms), v6(120*ms, 40*ms)}, 120 * ms, true, 1},
		{"IPv6 after the grace loses", []Validated{v4(80*ms, 40*ms), v6(130*ms, 40*ms)}, 130 * ms, true, 0},
		{"grace over", []Validated{v4(80*ms, 40*ms)}, 120 * ms, true, 0},
		{"no IPv6 checks running: IPv4 at once", []Validated{v4(80*ms, 40*ms)}, 80 * ms, false, 0},
		{"the earliest IPv4 wins", []Validated{v4(90*ms, 10*ms), v4(80*ms, 5*ms)}, 90 * ms, true, 1},
		{"the earliest of two IPv6", []Validated{v4(80*ms, 40*ms), v6(115*ms, 40*ms), v6(100*ms, 40*ms)}, 115 * ms, true, 2},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, ok := Pick(tc.v, tc.now, tc.pending)
			if !ok {
				got = -1
			}
			if got != tc.want {
				t.Fatalf("Pick = %d (decided %v), want %d", got, ok, tc.want)
			}
		})
	}
}

func TestFamilyOf(t *testing.T) {
	for _, tc := range []struct {
		addr string
		want Family
	}{
		{"198.51.100.1", IPv4},
		{"::ffff:198.51.100.1", IPv4},
		{"2001:db8::1", IPv6},
		{"64:ff9b::198.51.100.1", IPv6},
	} {
		if got := FamilyOf(netip.MustParseAddr(tc.addr)); got != tc.want {
			t.Errorf("FamilyOf(%s) = %s, want %s", tc.addr, got, tc.want)
		}
	}
}
