package traversal

import (
	"net/netip"
	"reflect"
	"testing"

	"github.com/antnode/antnode/bootstrap"
	"github.com/antnode/antnode/bootstrap/wire"
	"github.com/antnode/antnode/holepunch"

	"github.com/antnode/antnode/event"
	"github.com/antnode/antnode/nattype"
)

func TestChooseStrategy(t *testing.T) {
	var (
		pub     = nattype.Type{Mapping: nattype.MappingNone, Filtering: nattype.FilteringNone}
		eif     = nattype.Type{Mapping: nattype.MappingEIM, Filtering: nattype.FilteringEIF}
		adf     = nattype.Type{Mapping: nattype.MappingEIM, Filtering: nattype.FilteringADF}
		apdf    = nattype.Type{Mapping: nattype.MappingEIM, Filtering: nattype.FilteringAPDF}
		sym     = nattype.Type{Mapping: nattype.MappingAPDM, Filtering: nattype.FilteringAPDF}
		adm     = nattype.Type{Mapping: nattype.MappingADM, Filtering: nattype.FilteringAPDF}
		blocked = nattype.Type{Filtering: nattype.FilteringBlocked}
		unknown = nattype.Type{}
		// One axis unknown (a lossy or partial measurement).
		eimUnknown     = nattype.Type{Mapping: nattype.MappingEIM}
		unknownAPDF    = nattype.Type{Filtering: nattype.FilteringAPDF}
		unknownMapping = nattype.Type{Filtering: nattype.FilteringADF}
		pubUnknown     = nattype.Type{Mapping: nattype.MappingNone}
	)
	direct := func(dial bool) Strategy { return Strategy{Direct: true, Dial: dial, Speculative: dial} }
	tests := []struct {
		name          string
		local, remote nattype.Type
		initiator     bool
		want          Strategy
	}{
		{"eim both, initiator dials", apdf, apdf, true, direct(true)},
		{"eim both, responder waits", apdf, apdf, false, direct(false)},
		{"public and symmetric", pub, sym, true, direct(true)},
		{"full cone and symmetric", eif, sym, false, direct(false)},
		{"restricted and symmetric", adf, sym, true, direct(true)},
		{"symmetric initiator vs port-restricted: spray and dial", sym, apdf, true, Strategy{Direct: true, Birthday: BirthdaySpray, Dial: true}},
		{"symmetric responder vs port-restricted: spray and dial", sym, apdf, false, Strategy{Direct: true, Birthday: BirthdaySpray, Dial: true}},
		{"port-restricted initiator vs symmetric: scan, accept", apdf, sym, true, Strategy{Direct: true, Birthday: BirthdayScan}},
		{"address-dependent counts as hard", adm, apdf, false, Strategy{Direct: true, Birthday: BirthdaySpray, Dial: true}},
		{"both symmetric", sym, sym, true, Strategy{Reason: event.ReasonBothSymmetric}},
		{"symmetric and address-dependent", sym, adm, false, Strategy{Reason: event.ReasonBothSymmetric}},
		{"udp blocked here", blocked, apdf, true, Strategy{Reason: event.ReasonUDPBlocked}},
		{"udp blocked there", apdf, blocked, true, Strategy{Reason: event.ReasonUDPBlocked}},
		{"unknown is tried", unknown, sym, true, direct(true)},
		// An unknown axis: try direct, keep the relay ready (PlanRelay
		// allocates as for any type but blocked).
		{"unknown filtering against symmetric: ordinary checks", eimUnknown, sym, true, direct(true)},
		{"symmetric against unknown filtering: no spray", sym, eimUnknown, false, direct(false)},
		{"unknown mapping, port-restricted, against symmetric: scan", unknownAPDF, sym, false, Strategy{Direct: true, Birthday: BirthdayScan}},
		{"unknown mapping against symmetric responder", unknownMapping, sym, true, direct(true)},
		{"public with unknown filtering", pubUnknown, apdf, true, direct(true)},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := ChooseStrategy(tc.local, tc.remote, tc.initiator); got != tc.want {
				t.Fatalf("got %+v, want %+v", got, tc.want)
			}
		})
	}
}

