// Command testbed builds the NAT testbed (network namespaces with nftables
// NATs of every RFC 4787 class), verifies each router's behaviour, runs
// `antnode connect` for every ordered pair of site classes, prints a
// table and writes testbed-report.json. It exits non-zero when the
// testbed does not behave as specified, when a pair does worse than the
// expectation table, or when a scenario fails. Needs root.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/antnode/antnode/testnet"
)

func main() {
	os.Exit(run())
}

func run() int {
	var (
		bin       = flag.String("bin", "bin/antnode", "the antnode binary to test")
		runs      = flag.Int("runs", 3, "runs per pair")
		bday      = flag.Int("birthday-runs", 10, "runs for pairs that need the birthday search")
		delay     = flag.Duration("delay", 20*time.Millisecond, "one-way delay added on every access link")
		loss      = flag.Float64("loss", 0, "percent of packets lost on every access link")
		rate      = flag.Int("rate-kbit", 0, "rate limit of every access link in kbit/s (0: none)")
		classes   = flag.String("classes", "", "comma-separated classes to pair (default: all of the default set; apdm-portmap only when named): "+classList())
		send      = flag.Int64("send", 1<<20, "bytes verified per connect")
		timeout   = flag.Duration("timeout", 15*time.Second, "per connect")
		parallel  = flag.Int("parallel", 6, "concurrent connects")
		keep      = flag.Bool("keep", false, "keep the topology and daemons up after the run, until Ctrl-C")
		cleanup   = flag.Bool("cleanup", false, "remove the testbed namespaces (prefix antb, or --prefix) left by killed runs, keeping those of live runs, then exit")
		report    = flag.String("report", "testbed-report.json", "where to write the report")
		expect    = flag.String("expect", "testnet/expectations.json", "expectation table")
		rttBounds = flag.Bool("rtt-bounds", true, "enforce the expectation table's round-trip bounds (false for a lossy pass: a retransmitted handshake packet is a loss timeout, not a round trip)")
		scenarios = flag.String("scenarios", "default", "comma-separated scenarios, \"default\", \"all\" or \"none\": "+strings.Join(testnet.ScenarioNames(), ", "))
		skip      = flag.String("skip-scenarios", "", "comma-separated scenarios not to run of those --scenarios names")
		prefix    = flag.String("prefix", "", "namespace prefix (default antb<pid>-)")
		logDir    = flag.String("logs", "", "write daemon, bootstrap and failed-connect logs to this directory")
		soakFor   = flag.Duration("soak", 10*time.Minute, "how long the soak scenario runs (--scenarios soak)")
	)
	flag.Parse()
	if *cleanup {
		return runCleanup(cleanupConfig(*prefix), os.Stdout, os.Stderr)
	}
	cfg := testnet.RunConfig{Bin: *bin, Runs: *runs, BirthdayRuns: *bday, Send: *send, Timeout: *timeout,
		Parallel: *parallel, Keep: *keep, Progress: os.Stderr, Commit: commit(), LogDir: *logDir}
	link := testnet.Impairment{Delay: *delay, Loss: *loss, RateKbit: *rate}
	if *classes != "" {
		for _, c := range strings.Split(*classes, ",") {
			cl := testnet.Class(strings.TrimSpace(c))
			if !cl.Valid() {
				fmt.Fprintf(os.Stderr, "testbed: unknown class %q (have %s)\n", c, classList())
				return 2
			}
			cfg.Classes = append(cfg.Classes, cl)
		}
	}
	// The default sites, plus those of a class that --classes names
	// although the default set leaves it out (apdm-portmap).
	cfg.Spec = testnet.SpecFor(*prefix, link, cfg.Classes)
	cfg.SoakFor = *soakFor
	var err error
	if cfg.Scenarios, err = scenarioList(*scenarios, *skip); err != nil {
		fmt.Fprintln(os.Stderr, "testbed:", err)
		return 2
	}
	x, err := testnet.LoadExpectations(*expect)
	if err != nil {
		fmt.Fprintln(os.Stderr, "testbed:", err)
		return 2
	}
	if !*rttBounds {
		x = x.WithoutRTTBounds()
	}
	cfg.Expect = x
	if _, err := os.Stat(*bin); err != nil {
		fmt.Fprintf(os.Stderr, "testbed: binary %s: %v (run make build)\n", *bin, err)
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	rep, err := testnet.Run(ctx, cfg)
	return finish(rep, err, *report, os.Stdout, os.Stderr)
}

// finish writes the report to path, prints the table and what fell short,
// and returns the exit status: 1 when the run failed, a pair did worse
// than its expectation (UNMET), a scenario failed or the report could not
// be written; else 0.
func finish(rep *testnet.Report, runErr error, path string, stdout, stderr io.Writer) int {
	status := 0
	if rep != nil {
		b, err := json.MarshalIndent(rep, "", "  ")
		if err == nil {
			err = os.WriteFile(path, append(b, '\n'), 0o644)
		}
		if err != nil {
			fmt.Fprintln(stderr, "testbed: write report:", err)
			status = 1
		}
		fmt.Fprint(stdout, rep.Table())
		fmt.Fprintf(stdout, "build %.0f ms, teardown %.0f ms, %d namespaces, %.1f s in all; report: %s\n",
			rep.BuildMS, rep.TeardownMS, rep.Namespaces, rep.DurationS, path)
		for _, u := range rep.Unmet {
			fmt.Fprintln(stdout, "UNMET:", u)
			status = 1
		}
		for _, s := range rep.Scenarios {
			if !s.OK {
				fmt.Fprintln(stdout, "SCENARIO FAILED:", s.Name, s.Detail)
				status = 1
			}
		}
	}
	if runErr != nil {
		fmt.Fprintln(stderr, "testbed:", runErr)
		status = 1
	}
	return status
}

// scenarioList returns the scenarios that names (--scenarios: comma-
// separated names, "default", "all" or "none") stands for, without those
// of skip (--skip-scenarios: comma-separated names).
func scenarioList(names, skip string) ([]string, error) {
	var list []string
	switch names {
	case "none", "":
	case "all":
		list = testnet.ScenarioNames()
	case "default":
		list = testnet.DefaultScenarios()
	default:
		list = strings.Split(names, ",")
	}
	if skip == "" {
		return list, nil
	}
	for _, s := range strings.Split(skip, ",") {
		if _, ok := testnet.Scenarios()[s]; !ok {
			return nil, fmt.Errorf("unknown scenario %q in --skip-scenarios (have %s)", s, strings.Join(testnet.ScenarioNames(), ", "))
		}
		list = slices.DeleteFunc(list, func(n string) bool { return n == s })
	}
	return list, nil
}

// cleanupConfig is what --cleanup removes: the leftovers of every killed
// run (prefix antb), or, with --prefix, those under that prefix, including
// namespaces whose name carries no owner process ID (the operator named
// them). Namespaces of live runs are kept either way.
func cleanupConfig(prefix string) testnet.CleanupConfig {
	if prefix == "" {
		return testnet.CleanupConfig{Prefix: "antb"}
	}
	return testnet.CleanupConfig{Prefix: prefix, Unowned: true}
}

// runCleanup runs --cleanup and returns the exit status.
func runCleanup(cfg testnet.CleanupConfig, stdout, stderr io.Writer) int {
	res, err := testnet.Cleanup(cfg)
	if err != nil {
		fmt.Fprintln(stderr, "testbed:", err)
		return 1
	}
	fmt.Fprintf(stdout, "removed %d namespaces, kept %d\n", len(res.Removed), len(res.Kept))
	for _, k := range res.Kept {
		fmt.Fprintf(stdout, "  kept %s: %s\n", k.Name, k.Why)
	}
	return 0
}

func classList() string {
	var cs []string
	for _, c := range testnet.Classes() {
		cs = append(cs, string(c))
	}
	return strings.Join(cs, ", ")
}

func commit() string {
	out, err := exec.Command("git", "rev-parse", "--short=12", "HEAD").Output()
	if err != nil {
		return "unknown"
	}
	return strings.TrimSpace(string(out))
}
