package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"math"
	"regexp"
	"sort"
	"strconv"
	"strings"

	"github.com/antnode/antnode/testnet"
)

// Report is bench-report.json.
type Report struct {
	Generated         string      `json:"generated"`
	Commit            string      `json:"commit"`
	Command           string      `json:"command"`
	Machine           Machine     `json:"machine"`
	Targets           []Target    `json:"targets"`
	ModelRoundTrips   []RoundTrip `json:"model_round_trips"`
	TestbedRoundTrips []RoundTrip `json:"testbed_round_trips,omitempty"`
	TestbedNote       string      `json:"testbed_note,omitempty"`
	// Goodput under loss, QUIC against TCP; it may come from a later run
	// (--goodput-only) than the rest, on its own commit.
	Goodput          []testnet.GoodputRow `json:"goodput_under_loss,omitempty"`
	GoodputNote      string               `json:"goodput_note,omitempty"`
	GoodputCommit    string               `json:"goodput_commit,omitempty"`
	GoodputGenerated string               `json:"goodput_generated,omitempty"`
	Benchmarks       []Bench              `json:"benchmarks"`
}

// Machine is where the numbers came from.
type Machine struct {
	CPU       string `json:"cpu"`
	Cores     int    `json:"cores"`
	MemoryMiB int64  `json:"memory_mib"`
	Kernel    string `json:"kernel"`
	OS        string `json:"os"`
	Go        string `json:"go"`
}

// Bench is one benchmark result line.
type Bench struct {
	Package string             `json:"package"`
	Name    string             `json:"name"` // without the -GOMAXPROCS suffix
	Runs    int64              `json:"runs"`
	Metrics map[string]float64 `json:"metrics"` // unit -> value
}

// RoundTrip is one pair's time to connect.
type RoundTrip struct {
	Pair       string  `json:"pair"`
	Millis     float64 `json:"time_to_connect_ms"`
	RTTMillis  float64 `json:"rtt_ms,omitempty"`
	RoundTrips float64 `json:"round_trips"`
	// P95RoundTrips is the testbed's p95 time to connect over the median
	// RTT (the model has one run per pair: none).
	P95RoundTrips float64 `json:"p95_round_trips,omitempty"`
}

// Target is a goal and whether this run reached it.
type Target struct {
	Name     string `json:"name"`
	Target   string `json:"target"`
	Measured string `json:"measured"`
	Met      bool   `json:"met"`
}

var benchLine = regexp.MustCompile(`^(Benchmark\S+?)(?:-\d+)?\s+(\d+)\s+(.+)$`)

// ParseBench reads go test -bench output: "pkg:" lines name the package of
// the result lines that follow.
func ParseBench(out string) []Bench {
	var res []Bench
	pkg := ""
	sc := bufio.NewScanner(strings.NewReader(out))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if p, ok := strings.CutPrefix(line, "pkg: "); ok {
			pkg = p
			continue
		}
		m := benchLine.FindStringSubmatch(line)
		if m == nil {
			continue
		}
		runs, _ := strconv.ParseInt(m[2], 10, 64)
		f := strings.Fields(m[3])
		b := Bench{Package: pkg, Name: m[1], Runs: runs, Metrics: map[string]float64{}}
		for i := 0; i+1 < len(f); i += 2 {
			v, err := strconv.ParseFloat(f[i], 64)
			if err != nil {
				break
			}
			b.Metrics[f[i+1]] = v
		}
		res = append(res, b)
	}
	return res
}

var modelLine = regexp.MustCompile(`:\s+(.+?): (\S+) = ([0-9.]+) round trips`)

// ParseModelRTTs reads the t.Logf lines of TestTimeToConnectInRoundTrips.
func ParseModelRTTs(out string) []RoundTrip {
	var res []RoundTrip
	for _, line := range strings.Split(out, "\n") {
		m := modelLine.FindStringSubmatch(line)
		if m == nil {
			continue
		}
		rt, _ := strconv.ParseFloat(m[3], 64)
		r := RoundTrip{Pair: m[1], RoundTrips: rt}
		if d, err := parseDuration(m[2]); err == nil {
			r.Millis = d
		}
		res = append(res, r)
	}
	return res
}

func parseDuration(s string) (float64, error) {
	for _, u := range []struct {
		suffix string
		ms     float64
	}{{"ms", 1}, {"µs", 1e-3}, {"us", 1e-3}, {"ns", 1e-6}, {"s", 1000}} {
		if v, ok := strings.CutSuffix(s, u.suffix); ok {
			f, err := strconv.ParseFloat(v, 64)
			return f * u.ms, err
		}
	}
	return 0, fmt.Errorf("duration %q", s)
}