func TestStrategiesAgree(t *testing.T) {
	// For every pair of NAT types, exactly one side dials when a direct
	// path is possible, and both sides agree on whether it is.
	var types []nattype.Type
	for m := nattype.MappingUnknown; m.Valid(); m++ {
		for f := nattype.FilteringUnknown; f.Valid(); f++ {
			types = append(types, nattype.Type{Mapping: m, Filtering: f})
		}
	}
	for _, a := range types {
		for _, b := range types {
			sa, sb := ChooseStrategy(a, b, true), ChooseStrategy(b, a, false)
			if sa.Direct != sb.Direct {
				t.Fatalf("%v vs %v: sides disagree on direct", a, b)
			}
			if sa.Direct && sa.Dial == sb.Dial {
				t.Fatalf("%v vs %v: dial %v and %v", a, b, sa.Dial, sb.Dial)
			}
			if (sa.Birthday == BirthdayNone) != (sb.Birthday == BirthdayNone) {
				t.Fatalf("%v vs %v: birthday %v and %v", a, b, sa.Birthday, sb.Birthday)
			}
		}
	}
}

func TestClassifyNAT(t *testing.T) {
	ap := netip.MustParseAddrPort
	s1, s1alt, s2 := ap("203.0.113.1:4433"), ap("203.0.113.1:4434"), ap("203.0.113.2:4433")
	local := ap("192.168.1.10:4000")
	m1, m2, m3 := ap("198.51.100.5:4000"), ap("198.51.100.5:40001"), ap("198.51.100.5:40002")
	// Probe samples: all arrived, one of four arrived (three lost), none
	// of four, none of two (too few to conclude), none requested.
	all, one, none, few, untested := FilterProbe{4, 4}, FilterProbe{4, 1}, FilterProbe{4, 0}, FilterProbe{2, 0}, FilterProbe{}
	eim := []Observation{{s1, m1}, {s1alt, m1}, {s2, m1}}
	type T = nattype.Type
	tests := []struct {
		name string
		o    NATObservations
		want nattype.Type
	}{
		{"nothing answered", NATObservations{Local: local}, T{}},
		{"full cone", NATObservations{Local: local, Mapped: eim, OtherPort: all, OtherAddr: all},
			T{Mapping: nattype.MappingEIM, Filtering: nattype.FilteringEIF}},
		{"restricted", NATObservations{Local: local, Mapped: []Observation{{s1, m1}, {s2, m1}}, OtherPort: all, OtherAddr: none},
			T{Mapping: nattype.MappingEIM, Filtering: nattype.FilteringADF}},
		{"port restricted", NATObservations{Local: local, Mapped: []Observation{{s1, m1}, {s2, m1}}, OtherPort: none, OtherAddr: none},
			T{Mapping: nattype.MappingEIM, Filtering: nattype.FilteringAPDF}},
		{"symmetric by port", NATObservations{Local: local, Mapped: []Observation{{s1, m1}, {s1alt, m2}, {s2, m3}}, OtherPort: none},
			T{Mapping: nattype.MappingAPDM, Filtering: nattype.FilteringAPDF}},
		{"address dependent", NATObservations{Local: local, Mapped: []Observation{{s1, m1}, {s1alt, m1}, {s2, m2}}, OtherPort: none},
			T{Mapping: nattype.MappingADM, Filtering: nattype.FilteringAPDF}},
		{"differs across addresses, no port pair", NATObservations{Local: local, Mapped: []Observation{{s1, m1}, {s2, m2}}},
			T{Mapping: nattype.MappingAPDM}},
		{"public, open", NATObservations{Local: ap("0.0.0.0:4000"), LocalAddrs: []netip.Addr{m1.Addr()},
			Mapped: []Observation{{s1, m1}, {s2, m1}}, OtherPort: all, OtherAddr: all},
			T{Mapping: nattype.MappingNone, Filtering: nattype.FilteringNone}},
		{"public, bootstrap without a second address", NATObservations{Local: m1, Mapped: []Observation{{s1, m1}}, OtherPort: all},
			T{Mapping: nattype.MappingNone}},
		{"address probe untested", NATObservations{Local: local, Mapped: eim, OtherPort: all},
			T{Mapping: nattype.MappingEIM}},
		{"registered only over TCP", NATObservations{Local: local, UDPBlocked: true, Mapped: []Observation{{s1, m1}}},
			T{Filtering: nattype.FilteringBlocked}},
		{"one server silent: nothing to compare", NATObservations{Local: local, Mapped: []Observation{{s1, m1}, {s2, netip.AddrPort{}}}, OtherPort: none},
			T{Filtering: nattype.FilteringAPDF}},
		{"one alternate silent, two agree", NATObservations{Local: local, Mapped: []Observation{{s1, m1}, {s1alt, netip.AddrPort{}}, {s2, m1}}, OtherPort: all, OtherAddr: none},
			T{Mapping: nattype.MappingEIM, Filtering: nattype.FilteringADF}},
		// Loss: a probe that passes is seen once of four; silence of a
		// sample too small concludes nothing.
		{"loss: full cone, three address probes lost", NATObservations{Local: local, Mapped: eim, OtherPort: all, OtherAddr: one},
			T{Mapping: nattype.MappingEIM, Filtering: nattype.FilteringEIF}},
		{"loss: public, three address probes lost", NATObservations{Local: m1, Mapped: []Observation{{s1, m1}, {s2, m1}}, OtherPort: one, OtherAddr: one},
			T{Mapping: nattype.MappingNone, Filtering: nattype.FilteringNone}},
		{"loss: restricted, three port probes lost", NATObservations{Local: local, Mapped: eim, OtherPort: one, OtherAddr: none},
			T{Mapping: nattype.MappingEIM, Filtering: nattype.FilteringADF}},
		{"loss: address sample too small", NATObservations{Local: local, Mapped: eim, OtherPort: all, OtherAddr: few},
			T{Mapping: nattype.MappingEIM}},
		{"loss: port sample too small", NATObservations{Local: local, Mapped: eim, OtherPort: few, OtherAddr: none},
			T{Mapping: nattype.MappingEIM}},
		{"loss: both samples too small", NATObservations{Local: local, Mapped: eim, OtherPort: few, OtherAddr: few},
			T{Mapping: nattype.MappingEIM}},
		{"public, nothing probed", NATObservations{Local: m1, Mapped: []Observation{{s1, m1}}, OtherPort: untested, OtherAddr: untested},
			T{Mapping: nattype.MappingNone}},
		{"public behind a firewall", NATObservations{Local: m1, Mapped: []Observation{{s1, m1}, {s2, m1}}, OtherPort: all, OtherAddr: none},
			T{Mapping: nattype.MappingNone, Filtering: nattype.FilteringADF}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := ClassifyNAT(tc.o); got != tc.want {
				t.Fatalf("got %+v (%s), want %+v (%s)", got, got.Class(), tc.want, tc.want.Class())
			}
		})
	}
}

