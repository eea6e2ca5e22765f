package main

import (
	"strings"
	"testing"

	"github.com/antnode/antnode/testnet"
)

const sampleBench = `goos: linux
goarch: amd64
pkg: github.com/antnode/antnode/bootstrap
cpu: AMD EPYC
BenchmarkBootstrapScale/peers=10000-2         	    5000	  200000 ns/op	     71189 B/peer	     73408 RSS-B/peer	         3.000 goroutines/peer	      3269 over-quic-B/peer	        15.46 p50-ms	        19.78 p99-ms	       406.1 registrations/s	      5200 req/s	     18029 stack-B/peer	  309.1 bootstrap-CPU-µs/req	      6471 capacity-req/s
BenchmarkBootstrapRestart/peers=10000-2         	       1	9100000000 ns/op	       610.2 first-reg/s	      1100 full-CPU-µs/reg	         9.100 restart-s	       100.0 back-%	       100.0 resumed-%	       880.0 resumed-CPU-µs/reg	         0.8000 resumed/full	      1099 return-reg/s
PASS
ok  	github.com/antnode/antnode/bootstrap	33.777s
pkg: github.com/antnode/antnode/traversal
BenchmarkFailedAttemptRetention 	       1	8000000000 ns/op	        -6.000 retained-B/attempt	         0 goroutines/attempt	      1200 store-B/attempt
BenchmarkMonitoringOverhead-2   	      10	 100 ns/op	 900.0 on-Mbit/s	 910.0 off-Mbit/s	 0.989 on/off	 12 B/op	 1 allocs/op
BenchmarkRelayThroughput-2   	       4	 268947000 ns/op	 93.57 MB/s	       577.9 coturn-Mbit/s	      1608 direct-Mbit/s	       904 relay-Mbit/s	         1.564 relay/coturn	         0.5622 relay/direct	 9.9 direct-CPU-ns/B	 16.3 relay-CPU-ns/B
BenchmarkForwardThroughput-2   	      40	 214083242 ns/op	 156.74 MB/s	      1308 fwd-Mbit/s	         0.9064 fwd/raw	      1444 raw-Mbit/s	 4.691 raw-CPU-ns/B	 5.885 fwd-CPU-ns/B
BenchmarkForwardTTFB-2   	     100	  82682626 ns/op	        80.72 min-rtt-ms	         1.017 p90-ttfb/rtt	        81.84 rtt-ms	        82.07 ttfb-ms	         1.003 ttfb/rtt	 1.017 ttfb/min-rtt
BenchmarkForwardConnections-2   	       1	1743121073 ns/op	    168210 B/conn	     99389 RSS-B/conn	      6275 floor-B/conn	         1.000 floor-goroutines/conn	         0 goroutines-left	         5.000 goroutines/conn	      1077 open-all-ms	    161935 over-floor-B/conn	      999 verified-conns
pkg: github.com/antnode/antnode/monitor
BenchmarkRecord/attempt_event-2         	 8075986	       286.0 ns/op	       9 B/op	       0 allocs/op
BenchmarkRecord/node_event-2                     	29534473	        82.10 ns/op	       0 B/op	       0 allocs/op
`

func TestParseBench(t *testing.T) {
	got := ParseBench(sampleBench)
	if len(got) != 10 {
		t.Fatalf("%d results, want 10: %+v", len(got), got)
	}
	tests := []struct {
		name, pkg, bench, unit string
		want                   float64
	}{
		{"custom metric", "github.com/antnode/antnode/bootstrap", "BenchmarkBootstrapScale/peers=10000", "req/s", 5200},
		{"decimal metric", "github.com/antnode/antnode/bootstrap", "BenchmarkBootstrapScale/peers=10000", "p99-ms", 19.78},
		{"negative metric, no procs suffix", "github.com/antnode/antnode/traversal", "BenchmarkFailedAttemptRetention", "retained-B/attempt", -6},
		{"benchmem", "github.com/antnode/antnode/traversal", "BenchmarkMonitoringOverhead", "allocs/op", 1},
		{"sub-benchmark, another package", "github.com/antnode/antnode/monitor", "BenchmarkRecord/node_event", "ns/op", 82.1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for _, b := range got {
				if b.Name == tt.bench {
					if b.Package != tt.pkg {
						t.Fatalf("package %q, want %q", b.Package, tt.pkg)
					}
					if v := b.Metrics[tt.unit]; v != tt.want {
						t.Fatalf("%s = %v, want %v", tt.unit, v, tt.want)
					}
					return
				}
			}
			t.Fatalf("no %s", tt.bench)
		})
	}
}

