package traversal

import (
	"context"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/antnode/antnode/monitor"
	"github.com/antnode/antnode/relay"
)

// BenchmarkRelayThroughput measures verified QUIC transfers over the direct
// path, the built-in relay (no bandwidth cap) and coturn, interleaved in
// the same run, and reports each path's throughput and the built-in
// relay's ratio to the other two. Loopback: the numbers compare the
// relays' own costs, not a network.
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
	b.SetBytes(size * int64(len(paths)))
	b.ResetTimer()
	for range b.N {
		for i, c := range conns {
			start := time.Now()
			if _, err := c.SendVerified(context.Background(), size); err != nil {
				b.Fatalf("%s: %v", paths[i].name, err)
			}
			spent[i] += time.Since(start)
		}
	}
	mbps := func(i int) float64 { return float64(size) * float64(b.N) * 8 / spent[i].Seconds() / 1e6 }
	b.ReportMetric(mbps(0), "direct-Mbit/s")
	b.ReportMetric(mbps(1), "relay-Mbit/s")
	b.ReportMetric(mbps(2), "coturn-Mbit/s")
	b.ReportMetric(mbps(1)/mbps(0), "relay/direct")
	b.ReportMetric(mbps(1)/mbps(2), "relay/coturn")
}

// BenchmarkMonitoringOverhead measures verified transfers between two
// pairs of nodes on loopback, interleaved in the same run: one pair with
// the full monitoring (metrics registered, info-level JSON logs, store and
// sampler), one with none. It reports both throughputs and their ratio.
func BenchmarkMonitoringOverhead(b *testing.B) {
	const size = 8 << 20
	boot, _ := relayBootstrap(b, relay.ServerConfig{})
	newMon := func() monitor.Recorder {
		m, err := monitor.New(monitor.Config{Registerer: prometheus.NewRegistry(),
			Logger: slog.New(slog.NewJSONHandler(io.Discard, nil))})
		if err != nil {
			b.Fatal(err)
		}
		return m
	}
	pairs := []struct {
		name string
		rec  func() monitor.Recorder
	}{
		{"on", newMon},
		{"off", func() monitor.Recorder { return monitor.Nop{} }},
	}
	conns := make([]*Conn, len(pairs))
	for i, p := range pairs {
		peer := startNodeCfg(b, Config{Bootstraps: []Bootstrap{boot}, Recorder: p.rec()})
		n := startNodeCfg(b, Config{Bootstraps: []Bootstrap{boot}, Recorder: p.rec()})
		ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
		c, err := n.Connect(ctx, peer.ID())
		cancel()
		if err != nil {
			b.Fatalf("%s: %v", p.name, err)
		}
		conns[i] = c
	}
	spent := make([]time.Duration, len(pairs))
	b.SetBytes(size * int64(len(pairs)))
	b.ResetTimer()
	for i := range b.N {
		// Alternate which pair goes first, so neither profits from a
		// warmer cache or a quieter machine.
		for k := range conns {
			j := (k + i) % len(conns)
			start := time.Now()
			if _, err := conns[j].SendVerified(context.Background(), size); err != nil {
				b.Fatalf("%s: %v", pairs[j].name, err)
			}
			spent[j] += time.Since(start)
		}
	}
	mbps := func(i int) float64 { return float64(size) * float64(b.N) * 8 / spent[i].Seconds() / 1e6 }
	b.ReportMetric(mbps(0), "on-Mbit/s")
	b.ReportMetric(mbps(1), "off-Mbit/s")
	b.ReportMetric(mbps(0)/mbps(1), "on/off")
}
