// Command benchreport runs antnode's benchmarks and writes what they
// measured: BENCHMARKS.md (the numbers, the machine they came from, how to
// reproduce them) and bench-report.json. It runs, in order:
//
//   - go test -bench over every package (monitoring cost per event and
//     throughput with monitoring on versus off, relay throughput against
//     direct and coturn, the bootstrap at 1 000, 5 000 and 10 000 peers,
//     what failed attempts leave behind, forwarded TCP against a raw
//     stream, time to first byte through a forward, 1 000 forwarded
//     connections at once), each ratio taken within one run;
//   - the in-process NAT model's time to connect in round trips
//     (virtual time: deterministic);
//   - as root, the NAT testbed's EIM pairs with 20 ms one-way delay on
//     every access link (skipped, and said so, without root);
//   - as root, goodput under loss: a 16 MiB transfer over antnode's direct
//     QUIC path and over TCP (CUBIC) through the same 20 ms links at 0,
//     1, 2 and 5% loss per link, interleaved (skipped, and said so,
//     without root). --goodput-only runs just this and merges it into the
//     existing reports.
//
// It starts no goroutines of its own beyond those of the commands it runs.
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/antnode/antnode/testnet"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "benchreport:", err)
		os.Exit(1)
	}
}

// Benchmarks of package traversal that run on their own, each with its
// own -benchtime: an iteration of these is a pair of transfers, a
// connection or a thousand, not a second's worth of small operations.
const (
	// overhead is the benchmark of monitoring's cost to throughput.
	overhead = "BenchmarkMonitoringOverhead"
	// forwardThroughput compares forwarded TCP with a raw stream.
	forwardThroughput = "BenchmarkForwardThroughput"
	// forwardTTFB is the time to first byte through a forward.
	forwardTTFB = "BenchmarkForwardTTFB"
	// forwardConns holds 1 000 forwarded connections at once.
	forwardConns = "BenchmarkForwardConnections"
)

// options are benchreport's command-line flags.
type options struct {
	md, out                                    string        // the Markdown and JSON reports
	benchtime                                  string        // go test -benchtime of the other benchmarks
	overheadRuns, forwardRuns, ttfbRuns, conns string        // -benchtime of the benchmarks run alone
	pkgs                                       string        // packages to benchmark
	bin                                        string        // antnode binary for the testbed
	testbed                                    bool          // run the testbed's EIM pairs
	goodput, goodputOnly                       bool          // run goodput under loss; only that
	renderOnly                                 bool          // measure nothing: rewrite md from out
	goodputRuns                                int           // transfers of each kind per loss rate
	goodputLoss                                string        // loss rates per link, percent
	goodputSize                                int64         // bytes per transfer
	goodputTCPCC                               string        // the TCP's congestion control
	goodputTimeout                             time.Duration // per transfer
}

// parseFlags reads the command line.
func parseFlags() options {
	var o options
	flag.StringVar(&o.md, "md", "BENCHMARKS.md", "Markdown report")
	flag.StringVar(&o.out, "json", "bench-report.json", "JSON report")
	flag.StringVar(&o.benchtime, "benchtime", "1s", "go test -benchtime")
	flag.StringVar(&o.overheadRuns, "overhead-benchtime", "60x", "go test -benchtime of "+overhead+" (paired transfers)")
	flag.StringVar(&o.forwardRuns, "forward-benchtime", "40x", "go test -benchtime of "+forwardThroughput+" (paired transfers)")
	flag.StringVar(&o.ttfbRuns, "ttfb-benchtime", "100x", "go test -benchtime of "+forwardTTFB+" (connections)")
	flag.StringVar(&o.conns, "conns-benchtime", "1x", "go test -benchtime of "+forwardConns+" (rounds of 1 000 connections)")
	flag.StringVar(&o.pkgs, "pkgs", "./...", "packages to benchmark")
	flag.StringVar(&o.bin, "bin", "bin/antnode", "antnode binary for the testbed")
	flag.BoolVar(&o.testbed, "testbed", true, "run the testbed's EIM pairs (needs root)")
	flag.BoolVar(&o.goodput, "goodput", true, "measure goodput under loss, QUIC against TCP (needs root)")
	flag.BoolVar(&o.goodputOnly, "goodput-only", false, "measure only goodput under loss and merge it into the existing --json report, then rewrite --md from it")
	flag.BoolVar(&o.renderOnly, "render-only", false, "measure nothing: rewrite --md from the existing --json report")
	flag.IntVar(&o.goodputRuns, "goodput-runs", 3, "goodput: transfers of each kind per loss rate")
	flag.StringVar(&o.goodputLoss, "goodput-loss", "0,1,2,5", "goodput: loss rates per access link, percent, comma-separated")
	flag.Int64Var(&o.goodputSize, "goodput-size", 16<<20, "goodput: bytes per transfer")
	flag.DurationVar(&o.goodputTimeout, "goodput-timeout", 15*time.Minute, "goodput: the longest a transfer may take (16 MiB over TCP at 5% loss per link takes minutes)")
	flag.StringVar(&o.goodputTCPCC, "goodput-tcp-cc", "cubic", "goodput: the TCP connections' congestion control, set on each socket (reno: like quic-go's)")
	flag.Parse()
	return o
}