func TestParseModelRTTs(t *testing.T) {
	out := `=== RUN   TestTimeToConnectInRoundTrips/eim-apdf_to_eim-apdf
    model_test.go:149: eim-apdf to eim-apdf: 160.5ms = 2.01 round trips
    model_test.go:149: symmetric to port-restricted (birthday): 1.2s = 15.00 round trips
--- PASS: TestTimeToConnectInRoundTrips (0.5s)`
	got := ParseModelRTTs(out)
	if len(got) != 2 || got[0].Pair != "eim-apdf to eim-apdf" || got[0].RoundTrips != 2.01 || got[0].Millis != 160.5 || got[1].Millis != 1200 {
		t.Fatalf("%+v", got)
	}
}

func TestParseTestbedRTTs(t *testing.T) {
	js := `{"pairs":[{"a":"eim-eif","b":"eim-apdf","topology":"different-nat","direct":5,"time_to_connect_ms_p50":170,"time_to_connect_ms_p95":187,"rtt_ms_p50":85},
	{"a":"eim-apdf","b":"eim-apdf","topology":"same-nat","direct":5,"time_to_connect_ms_p50":90,"rtt_ms_p50":1.5},
	{"a":"udp-blocked","b":"public","direct":0,"time_to_connect_ms_p50":400,"rtt_ms_p50":90}]}`
	got, err := ParseTestbedRTTs([]byte(js))
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 1 || got[0].Pair != "eim-eif to eim-apdf" || got[0].RoundTrips != 2 || got[0].P95RoundTrips != 2.2 {
		t.Fatalf("%+v (relayed pairs and pairs behind one NAT are left out)", got)
	}
	if _, err := ParseTestbedRTTs([]byte("{")); err == nil {
		t.Fatal("a broken report parsed")
	}
}

func TestTargets(t *testing.T) {
	r := Report{Benchmarks: ParseBench(sampleBench), ModelRoundTrips: ParseModelRTTs(
		"    model_test.go:149: eim-apdf to eim-apdf: 120ms = 1.50 round trips")}
	met := map[string]bool{}
	for _, tg := range Targets(r) {
		met[tg.Name] = tg.Met
	}
	tests := []struct {
		name string
		want bool
	}{
		{"bootstrap memory per idle registered peer (10 000 peers)", false},
		{"coordination requests per second (10 000 peers)", true},
		{"p99 coordination latency under that load", true},
		{"bootstrap capacity from its CPU per introduction, all cores (10 000 peers)", true},
		{"all 10 000 peers registered again after a bootstrap restart", true},      // 9.1 s
		{"bootstrap CPU per registration, resumed session / full handshake", true}, // 0.80
		{"memory retained per failed attempt", true},
		{"goroutines retained per failed attempt", true},
		{"throughput with monitoring on / off", false}, // 0.989 < 0.99
		{"cost of recording a node event", true},
		{"cost of recording an attempt event (1% of successes kept)", false},
		{"forwarded TCP throughput / raw stream on the same peer connection", true}, // 0.906
		{"time to first byte of a new TCP connection through an established forward", true},
		{"1 000 concurrent forwarded TCP connections through one forward, each verified", false},        // 999
		{"built-in relay throughput / direct path (loopback, peers and relay on the same cores)", true}, // 0.5622
		{"time to connect through EIM NATs, worst pair (model)", true},
		{"time to connect through EIM NATs, worst pair's median (testbed)", false}, // not measured
		{"time to connect through EIM NATs, worst pair's p95 (testbed)", false},    // not measured
		{"goodput under loss, QUIC / TCP, worst loss rate", false},                 // not measured
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, ok := met[tt.name]
			if !ok || got != tt.want {
				t.Fatalf("met=%v (present %v), want %v", got, ok, tt.want)
			}
		})
	}
	r.Targets = Targets(r)
	md := Markdown(r)
	for _, want := range []string{"| 10000 | 71189 | 3269 |", "NOT MET", "| eim-apdf to eim-apdf | 120.0 ms | 1.50 |",
		"| 1444 Mbit/s | 1308 Mbit/s | 0.906 | 4.69 ns | 5.88 ns |", "| 82.1 ms | 81.8 ms | 80.7 ms | 1.003 | 1.017 | 1.017 |",
		"| 999 of 1000 | 168210 | 99389 | 6275 | 161935 | 5.0 | 0 | 1077 ms |",
		"| time to first byte of a new TCP connection through an established forward | <= 1.1 peer RTT | 1.00 RTT (82.1 ms, RTT 81.8 ms) | met |",
		"| 999 of 1000, 164 KiB/connection | NOT MET |",
		"## Relay data path", "| 1608 Mbit/s | 904 Mbit/s | 578 Mbit/s | 0.562 | 1.564 | 9.90 ns | 16.30 ns |",
		"| built-in relay throughput / direct path (loopback, peers and relay on the same cores) | >= 0.5 | 0.562 | met |",

		"## Bootstrap restart", "| 10000 | 100.00% | 9.10 s | 1099/s | 100.00% | 1100 µs | 880 µs | 0.80 | 610/s |"} {
		if !strings.Contains(md, want) {
			t.Errorf("BENCHMARKS.md lacks %q", want)
		}
	}
}

