package holepunch

import (
	"context"
	"net"
	"net/netip"
	"testing"
	"testing/synctest"
	"time"

	"github.com/antnode/antnode/endpoint"
	"github.com/antnode/antnode/nattype"
	"github.com/antnode/antnode/testnet"
)

func TestScanPlan(t *testing.T) {
	addr := netip.MustParseAddr("198.51.100.1")
	tests := []struct {
		name     string
		cfg      BirthdayConfig
		wantN    int
		wantSpan time.Duration
		min, max uint16
	}{
		{"defaults", BirthdayConfig{Seed: 1}, 4096, 4095 * 500 * time.Microsecond, 1024, 65535},
		{"budget bound", BirthdayConfig{Seed: 1, Rate: 100, Budget: time.Second}, 100, 99 * 10 * time.Millisecond, 1024, 65535},
		{"range bound", BirthdayConfig{Seed: 1, PortMin: 5000, PortMax: 5009}, 10, 9 * 500 * time.Microsecond, 5000, 5009},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			plan := ScanPlan(addr, tc.cfg)
			if len(plan) != tc.wantN {
				t.Fatalf("%d probes, want %d", len(plan), tc.wantN)
			}
			if last := plan[len(plan)-1].At; last != tc.wantSpan {
				t.Fatalf("last probe at %v, want %v", last, tc.wantSpan)
			}
			seen := map[uint16]bool{}
			for _, p := range plan {
				port := p.Target.Port()
				if p.Target.Addr() != addr || port < tc.min || port > tc.max || seen[port] {
					t.Fatalf("bad or repeated target %v", p.Target)
				}
				seen[port] = true
			}
			again := ScanPlan(addr, tc.cfg)
			for i := range plan {
				if plan[i] != again[i] {
					t.Fatal("the same seed gave another plan")
				}
			}
		})
	}
}

// TestBirthdayThroughModel: a symmetric NAT against a port-restricted one,
// in the in-process model: the spray and the scan meet.
func TestBirthdayThroughModel(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		m := testnet.NewModel()
		delay := 20 * time.Millisecond
		symNAT, _ := m.AddNAT(testnet.NATConfig{Public: netip.MustParseAddr("198.51.100.1"), Mapping: nattype.MappingAPDM, Filtering: nattype.FilteringAPDF, Delay: delay})
		eimNAT, _ := m.AddNAT(testnet.NATConfig{Public: netip.MustParseAddr("198.51.100.2"), Mapping: nattype.MappingEIM, Filtering: nattype.FilteringAPDF, Delay: delay})
		listen := func(nat *testnet.ModelNAT, ap netip.AddrPort) *endpoint.Endpoint {
			c, err := m.Listen(ap, nat, 0)
			if err != nil {
				t.Fatal(err)
			}
			ep, err := endpoint.New(endpoint.Config{Conn: c})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { ep.Close() })
			return ep
		}
		epA := listen(symNAT, netip.MustParseAddrPort("192.168.1.10:4000"))
		epB := listen(eimNAT, netip.MustParseAddrPort("192.168.2.10:4000"))
		agA, _ := NewAgent(AgentConfig{Endpoint: epA})
		agB, _ := NewAgent(AgentConfig{Endpoint: epB})
		ca, cb := NewCreds(), NewCreds()
		sa, _ := agA.Open(ca, cb, nil)
		sb, _ := agB.Open(cb, ca, nil)
		defer sa.Close()
		defer sb.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		scanDone := make(chan error, 1)
		go func() {
			_, err := sb.Scan(ctx, netip.MustParseAddr("198.51.100.1"), BirthdayConfig{Seed: 3})
			scanDone <- err
		}()
		listenA := func(ap netip.AddrPort) (net.PacketConn, error) { return m.Listen(ap, symNAT, 0) }
		start := time.Now()
		conn, pair, err := sa.Spray(ctx, listenA, netip.MustParseAddr("192.168.1.10"), netip.MustParseAddrPort("198.51.100.2:4000"), BirthdayConfig{})
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		if pair.Remote != netip.MustParseAddrPort("198.51.100.2:4000") {
			t.Fatalf("pair %+v", pair)
		}
		t.Logf("spray won after %v", time.Since(start))
		// The scan side validated the same collision.
		if err := <-scanDone; err != nil {
			t.Fatalf("scan side: %v", err)
		}
	})
}
