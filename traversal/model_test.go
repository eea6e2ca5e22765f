package traversal

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"runtime"
	"testing"
	"testing/synctest"
	"time"

	"github.com/antnode/antnode/bootstrap"
	"github.com/antnode/antnode/endpoint"
	"github.com/antnode/antnode/event"
	"github.com/antnode/antnode/identity"
	"github.com/antnode/antnode/internal/testkit"
	"github.com/antnode/antnode/nattype"
	"github.com/antnode/antnode/testnet"
)

// modelNet is a bootstrap on the public model network and peers behind
// modelled NATs.
type modelNet struct {
	t    testing.TB
	m    *testnet.Model
	boot Bootstrap
	nats map[int]*testnet.ModelNAT // by peer index
}

func newModelNet(t testing.TB) *modelNet {
	m := testnet.NewModel()
	id, _ := identity.Generate()
	c, err := m.Listen(netip.MustParseAddrPort("203.0.113.1:4433"), nil, 0)
	if err != nil {
		t.Fatal(err)
	}
	ep := testkit.EndpointOn(t, c)
	alt, err := m.Listen(netip.MustParseAddrPort("203.0.113.1:4434"), nil, 0)
	if err != nil {
		t.Fatal(err)
	}
	srv, err := bootstrap.NewServer(bootstrap.ServerConfig{Identity: id, Endpoint: ep, AltSTUN: alt,
		ProbeAddr:   netip.MustParseAddr("203.0.113.3"),
		ListenProbe: func(ap netip.AddrPort) (net.PacketConn, error) { return m.Listen(ap, nil, 0) }})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close() })
	return &modelNet{t: t, m: m, boot: Bootstrap{Addr: srv.Addr(), ID: id.ID()}, nats: map[int]*testnet.ModelNAT{}}
}

// peer starts a node behind a new NAT of class nat (zero Type: public)
// with the given one-way access delay.
func (mn *modelNet) peer(i int, nat nattype.Type, delay time.Duration) *Node {
	return mn.peerRec(i, nat, delay, nil)
}

func (mn *modelNet) peerRec(i int, nat nattype.Type, delay time.Duration, rec event.Recorder) *Node {
	t := mn.t
	var n *testnet.ModelNAT
	local := netip.AddrPortFrom(netip.AddrFrom4([4]byte{198, 51, 100, byte(100 + i)}), 4000)
	if nat.Mapping != nattype.MappingNone {
		var err error
		n, err = mn.m.AddNAT(testnet.NATConfig{Public: netip.AddrFrom4([4]byte{198, 51, 100, byte(i)}),
			Mapping: nat.Mapping, Filtering: nat.Filtering, Delay: delay})
		if err != nil {
			t.Fatal(err)
		}
		mn.nats[i] = n
		local = netip.AddrPortFrom(netip.AddrFrom4([4]byte{192, 168, byte(i), 10}), 4000)
	}
	c, err := mn.m.Listen(local, n, delay)
	if err != nil {
		t.Fatal(err)
	}
	ep, err := endpoint.New(endpoint.Config{Conn: c})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ep.Close() })
	id, _ := identity.Generate()
	// The model's hosts never change address: no network watcher (its
	// ticker would only add wakeups to the bubble).
	node, err := New(Config{Identity: id, Endpoint: ep, Bootstraps: []Bootstrap{mn.boot}, Recorder: rec, NetworkPoll: -1,
		Listen: func(ap netip.AddrPort) (net.PacketConn, error) { return mn.m.Listen(ap, n, delay) }})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { node.Close() })
	if err := node.WaitReady(context.Background()); err != nil {
		t.Fatal(err)
	}
	return node
}

var (
	eimAPDF = nattype.Type{Mapping: nattype.MappingEIM, Filtering: nattype.FilteringAPDF}
	public  = nattype.Type{Mapping: nattype.MappingNone}
)

var (
	eimEIF = nattype.Type{Mapping: nattype.MappingEIM, Filtering: nattype.FilteringEIF}
	apdm   = nattype.Type{Mapping: nattype.MappingAPDM, Filtering: nattype.FilteringAPDF}
)