func TestCarryingOnlyWhenMeasured(t *testing.T) {
	if s := carrying(Report{}); s != "" {
		t.Fatalf("a section without its benchmarks: %q", s)
	}
	r := Report{Benchmarks: ParseBench("pkg: github.com/antnode/antnode/traversal\nBenchmarkForwardTTFB-2 \t 10\t 1 ns/op\t 80 rtt-ms\t 84 ttfb-ms\t 1.05 ttfb/rtt\n")}
	if s := carrying(r); !strings.Contains(s, "| 84.0 ms | 80.0 ms |") || strings.Contains(s, "Throughput") {
		t.Fatalf("%s", s)
	}
}

func TestGoodputSection(t *testing.T) {
	if s := goodput(Report{GoodputNote: "not run: it needs root"}); !strings.Contains(s, "## Goodput under loss\n\nnot run: it needs root.\n") {
		t.Fatalf("%s", s)
	}
	r := Report{GoodputCommit: "abc1234", GoodputGenerated: "2025-01-01T00:00:00Z", Goodput: []testnet.GoodputRow{
		{LossPct: 0, DelayMS: 20, Bytes: 16 << 20, QUICMbps: []float64{120, 130, 125}, TCPMbps: []float64{110, 115, 112},
			QUICMedian: 125, TCPMedian: 112, TCPCongestion: "cubic", Ratio: 1.1, DroppedPct: 0, QUICRTTMS: 81.5},
		{LossPct: 5, DelayMS: 20, Bytes: 16 << 20, QUICMbps: []float64{0.5, 0.6}, TCPMbps: []float64{40, 45, 48},
			QUICMedian: 0.55, TCPMedian: 45, TCPCongestion: "cubic", Ratio: 0.012, DroppedPct: 4.95, QUICRTTMS: 83,
			Failures: []string{"QUIC run 3: timeout context deadline exceeded"}},
	}}
	s := goodput(r)
	for _, want := range []string{"20 ms one-way delay", "16 MiB verified transfer", "3 of each per loss rate", "commit abc1234", "congestion control cubic", "| TCP (cubic) |",
		"| 0% | 125.00 Mbit/s | 112.00 Mbit/s | 1.100 | 120.00, 130.00, 125.00 | 110.00, 115.00, 112.00 | 0.00% | 81.5 ms |",
		"| 5% | 0.55 Mbit/s | 45.00 Mbit/s | 0.012 | 0.50, 0.60 | 40.00, 45.00, 48.00 | 4.95% | 83.0 ms |",
		"At 5% loss, failed: QUIC run 3: timeout context deadline exceeded."} {
		if !strings.Contains(s, want) {
			t.Errorf("the section lacks %q:\n%s", want, s)
		}
	}
	tg := goodputTarget(r.Goodput)
	if tg.Met || tg.Measured != "0.012 at 5% loss, TCP cubic" {
		t.Fatalf("%+v", tg)
	}
	r.Goodput = r.Goodput[:1]
	if tg := goodputTarget(r.Goodput); !tg.Met || tg.Measured != "1.100 at 0% loss, TCP cubic" {
		t.Fatalf("%+v", tg)
	}
	if md := Markdown(r); !strings.Contains(md, "## Goodput under loss") {
		t.Fatal("BENCHMARKS.md lacks the goodput section")
	}
}

func TestRelayPathOnlyWhenMeasured(t *testing.T) {
	if s := relayPath(Report{}); s != "" {
		t.Fatalf("a section without its benchmark: %q", s)
	}
	// A report from before the benchmark measured CPU says so.
	r := Report{Benchmarks: ParseBench("pkg: github.com/antnode/antnode/traversal\nBenchmarkRelayThroughput-2 \t 4\t 1 ns/op\t 1608 direct-Mbit/s\t 604 relay-Mbit/s\t 578 coturn-Mbit/s\t 0.3756 relay/direct\t 1.045 relay/coturn\n")}
	if s := relayPath(r); !strings.Contains(s, "| 1608 Mbit/s | 604 Mbit/s | 578 Mbit/s | 0.376 | 1.045 | not measured | not measured |") ||
		!strings.Contains(s, "4 rounds") || !strings.Contains(s, "a1d606b (before)") {
		t.Fatalf("%s", s)
	}
}

func TestRestartingOnlyWhenMeasured(t *testing.T) {
	if s := restarting(Report{}); s != "" {
		t.Fatalf("a section without its benchmark: %q", s)
	}
	r := Report{Benchmarks: ParseBench("pkg: github.com/antnode/antnode/bootstrap\nBenchmarkBootstrapRestart/peers=3000-2 \t 1\t 1 ns/op\t 2.5 restart-s\t 99.5 back-%\t 1200 return-reg/s\t 100 resumed-%\n")}
	if s := restarting(r); !strings.Contains(s, "| 3000 | 99.50% | 2.50 s | 1200/s | 100.00% |") {
		t.Fatalf("%s", s)
	}
}
