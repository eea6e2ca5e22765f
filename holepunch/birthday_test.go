package holepunch

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"slices"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/antnode/antnode/endpoint"
	"github.com/antnode/antnode/event"
	"github.com/antnode/antnode/internal/testkit"
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
			plan := ScanPlan(addr, nil, tc.cfg)
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
			again := ScanPlan(addr, nil, tc.cfg)
			for i := range plan {
				if plan[i] != again[i] {
					t.Fatal("the same seed gave another plan")
				}
			}
		})
	}
}

func TestPredictPorts(t *testing.T) {
	tests := []struct {
		name     string
		observed []uint16
		n        int
		want     []uint16
	}{
		{"sequential", []uint16{40000, 40001}, 3, []uint16{40002, 40003, 40004}},
		{"order does not matter", []uint16{40001, 40000}, 2, []uint16{40002, 40003}},
		{"stride two", []uint16{5000, 5002, 5004}, 2, []uint16{5006, 5008}},
		{"uneven steps round the stride up", []uint16{5000, 5001, 5004}, 2, []uint16{5006, 5008}},
		{"largest stride", []uint16{100, 116}, 1, []uint16{132}},
		{"random allocation", []uint16{40000, 52113}, 3, nil},
		{"just over the stride", []uint16{100, 117}, 1, nil},
		{"one observation", []uint16{40000}, 3, nil},
		{"same port twice (not symmetric)", []uint16{40000, 40000}, 3, nil},
		{"top of the range", []uint16{65533, 65534}, 5, []uint16{65535}},
		{"none wanted", []uint16{40000, 40001}, 0, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := PredictPorts(tc.observed, tc.n); !slices.Equal(got, tc.want) {
				t.Fatalf("PredictPorts(%v, %d) = %v, want %v", tc.observed, tc.n, got, tc.want)
			}
		})
	}
}

func TestScanPlanProbesPredictedPortsFirst(t *testing.T) {
	addr := netip.MustParseAddr("198.51.100.1")
	tests := []struct {
		name      string
		predicted []uint16
		cfg       BirthdayConfig
		wantFirst []uint16
		wantN     int
	}{
		{"predicted first, then random", []uint16{40002, 40003, 40004}, BirthdayConfig{Seed: 1, Probes: 100}, []uint16{40002, 40003, 40004}, 100},
		{"capped by Predict", []uint16{40002, 40003, 40004}, BirthdayConfig{Seed: 1, Probes: 100, Predict: 2}, []uint16{40002, 40003}, 100},
		{"prediction off", []uint16{40002, 40003}, BirthdayConfig{Seed: 1, Probes: 100, Predict: -1}, nil, 100},
		{"outside the range", []uint16{80, 40002}, BirthdayConfig{Seed: 1, Probes: 10}, []uint16{40002}, 10},
		{"more predicted than probes", []uint16{40002, 40003, 40004}, BirthdayConfig{Seed: 1, Probes: 2}, []uint16{40002, 40003}, 2},
		{"small range: predicted and random together cover it once", []uint16{5001, 5002}, BirthdayConfig{Seed: 1, PortMin: 5000, PortMax: 5004}, []uint16{5001, 5002}, 5},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			plan := ScanPlan(addr, tc.predicted, tc.cfg)
			if len(plan) != tc.wantN {
				t.Fatalf("%d probes, want %d", len(plan), tc.wantN)
			}
			seen := map[uint16]bool{}
			for i, p := range plan {
				port := p.Target.Port()
				if seen[port] {
					t.Fatalf("port %d probed twice", port)
				}
				seen[port] = true
				if i < len(tc.wantFirst) && port != tc.wantFirst[i] {
					t.Fatalf("probe %d to %d, want %d", i, port, tc.wantFirst[i])
				}
				if i > 0 && p.At <= plan[i-1].At {
					t.Fatalf("probe %d not paced: %v after %v", i, p.At, plan[i-1].At)
				}
			}
			if tc.cfg.Predict < 0 && len(plan) > 0 && slices.Contains(tc.predicted, plan[0].Target.Port()) {
				t.Fatal("prediction off, yet a predicted port came first")
			}
		})
	}
}

