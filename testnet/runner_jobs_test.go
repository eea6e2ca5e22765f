package testnet

import (
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

// TestPairsShareFamily: the matrix pairs the IPv6-only class with itself
// (both sites) and with no IPv4-only class, and every host of a pair has
// an address of one family.
func TestPairsShareFamily(t *testing.T) {
	spec := DefaultSpec("t-", Impairment{})
	plan, err := PlanFor(spec)
	if err != nil {
		t.Fatal(err)
	}
	tb := &Testbed{Plan: plan}
	var v6 []string
	for _, p := range tb.Pairs(spec, nil) {
		if p.From.Addr.Is6() != p.To.Addr.Is6() {
			t.Errorf("%s pairs %s with %s", p.Key(), p.From.Addr, p.To.Addr)
		}
		if p.A.IPv6Only() || p.B.IPv6Only() {
			v6 = append(v6, p.Key())
		}
	}
	if len(v6) != 1 || v6[0] != "v6-firewall/v6-firewall" {
		t.Fatalf("IPv6-only pairs %v, want [v6-firewall/v6-firewall]", v6)
	}
	for _, h := range tb.HostsOf("v6-firewall-1") {
		if !h.Addr.Is6() || listenOn(h, 0) != "[::]:0" {
			t.Fatalf("v6-firewall host %s listens on %s", h.Addr, listenOn(h, 0))
		}
	}
}