// ParseTestbedRTTs reads a testbed report: each pair's median time to
// connect over its median path RTT.
func ParseTestbedRTTs(b []byte) ([]RoundTrip, error) {
	var r struct {
		Pairs []struct {
			A        string  `json:"a"`
			B        string  `json:"b"`
			Topology string  `json:"topology"`
			Direct   int     `json:"direct"`
			P50      float64 `json:"time_to_connect_ms_p50"`
			P95      float64 `json:"time_to_connect_ms_p95"`
			RTT      float64 `json:"rtt_ms_p50"`
		} `json:"pairs"`
	}
	if err := json.Unmarshal(b, &r); err != nil {
		return nil, fmt.Errorf("testbed report: %w", err)
	}
	var res []RoundTrip
	for _, p := range r.Pairs {
		if p.Direct == 0 || p.RTT <= 0 {
			continue
		}
		if p.Topology != "" && p.Topology != "different-nat" {
			continue // behind one NAT the path is the LAN, not the 20 ms links
		}
		name := p.A + " to " + p.B
		res = append(res, RoundTrip{Pair: name, Millis: p.P50, RTTMillis: p.RTT, RoundTrips: round2(p.P50 / p.RTT),
			P95RoundTrips: round2(p.P95 / p.RTT)})
	}
	return res, nil
}

func round2(f float64) float64 { return math.Round(f*100) / 100 }

// metric finds a benchmark's metric.
func (r Report) metric(name, unit string) (float64, bool) {
	for _, b := range r.Benchmarks {
		if b.Name == name {
			v, ok := b.Metrics[unit]
			return v, ok
		}
	}
	return 0, false
}

// bench finds a benchmark's result.
func (r Report) bench(name string) (Bench, bool) {
	for _, b := range r.Benchmarks {
		if b.Name == name {
			return b, true
		}
	}
	return Bench{}, false
}

// Targets checks the goals of the project against a run.
func Targets(r Report) []Target {
	var ts []Target
	add := func(name, target, bench, unit string, format string, met func(float64) bool) {
		v, ok := r.metric(bench, unit)
		t := Target{Name: name, Target: target, Measured: "not measured"}
		if ok {
			t.Measured, t.Met = fmt.Sprintf(format, v), met(v)
		}
		ts = append(ts, t)
	}
	const scale = "BenchmarkBootstrapScale/peers=10000"
	add("bootstrap memory per idle registered peer (10 000 peers)", "<= 65536 B", scale, "B/peer", "%.0f B",
		func(v float64) bool { return v <= 65536 })
	add("coordination requests per second (10 000 peers)", ">= 5000/s", scale, "req/s", "%.0f/s",
		func(v float64) bool { return v >= 5000 })
	add("p99 coordination latency under that load", "< 50 ms", scale, "p99-ms", "%.1f ms",
		func(v float64) bool { return v < 50 })
	add("bootstrap capacity from its CPU per introduction, all cores (10 000 peers)", ">= 5000/s", scale, "capacity-req/s", "%.0f/s",
		func(v float64) bool { return v >= 5000 })
	restartTargets(add)
	add("memory retained per failed attempt", "0 (|x| < 256 B: noise)", "BenchmarkFailedAttemptRetention", "retained-B/attempt", "%.0f B",
		func(v float64) bool { return math.Abs(v) < 256 })
	add("goroutines retained per failed attempt", "0", "BenchmarkFailedAttemptRetention", "goroutines/attempt", "%.3f",
		func(v float64) bool { return v <= 0 })
	add("throughput with monitoring on / off", ">= 0.99", "BenchmarkMonitoringOverhead", "on/off", "%.3f",
		func(v float64) bool { return v >= 0.99 })
	// Recording an event: the aim is under 100 ns and nothing allocated
	// (B/op, not the rounded allocs/op: an allocation every few events
	// rounds to 0 allocs/op but not to 0 B/op).
	for _, e := range []struct{ name, bench string }{
		{"cost of recording a node event", "BenchmarkRecord/node_event"},
		{"cost of recording an attempt event (1% of successes kept)", "BenchmarkRecord/attempt_event"},
	} {
		t := Target{Name: e.name, Target: "< 100 ns, 0 B", Measured: "not measured"}
		ns, ok1 := r.metric(e.bench, "ns/op")
		by, ok2 := r.metric(e.bench, "B/op")
		if ok1 && ok2 {
			t.Measured, t.Met = fmt.Sprintf("%.0f ns, %.0f B", ns, by), ns < 100 && by == 0
		}
		ts = append(ts, t)
	}
	// Carrying traffic (package traversal's forward benchmarks).
	add("forwarded TCP throughput / raw stream on the same peer connection", ">= 0.9", "BenchmarkForwardThroughput", "fwd/raw", "%.3f",
		func(v float64) bool { return v >= 0.9 })
	t := Target{Name: "time to first byte of a new TCP connection through an established forward", Target: "<= 1.1 peer RTT", Measured: "not measured"}
	if b, ok := r.bench("BenchmarkForwardTTFB"); ok {
		if v, ok := b.Metrics["ttfb/rtt"]; ok {
			t.Measured, t.Met = fmt.Sprintf("%.2f RTT (%.1f ms, RTT %.1f ms)", v, b.Metrics["ttfb-ms"], b.Metrics["rtt-ms"]), v <= 1.1
		}
	}
	ts = append(ts, t)
	t = Target{Name: "1 000 concurrent forwarded TCP connections through one forward, each verified", Target: "1000 of 1000", Measured: "not measured"}
	if b, ok := r.bench("BenchmarkForwardConnections"); ok {
		if v, ok := b.Metrics["verified-conns"]; ok {
			t.Measured, t.Met = fmt.Sprintf("%.0f of 1000, %.0f KiB/connection", v, b.Metrics["B/conn"]/1024), v >= 1000
		}
	}
	ts = append(ts, t)
	add("built-in relay throughput / direct path (loopback, peers and relay on the same cores)", ">= 0.5", "BenchmarkRelayThroughput", "relay/direct", "%.3f",
		func(v float64) bool { return v >= 0.5 })
	// Reconnecting over a remembered path (loopback, both nodes and the
	// bootstrap in the benchmark process): faster than an introduction,
	// and free where the remembered address is stale.
	add("reconnect over a remembered path / through an introduction (loopback)", "< 1", "BenchmarkReconnect", "remembered/introduced", "%.3f",
		func(v float64) bool { return v < 1 })
	add("reconnect with a stale remembered address / with no memory (loopback)", "<= 1.1 (costs nothing)", "BenchmarkReconnect", "stale/no-memory", "%.3f",
		func(v float64) bool { return v <= 1.1 })

	return append(append(ts, roundTripTargets(r)...), goodputTarget(r.Goodput))
}