// TestFilterProbeCut checks that a sample cut short (the context ended
// before the probes had their time) concludes only from what arrived.
func TestFilterProbeCut(t *testing.T) {
	tests := []struct {
		name          string
		p             FilterProbe
		passed, known bool
		cPass, cKnown bool
	}{
		{"none arrived", FilterProbe{4, 0}, false, true, false, false},
		{"one arrived", FilterProbe{4, 1}, true, true, true, true},
		{"too few requested", FilterProbe{2, 0}, false, false, false, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if p, k := tc.p.verdict(); p != tc.passed || k != tc.known {
				t.Fatalf("verdict %v %v, want %v %v", p, k, tc.passed, tc.known)
			}
			if p, k := tc.p.cut().verdict(); p != tc.cPass || k != tc.cKnown {
				t.Fatalf("cut verdict %v %v, want %v %v", p, k, tc.cPass, tc.cKnown)
			}
		})
	}
}

func TestCandidateDiff(t *testing.T) {
	c := func(s string) wire.Candidate {
		return wire.Candidate{Kind: wire.KindServerReflexive, Addr: netip.MustParseAddrPort(s)}
	}
	a, b, x := c("198.51.100.1:4000"), c("192.168.1.10:4000"), c("198.51.100.1:5123")
	tests := []struct {
		name      string
		prev, cur []wire.Candidate
		add       []wire.Candidate
		remove    []netip.AddrPort
	}{
		{"unchanged", []wire.Candidate{a, b}, []wire.Candidate{b, a}, nil, nil},
		{"rebinding", []wire.Candidate{a, b}, []wire.Candidate{b, x}, []wire.Candidate{x}, []netip.AddrPort{a.Addr}},
		{"first", nil, []wire.Candidate{a}, []wire.Candidate{a}, nil},
		{"all gone", []wire.Candidate{a}, nil, nil, []netip.AddrPort{a.Addr}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			add, remove := CandidateDiff(tc.prev, tc.cur)
			if !reflect.DeepEqual(add, tc.add) || !reflect.DeepEqual(remove, tc.remove) {
				t.Fatalf("add %v remove %v, want %v %v", add, remove, tc.add, tc.remove)
			}
		})
	}
}

