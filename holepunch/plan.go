package holepunch

import (
	"cmp"
	"net/netip"
	"slices"
	"time"

	"github.com/antnode/antnode/bootstrap/wire"
)

// Probe is one scheduled connectivity check.
type Probe struct {
	At       time.Duration // offset from the start of the round
	Target   netip.AddrPort
	Priority uint32
	Kind     wire.CandidateKind
	// TTL, when non-zero, sends the probe as a TTL-limited priming packet
	// that opens the local NAT mapping but dies before the far NAT.
	TTL int
}

// PlanConfig shapes a check schedule.
type PlanConfig struct {
	// Pace is the gap between two probes. Zero: 2 ms.
	Pace time.Duration
	// FirstRTO is the wait before a target is probed again; it doubles up
	// to MaxRTO. Zero: 50 ms and 400 ms.
	FirstRTO, MaxRTO time.Duration
	// Budget is how long the schedule runs. Zero: 3 s.
	Budget time.Duration
	// MaxProbes bounds the schedule. Zero: 512.
	MaxProbes int
	// Family restricts targets to one address family (the socket's);
	// invalid: both.
	Family netip.Addr
}

func (c PlanConfig) withDefaults() PlanConfig {
	if c.Pace <= 0 {
		c.Pace = 2 * time.Millisecond
	}
	if c.FirstRTO <= 0 {
		c.FirstRTO = 50 * time.Millisecond
	}
	if c.MaxRTO <= 0 {
		c.MaxRTO = 400 * time.Millisecond
	}
	if c.MaxRTO < c.FirstRTO {
		c.MaxRTO = c.FirstRTO
	}
	if c.Budget <= 0 {
		c.Budget = 3 * time.Second
	}
	if c.MaxProbes <= 0 {
		c.MaxProbes = 512
	}
	return c
}

// Slower returns c paced k times slower: the gap between probes and the
// retransmission timeouts (defaults filled in first) multiplied by k, so
// the same Budget carries fewer probes. k below 2 leaves c as it is.
func (c PlanConfig) Slower(k int) PlanConfig {
	if k < 2 {
		return c
	}
	d := c.withDefaults()
	c.Pace = d.Pace * time.Duration(k)
	c.FirstRTO = d.FirstRTO * time.Duration(k)
	c.MaxRTO = d.MaxRTO * time.Duration(k)
	return c
}

// Targets orders the remote candidates for checking: highest priority
// first, duplicates and unusable addresses (unspecified, multicast, port 0,
// another address family) removed.
func Targets(remote []wire.Candidate, family netip.Addr) []wire.Candidate {
	out := make([]wire.Candidate, 0, len(remote))
	seen := make(map[netip.AddrPort]bool, len(remote))
	for _, c := range remote {
		a := c.Addr.Addr().Unmap()
		ap := netip.AddrPortFrom(a, c.Addr.Port())
		switch {
		case !a.IsValid(), a.IsUnspecified(), a.IsMulticast(), ap.Port() == 0, seen[ap]:
			continue
		case family.IsValid() && family.Unmap().Is4() != a.Is4():
			continue
		}
		seen[ap] = true
		c.Addr = ap
		out = append(out, c)
	}
	slices.SortStableFunc(out, func(x, y wire.Candidate) int {
		if c := cmp.Compare(y.Priority, x.Priority); c != 0 {
			return c
		}
		return cmp.Compare(FamilyOf(y.Addr.Addr()), FamilyOf(x.Addr.Addr())) // IPv6 first on a tie
	})
	return out
}

// Plan returns the probe schedule for one punch round: every target in
// priority order, Pace apart; then again after an RTO that doubles up to
// MaxRTO, until Budget or MaxProbes. It is a pure function.
func Plan(remote []wire.Candidate, cfg PlanConfig) []Probe {
	cfg = cfg.withDefaults()
	targets := Targets(remote, cfg.Family)
	if len(targets) == 0 {
		return nil
	}
	var out []Probe
	at, rto := time.Duration(0), cfg.FirstRTO
	for at < cfg.Budget && len(out) < cfg.MaxProbes {
		sweepStart := at
		for _, t := range targets {
			if at >= cfg.Budget || len(out) >= cfg.MaxProbes {
				break
			}
			out = append(out, Probe{At: at, Target: t.Addr, Priority: t.Priority, Kind: t.Kind})
			at += cfg.Pace
		}
		at = max(at, sweepStart+rto)
		rto = min(2*rto, cfg.MaxRTO)
	}
	return out
}

// Priority computes an RFC 8445 candidate priority: type preference,
// local preference (higher for preferred interfaces) and component 1.
func Priority(kind wire.CandidateKind, localPref uint16) uint32 {
	var typePref uint32
	switch kind {
	case wire.KindMapped:
		// Above every other kind: the router forwards it from anywhere.
		typePref = 127
	case wire.KindHost:
		typePref = 126
	case wire.KindPeerReflexive:
		typePref = 110
	case wire.KindServerReflexive:
		typePref = 100
	case wire.KindRelay:
		typePref = 0
	}
	return typePref<<24 | uint32(localPref)<<8 | (256 - 1)
}
