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

func TestBetter(t *testing.T) {
	ms := time.Millisecond
	pair := func(addr string, pri uint32, rtt time.Duration) Pair {
		return Pair{Remote: netip.MustParseAddrPort(addr), Priority: pri, RTT: rtt}
	}
	v4host, v4srflx := pair("192.0.2.1:4000", 200, 40*ms), pair("192.0.2.1:5000", 100, 30*ms)
	v6host, v6srflx := pair("[2001:db8::1]:4000", 200, 40*ms), pair("[2001:db8::1]:5000", 100, 50*ms)
	tests := []struct {
		name    string
		p, best Pair
		race    bool
		want    bool
	}{
		{"anything beats none", v4srflx, Pair{}, true, true},
		{"race: IPv6 beats a higher IPv4", v6srflx, v4host, true, true},
		{"race: IPv4 never beats IPv6", v4host, v6srflx, true, false},
		{"race: within IPv6 the priority", v6host, v6srflx, true, true},
		{"race: within IPv4 the priority", v4srflx, v4host, true, false},
		{"no race: the priority alone", v4host, v6srflx, false, true},
		{"equal priority: the shorter RTT", pair("192.0.2.2:1", 100, 10*ms), v4srflx, false, true},
		{"equal priority, longer RTT", pair("192.0.2.2:1", 100, 90*ms), v4srflx, false, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := better(tc.p, tc.best, tc.race); got != tc.want {
				t.Fatalf("better = %v, want %v", got, tc.want)
			}
		})
	}
}

func TestGraceFor(t *testing.T) {
	ms := time.Millisecond
	v4 := Pair{Remote: netip.MustParseAddrPort("192.0.2.1:4000"), RTT: 40 * ms}
	v6 := Pair{Remote: netip.MustParseAddrPort("[2001:db8::1]:4000"), RTT: 40 * ms}
	tests := []struct {
		name  string
		p     Pair
		race  bool
		grace time.Duration
		want  time.Duration
	}{
		{"IPv4 in a race: its whole RTT for IPv6", v4, true, 10 * ms, 40 * ms},
		{"IPv6 in a race: the grace", v6, true, 10 * ms, 10 * ms},
		{"no race: the grace", v4, false, 10 * ms, 10 * ms},
		{"no race, fast pair: its RTT", Pair{Remote: v4.Remote, RTT: 3 * ms}, false, 10 * ms, 3 * ms},
		{"a zero RTT: a millisecond", Pair{Remote: v4.Remote}, true, 10 * ms, ms},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := graceFor(tc.p, tc.race, tc.grace); got != tc.want {
				t.Fatalf("graceFor = %v, want %v", got, tc.want)
			}
		})
	}
}

func TestSchedule(t *testing.T) {
	remote := []wire.Candidate{
		{Kind: wire.KindServerReflexive, Priority: 100, Addr: netip.MustParseAddrPort("192.0.2.1:4000")},
		{Kind: wire.KindServerReflexive, Priority: 100, Addr: netip.MustParseAddrPort("[2001:db8:1::10]:4000")},
	}
	cfg := PlanConfig{FirstRTO: time.Second, Budget: 100 * time.Millisecond}
	tests := []struct {
		name     string
		families []Family
		want     string
		race     bool
	}{
		{"IPv4 socket: IPv4 targets", []Family{IPv4}, "0s:192.0.2.1:4000", false},
		{"IPv6 socket: IPv6 targets", []Family{IPv6}, "0s:[2001:db8:1::10]:4000", false},
		{"dual-stack: IPv6 first, IPv4 50 ms behind", []Family{IPv6, IPv4}, "0s:[2001:db8:1::10]:4000 50ms:192.0.2.1:4000", true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			probes := Schedule(remote, tc.families, cfg)
			if got := schedule(probes); got != tc.want {
				t.Fatalf("schedule\n got %s\nwant %s", got, tc.want)
			}
			if raceOf(probes) != tc.race {
				t.Fatalf("raceOf = %v, want %v", !tc.race, tc.race)
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

func TestFamilyDelay(t *testing.T) {
	v4 := cand(wire.KindServerReflexive, 0, "198.51.100.5:4000")
	v6 := cand(wire.KindServerReflexive, 0, "[2001:db8:1::10]:4000")
	tests := []struct {
		name    string
		target  wire.Candidate
		targets []wire.Candidate
		want    time.Duration
	}{
		{"IPv6 at once", v6, []wire.Candidate{v6, v4}, 0},
		{"IPv4 behind IPv6", v4, []wire.Candidate{v6, v4}, RaceDelay},
		{"IPv4 alone at once", v4, []wire.Candidate{v4}, 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := FamilyDelay(tc.target.Addr.Addr(), tc.targets); got != tc.want {
				t.Fatalf("FamilyDelay = %v, want %v", got, tc.want)
			}
		})
	}
}