func TestPlanRelay(t *testing.T) {
	var (
		sym     = nattype.Type{Mapping: nattype.MappingAPDM, Filtering: nattype.FilteringAPDF}
		apdf    = nattype.Type{Mapping: nattype.MappingEIM, Filtering: nattype.FilteringAPDF}
		blocked = nattype.Type{Filtering: nattype.FilteringBlocked}
	)
	tests := []struct {
		name          string
		local, remote nattype.Type
		initiator     bool
		want          RelayPlan
	}{
		{"symmetric pair, initiator allocates and dials", sym, sym, true, RelayPlan{Allocate: true, Dial: true}},
		{"symmetric pair, responder checks and accepts", sym, sym, false, RelayPlan{}},
		{"blocked initiator allocates over TCP and dials", blocked, apdf, true, RelayPlan{Allocate: true, TCP: true, Dial: true}},
		{"blocked responder allocates over TCP and dials", blocked, sym, false, RelayPlan{Allocate: true, TCP: true, Dial: true}},
		{"initiator towards a blocked peer waits", apdf, blocked, true, RelayPlan{}},
		{"both blocked, initiator dials", blocked, blocked, true, RelayPlan{Allocate: true, TCP: true, Dial: true}},
		{"both blocked, responder accepts on its allocation", blocked, blocked, false, RelayPlan{Allocate: true, TCP: true}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := PlanRelay(tc.local, tc.remote, tc.initiator); got != tc.want {
				t.Fatalf("got %+v, want %+v", got, tc.want)
			}
		})
	}
	// Exactly one side dials, and someone allocates, for every pair.
	types := []nattype.Type{sym, apdf, blocked, {}}
	for _, a := range types {
		for _, b := range types {
			pa, pb := PlanRelay(a, b, true), PlanRelay(b, a, false)
			if pa.Dial == pb.Dial || !(pa.Allocate || pb.Allocate) {
				t.Fatalf("%v/%v: %+v %+v", a, b, pa, pb)
			}
			if (pa.Dial && !pa.Allocate && !pb.Allocate) || (pb.Dial && !pb.Allocate && !pa.Allocate) {
				t.Fatalf("%v/%v: a dialler without an allocation on either side", a, b)
			}
		}
	}
}

// TestPlanRelayFor: two sides without a family in common both allocate
// (relay to relay) and exactly the initiator dials; sides that share one
// plan as PlanRelay.
func TestPlanRelayFor(t *testing.T) {
	apdf := nattype.Type{Mapping: nattype.MappingEIM, Filtering: nattype.FilteringAPDF}
	blocked := nattype.Type{Filtering: nattype.FilteringBlocked}
	v4 := func(t nattype.Type) Side { return Side{NAT: t, Families: familyIPv4} }
	v6 := func(t nattype.Type) Side { return Side{NAT: t, Families: familyIPv6} }
	tests := []struct {
		name          string
		local, remote Side
		initiator     bool
		want          RelayPlan
	}{
		{"IPv6-only initiator to IPv4-only", v6(apdf), v4(apdf), true, RelayPlan{Allocate: true, Dial: true}},
		// The IPv4 side reaches an IPv4 relayed address from its own
		// socket too: its allocation is optional (a CI matrix under
		// loss had a responder's refused at the relay's quota).
		{"IPv4-only responder to IPv6-only", v4(apdf), v6(apdf), false, RelayPlan{Allocate: true, Optional: true}},
		{"IPv4-only initiator to IPv6-only", v4(apdf), v6(apdf), true, RelayPlan{Allocate: true, Dial: true, Optional: true}},
		{"UDP-blocked IPv4 responder to IPv6-only: over TCP", v4(blocked), v6(apdf), false, RelayPlan{Allocate: true, TCP: true}},
		{"a shared family: as PlanRelay", v6(apdf), v6(apdf), false, PlanRelay(apdf, apdf, false)},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := PlanRelayFor(tc.local, tc.remote, tc.initiator); got != tc.want {
				t.Fatalf("got %+v, want %+v", got, tc.want)
			}
		})
	}
}

