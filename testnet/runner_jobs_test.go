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