// TestTimeToConnectInRoundTrips measures, in the in-process NAT model with
// virtual time, how many peer-to-peer round trips a connection takes from
// the connect request (on registered bootstrap connections) to the
// completed handshake. The model is deterministic, so the bound is a
// property of the protocol, not of the machine: half a round trip to
// coordinate through the bootstrap (which sends each side the other's
// candidates at once: an early introduction), one for the QUIC
// handshake, which starts speculatively when the punch starts.
func TestTimeToConnectInRoundTrips(t *testing.T) {
	delay := 20 * time.Millisecond
	rtt := 4 * delay // two access links each way
	tests := []struct {
		name    string
		a, b    nattype.Type
		maxRTTs float64
	}{
		{"eim-apdf to eim-apdf", eimAPDF, eimAPDF, 1.55},
		{"public to eim-apdf", public, eimAPDF, 1.55},
		{"eim-eif to eim-apdf", eimEIF, eimAPDF, 1.55},
		{"symmetric to full cone", apdm, eimEIF, 1.55},
		{"full cone to symmetric", eimEIF, apdm, 2.05},
		{"symmetric to port-restricted (birthday)", apdm, eimAPDF, 0},
		{"port-restricted to symmetric (birthday)", eimAPDF, apdm, 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				mn := newModelNet(t)
				a, b := mn.peer(1, tc.a, delay), mn.peer(2, tc.b, delay)
				for _, n := range []*Node{a, b} {
					if _, err := n.Classify(context.Background()); err != nil {
						t.Fatal(err)
					}
				}
				if a.NAT().Class() != tc.a.Class() || b.NAT().Class() != tc.b.Class() {
					t.Fatalf("classified %v and %v, want %v and %v", a.NAT(), b.NAT(), tc.a, tc.b)
				}
				c, err := a.Connect(context.Background(), b.ID())
				if err != nil {
					t.Fatal(err)
				}
				rtts := float64(c.TimeToConnect()) / float64(rtt)
				t.Logf("%s: %v = %.2f round trips", tc.name, c.TimeToConnect(), rtts)
				if tc.maxRTTs > 0 && rtts > tc.maxRTTs {
					t.Fatalf("%.2f round trips, want at most %.2f", rtts, tc.maxRTTs)
				}
				if _, err := c.SendVerified(context.Background(), 32<<10); err != nil {
					t.Fatal(err)
				}
			})
		})
	}
}

func TestBothSymmetricFailsFast(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		mn := newModelNet(t)
		delay := 20 * time.Millisecond
		a, b := mn.peer(1, apdm, delay), mn.peer(2, apdm, delay)
		a.Classify(context.Background())
		b.Classify(context.Background())
		a.cfg.Relay = RelayNever
		start := time.Now()
		_, err := a.Connect(context.Background(), b.ID())
		var ce *ConnectError
		if !errors.As(err, &ce) || ce.Reason != event.ReasonBothSymmetric || !errors.Is(err, ErrNoDirectPath) {
			t.Fatalf("got %v, want both_symmetric", err)
		}
		if d := time.Since(start); d > 2*4*delay {
			t.Fatalf("took %v: more than the introduction's round trip", d)
		}
		// With the relay allowed but none offered, the reason names the
		// relay, quickly too.
		a.cfg.Relay = RelayAuto
		start = time.Now()
		_, err = a.Connect(context.Background(), b.ID())
		if !errors.As(err, &ce) || ce.Reason != event.ReasonRelayUnavailable || !errors.Is(err, ErrNoRelay) {
			t.Fatalf("got %v, want relay_unavailable", err)
		}
		if d := time.Since(start); d > 3*4*delay {
			t.Fatalf("took %v", d)
		}
	})
}

func TestModelConnectThroughNATs(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		mn := newModelNet(t)
		delay := 20 * time.Millisecond
		a, b := mn.peer(1, eimAPDF, delay), mn.peer(2, eimAPDF, delay)
		c, err := a.Connect(context.Background(), b.ID())
		if err != nil {
			t.Fatal(err)
		}
		rtt := 4 * delay // peer to peer: two access links each way
		t.Logf("time to connect %v = %.2f RTT", c.TimeToConnect(), float64(c.TimeToConnect())/float64(rtt))
		if _, err := c.SendVerified(context.Background(), 64<<10); err != nil {
			t.Fatal(err)
		}
		c.Close()
		a.Close()
		b.Close()
	})
}