// roundTripTargets are issue 22's goals for the time to connect through
// EIM NATs, in peer round trips: 1.5 in the model, a median of at most
// 1.6 and a p95 of at most 2.0 for every pair in the testbed.
func roundTripTargets(r Report) []Target {
	worst := 0.0
	for _, m := range r.ModelRoundTrips {
		if !strings.Contains(m.Pair, "symmetric") && !strings.Contains(m.Pair, "birthday") {
			worst = max(worst, m.RoundTrips)
		}
	}
	model := Target{Name: "time to connect through EIM NATs, worst pair (model)", Target: "<= 1.5 round trips (libp2p's testbed figure: about 7)", Measured: "not measured"}
	if worst > 0 {
		model.Measured, model.Met = fmt.Sprintf("%.2f round trips", worst), worst <= 1.5
	}
	worst, worst95 := 0.0, 0.0
	for _, m := range r.TestbedRoundTrips {
		worst, worst95 = max(worst, m.RoundTrips), max(worst95, m.P95RoundTrips)
	}
	med := Target{Name: "time to connect through EIM NATs, worst pair's median (testbed)", Target: "<= 1.6 round trips", Measured: "not measured"}
	p95 := Target{Name: "time to connect through EIM NATs, worst pair's p95 (testbed)", Target: "<= 2.0 round trips", Measured: "not measured"}
	if worst > 0 {
		med.Measured, med.Met = fmt.Sprintf("%.2f round trips", worst), worst <= 1.6
		p95.Measured, p95.Met = fmt.Sprintf("%.2f round trips", worst95), worst95 <= 2.0
	}
	return []Target{model, med, p95}
}

// goodputTarget is the goal of goodput under loss: QUIC at least TCP's
// at every loss rate; measured is the worst rate's ratio.
func goodputTarget(rows []testnet.GoodputRow) Target {
	t := Target{Name: "goodput under loss, QUIC / TCP, worst loss rate", Target: ">= 1.0 at every loss rate", Measured: "not measured"}
	if len(rows) == 0 {
		return t
	}
	worst := rows[0]
	for _, x := range rows[1:] {
		if x.Ratio < worst.Ratio {
			worst = x
		}
	}
	t.Measured = fmt.Sprintf("%.3f at %g%% loss, TCP %s", worst.Ratio, worst.LossPct, worst.TCPCongestion)
	t.Met = worst.Ratio >= 1
	return t
}

