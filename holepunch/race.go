package holepunch

import (
	"cmp"
	"net/netip"
	"slices"
	"time"

	"github.com/antnode/antnode/bootstrap/wire"
)

// Family is an address family a node has a socket in.
type Family uint8

// Families, in the order of preference of a dual-stack race (RFC 8305
// section 4 and RFC 6724: IPv6 first).
const (
	IPv6 Family = 6
	IPv4 Family = 4
)

// FamilyOf is a's family (an IPv4-mapped IPv6 address is IPv4).
func FamilyOf(a netip.Addr) Family {
	if a.Is6() && !a.Is4In6() {
		return IPv6
	}
	return IPv4
}

// String is the family as a metric label and in JSON: "ipv4", "ipv6".
func (f Family) String() string {
	switch f {
	case IPv4:
		return "ipv4"
	case IPv6:
		return "ipv6"
	}
	return "unknown"
}

// addr is a representative address of f, as PlanConfig.Family takes it.
func (f Family) addr() netip.Addr {
	if f == IPv6 {
		return netip.IPv6Unspecified()
	}
	return netip.IPv4Unspecified()
}

// RaceConfig shapes a dual-stack check schedule.
type RaceConfig struct {
	// Plan shapes each family's schedule (its Family is ignored).
	Plan PlanConfig
	// Delay is how long each less preferred family starts after the one
	// before it. Zero: 50 ms (RFC 8305's resolution delay: a head start,
	// not a wait for the first to fail).
	Delay time.Duration
}

// RacePlan returns the interleaved check schedule of a node with sockets
// in the families local against the remote candidates: IPv6 targets from
// the start, IPv4 targets Delay later, merged into one schedule ordered
// by time (IPv6 first on a tie) and capped at Plan.MaxProbes and
// Plan.Budget. A family the node or the peer lacks gets no probes and
// holds nothing back: a single-family race starts at once. The executor
// sends each probe from the socket of its target's family. It is a pure
// function.
func RacePlan(remote []wire.Candidate, local []Family, cfg RaceConfig) []Probe {
	if cfg.Delay <= 0 {
		cfg.Delay = 50 * time.Millisecond
	}
	pc := cfg.Plan.withDefaults()
	var out []Probe
	var start time.Duration
	for _, f := range []Family{IPv6, IPv4} {
		if !slices.Contains(local, f) {
			continue
		}
		fc := pc
		fc.Family = f.addr()
		fc.Budget = pc.Budget - start
		if fc.Budget <= 0 {
			break
		}
		probes := Plan(remote, fc)
		if len(probes) == 0 {
			continue
		}
		for _, p := range probes {
			p.At += start
			out = append(out, p)
		}
		start += cfg.Delay
	}
	slices.SortStableFunc(out, func(x, y Probe) int { return cmp.Compare(x.At, y.At) })
	return out[:min(len(out), pc.MaxProbes)]
}

// Validated is a path that answered a check in a race.
type Validated struct {
	Family Family
	At     time.Duration // since the race began
	RTT    time.Duration
}

// Pick chooses the winner of a dual-stack race from the paths validated
// so far, at now: the first validated path wins, except that an IPv4
// winner gives IPv6 a grace of the winner's RTT (the IPv6 checks started
// later than or with it, a path that answers that soon is as good and
// is preferred). pending says whether IPv6 checks are still running;
// without them there is nothing to wait for. It returns the index of the
// winner and true, or false while the race is undecided (again at
// the winner's At+RTT at the latest). It is a pure function.
func Pick(v []Validated, now time.Duration, pending bool) (int, bool) {
	first := -1
	for i, p := range v {
		if first < 0 || p.At < v[first].At {
			first = i
		}
	}
	if first < 0 {
		return -1, false
	}
	if v[first].Family == IPv6 {
		return first, true
	}
	deadline := v[first].At + v[first].RTT
	best := -1
	for i, p := range v {
		if p.Family == IPv6 && p.At <= deadline && (best < 0 || p.At < v[best].At) {
			best = i
		}
	}
	switch {
	case best >= 0:
		return best, true
	case !pending || now >= deadline:
		return first, true
	}
	return -1, false
}