func TestChooseStrategyFor(t *testing.T) {
	var (
		sym     = nattype.Type{Mapping: nattype.MappingAPDM, Filtering: nattype.FilteringAPDF}
		apdf    = nattype.Type{Mapping: nattype.MappingEIM, Filtering: nattype.FilteringAPDF}
		blocked = nattype.Type{Filtering: nattype.FilteringBlocked}
	)
	mapped := func(t nattype.Type) Side { return Side{NAT: t, Mapped: true} }
	plain := func(t nattype.Type) Side { return Side{NAT: t} }
	v4 := func(t nattype.Type) Side { return Side{NAT: t, Families: familyIPv4} }
	v6 := func(t nattype.Type) Side { return Side{NAT: t, Families: familyIPv6} }
	answer := Strategy{Direct: true, Passive: true}
	dial := Strategy{Direct: true, Dial: true, Speculative: true}
	tests := []struct {
		name          string
		local, remote Side
		initiator     bool
		want          Strategy
	}{
		{"symmetric initiator to a mapped symmetric peer dials it", plain(sym), mapped(sym), true, dial},
		{"symmetric responder to a mapped symmetric peer dials it", plain(sym), mapped(sym), false, dial},
		{"mapped initiator answers a symmetric peer", mapped(sym), plain(sym), true, answer},
		{"mapped responder answers a symmetric peer", mapped(sym), plain(sym), false, answer},
		{"mapped responder answers a port-restricted peer", mapped(sym), plain(apdf), false, answer},
		{"both mapped: the initiator dials", mapped(sym), mapped(sym), true, dial},
		{"both mapped: the responder answers", mapped(sym), mapped(sym), false, answer},
		{"mapped against UDP blocked: relay", mapped(sym), plain(blocked), true, Strategy{Reason: event.ReasonUDPBlocked}},
		{"UDP blocked against mapped: relay", plain(blocked), mapped(sym), false, Strategy{Reason: event.ReasonUDPBlocked}},
		{"no mapping: as ChooseStrategy", plain(sym), plain(sym), true, Strategy{Reason: event.ReasonBothSymmetric}},
		{"no mapping: birthday as before", plain(sym), plain(apdf), true, Strategy{Direct: true, Birthday: BirthdaySpray, Dial: true}},
		{"IPv6-only to IPv4-only: relay", v6(apdf), v4(apdf), true, Strategy{Reason: event.ReasonNoCommonFamily}},
		{"IPv4-only to IPv6-only: relay", v4(apdf), v6(apdf), false, Strategy{Reason: event.ReasonNoCommonFamily}},
		{"IPv6-only to mapped IPv4-only: relay", v6(apdf), Side{NAT: sym, Mapped: true, Families: familyIPv4}, true, Strategy{Reason: event.ReasonNoCommonFamily}},
		{"both IPv6: direct", v6(apdf), v6(apdf), true, Strategy{Direct: true, Dial: true, Speculative: true}},
		{"dual-stack to IPv4-only: direct", Side{NAT: apdf, Families: familyIPv4 | familyIPv6}, v4(apdf), true, Strategy{Direct: true, Dial: true, Speculative: true}},
		{"no candidates announced: families say nothing", v6(apdf), plain(apdf), true, Strategy{Direct: true, Dial: true, Speculative: true}},
		{"UDP blocked outranks families", v6(apdf), Side{NAT: blocked, Families: familyIPv4}, true, Strategy{Reason: event.ReasonUDPBlocked}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := ChooseStrategyFor(tc.local, tc.remote, tc.initiator); got != tc.want {
				t.Fatalf("ChooseStrategyFor(%+v, %+v, %v) = %+v, want %+v", tc.local, tc.remote, tc.initiator, got, tc.want)
			}
		})
	}
}