// Markdown renders BENCHMARKS.md.
func Markdown(r Report) string {
	var b strings.Builder
	w := func(format string, a ...any) { fmt.Fprintf(&b, format, a...) }
	w("# antnode benchmarks\n\n")
	w("Written by `%s` (testnet/cmd/benchreport) at %s, commit %s. Every ratio below comes from one run of one command, its two sides interleaved; no number is asserted by a test on wall-clock time.\n\n", r.Command, r.Generated, r.Commit)
	m := r.Machine
	w("**Machine:** %s, %d cores, %d MiB, Linux %s, %s, %s.\n\n", m.CPU, m.Cores, m.MemoryMiB, m.Kernel, m.OS, m.Go)

	w("## Targets\n\n| goal | target | measured | |\n|---|---|---|---|\n")
	for _, t := range r.Targets {
		w("| %s | %s | %s | %s |\n", t.Name, t.Target, t.Measured, metWord(t.Met))
	}

	w("\n## Time to connect, in round trips\n\n")
	w("In-process NAT model, virtual time (`testing/synctest`), 20 ms one-way per access link (80 ms peer round trip), from the connect request to the completed QUIC handshake:\n\n| pair | time | round trips |\n|---|---|---|\n")
	for _, x := range r.ModelRoundTrips {
		w("| %s | %.1f ms | %.2f |\n", x.Pair, x.Millis, x.RoundTrips)
	}
	if len(r.TestbedRoundTrips) > 0 {
		w("\nNAT testbed (network namespaces, nftables NATs, 20 ms one-way delay on every access link), 5 runs per pair, median (and p95) time to connect over the median RTT of the path:\n\n| pair | time to connect | RTT | round trips | p95 round trips |\n|---|---|---|---|---|\n")
		for _, x := range r.TestbedRoundTrips {
			w("| %s | %.1f ms | %.1f ms | %.2f | %.2f |\n", x.Pair, x.Millis, x.RTTMillis, x.RoundTrips, x.P95RoundTrips)
		}
	} else {
		w("\nNAT testbed: %s.\n", r.TestbedNote)
	}

	w("%s", goodput(r))

	w("\n## Bootstrap at scale\n\nOne bootstrap in its own process (production defaults, real monitor) on loopback; the peers in the benchmark process, 100 to a socket, each with its own key and authenticated QUIC control connection. Memory is the bootstrap's Go heap and stacks after collections, grown by registrations alone. *floor* is a bare quic-go server with the same TLS and QUIC settings holding the same idle connections and reading their one stream; *over floor* is what antnode adds. Requests are whole introductions (request, offer, answer, result) between random pairs, 64 in flight; both ends run in the benchmark process on the same cores as the bootstrap, so *requests/s* is what the machine does with the load generator on it, and *capacity* is the machine's cores over the bootstrap's own CPU time per introduction (user and system, idle peers' heartbeats and garbage collection included).\n\n")
	w("| peers | B/peer | over floor | stacks | RSS/peer | goroutines/peer | registrations/s | requests/s | p50 | p99 | bootstrap CPU/request | capacity |\n|---|---|---|---|---|---|---|---|---|---|---|---|\n")
	for _, n := range []string{"1000", "5000", "10000"} {
		name := "BenchmarkBootstrapScale/peers=" + n
		g := func(u string) float64 { v, _ := r.metric(name, u); return v }
		if _, ok := r.metric(name, "B/peer"); !ok {
			continue
		}
		w("| %s | %.0f | %.0f | %.0f | %.0f | %.1f | %.0f | %.0f | %.1f ms | %.1f ms | %.0f µs | %.0f/s |\n", n, g("B/peer"), g("over-quic-B/peer"),
			g("stack-B/peer"), g("RSS-B/peer"), g("goroutines/peer"), g("registrations/s"), g("req/s"), g("p50-ms"), g("p99-ms"),
			g("bootstrap-CPU-µs/req"), g("capacity-req/s"))
	}

	w("%s", restarting(r))

	w("%s", carrying(r))
	w("%s", relayPath(r))

	w("\n## All results\n\n| package | benchmark | runs | metrics |\n|---|---|---|---|\n")
	for _, x := range r.Benchmarks {
		units := make([]string, 0, len(x.Metrics))
		for u := range x.Metrics {
			units = append(units, u)
		}
		sort.Strings(units)
		parts := make([]string, 0, len(units))
		for _, u := range units {
			parts = append(parts, fmt.Sprintf("%s %s", strconv.FormatFloat(x.Metrics[u], 'g', 6, 64), u))
		}
		w("| %s | %s | %d | %s |\n", strings.TrimPrefix(x.Package, "github.com/antnode/antnode/"), x.Name, x.Runs, strings.Join(parts, ", "))
	}

	w("\n## Reproduce\n\n```\nmake bench            # as root to include the testbed and goodput under loss; writes BENCHMARKS.md and bench-report.json\ngo run ./testnet/cmd/benchreport --bin bin/antnode --goodput-only   # as root: only goodput under loss, merged into bench-report.json\n```\n\n")
	w("The relay benchmark needs Debian's coturn (`apt-get install coturn`, as `.ci/run` does); the testbed needs root, nftables, conntrack and iproute2. Profiles of the bootstrap under load: `ANTNODE_SCALE_HEAP_PROFILE=/tmp/heap ANTNODE_SCALE_CPU_PROFILE=/tmp/cpu go test -run '^$' -bench BootstrapScale ./bootstrap`; the restart alone, at another fleet size, with CPU profiles of the first registrations and of the return: `ANTNODE_RESTART_PEERS=10000 ANTNODE_SCALE_CPU_PROFILE=/tmp/cpu go test -run '^$' -bench BootstrapRestart -benchtime 1x ./bootstrap` (/tmp/cpu.full, /tmp/cpu.restart); of failed attempts: `ANTNODE_RETENTION_PROFILE=/tmp/ret go test -run TestFailedAttemptsRetainNothing ./traversal`, then `go tool pprof -base /tmp/ret.before /tmp/ret.after`; of 1 000 forwarded connections held open: `ANTNODE_FORWARD_HEAP_PROFILE=/tmp/fwd go test -run '^$' -bench ForwardConnections -benchtime 1x ./traversal`; of the built-in relay's data path alone: `ANTNODE_RELAY_CPU_PROFILE=/tmp/relay.prof go test -run '^$' -bench 'RelayThroughput$' -benchtime 1x ./traversal`, then `go tool pprof -top /tmp/relay.prof`.\n")
	return b.String()
}

