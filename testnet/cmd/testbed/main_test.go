package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/antnode/antnode/testnet"
)

// judged returns a report with one pair judged against the repository's
// expectation table, as testnet.Run makes it.
func judged(t *testing.T, p testnet.PairSpec, rs []testnet.ConnectResult) *testnet.Report {
	t.Helper()
	x, err := testnet.LoadExpectations("../../expectations.json")
	if err != nil {
		t.Fatal(err)
	}
	rep := &testnet.Report{Unmet: []string{}}
	rep.AddPair(p, rs, x.ForPair(p))
	return rep
}

func runs(n int, r testnet.ConnectResult) []testnet.ConnectResult {
	out := make([]testnet.ConnectResult, n)
	for i := range out {
		out[i] = r
	}
	return out
}

// TestFinish checks the exit status and output of a testbed run: 0 only
// when every pair met its expectation, every scenario passed, the run
// ended without error and the report was written; UNMET and SCENARIO
// FAILED lines name what fell short.
func TestFinish(t *testing.T) {
	eim := testnet.PairSpec{A: testnet.ClassEIMEIF, B: testnet.ClassEIMAPDF, Topology: testnet.TopoDifferent}
	bday := testnet.PairSpec{A: testnet.ClassAPDM, B: testnet.ClassCGNAT, Topology: testnet.TopoDifferent}
	fast := testnet.ConnectResult{Connected: true, Path: "direct", TimeToConnect: 130, RTT: 83, BytesVerified: 1 << 20, Family: "ipv4"}
	slow := fast
	slow.TimeToConnect = 170 // 2.05 round trips
	late := fast
	late.TimeToConnect = 11000
	tests := []struct {
		name     string
		rep      *testnet.Report
		runErr   error
		badPath  bool
		status   int
		unmet    int // UNMET lines
		failed   int // SCENARIO FAILED lines
		written  bool
		stderrOK bool // stderr may be non-empty
	}{
		{"all met", judged(t, eim, runs(3, fast)), nil, false, 0, 0, 0, true, false},
		{"eim pair over 1.8 round trips", judged(t, eim, runs(3, slow)), nil, false, 1, 1, 0, true, false},
		{"birthday pair late in 2 of 10 runs", judged(t, bday, append(runs(8, fast), late, late)), nil, false, 1, 1, 0, true, false},
		{"birthday pair late in 1 of 10 runs", judged(t, bday, append(runs(9, fast), late)), nil, false, 0, 0, 0, true, false},
		{"eim pair failing", judged(t, eim, runs(3, testnet.ConnectResult{Reason: "timeout", Error: "no answer"})), nil, false, 1, 1, 0, true, false},
		{"failed scenario", &testnet.Report{Scenarios: []testnet.ScenarioResult{{Name: "rebinding", OK: true}, {Name: "expiry", OK: false, Detail: "no migration"}}},
			nil, false, 1, 0, 1, true, false},
		{"run error with a partial report", judged(t, eim, runs(3, fast)), errors.New("testnet: the testbed does not behave as specified"), false, 1, 0, 0, true, true},
		{"run error without a report", nil, errors.New("testnet: RunConfig.Bin is required"), false, 1, 0, 0, false, true},
		{"report not writable", judged(t, eim, runs(3, fast)), nil, true, 1, 0, 0, false, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "testbed-report.json")
			if tc.badPath {
				path = filepath.Join(t.TempDir(), "missing", "testbed-report.json")
			}
			var stdout, stderr bytes.Buffer
			status := finish(tc.rep, tc.runErr, path, &stdout, &stderr)
			if status != tc.status {
				t.Fatalf("status %d, want %d\nstdout:\n%s\nstderr:\n%s", status, tc.status, &stdout, &stderr)
			}
			count := func(prefix string) int {
				n := 0
				for _, l := range strings.Split(stdout.String(), "\n") {
					if strings.HasPrefix(l, prefix) {
						n++
					}
				}
				return n
			}
			if n := count("UNMET: "); n != tc.unmet {
				t.Fatalf("%d UNMET lines, want %d:\n%s", n, tc.unmet, &stdout)
			}
			if n := count("SCENARIO FAILED: "); n != tc.failed {
				t.Fatalf("%d SCENARIO FAILED lines, want %d:\n%s", n, tc.failed, &stdout)
			}
			if !tc.stderrOK && stderr.Len() > 0 {
				t.Fatalf("unexpected stderr: %s", &stderr)
			}
			b, err := os.ReadFile(path)
			if (err == nil) != tc.written {
				t.Fatalf("report written %v, want %v", err == nil, tc.written)
			}
			if tc.written {
				var got testnet.Report
				if err := json.Unmarshal(b, &got); err != nil {
					t.Fatal(err)
				}
				if len(got.Pairs) != len(tc.rep.Pairs) || len(got.Unmet) != len(tc.rep.Unmet) {
					t.Fatalf("report file has %d pairs, %d unmet; want %d, %d", len(got.Pairs), len(got.Unmet), len(tc.rep.Pairs), len(tc.rep.Unmet))
				}
				for i, p := range got.Pairs {
					if p.Met != tc.rep.Pairs[i].Met || p.Expect != tc.rep.Pairs[i].Expect {
						t.Fatalf("report file pair %d: met %v expect %q; want %v %q", i, p.Met, p.Expect, tc.rep.Pairs[i].Met, tc.rep.Pairs[i].Expect)
					}
				}
			}
		})
	}
}

func TestCleanupConfig(t *testing.T) {
	tests := []struct {
		prefix string
		want   testnet.CleanupConfig
	}{
		{"", testnet.CleanupConfig{Prefix: "antb"}},
		{"mybed-", testnet.CleanupConfig{Prefix: "mybed-", Unowned: true}},
	}
	for _, tc := range tests {
		if got := cleanupConfig(tc.prefix); got != tc.want {
			t.Errorf("cleanupConfig(%q) = %+v, want %+v", tc.prefix, got, tc.want)
		}
	}
	var stdout, stderr bytes.Buffer
	if status := runCleanup(testnet.CleanupConfig{}, &stdout, &stderr); status != 1 || stderr.Len() == 0 {
		t.Fatalf("cleanup without a prefix: status %d, stderr %q; want 1 and the error", status, &stderr)
	}
}

func TestScenarioList(t *testing.T) {
	got, err := scenarioList("default", "attack,mapping-expiry")
	if err != nil {
		t.Fatal(err)
	}
	want := slices.DeleteFunc(testnet.DefaultScenarios(), func(n string) bool { return n == "attack" || n == "mapping-expiry" })
	if !slices.Equal(got, want) || len(got) != len(testnet.DefaultScenarios())-2 {
		t.Fatalf("default without attack and mapping-expiry: %v", got)
	}
	if got, err := scenarioList("tunnel,blackhole", "blackhole"); err != nil || !slices.Equal(got, []string{"tunnel"}) {
		t.Fatalf("tunnel,blackhole without blackhole: %v, %v", got, err)
	}
	if got, err := scenarioList("none", ""); err != nil || len(got) != 0 {
		t.Fatalf("none: %v, %v", got, err)
	}
	if _, err := scenarioList("default", "no-such"); err == nil {
		t.Fatal("an unknown skipped scenario: no error")
	}
}