func TestSidesOfIntroductions(t *testing.T) {
	sym := nattype.Type{Mapping: nattype.MappingAPDM, Filtering: nattype.FilteringAPDF}
	at := netip.MustParseAddrPort("198.51.100.7:4433")
	cand := func(k wire.CandidateKind, o wire.Origin) wire.Candidate {
		return wire.Candidate{Kind: k, Addr: at, Origin: o}
	}
	tests := []struct {
		name          string
		cands         []wire.Candidate
		local, remote bool
	}{
		{"no mapping", []wire.Candidate{cand(wire.KindServerReflexive, wire.OriginObserved)}, false, false},
		{"mapped at the observed address", []wire.Candidate{cand(wire.KindMapped, wire.OriginObserved)}, true, true},
		{"mapped at the observed IP", []wire.Candidate{cand(wire.KindMapped, wire.OriginObservedIP)}, true, true},
		{"mapped elsewhere, merely announced", []wire.Candidate{cand(wire.KindMapped, wire.OriginAnnounced)}, true, false},
		{"from a bootstrap that marks no origin", []wire.Candidate{cand(wire.KindMapped, wire.OriginUnknown)}, true, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			in := bootstrap.Intro{NAT: sym, Candidates: tc.cands}
			if got := LocalSide(in); got.Mapped != tc.local || got.NAT != sym {
				t.Errorf("LocalSide = %+v, want mapped %v", got, tc.local)
			}
			if got := RemoteSide(in); got.Mapped != tc.remote || got.NAT != sym {
				t.Errorf("RemoteSide = %+v, want mapped %v", got, tc.remote)
			}
		})
	}
}

// TestFamiliesOf: a side's families are those of its candidates but its
// relayed ones (the relay's address says nothing of the side's own).
func TestFamiliesOf(t *testing.T) {
	c := func(k wire.CandidateKind, a string) wire.Candidate {
		return wire.Candidate{Kind: k, Addr: netip.MustParseAddrPort(a)}
	}
	tests := []struct {
		name  string
		cands []wire.Candidate
		want  uint8
	}{
		{"none", nil, 0},
		{"IPv4", []wire.Candidate{c(wire.KindHost, "192.168.1.10:4000"), c(wire.KindServerReflexive, "198.51.100.5:4000")}, familyIPv4},
		{"IPv6", []wire.Candidate{c(wire.KindHost, "[2001:db8:110::10]:4000")}, familyIPv6},
		{"IPv4-mapped IPv6 is IPv4", []wire.Candidate{c(wire.KindHost, "[::ffff:198.51.100.5]:4000")}, familyIPv4},
		{"IPv6 with an IPv4 relayed address", []wire.Candidate{c(wire.KindHost, "[2001:db8:110::10]:4000"), c(wire.KindRelay, "203.0.113.1:50000")}, familyIPv6},
		{"both", []wire.Candidate{c(wire.KindHost, "[2001:db8:110::10]:4000"), c(wire.KindHost, "192.168.1.10:4000")}, familyIPv4 | familyIPv6},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := familiesOf(tc.cands); got != tc.want {
				t.Fatalf("familiesOf = %b, want %b", got, tc.want)
			}
		})
	}
}

func TestMappedCandidate(t *testing.T) {
	obs := []netip.AddrPort{netip.MustParseAddrPort("198.51.100.7:61000")}
	tests := []struct {
		name   string
		mapped netip.AddrPort
		want   bool
	}{
		{"no mapping", netip.AddrPort{}, false},
		{"at the observed IP", netip.MustParseAddrPort("198.51.100.7:4433"), true},
		{"behind another NAT", netip.MustParseAddrPort("100.64.0.9:4433"), false},
		{"port zero", netip.MustParseAddrPort("198.51.100.7:0"), false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := Mapped(tc.mapped, obs)
			if (len(got) == 1) != tc.want {
				t.Fatalf("Mapped(%v) = %v, want a candidate: %v", tc.mapped, got, tc.want)
			}
			if tc.want && (got[0].Kind != wire.KindMapped || got[0].Addr != tc.mapped ||
				got[0].Priority <= holepunch.Priority(wire.KindHost, 65535)) {
				t.Fatalf("mapped candidate %+v: want kind mapped at %v above every host candidate", got[0], tc.mapped)
			}
		})
	}
}