// goodput renders the section on goodput under loss: the table when it
// was measured, else why not.
func goodput(r Report) string {
	var b strings.Builder
	w := func(format string, a ...any) { fmt.Fprintf(&b, format, a...) }
	w("\n## Goodput under loss\n\n")
	if len(r.Goodput) == 0 {
		note := r.GoodputNote
		if note == "" {
			note = "not measured"
		}
		w("%s.\n", note)
		return b.String()
	}
	g := r.Goodput[0]
	w("NAT testbed, two public hosts (a direct path through both access links), %.0f ms one-way delay and the loss rate on every access link (the testbed's user-space delay line; each direction crosses two lossy links), no rate limit. A %.0f MiB verified transfer (pseudo-random bytes, SHA-256 checked by the receiver) over antnode's direct QUIC path (`antnode connect --send`, a new connection each time, timed from the stream's opening to the receiver's digest; its JSON truncates to 0.1 Mbit/s, so QUIC's lowest rates are understated by up to 0.1 Mbit/s: 20%% at 0.5 Mbit/s) and over a TCP connection between the same hosts (congestion control %s, set on the socket whatever the host's default; `tcp_no_metrics_save=1` so that each connection starts afresh as each QUIC one does; timed from the completed handshake to the receiver's digest). %d of each per loss rate, interleaved, the order alternating; goodput is the median, the ratio the median of the pairs' QUIC / TCP. Measured at commit %s, %s.\n\n",
		g.DelayMS, float64(g.Bytes)/(1<<20), g.TCPCongestion, max(len(g.QUICMbps), len(g.TCPMbps)), r.GoodputCommit, r.GoodputGenerated)
	w("| loss per link | QUIC | TCP (%s) | QUIC / TCP | QUIC runs | TCP runs | frames dropped | QUIC RTT |\n|---|---|---|---|---|---|---|---|\n", g.TCPCongestion)
	for _, x := range r.Goodput {
		w("| %g%% | %.2f Mbit/s | %.2f Mbit/s | %.3f | %s | %s | %.2f%% | %.1f ms |\n", x.LossPct, x.QUICMedian, x.TCPMedian, x.Ratio,
			mbpsList(x.QUICMbps), mbpsList(x.TCPMbps), x.DroppedPct, x.QUICRTTMS)
	}
	w("\nquic-go v0.65.0's congestion control is NewReno: its sent-packet handler builds its cubic sender with Reno on (internal/ackhandler), and its Config has no setting for the congestion controller, pacing or the initial window. `benchreport --goodput-only --goodput-tcp-cc reno` runs the TCP side with Reno to compare like with like.\n")
	for _, x := range r.Goodput {
		for _, f := range x.Failures {
			w("\nAt %g%% loss, failed: %s.\n", x.LossPct, f)
		}
	}
	return b.String()
}

