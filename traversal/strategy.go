package traversal

import (
	"slices"

	"github.com/antnode/antnode/bootstrap"
	"github.com/antnode/antnode/bootstrap/wire"
	"github.com/antnode/antnode/event"
	"github.com/antnode/antnode/nattype"
)

// BirthdayRole is a side's part in the birthday search.
type BirthdayRole uint8

// Birthday roles.
const (
	// BirthdayNone: ordinary checks suffice.
	BirthdayNone BirthdayRole = iota
	// BirthdaySpray: this side's NAT maps per destination; it opens many
	// sockets, each sending checks to the other side's one mapping, and
	// dials QUIC from the socket that gets through.
	BirthdaySpray
	// BirthdayScan: this side's mapping is fixed but filtered per address
	// and port; it sends checks to random ports of the other side's
	// address, opening its filter to each, and waits for the dial.
	BirthdayScan
)

func (r BirthdayRole) String() string {
	switch r {
	case BirthdaySpray:
		return "spray"
	case BirthdayScan:
		return "scan"
	}
	return "none"
}

// Strategy is how one side goes about a direct connection.
type Strategy struct {
	// Direct is false when no direct path can exist; Reason says why.
	Direct bool
	Reason event.Reason
	// Birthday is this side's role in the birthday search.
	Birthday BirthdayRole
	// Dial says whether this side dials QUIC (the other accepts). The
	// dialler is the QUIC client: the side that can migrate.
	Dial bool
	// Speculative dials the other side's candidates while the checks run,
	// so that a path that works connects in one round trip less.
	Speculative bool
	// Slow spreads this side's checks out to half the pace (an attempt
	// degraded under load; see punchPlan).
	Slow bool
	// Passive sends no checks of its own: this side's router maps its
	// port, and it only answers the peer's checks (and checks back where
	// they came from). A check of its own would leave through the NAT's
	// ordinary mapping, whose conntrack entry can clash with the mapped
	// port's forwarding of the peer's packets.
	Passive bool
}

// Side is what a strategy knows of one side: its NAT, whether its router
// maps a port to it (a mapped candidate at the IP a bootstrap observed it
// at), and the address families of its own candidates.
type Side struct {
	NAT    nattype.Type
	Mapped bool
	// Families are the families of the side's candidates but relayed
	// ones (a relayed address is the relay's): familyIPv4|familyIPv6.
	// Zero: it announced none, and nothing is concluded from families.
	Families uint8
}

// Address family bits of Side.Families.
const (
	familyIPv4 uint8 = 1 << iota
	familyIPv6
)

// familiesOf returns the families of the candidates but relayed ones.
func familiesOf(cands []wire.Candidate) uint8 {
	var f uint8
	for _, c := range cands {
		switch a := c.Addr.Addr(); {
		case c.Kind == wire.KindRelay || !a.IsValid():
		case a.Is4() || a.Is4In6():
			f |= familyIPv4
		default:
			f |= familyIPv6
		}
	}
	return f
}

// sharesFamily reports whether two sides may reach each other without a
// relay as far as address families go: both have a family in common, or
// either announced no candidates (nothing to conclude from).
func sharesFamily(a, b Side) bool {
	return a.Families == 0 || b.Families == 0 || a.Families&b.Families != 0
}

// LocalSide is this side as its introduction presents it: mapped when it
// announced a mapped candidate (Mapped announces one only at an IP a
// bootstrap observed).
func LocalSide(in bootstrap.Intro) Side {
	return Side{NAT: in.NAT, Families: familiesOf(in.Candidates),
		Mapped: slices.ContainsFunc(in.Candidates, func(c wire.Candidate) bool { return c.Kind == wire.KindMapped })}
}

// RemoteSide is the peer as its introduction presents it: mapped only when
// the bootstrap observed the mapped candidate's IP (a peer can announce
// any address; what it says of a mapping elsewhere changes nothing).
func RemoteSide(in bootstrap.Intro) Side {
	return Side{NAT: in.NAT, Families: familiesOf(in.Candidates), Mapped: slices.ContainsFunc(in.Candidates, func(c wire.Candidate) bool {
		return c.Kind == wire.KindMapped && c.Origin.Observed()
	})}
}

// ChooseStrategyFor is ChooseStrategy with port mappings and address
// families. A side whose router maps its port is reachable from
// anywhere, like a public host, whatever its NAT: the other side checks
// and dials its mapped address, and it answers (Passive). Where both are
// mapped the initiator dials. UDP blocked on either side still leaves
// only the relay, and so do two sides without an address family in
// common (an IPv6-only node and an IPv4-only one: see PlanRelayFor). It
// is a pure function.
func ChooseStrategyFor(local, remote Side, initiator bool) Strategy {
	if local.NAT.Filtering == nattype.FilteringBlocked || remote.NAT.Filtering == nattype.FilteringBlocked {
		return Strategy{Reason: event.ReasonUDPBlocked}
	}
	if !sharesFamily(local, remote) {
		return Strategy{Reason: event.ReasonNoCommonFamily}
	}
	switch {
	case local.Mapped && remote.Mapped:
		return Strategy{Direct: true, Dial: initiator, Speculative: initiator, Passive: !initiator}
	case local.Mapped:
		return Strategy{Direct: true, Passive: true}
	case remote.Mapped:
		return Strategy{Direct: true, Dial: true, Speculative: true}
	}
	return ChooseStrategy(local.NAT, remote.NAT, initiator)
}

// ChooseStrategy is the strategy for a side with NAT local talking to a
// side with NAT remote; initiator is the side that asked for the
// connection. It is a pure function:
//
//   - UDP blocked on either side, or destination-dependent mapping on both
//     sides: no direct path (the relay's job);
//   - destination-dependent mapping on one side against an
//     endpoint-independent mapping with address-and-port-dependent
//     filtering on the other: the birthday search; the side with the
//     destination-dependent mapping sprays and dials (only it knows which
//     of its sockets got through);
//   - otherwise ordinary checks, and the initiator dials (speculatively).
//
// An unknown axis (a measurement that lost too many probes to conclude,
// or a bootstrap without a second address to probe filtering from) is
// never taken as the restrictive kind: the side tries direct with
// ordinary checks, and the relay is kept ready (PlanRelay allocates for
// every type but UDP-blocked, and the attempt falls back to it when no
// check validates). So an unknown mapping against a port-restricted
// filter does not spray, and an unknown filter against a symmetric NAT
// does not scan; a port-restricted filter with an unknown mapping still
// scans against a symmetric peer, since its own filter is known.
func ChooseStrategy(local, remote nattype.Type, initiator bool) Strategy {
	if local.Filtering == nattype.FilteringBlocked || remote.Filtering == nattype.FilteringBlocked {
		return Strategy{Reason: event.ReasonUDPBlocked}
	}
	if local.Hard() && remote.Hard() {
		return Strategy{Reason: event.ReasonBothSymmetric}
	}
	restricted := func(t nattype.Type) bool {
		return !t.Hard() && t.Filtering == nattype.FilteringAPDF
	}
	switch {
	case local.Hard() && restricted(remote):
		return Strategy{Direct: true, Birthday: BirthdaySpray, Dial: true}
	case remote.Hard() && restricted(local):
		return Strategy{Direct: true, Birthday: BirthdayScan, Dial: false}
	}
	return Strategy{Direct: true, Dial: initiator, Speculative: initiator}
}
