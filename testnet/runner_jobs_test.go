package testnet

import (
	"maps"
	"slices"
	"testing"
)

func TestMatrixJobs(t *testing.T) {
	pairs := []PairSpec{
		{A: ClassAPDM, B: ClassEIMAPDF, Topology: TopoDifferent}, // birthday
		{A: ClassEIMEIF, B: ClassEIMAPDF, Topology: TopoDifferent},
		{A: ClassCGNAT, B: ClassAPDM, Topology: TopoDifferent}, // birthday
		{A: ClassPublic, B: ClassUDPBlocked, Topology: TopoDifferent},
	}
	tests := []struct {
		name               string
		runs, birthdayRuns int
		want               []matrixJob
	}{
		{"birthday pairs in a phase of their own, after the rest", 1, 2, []matrixJob{
			{pair: 1}, {pair: 3},
			{pair: 0, phase: 1}, {pair: 2, phase: 1}, {pair: 0, run: 1, phase: 1}, {pair: 2, run: 1, phase: 1},
		}},
		// Round by round: a slow stretch reaches one run of a pair, not
		// all of them.
		{"birthday runs fewer than runs: runs, round by round", 2, 1, []matrixJob{
			{pair: 1}, {pair: 3}, {pair: 1, run: 1}, {pair: 3, run: 1},
			{pair: 0, phase: 1}, {pair: 2, phase: 1}, {pair: 0, run: 1, phase: 1}, {pair: 2, run: 1, phase: 1},
		}},
		{"three runs, round by round", 3, 3, []matrixJob{
			{pair: 1}, {pair: 3}, {pair: 1, run: 1}, {pair: 3, run: 1}, {pair: 1, run: 2}, {pair: 3, run: 2},
			{pair: 0, phase: 1}, {pair: 2, phase: 1}, {pair: 0, run: 1, phase: 1}, {pair: 2, run: 1, phase: 1},
			{pair: 0, run: 2, phase: 1}, {pair: 2, run: 2, phase: 1},
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

// TestPairsAcrossFamilies: the matrix pairs the IPv6-only class with
// itself (its two sites) and both ways with every IPv4-only class; its
// hosts have IPv6 addresses and listen on [::].
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
	want := map[string]bool{"v6-firewall/v6-firewall": true}
	for _, c := range Classes() {
		if !c.IPv6Only() {
			want["v6-firewall/"+string(c)], want[string(c)+"/v6-firewall"] = true, true
		}
	}
	if !maps.Equal(got, want) {
		t.Fatalf("IPv6-only pairs %v, want %v", got, want)
	}
	for _, h := range tb.HostsOf("v6-firewall-1") {
		if !h.Addr.Is6() || listenOn(h, 0) != "[::]:0" {
			t.Fatalf("v6-firewall host %s listens on %s", h.Addr, listenOn(h, 0))
		}
	}
}