// birthdayModel is the birthday search's world in the in-process model:
// host A (192.168.1.10:4000) behind a symmetric NAT on 198.51.100.1 that
// allocates at random or in sequence, host B (192.168.2.10:4000) behind a
// port-restricted cone NAT on 198.51.100.2, 20 ms one way on each access.
func birthdayModel(t *testing.T, sequential bool) (m *testnet.Model, symNAT *testnet.ModelNAT, epA, epB *endpoint.Endpoint) {
	t.Helper()
	m = testnet.NewModel()
	delay := 20 * time.Millisecond
	symNAT, _ = m.AddNAT(testnet.NATConfig{Public: netip.MustParseAddr("198.51.100.1"), Mapping: nattype.MappingAPDM,
		Filtering: nattype.FilteringAPDF, Delay: delay, Sequential: sequential})
	eimNAT, _ := m.AddNAT(testnet.NATConfig{Public: netip.MustParseAddr("198.51.100.2"), Mapping: nattype.MappingEIM,
		Filtering: nattype.FilteringAPDF, Delay: delay})
	listen := func(nat *testnet.ModelNAT, ap netip.AddrPort) *endpoint.Endpoint {
		c, err := m.Listen(ap, nat, 0)
		if err != nil {
			t.Fatal(err)
		}
		return testkit.EndpointOn(t, c)
	}
	return m, symNAT, listen(symNAT, netip.MustParseAddrPort("192.168.1.10:4000")), listen(eimNAT, netip.MustParseAddrPort("192.168.2.10:4000"))
}

// TestBirthdayThroughModel: a symmetric NAT against a port-restricted one,
// in the in-process model: the spray and the scan meet.
func TestBirthdayThroughModel(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		m, symNAT, epA, epB := birthdayModel(t, false)
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
			_, err := sb.Scan(ctx, netip.MustParseAddr("198.51.100.1"), nil, BirthdayConfig{Seed: 3})
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

type eventLog = testkit.Recorder

// TestPortPredictionThroughModel: a symmetric NAT that allocates its ports
// in sequence, against a port-restricted one. The ports at which two
// "bootstraps" saw the symmetric side predict where its spraying sockets
// are mapped; the scan probes there first and wins within that window
// (at most 2x256 probes), by prediction rather than by chance. Without
// observations the same search is a random scan (about 250 probes on
// average against 256 sockets over 64512 ports, and 8 s at worst). The
// time each took is logged.
func TestPortPredictionThroughModel(t *testing.T) {
	for _, tc := range []struct {
		name    string
		predict bool
		how     string
	}{{"predicted", true, "port prediction"}, {"random", false, "birthday scan"}} {
		t.Run(tc.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				m, symNAT, epA, epB := birthdayModel(t, true)
				// Two bootstraps observe the symmetric side's mappings.
				var observed []uint16
				for _, b := range []string{"203.0.113.1:3478", "203.0.113.2:3478"} {
					bc, err := m.Listen(netip.MustParseAddrPort(b), nil, 0)
					if err != nil {
						t.Fatal(err)
					}
					if err := epA.WriteTo([]byte("hello"), netip.MustParseAddrPort(b)); err != nil {
						t.Fatal(err)
					}
					buf := make([]byte, 64)
					_, from, err := bc.ReadFrom(buf)
					if err != nil {
						t.Fatal(err)
					}
					observed = append(observed, from.(*net.UDPAddr).AddrPort().Port())
					bc.Close()
				}
				if !tc.predict {
					observed = nil
				}
				agA, _ := NewAgent(AgentConfig{Endpoint: epA})
				agB, _ := NewAgent(AgentConfig{Endpoint: epB})
				ca, cb := NewCreds(), NewCreds()
				var log eventLog
				sa, _ := agA.Open(ca, cb, nil)
				sb, _ := agB.Open(cb, ca, event.StartAttempt(&log, "a", "initiator", "eim-apdf", ""))
				defer sa.Close()
				defer sb.Close()
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				defer cancel()
				start := time.Now()
				scanDone := make(chan error, 1)
				go func() {
					_, err := sb.Scan(ctx, netip.MustParseAddr("198.51.100.1"), observed, BirthdayConfig{Seed: 3})
					scanDone <- err
				}()
				listenA := func(ap netip.AddrPort) (net.PacketConn, error) { return m.Listen(ap, symNAT, 0) }
				conn, _, err := sa.Spray(ctx, listenA, netip.MustParseAddr("192.168.1.10"), netip.MustParseAddrPort("198.51.100.2:4000"), BirthdayConfig{})
				if err != nil {
					t.Fatal(err)
				}
				defer conn.Close()
				if err := <-scanDone; err != nil {
					t.Fatalf("scan side: %v", err)
				}
				v := log.Kind(event.KindPathValidated)
				if len(v) != 1 || v[0].Detail != tc.how {
					t.Fatalf("validated %+v, want one by %q", v, tc.how)
				}
				t.Logf("observed %v: direct by %s after %v and %v scan probes", observed, v[0].Detail, time.Since(start), v[0].Value)
				if tc.predict && v[0].Value > 2*256 {
					t.Fatalf("prediction needed %v probes, more than its window", v[0].Value)
				}
			})
		})
	}
}