func TestPhaseBreakdown(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		mn := newModelNet(t)
		delay := 20 * time.Millisecond
		rec := &recorder{}
		t0 := time.Now()
		mn.m.OnDrop = func(from, to netip.AddrPort, why string) {
			t.Logf("+%v drop %v -> %v: %s", time.Since(t0), from, to, why)
		}
		a := mn.peerRec(1, eimAPDF, delay, rec)
		b := mn.peer(2, eimAPDF, delay)
		start := time.Now()
		c, err := a.Connect(context.Background(), b.ID())
		if err != nil {
			t.Fatal(err)
		}
		for _, ev := range rec.Events(nil) {
			if ev.Attempt != 0 {
				t.Logf("+%v %s %s %v %v", ev.Time.Sub(start), ev.Kind, ev.Phase, ev.Duration, ev.Addr)
			}
		}
		_ = c
	})
}

// TestFailedAttemptsLeaveNothing runs 100 attempts that fail in different
// phases (unknown peer, no direct path possible, blackholed path) and
// checks that goroutines, sockets, STUN transactions, check sessions and
// heap come back to where they were.
func TestFailedAttemptsLeaveNothing(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		mn := newModelNet(t)
		delay := 5 * time.Millisecond
		a := mn.peer(1, eimAPDF, delay)
		b := mn.peer(2, eimAPDF, delay)
		sym1, sym2 := mn.peer(3, apdm, delay), mn.peer(4, apdm, delay)
		for _, n := range []*Node{a, b, sym1, sym2} {
			n.Classify(context.Background())
		}
		// A blackholed path between a and b: punching times out.
		mn.m.Block(netip.MustParseAddr("198.51.100.1"), netip.MustParseAddr("198.51.100.2"))
		unknown, _ := identity.Generate()
		attempt := func(i int) {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			var err error
			switch i % 3 {
			case 0:
				_, err = a.Connect(ctx, unknown.ID())
			case 1:
				_, err = sym1.Connect(ctx, sym2.ID())
			case 2:
				_, err = a.Connect(ctx, b.ID())
			}
			if err == nil {
				t.Fatalf("attempt %d succeeded", i)
			}
		}
		settle := func() {
			// Responders give up after their own ConnectTimeout (15 s); check
			// sessions linger 2 s after that.
			// The bootstrap keeps answered sessions for SessionTTL (60 s).
			time.Sleep(65 * time.Second)
			synctest.Wait()
			runtime.GC()
			runtime.GC()
		}
		// A first 100 attempts grow maps and pools to their high-water
		// mark; the next 100 must not grow anything.
		for i := range 100 {
			attempt(i)
		}
		settle()
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		g0, s0 := runtime.NumGoroutine(), mn.m.OpenSockets()
		for i := range 100 {
			attempt(i)
		}
		settle()
		runtime.ReadMemStats(&after)
		g1, s1 := runtime.NumGoroutine(), mn.m.OpenSockets()
		if g1 > g0 {
			t.Errorf("goroutines %d -> %d after 100 failed attempts", g0, g1)
		}
		if s1 != s0 {
			t.Errorf("sockets %d -> %d", s0, s1)
		}
		noLeftovers(t, true, a, b, sym1, sym2)
		// Live heap after GC: a leaked attempt (its sessions, buffers,
		// goroutine stacks) costs kilobytes; 100 of them would show.
		growth := int64(after.HeapAlloc) - int64(before.HeapAlloc)
		t.Logf("goroutines %d -> %d, sockets %d -> %d, live heap %+d bytes", g0, g1, s0, s1, growth)
		if growth > 128<<10 {
			t.Errorf("live heap grew by %d bytes over 100 failed attempts", growth)
		}
	})
}

// noLeftovers fails t for every check session and expected-connection
// waiter that the nodes still hold, and with stun for every STUN
// transaction still pending.
func noLeftovers(t testing.TB, stun bool, nodes ...*Node) {
	t.Helper()
	for _, n := range nodes {
		if p := n.cfg.Endpoint.Pending(); stun && p != 0 {
			t.Errorf("%d STUN transactions still pending", p)
		}
		if s := n.agent.Sessions(); s != 0 {
			t.Errorf("%d check sessions still open", s)
		}
		n.expectMu.Lock()
		exp := len(n.expected)
		n.expectMu.Unlock()
		if exp != 0 {
			t.Errorf("%d expected-connection waiters left", exp)
		}
	}
}
