package holepunch

import (
	"cmp"
	"net/netip"
	"slices"
	"time"

	"github.com/antnode/antnode/bootstrap/wire"
	"github.com/antnode/antnode/endpoint"
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

// RaceDelay is the head start of IPv6 over IPv4 in a dual-stack race
// (RFC 8305's resolution delay: not a wait for the first to fail).
const RaceDelay = 50 * time.Millisecond

// FamilyDelay is how long after the race's start a check or dial to
// target goes out, among targets: RaceDelay for an IPv4 target when an
// IPv6 one is among them, else at once. It is a pure function.
func FamilyDelay(target netip.Addr, targets []wire.Candidate) time.Duration {
	if FamilyOf(target) == IPv6 || !slices.ContainsFunc(targets, func(c wire.Candidate) bool { return FamilyOf(c.Addr.Addr()) == IPv6 }) {
		return 0
	}
	return RaceDelay
}

// RaceConfig shapes a dual-stack check schedule.
type RaceConfig struct {
	// Plan shapes each family's schedule (its Family is ignored).
	Plan PlanConfig
	// Delay is how long each less preferred family starts after the one
	// before it. Zero: RaceDelay.
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
		cfg.Delay = RaceDelay
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

// better reports whether the validated pair p beats best (the zero Pair:
// none yet). In a race (checks in both families) an IPv6 pair beats every
// IPv4 one (RFC 8305 and RFC 6724: the preferred family, kept when both
// work); within a family the higher priority wins, then the shorter RTT.
// It is a pure function.
func better(p, best Pair, race bool) bool {
	if !best.Remote.IsValid() {
		return true
	}
	if race {
		if pf, bf := FamilyOf(p.Remote.Addr()), FamilyOf(best.Remote.Addr()); pf != bf {
			return pf == IPv6
		}
	}
	return p.Priority > best.Priority || (p.Priority == best.Priority && p.RTT < best.RTT)
}

// graceFor is how long a check round waits, after the first validated
// pair p, for a better one: at most grace and no longer than p's RTT (a
// much slower pair is not better). In a race, an IPv4 pair gives IPv6 its
// whole RTT, whatever grace says: the IPv6 checks started with it or
// before it, and an IPv6 path that answers that soon is preferred. It
// never returns less than a millisecond. It is a pure function.
func graceFor(p Pair, race bool, grace time.Duration) time.Duration {
	rtt := max(p.RTT, time.Millisecond)
	if race && FamilyOf(p.Remote.Addr()) == IPv4 {
		return rtt
	}
	return min(grace, rtt)
}

// raceOf reports whether a schedule checks targets in both families.
func raceOf(probes []Probe) bool {
	var seen [2]bool
	for _, p := range probes {
		seen[FamilyOf(p.Target.Addr())/IPv6] = true // IPv4: 0, IPv6: 1
	}
	return seen[0] && seen[1]
}

// Schedule is the check schedule of a round for a socket serving
// families: the one family's Plan, or the RacePlan of both. It is a pure
// function.
func Schedule(remote []wire.Candidate, families []Family, cfg PlanConfig) []Probe {
	if len(families) == 1 {
		cfg.Family = families[0].addr()
		return Plan(remote, cfg)
	}
	return RacePlan(remote, families, RaceConfig{Plan: cfg})
}

// SocketFamilies are the families ep's socket serves, the preferred first.
func SocketFamilies(ep *endpoint.Endpoint) []Family {
	if ep.DualStack() {
		return []Family{IPv6, IPv4}
	}
	return []Family{FamilyOf(ep.LocalAddr().Addr())}
}

// TargetFamily is what Targets takes for ep's socket: its family, or the
// invalid address (both) for a dual-stack one.
func TargetFamily(ep *endpoint.Endpoint) netip.Addr {
	if ep.DualStack() {
		return netip.Addr{}
	}
	return ep.LocalAddr().Addr()
}