// countingListener opens model sockets and counts them, open and in all.
type countingListener struct {
	m      *testnet.Model
	nat    *testnet.ModelNAT
	mu     sync.Mutex
	opened int
	conns  []net.PacketConn
}

func (l *countingListener) listen(ap netip.AddrPort) (net.PacketConn, error) {
	c, err := l.m.Listen(ap, l.nat, 0)
	if err != nil {
		return nil, err
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	l.opened++
	l.conns = append(l.conns, c)
	return c, nil
}

// TestBirthdayIsBounded: against a peer that never answers, both sides of
// the search give up with ErrBirthdayFailed when their budget runs out:
// the sprayer with at most Sockets sockets, all closed again, and the
// scanner after at most Probes probes at Rate.
func TestBirthdayIsBounded(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		m := testnet.NewModel()
		symNAT, _ := m.AddNAT(testnet.NATConfig{Public: netip.MustParseAddr("198.51.100.1"), Mapping: nattype.MappingAPDM, Filtering: nattype.FilteringAPDF})
		c, err := m.Listen(netip.MustParseAddrPort("192.168.1.10:4000"), symNAT, 0)
		if err != nil {
			t.Fatal(err)
		}
		ep, err := endpoint.New(endpoint.Config{Conn: c})
		if err != nil {
			t.Fatal(err)
		}
		defer ep.Close()
		ag, _ := NewAgent(AgentConfig{Endpoint: ep})
		s, _ := ag.Open(NewCreds(), NewCreds(), nil)
		defer s.Close()
		cfg := BirthdayConfig{Sockets: 32, Probes: 100, Rate: 50, Budget: 3 * time.Second, Seed: 1}
		l := &countingListener{m: m, nat: symNAT}
		start := time.Now()
		_, _, err = s.Spray(context.Background(), l.listen, netip.MustParseAddr("192.168.1.10"), netip.MustParseAddrPort("198.51.100.9:4000"), cfg)
		if !errors.Is(err, ErrBirthdayFailed) {
			t.Fatalf("spray: %v, want ErrBirthdayFailed", err)
		}
		if d := time.Since(start); d != cfg.Budget {
			t.Fatalf("spray gave up after %v, want its budget %v", d, cfg.Budget)
		}
		if l.opened != cfg.Sockets {
			t.Fatalf("spray opened %d sockets, want %d", l.opened, cfg.Sockets)
		}
		for i, c := range l.conns {
			if _, err := c.WriteTo([]byte("x"), net.UDPAddrFromAddrPort(netip.MustParseAddrPort("198.51.100.9:4000"))); !errors.Is(err, net.ErrClosed) {
				t.Fatalf("spray socket %d still open after the search: %v", i, err)
			}
		}

		start = time.Now()
		_, err = s.Scan(context.Background(), netip.MustParseAddr("198.51.100.9"), nil, cfg)
		if !errors.Is(err, ErrBirthdayFailed) {
			t.Fatalf("scan: %v, want ErrBirthdayFailed", err)
		}
		if d := time.Since(start); d != cfg.Budget {
			t.Fatalf("scan gave up after %v, want its budget %v", d, cfg.Budget)
		}
		if n := len(ScanPlan(netip.MustParseAddr("198.51.100.9"), nil, cfg)); n != cfg.Probes {
			t.Fatalf("the scan plans %d probes, want Probes=%d (50/s for 3 s would allow 150)", n, cfg.Probes)
		}
	})
}
