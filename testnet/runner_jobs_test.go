package testnet

import (
	"maps"
	"slices"
	"strings"
	"testing"
)

func TestMatrixJobs(t *testing.T) {
	pairs := []PairSpec{
		{A: ClassAPDM, B: ClassEIMAPDF, Topology: TopoDifferent}, // birthday
		{A: ClassEIMEIF, B: ClassEIMAPDF, Topology: TopoDifferent},
		{A: ClassCGNAT, B: ClassAPDM, Topology: TopoDifferent}, // birthday
		{A: ClassPublic, B: ClassUDPBlocked, Topology: TopoDifferent},
		{A: ClassV6Firewall, B: ClassEIMEIF, Topology: TopoDifferent}, // IPv6-only
	}
	tests := []struct {
		name               string
		runs, birthdayRuns int
		want               []matrixJob
	}{
		{"IPv6-only pairs, then birthday pairs, in phases of their own, after the rest", 1, 2, []matrixJob{
			{pair: 1}, {pair: 3},
			{pair: 4, phase: 1},
			{pair: 0, phase: 2}, {pair: 2, phase: 2}, {pair: 0, run: 1, phase: 2}, {pair: 2, run: 1, phase: 2},
		}},
		// Round by round: a slow stretch reaches one run of a pair, not
		// all of them.
		{"birthday runs fewer than runs: runs, round by round", 2, 1, []matrixJob{
			{pair: 1}, {pair: 3}, {pair: 1, run: 1}, {pair: 3, run: 1},
			{pair: 4, phase: 1}, {pair: 4, run: 1, phase: 1},
			{pair: 0, phase: 2}, {pair: 2, phase: 2}, {pair: 0, run: 1, phase: 2}, {pair: 2, run: 1, phase: 2},
		}},
		{"three runs, round by round", 3, 3, []matrixJob{
			{pair: 1}, {pair: 3}, {pair: 1, run: 1}, {pair: 3, run: 1}, {pair: 1, run: 2}, {pair: 3, run: 2},
			{pair: 4, phase: 1}, {pair: 4, run: 1, phase: 1}, {pair: 4, run: 2, phase: 1},
			{pair: 0, phase: 2}, {pair: 2, phase: 2}, {pair: 0, run: 1, phase: 2}, {pair: 2, run: 1, phase: 2},
			{pair: 0, run: 2, phase: 2}, {pair: 2, run: 2, phase: 2},
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := matrixJobs(pairs, tc.runs, tc.birthdayRuns); !slices.Equal(got, tc.want) {
				t.Fatalf("matrixJobs = %+v, want %+v", got, tc.want)
			}
		})
	}
}

// TestMatrixJobsRace: the dual-stack pair (a family race) gets as many
// runs as a birthday pair, in the first phase.
func TestMatrixJobsRace(t *testing.T) {
	pairs := []PairSpec{
		{A: ClassEIMEIF, B: ClassEIMAPDF, Topology: TopoDifferent},
		{A: ClassDualStack, B: ClassDualStack, Topology: TopoDifferent},
	}
	want := []matrixJob{{pair: 0}, {pair: 1}, {pair: 1, run: 1}, {pair: 1, run: 2}}
	if got := matrixJobs(pairs, 1, 3); !slices.Equal(got, want) {
		t.Fatalf("matrixJobs = %+v, want %+v", got, want)
	}
}

// TestPairsAcrossFamilies: the matrix pairs each IPv6-only class with
// itself (its two sites), with the other, and both ways with every
// IPv4-only class; their hosts have IPv6 addresses and listen on [::]; a
// host behind NAT64 reaches the bootstraps at their IPv4 addresses and
// asks the DNS64 for its prefix.
func TestPairsAcrossFamilies(t *testing.T) {
	spec := DefaultSpec("t-", Impairment{})
	plan, err := PlanFor(spec)
	if err != nil {
		t.Fatal(err)
	}
	tb := &Testbed{Plan: plan}
	got := map[string]bool{}
	for _, p := range tb.Pairs(spec, nil) {
		if p.A.IPv6Only() || p.B.IPv6Only() {
			got[p.Key()] = true
		}
		if p.From.Addr.Is6() != p.A.IPv6Only() || p.To.Addr.Is6() != p.B.IPv6Only() {
			t.Errorf("%s: hosts %s and %s", p.Key(), p.From.Addr, p.To.Addr)
		}
	}
	want := map[string]bool{}
	for _, a := range Classes() {
		for _, b := range Classes() {
			if a.IPv6Only() || b.IPv6Only() {
				want[string(a)+"/"+string(b)] = true
			}
		}
	}
	if !maps.Equal(got, want) {
		t.Fatalf("IPv6-only pairs %v, want %v", got, want)
	}
	e := &Env{BootstrapAddrs: "B@203.0.113.1:4433", BootstrapAddrs6: "B@[2001:db8::1]:4433"}
	for _, tc := range []struct {
		site string
		want string
	}{
		{"v6-firewall-1", "--listen [::]:0 --bootstrap-nodes B@[2001:db8::1]:4433"},
		{"v6-nat64-1", "--listen [::]:0 --bootstrap-nodes B@203.0.113.1:4433 --dns-server [2001:db8::53]:53"},
		{"eim-eif-1", "--listen 0.0.0.0:0 --bootstrap-nodes B@203.0.113.1:4433"},
	} {
		h := tb.HostsOf(tc.site)[0]
		args := append([]string{"--listen", listenOn(h, 0)}, e.reachArgs(h)...)
		if got := strings.Join(args, " "); got != tc.want {
			t.Errorf("%s: %s, want %s", tc.site, got, tc.want)
		}
	}
}