func mbpsList(xs []float64) string {
	if len(xs) == 0 {
		return "none"
	}
	parts := make([]string, len(xs))
	for i, x := range xs {
		parts[i] = strconv.FormatFloat(x, 'f', 2, 64)
	}
	return strings.Join(parts, ", ")
}

// carrying renders the section on application traffic through forwards,
// or nothing when none of its benchmarks ran.
// restartTargets adds the targets of BenchmarkBootstrapRestart.
func restartTargets(add func(name, target, bench, unit, format string, met func(float64) bool)) {
	const restart = "BenchmarkBootstrapRestart/peers=10000"
	add("all 10 000 peers registered again after a bootstrap restart", "<= 10 s", restart, "restart-s", "%.1f s",
		func(v float64) bool { return v <= 10 })
	add("bootstrap CPU per registration, resumed session / full handshake", "< 1", restart, "resumed/full", "%.2f",
		func(v float64) bool { return v < 1 })
}

// restarting is the section of BenchmarkBootstrapRestart, empty when it
// did not run.
func restarting(r Report) string {
	var rows []Bench
	for _, x := range r.Benchmarks {
		if strings.HasPrefix(x.Name, "BenchmarkBootstrapRestart/peers=") {
			rows = append(rows, x)
		}
	}
	if len(rows) == 0 {
		return ""
	}
	var b strings.Builder
	w := func(format string, a ...any) { fmt.Fprintf(&b, format, a...) }
	w("\n## Bootstrap restart\n\nThe fleet registers with one bootstrap in its own process (as above: production defaults, its stateless reset key and TLS session ticket key derived from its identity, as `antnode bootstrap` derives them), 256 registrations at a time; then the bootstrap is closed (its peers are told it shuts down) and started again on the same address with the same identity. *back* is the share of the fleet registered again within a minute, and *back in* the time from the new bootstrap's start until the last of them was; each peer waits first a random time spread over the registry size it was told last (at its registration, then in every heartbeat's answer; the restart comes 11 s after the fleet registered) over 2 000/s, at most 5 s, so the fleet does not return at once. *resumed* is the share of the returns that resumed their TLS session. *CPU/registration* is the bootstrap's CPU time (user and system, heartbeats of idle peers and garbage collection included) over the registrations: the fleet's first, all full handshakes, and its return after the restart. A resumed session skips both certificates, both CertificateVerify signatures and their verification; it does not skip the key exchange: Go's TLS 1.3 resumes with psk_dhe_ke, so X25519MLKEM768 runs as in a full handshake. The peers run in the benchmark process on the same two cores, and take about as much CPU as the bootstrap.\n\n")
	w("| peers | back | back in | return rate | resumed | CPU/registration, full | CPU/registration, resumed | resumed / full | first registration rate |\n|---|---|---|---|---|---|---|---|---|\n")
	for _, x := range rows {
		m := x.Metrics
		w("| %s | %.2f%% | %.2f s | %.0f/s | %.2f%% | %.0f µs | %.0f µs | %.2f | %.0f/s |\n", strings.TrimPrefix(x.Name, "BenchmarkBootstrapRestart/peers="),
			m["back-%"], m["restart-s"], m["return-reg/s"], m["resumed-%"], m["full-CPU-µs/reg"], m["resumed-CPU-µs/reg"], m["resumed/full"], m["first-reg/s"])
	}
	return b.String()
}

