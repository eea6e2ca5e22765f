package traversal

import (
	"context"
	"io"
	"log/slog"
	"os"
	"runtime/pprof"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/antnode/antnode/event"
	"github.com/antnode/antnode/monitor"
	"github.com/antnode/antnode/relay"
)

// BenchmarkRelayThroughput measures verified QUIC transfers over the direct
// path, the built-in relay (no bandwidth cap) and coturn, interleaved in
// the same run, and reports each path's throughput and the built-in
// relay's ratio to the other two. Loopback: the numbers compare the
// relays' own costs, not a network. It also reports the process's CPU
// time per byte on the direct path and the built-in relay's (user and
// system: both nodes, the relay, and the loopback stack that their
// sends run; coturn's own CPU is another process's and not counted).
//
// With ANTNODE_RELAY_CPU_PROFILE set, it then writes a CPU profile of
// the built-in relay's path alone (relayProfileTransfers more transfers)
// to that file.
func BenchmarkRelayThroughput(b *testing.B) {
	const size = 8 << 20
	boot, _ := relayBootstrap(b, relay.ServerConfig{BytesPerSecond: 1 << 40})
	coturn, secret := startCoturn(b)
	peer := startNodeCfg(b, Config{Bootstraps: []Bootstrap{boot}})
	paths := []struct {
		name string
		cfg  Config
	}{
		{"direct", Config{Bootstraps: []Bootstrap{boot}, Relay: RelayNever}},
		{"relay", Config{Bootstraps: []Bootstrap{boot}, Relay: RelayForce}},
		{"coturn", Config{Bootstraps: []Bootstrap{boot}, Relay: RelayForce, TURN: &TURNServer{Addr: coturn, Secret: secret}}},
	}
	conns := make([]*Conn, len(paths))
	for i, p := range paths {
		n := startNodeCfg(b, p.cfg)
		ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
		c, err := n.Connect(ctx, peer.ID())
		cancel()
		if err != nil {
			b.Fatalf("%s: %v", p.name, err)
		}
		conns[i] = c
	}
	spent := make([]time.Duration, len(paths))
	cpu := make([]time.Duration, len(paths))
	b.SetBytes(size * int64(len(paths)))
	b.ResetTimer()
	for range b.N {
		for i, c := range conns {
			start, cpu0 := time.Now(), cpuTime()
			if _, err := c.SendVerified(context.Background(), size); err != nil {
				b.Fatalf("%s: %v", paths[i].name, err)
			}
			spent[i] += time.Since(start)
			cpu[i] += cpuTime() - cpu0
		}
	}
	b.StopTimer()
	mbps := func(i int) float64 { return float64(size) * float64(b.N) * 8 / spent[i].Seconds() / 1e6 }
	b.ReportMetric(mbps(0), "direct-Mbit/s")
	b.ReportMetric(mbps(1), "relay-Mbit/s")
	b.ReportMetric(mbps(2), "coturn-Mbit/s")
	b.ReportMetric(mbps(1)/mbps(0), "relay/direct")
	b.ReportMetric(mbps(1)/mbps(2), "relay/coturn")
	b.ReportMetric(float64(cpu[0])/float64(size)/float64(b.N), "direct-CPU-ns/B")
	b.ReportMetric(float64(cpu[1])/float64(size)/float64(b.N), "relay-CPU-ns/B")
	if path := os.Getenv("ANTNODE_RELAY_CPU_PROFILE"); path != "" {
		profileRelay(b, path, conns[1], size)
	}
}

// relayProfileTransfers is how many transfers the relay's CPU profile
// covers.
const relayProfileTransfers = 32

// profileRelay writes a CPU profile of relayProfileTransfers verified
// transfers of size bytes over c to path.
func profileRelay(b *testing.B, path string, c *Conn, size int64) {
	f, err := os.Create(path)
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	if err := pprof.StartCPUProfile(f); err != nil {
		b.Fatalf("relay CPU profile (not with -cpuprofile): %v", err)
	}
	defer pprof.StopCPUProfile()
	for range relayProfileTransfers {
		if _, err := c.SendVerified(context.Background(), size); err != nil {
			b.Fatalf("relay, profiled: %v", err)
		}
	}
}

// BenchmarkMonitoringOverhead measures verified transfers between two
// nodes on loopback with the full monitoring (metrics registered,
// info-level JSON logs, store and sampler) and with none, interleaved on
// the same connection: both nodes report to a recorder that forwards to
// their Monitor or drops everything, switched between transfers. (Two
// pairs of nodes, one with and one without, differed by up to 7 % from
// run to run for reasons of their own, either way.) It reports both
// throughputs and their ratio.
func BenchmarkMonitoringOverhead(b *testing.B) {
	const size = 8 << 20
	boot, _ := relayBootstrap(b, relay.ServerConfig{})
	newRec := func() *switchedRecorder {
		m, err := monitor.New(monitor.Config{Registerer: prometheus.NewRegistry(),
			Logger: slog.New(slog.NewJSONHandler(io.Discard, nil))})
		if err != nil {
			b.Fatal(err)
		}
		r := &switchedRecorder{m: m}
		r.on.Store(true)
		return r
	}
	recs := []*switchedRecorder{newRec(), newRec()}
	peer := startNodeCfg(b, Config{Bootstraps: []Bootstrap{boot}, Recorder: recs[0]})
	n := startNodeCfg(b, Config{Bootstraps: []Bootstrap{boot}, Recorder: recs[1]})
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	c, err := n.Connect(ctx, peer.ID())
	cancel()
	if err != nil {
		b.Fatal(err)
	}
	var spent [2]time.Duration // on, off
	ratios := make([]float64, 0, b.N)
	b.SetBytes(size * 2)
	b.ResetTimer()
	for i := range b.N {
		// Alternate which setting goes first, so neither profits from a
		// warmer cache or a quieter machine.
		var took [2]time.Duration
		for k := range 2 {
			j := (k + i) % 2
			for _, r := range recs {
				r.on.Store(j == 0)
			}
			start := time.Now()
			if _, err := c.SendVerified(context.Background(), size); err != nil {
				b.Fatalf("monitoring on=%v: %v", j == 0, err)
			}
			took[j] = time.Since(start)
			spent[j] += took[j]
		}
		ratios = append(ratios, took[1].Seconds()/took[0].Seconds())
	}
	mbps := func(i int) float64 { return float64(size) * float64(b.N) * 8 / spent[i].Seconds() / 1e6 }
	b.ReportMetric(mbps(0), "on-Mbit/s")
	b.ReportMetric(mbps(1), "off-Mbit/s")
	// The median of each iteration's pair of transfers, back to back:
	// steadier than the ratio of the sums, which one slow transfer sways.
	slices.Sort(ratios)
	b.ReportMetric(ratios[len(ratios)/2], "on/off")
}

// switchedRecorder forwards to a Monitor while on, and drops every event
// while off (as a node without monitoring, whose Recorder is event.Nop).
type switchedRecorder struct {
	on atomic.Bool
	m  *monitor.Monitor
}

func (r *switchedRecorder) Record(ev event.Event) {
	if r.on.Load() {
		r.m.Record(ev)
	}
}