// run runs the benchmarks, the NAT model and (as root) the testbed, and
// writes the reports.
func run() error {
	o := parseFlags()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if o.goodputOnly || o.renderOnly {
		return rewrite(ctx, o)
	}

	rep := Report{Generated: time.Now().UTC().Format(time.RFC3339), Machine: readMachine(),
		Command: "make bench"}
	rep.Commit = strings.TrimSpace(output(ctx, "git", "rev-parse", "--short", "HEAD"))

	var err error
	if rep.Benchmarks, err = runBenchmarks(ctx, o); err != nil {
		return err
	}

	fmt.Println("== NAT model: time to connect in round trips")
	raw, err := tee(ctx, "go", "test", "-count=1", "-run", "^TestTimeToConnectInRoundTrips$", "-v", "./traversal")
	if err != nil {
		return fmt.Errorf("model round trips: %w", err)
	}
	rep.ModelRoundTrips = ParseModelRTTs(raw)

	switch {
	case !o.testbed:
		rep.TestbedNote = "not run (--testbed=false)"
	case os.Geteuid() != 0:
		rep.TestbedNote = "not run: the testbed needs root (network namespaces); run make bench as root"
	default:
		if rep.TestbedRoundTrips, err = runTestbed(ctx, o.bin); err != nil {
			return err
		}
	}

	if err = runGoodput(ctx, o, &rep); err != nil {
		return err
	}

	rep.Targets = Targets(rep)
	return writeReports(rep, o.md, o.out)
}

// rewrite reads the report already at o.out, measures goodput under loss
// into it (--goodput-only; nothing with --render-only), and rewrites
// both reports.
func rewrite(ctx context.Context, o options) error {
	b, err := os.ReadFile(o.out)
	if err != nil {
		return fmt.Errorf("--goodput-only and --render-only read the existing report: %w", err)
	}
	var rep Report
	if err := json.Unmarshal(b, &rep); err != nil {
		return fmt.Errorf("%s: %w", o.out, err)
	}
	if !o.renderOnly {
		o.goodput = true
		if err := runGoodput(ctx, o, &rep); err != nil {
			return err
		}
	}
	rep.Targets = Targets(rep)
	return writeReports(rep, o.md, o.out)
}

// runGoodput measures goodput under loss into rep (as root; without root
// it notes why not).
func runGoodput(ctx context.Context, o options, rep *Report) error {
	rep.Goodput, rep.GoodputNote = nil, ""
	switch {
	case !o.goodput:
		rep.GoodputNote = "not run (--goodput=false)"
		return nil
	case os.Geteuid() != 0:
		rep.GoodputNote = "not run: it needs root (network namespaces); run make bench as root"
		return nil
	}
	var loss []float64
	for _, f := range strings.Split(o.goodputLoss, ",") {
		v, err := strconv.ParseFloat(strings.TrimSpace(f), 64)
		if err != nil {
			return fmt.Errorf("--goodput-loss: %w", err)
		}
		loss = append(loss, v)
	}
	fmt.Println("== goodput under loss: QUIC (direct path) against TCP, 20 ms one-way delay per access link")
	rows, err := testnet.Goodput(ctx, testnet.GoodputConfig{Bin: o.bin, LossPcts: loss, Size: o.goodputSize,
		Runs: o.goodputRuns, TCPCongestion: o.goodputTCPCC, Timeout: o.goodputTimeout, Progress: os.Stdout})
	if err != nil {
		return fmt.Errorf("goodput: %w", err)
	}
	rep.Goodput = rows
	rep.GoodputCommit = strings.TrimSpace(output(ctx, "git", "rev-parse", "--short", "HEAD"))
	rep.GoodputGenerated = time.Now().UTC().Format(time.RFC3339)
	return nil
}