func carrying(r Report) string {
	tp, okT := r.bench("BenchmarkForwardThroughput")
	tt, okF := r.bench("BenchmarkForwardTTFB")
	cn, okC := r.bench("BenchmarkForwardConnections")
	if !okT && !okF && !okC {
		return ""
	}
	var b strings.Builder
	w := func(format string, a ...any) { fmt.Fprintf(&b, format, a...) }
	w("\n## Carrying traffic\n\nTwo nodes in the benchmark process, with the TCP clients and targets. A forward is `service.Forwarder` on a local TCP port opening one stream per connection with `DialEarly` (as `antnode forward`); the serving node's handler dials its TCP target and joins it to the stream (`service.Join`, as `--expose`).\n\n")
	if okT {
		m := tp.Metrics
		w("**Throughput** (loopback): 16 MiB from a TCP client through the forward to a TCP sink, against 16 MiB on a raw stream (`Node.Dial` to a service that reads to the end) on the same peer connection; each transfer a new connection that waits for the receiver's count. %d pairs, back to back, order alternating; the ratio is the median of the pairs'.\n\n", tp.Runs)
		w("*CPU/byte* is the process's CPU time (user and system: both nodes, the client and the sink) per byte carried: where the machine is the bottleneck the ratio follows it, and the forward's two extra TCP legs show there.\n\n")
		w("| raw stream | forwarded TCP | forward / raw | CPU/byte, raw | CPU/byte, forwarded |\n|---|---|---|---|---|\n| %.0f Mbit/s | %.0f Mbit/s | %.3f | %.2f ns | %.2f ns |\n\n",
			m["raw-Mbit/s"], m["fwd-Mbit/s"], m["fwd/raw"], m["raw-CPU-ns/B"], m["fwd-CPU-ns/B"])
	}
	if okF {
		m := tt.Metrics
		w("**Time to first byte** through an established forward: the nodes on the in-process NAT model in real time, public, 20 ms one-way on each access link (an 80 ms peer round trip; loopback's is below the nodes' own scheduling). From the connect to the forward's port, a 64-byte request written at once, to the first byte of a target that answers as soon as it has the request; over the peer connection's smoothed RTT read right after. %d connections, one after another.\n\n", tt.Runs)
		w("| time to first byte (median) | smoothed RTT (median) | min RTT | TTFB / RTT (median) | p90 | TTFB / min RTT |\n|---|---|---|---|---|---|\n| %.1f ms | %.1f ms | %.1f ms | %.3f | %.3f | %.3f |\n\n",
			m["ttfb-ms"], m["rtt-ms"], m["min-rtt-ms"], m["ttfb/rtt"], m["p90-ttfb/rtt"], m["ttfb/min-rtt"])
	}
	if okC {
		m := cn.Metrics
		w("**1 000 connections at once** through one forward (loopback) to a TCP echo target, each sending 16 KiB of random bytes and checking the SHA-256 of the echo, all held open while the process's growth is measured (Go heap and stacks after collections; RSS), over 1 000. *floor* is the same connections made to the target directly (the test client's and the target's own cost); *over floor* is what the two nodes add per connection, both ends together.\n\n")
		w("| verified | B/conn | RSS/conn | floor | over floor | goroutines/conn | goroutines left after closing | open and verify all |\n|---|---|---|---|---|---|---|---|\n| %.0f of 1000 | %.0f | %.0f | %.0f | %.0f | %.1f | %.0f | %.0f ms |\n",
			m["verified-conns"], m["B/conn"], m["RSS-B/conn"], m["floor-B/conn"], m["over-floor-B/conn"], m["goroutines/conn"], m["goroutines-left"], m["open-all-ms"])
	}
	return b.String()
}

// relayPath renders the section on the built-in relay's data path, or
// nothing when its benchmark did not run: the run's numbers, then the
// record of the batched data path (measured once, before and after, at
// the commits it names).
func relayPath(r Report) string {
	rb, ok := r.bench("BenchmarkRelayThroughput")
	if !ok {
		return ""
	}
	m := rb.Metrics
	var b strings.Builder
	w := func(format string, a ...any) { fmt.Fprintf(&b, format, a...) }
	w("\n## Relay data path\n\n")
	w("`BenchmarkRelayThroughput`: verified 8 MiB QUIC transfers over the direct path, through the built-in relay (package relay: pion/turn, no bandwidth cap) and through coturn (Debian's, its own process), one over each in turn, %d rounds; loopback, with both nodes, the relay and coturn on the same cores, so the numbers compare the relays' own costs, not a network. *CPU/byte* is the benchmark process's CPU time (user and system: both nodes, the built-in relay, and the loopback stack their sends run) per byte carried; coturn's CPU is another process's and not counted (*not measured*: a run from before the benchmark measured it). This run, at the commit in the header:\n\n", rb.Runs)
	cpu := func(unit string) string {
		if v, ok := m[unit]; ok {
			return fmt.Sprintf("%.2f ns", v)
		}
		return "not measured"
	}
	w("| direct | built-in relay | coturn | relay / direct | relay / coturn | CPU/byte, direct | CPU/byte, relay |\n|---|---|---|---|---|---|---|\n")
	w("| %.0f Mbit/s | %.0f Mbit/s | %.0f Mbit/s | %.3f | %.3f | %s | %s |\n\n", m["direct-Mbit/s"], m["relay-Mbit/s"], m["coturn-Mbit/s"],
		m["relay/direct"], m["relay/coturn"], cpu("direct-CPU-ns/B"), cpu("relay-CPU-ns/B"))
	w("%s", relayBatching)
	return b.String()
}

