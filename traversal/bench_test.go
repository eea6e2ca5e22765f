package traversal

import (
	"context"
	"testing"
	"time"

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