// runBenchmarks runs go test -bench over o.pkgs, skipping the benchmarks
// that run alone, then each of those in package traversal with its own
// -benchtime, and returns what they all measured.
func runBenchmarks(ctx context.Context, o options) ([]Bench, error) {
	fmt.Println("== go test -bench (this takes a few minutes)")
	// The monitoring overhead and the forward's throughput are ratios of
	// two throughputs a few per cent apart: they need many paired
	// transfers, not a second's worth. The time to first byte is a median
	// of many connections, and 1 000 connections are one round.
	alone := []struct{ bench, benchtime string }{
		{overhead, o.overheadRuns},
		{forwardThroughput, o.forwardRuns},
		{forwardTTFB, o.ttfbRuns},
		{forwardConns, o.conns},
	}
	skip := make([]string, len(alone))
	for i, a := range alone {
		skip[i] = a.bench
	}
	raw, err := tee(ctx, "go", "test", "-run", "^$", "-bench", ".", "-skip", "^("+strings.Join(skip, "|")+")$", "-benchmem", "-benchtime", o.benchtime, "-timeout", "30m", o.pkgs)
	if err != nil {
		return nil, fmt.Errorf("go test -bench: %w", err)
	}
	benches := ParseBench(raw)
	for _, a := range alone {
		raw, err = tee(ctx, "go", "test", "-run", "^$", "-bench", "^"+a.bench+"$", "-benchmem", "-benchtime", a.benchtime, "-timeout", "30m", "./traversal")
		if err != nil {
			return nil, fmt.Errorf("go test -bench %s: %w", a.bench, err)
		}
		benches = append(benches, ParseBench(raw)...)
	}
	return benches, nil
}

// runTestbed runs the testbed's EIM pairs with 20 ms one-way delay per
// access link, using the antnode binary bin, and returns their round
// trips from its report.
func runTestbed(ctx context.Context, bin string) ([]RoundTrip, error) {
	fmt.Println("== testbed: EIM pairs, 20 ms one-way delay per access link")
	tmp, err := os.MkdirTemp("", "benchreport")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(tmp)
	report := tmp + "/testbed-report.json"
	if _, err := tee(ctx, "go", "run", "./testnet/cmd/testbed", "--bin", bin, "--classes", "public,eim-eif,eim-adf,eim-apdf,cgnat",
		"--runs", "5", "--delay", "20ms", "--scenarios", "none", "--report", report); err != nil {
		return nil, fmt.Errorf("testbed: %w", err)
	}
	b, err := os.ReadFile(report)
	if err != nil {
		return nil, err
	}
	return ParseTestbedRTTs(b)
}

// writeReports writes rep as JSON to out and as Markdown to md, and
// prints each target's verdict.
func writeReports(rep Report, md, out string) error {
	js, err := json.MarshalIndent(rep, "", "  ")
	if err != nil {
		return err
	}
	if err := os.WriteFile(out, append(js, '\n'), 0o644); err != nil {
		return err
	}
	if err := os.WriteFile(md, []byte(Markdown(rep)), 0o644); err != nil {
		return err
	}
	fmt.Printf("wrote %s and %s\n", md, out)
	for _, t := range rep.Targets {
		fmt.Printf("target %-58s %-12s measured %-14s %s\n", t.Name, t.Target, t.Measured, metWord(t.Met))
	}
	return nil
}

func metWord(met bool) string {
	if met {
		return "met"
	}
	return "NOT MET"
}

// tee runs a command, copying its output to stdout as it comes, and
// returns the output.
func tee(ctx context.Context, name string, args ...string) (string, error) {
	var buf bytes.Buffer
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Stdout = io.MultiWriter(os.Stdout, &buf)
	cmd.Stderr = io.MultiWriter(os.Stderr, &buf)
	err := cmd.Run()
	return buf.String(), err
}

// output runs a command and returns its stdout ("" on error).
func output(ctx context.Context, name string, args ...string) string {
	b, err := exec.CommandContext(ctx, name, args...).Output()
	if err != nil {
		return ""
	}
	return string(b)
}

// readMachine describes this machine from /proc.
func readMachine() Machine {
	m := Machine{Cores: runtime.NumCPU(), Go: runtime.Version(), OS: runtime.GOOS + "/" + runtime.GOARCH}
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, l := range strings.Split(string(b), "\n") {
			if v, ok := strings.CutPrefix(l, "model name"); ok {
				m.CPU = strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(v), ":"))
				break
			}
		}
	}
	if b, err := os.ReadFile("/proc/meminfo"); err == nil {
		for _, l := range strings.Split(string(b), "\n") {
			if v, ok := strings.CutPrefix(l, "MemTotal:"); ok {
				var kb int64
				fmt.Sscanf(strings.TrimSpace(v), "%d", &kb)
				m.MemoryMiB = kb / 1024
			}
		}
	}
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		m.Kernel = strings.TrimSpace(string(b))
	}
	return m
}