// relayBatching is the record of the batched data path: what changed,
// before and after on one machine, and where the relayed path's time
// goes. It was measured once; the table above is the run's.
const relayBatching = `**Batched data path.** pion reads the relay's UDP listener in one goroutine and wrote each ChannelData payload to the allocation's relayed socket at once, and the TURN client sent each QUIC packet as ChannelData with a sendto of its own (quic-go does no GSO over a relayed socket, which is not a *net.UDPConn): four system calls per datagram on the way from the relayed node to its peer, each crossing the loopback stack alone. Now the listener is read with recvmmsg (x/net ` + "`ReadBatch`" + `, 32 datagrams), the payloads pion writes during a batch leave at its end, a run of one size to one peer as one GSO send (UDP_SEGMENT); the client's socket queues its writes and a goroutine of its own sends what queued meanwhile the same way; the sockets ask for 4 MiB buffers. Measured on this machine (2 vCPUs, shared: the other engineers' builds and tests ran meanwhile, load average 3.4 to 6.9, so single runs swing by a third) with ` + "`go test -run '^$' -bench 'RelayThroughput$' -benchtime 4x -count 3 ./traversal`" + `, in two sessions of two rounds, each round running the commit before and the commit after in turn (both built with this benchmark); median of each session's 6 runs, range in brackets:

| session | commit | relay / direct | relay / coturn | built-in relay | direct | coturn | CPU/byte, relay | CPU/byte, direct |
|---|---|---|---|---|---|---|---|---|
| 1 | a1d606b (before) | 0.464 (0.360–0.521) | 1.04 (0.82–1.38) | 444 Mbit/s | 1052 Mbit/s | 436 Mbit/s | 23.7 ns | 10.3 ns |
| 1 | c18cae8 (batched) | 0.579 (0.513–0.619) | 1.12 (0.91–1.38) | 622 Mbit/s | 1137 Mbit/s | 626 Mbit/s | 16.3 ns | 9.9 ns |
| 2 | a1d606b (before) | 0.452 (0.325–0.493) | 1.00 (0.84–1.26) | 313 Mbit/s | 680 Mbit/s | 302 Mbit/s | 21.8 ns | 10.2 ns |
| 2 | 2f18743 (batched, pooled run buffers) | 0.603 (0.486–0.711) | 1.08 (0.85–1.19) | 491 Mbit/s | 860 Mbit/s | 482 Mbit/s | 13.7 ns | 8.3 ns |

The median relay / direct is past 0.5 in both sessions, though not every run is (one of 12 at 0.486); coturn (its own process, so its CPU is in neither CPU column) is matched or slightly beaten. The relayed path's CPU per byte fell by 31% and 37%; it is still 1.6 times the direct path's. Where it goes: CPU profiles of the relayed path alone (` + "`ANTNODE_RELAY_CPU_PROFILE`" + `: 32 transfers of 8 MiB, 268 MB; a1d606b and c18cae8), in CPU time per byte carried (cumulative: a row includes the system calls it makes; the nodes, the relay and the benchmark's own transfer ends are one process):

| where | before | after |
|---|---|---|
| all (wall time 4.48 s and 2.67 s; 1.34 and 1.64 cores busy) | 22.4 ns | 16.3 ns |
| of which system calls | 7.6 ns | 3.9 ns |
| relayed node: QUIC's send queue to the TURN socket (pion's ChannelData framing; then sendto, now the queue and the sends it makes itself past 128 datagrams) | 5.6 ns | 1.6 ns |
| relayed node: the batch writer's goroutine (GSO sends) | — | 0.8 ns |
| both nodes: QUIC connections' own work (packing, encryption, frames, ACKs) | 4.5 ns | 3.8 ns |
| relay: pion's read loop, all of it | 4.5 ns | 3.2 ns |
| relay: of which reading the listener (recvfrom, now recvmmsg) | 0.6 ns | 0.9 ns |
| relay: of which writing to the peer (sendto, now GSO runs) | 2.5 ns | 1.0 ns |
| peer: QUIC's socket reads (recvmmsg) | 1.4 ns | 1.3 ns |
| the benchmark's transfer ends (random data, stream writes and reads, SHA-256) | 4.1 ns | 3.9 ns |
| garbage collection | 1.0 ns | 0.6 ns |

Left as they are: QUIC packets over the relay stay at quic-go's initial 1252 bytes (path MTU discovery needs DF on a socket quic-go can reach, and the relayed socket hides it), against 1452 on the direct path, so the relayed path carries 16% more packets per byte; the other direction (peer to the relayed node: only ACKs here) still goes one datagram per system call through pion's per-allocation reader and its client's reader, each a goroutine hand-off, and a transfer that way gained nothing (relay / direct 0.47 and 0.49 before, 0.48 and 0.45 after, in two runs of an interleaved comparison); its profile has no stage near a core (pion's per-allocation reader 19% of its samples, mostly sendto; the client's reader 15%), so it is the hand-offs' latency that bounds it; a relayed socket's bandwidth shaper sleeps in pion's one read loop, stalling every allocation while one is over its rate (only with a cap; the benchmark runs without).
`
