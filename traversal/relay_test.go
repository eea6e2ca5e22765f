package traversal

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"runtime"
	"runtime/pprof"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/antnode/antnode/internal/testkit"

	"github.com/antnode/antnode/bootstrap"
	"github.com/antnode/antnode/endpoint"
	"github.com/antnode/antnode/event"
	"github.com/antnode/antnode/identity"
	"github.com/antnode/antnode/relay"
)

// relayBootstrap starts a loopback bootstrap with TCP control and a TURN
// relay (UDP and TCP).
// onSamePort opens a UDP socket (open: its address and how to close it)
// and a TCP listener on the same port number, as a bootstrap's control
// and relay sockets are. A TCP port that another socket holds (tests of
// other packages run at the same time) means a fresh UDP port; bounded.
func onSamePort(t testing.TB, open func() (string, func(), error)) net.Listener {
	t.Helper()
	for range 20 {
		addr, closeUDP, err := open()
		if err != nil {
			t.Fatal(err)
		}
		l, err := net.Listen("tcp4", addr)
		if err == nil {
			return l
		}
		closeUDP()
		if !errors.Is(err, syscall.EADDRINUSE) {
			t.Fatal(err)
		}
	}
	t.Fatal("no UDP port whose TCP twin is free in 20 tries")
	return nil
}

func relayBootstrap(t testing.TB, relayCfg relay.ServerConfig) (Bootstrap, *relay.Server) {
	t.Helper()
	return relayBootstrapCfg(t, relayCfg, bootstrap.ServerConfig{})
}

// relayBootstrapCfg is relayBootstrap with the bootstrap's configuration
// (its key, sockets and relay are set here).
func relayBootstrapCfg(t testing.TB, relayCfg relay.ServerConfig, cfg bootstrap.ServerConfig) (Bootstrap, *relay.Server) {
	t.Helper()
	id := testkit.Identity(t)
	var ep *endpoint.Endpoint
	ctl := onSamePort(t, func() (string, func(), error) {
		e, err := endpoint.Listen("udp4", "127.0.0.1:0", endpoint.Config{})
		if err != nil {
			return "", nil, err
		}
		ep = e
		return e.LocalAddr().String(), func() { e.Close() }, nil
	})
	t.Cleanup(func() { ep.Close() })
	var udp net.PacketConn
	tcp := onSamePort(t, func() (string, func(), error) {
		u, err := net.ListenPacket("udp4", "127.0.0.1:0")
		if err != nil {
			return "", nil, err
		}
		udp = u
		return u.LocalAddr().String(), func() { u.Close() }, nil
	})
	relayCfg.UDP, relayCfg.TCP, relayCfg.RelayIP = udp, tcp, netip.MustParseAddr("127.0.0.1")
	rs, err := relay.NewServer(relayCfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { rs.Close() })
	cfg.Identity, cfg.Endpoint, cfg.TCP, cfg.Relay = id, ep, ctl, rs
	srv, err := bootstrap.NewServer(cfg)
	if err != nil {
		t.Fatal(err)
	}
	rs.SetPolicy(srv.RelayAllowed)
	t.Cleanup(func() { srv.Close() })
	return Bootstrap{Addr: srv.Addr(), ID: id.ID()}, rs
}

// blockedConn is a UDP socket whose datagrams never leave: a host whose
// UDP is blocked.
type blockedConn struct{ net.PacketConn }

func (blockedConn) WriteTo(b []byte, _ net.Addr) (int, error) { return len(b), nil }

func startNodeCfg(t testing.TB, cfg Config) *Node {
	t.Helper()
	if cfg.Identity == nil {
		cfg.Identity = testkit.Identity(t)
	}
	if cfg.Endpoint == nil {
		cfg.Endpoint = testkit.Endpoint(t)
	}
	n, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { n.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := n.WaitReady(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := n.Classify(ctx); err != nil {
		t.Fatal(err)
	}
	return n
}

func TestForcedRelayCarriesVerifiedBytes(t *testing.T) {
	b, rs := relayBootstrap(t, relay.ServerConfig{})
	rec := &recorder{}
	a := startNodeCfg(t, Config{Bootstraps: []Bootstrap{b}, Relay: RelayForce, Recorder: rec})
	peer := startNodeCfg(t, Config{Bootstraps: []Bootstrap{b}})
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	c, err := a.Connect(ctx, peer.ID())
	if err != nil {
		t.Fatal(err)
	}
	if c.Path() != event.PathRelay {
		t.Fatalf("path %s, want relay", c.Path())
	}
	res, err := c.SendVerified(ctx, 1<<20)
	if err != nil || res.Bytes != 1<<20 {
		t.Fatalf("transfer over the relay: %+v %v", res, err)
	}
	if rs.Allocations() != 1 || rs.BytesRelayed() < 1<<20 {
		t.Fatalf("relay: %d allocations, %d bytes", rs.Allocations(), rs.BytesRelayed())
	}
	if len(rec.Kind(event.KindFallback)) == 0 {
		t.Fatal("no fallback event")
	}
	// The peer's side sees the relay too.
	deadline := time.Now().Add(2 * time.Second)
	for time.Now().Before(deadline) {
		for _, pc := range peer.Conns() {
			if pc.Peer() == a.ID() && pc.Path() == event.PathRelay {
				return
			}
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatal("the accepting side does not label the connection as relayed")
}

// TestUDPBlockedPeerIsReachableThroughRelay: a peer whose UDP is blocked
// registers over TCP, classifies itself as udp-blocked, and several peers
// connect to it at once; it allocates once, over TCP, and dials each of
// them through the shared allocation.
func TestUDPBlockedPeerIsReachableThroughRelay(t *testing.T) {
	b, rs := relayBootstrap(t, relay.ServerConfig{MaxAllocationsPerPeer: 1})
	blocked := startBlockedNode(t, Config{Bootstraps: []Bootstrap{b}})
	const peers = 4
	var wg sync.WaitGroup
	errs := make(chan error, peers)
	for range peers {
		p := startNodeCfg(t, Config{Bootstraps: []Bootstrap{b}})
		wg.Add(1)
		go func() {
			defer wg.Done()
			ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
			defer cancel()
			c, err := p.Connect(ctx, blocked.ID())
			if err != nil {
				errs <- err
				return
			}
			if c.Path() != event.PathRelay {
				errs <- &ConnectError{Err: errNotRelay}
				return
			}
			if _, err := c.SendVerified(ctx, 256<<10); err != nil {
				errs <- err
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if n := rs.Allocations(); n != 1 {
		t.Fatalf("%d allocations, want one shared", n)
	}
}

var errNotRelay = &identity.KeyMismatchError{} // any error value: only its presence matters

// countingListen opens real UDP sockets for TURN clients and counts the
// ones still open.
type countingListen struct {
	mu   sync.Mutex
	open int
}

type countedConn struct {
	net.PacketConn
	c    *countingListen
	once sync.Once
}

func (c *countedConn) Close() error {
	c.once.Do(func() {
		c.c.mu.Lock()
		c.c.open--
		c.c.mu.Unlock()
	})
	return c.PacketConn.Close()
}

func (l *countingListen) listen() (net.PacketConn, error) {
	pc, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	l.mu.Lock()
	l.open++
	l.mu.Unlock()
	return &countedConn{PacketConn: pc, c: l}, nil
}

func (l *countingListen) Open() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.open
}

// onlyToConn drops every datagram except those to one address: a host
// that reaches its bootstrap and nothing else.
type onlyToConn struct {
	net.PacketConn
	to netip.AddrPort
}

func (c onlyToConn) WriteTo(b []byte, addr net.Addr) (int, error) {
	if ua, ok := addr.(*net.UDPAddr); !ok || ua.AddrPort() != c.to {
		return len(b), nil
	}
	return c.PacketConn.WriteTo(b, addr)
}

// TestFailedRelayAttemptsLeaveNothing makes 100 relayed attempts that
// cannot succeed (the peer reaches only its bootstrap, and it may not use
// the relay itself) and checks that, once the shared allocation's idle time is
// over, the relay holds no allocation, the TURN client socket is closed
// and the goroutines are back to where they were.
func TestFailedRelayAttemptsLeaveNothing(t *testing.T) {
	b, rs := relayBootstrap(t, relay.ServerConfig{})
	raw, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ep, err := endpoint.New(endpoint.Config{Conn: onlyToConn{raw, b.Addr}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ep.Close() })
	const timeout = 400 * time.Millisecond
	peer := startNodeCfg(t, Config{Endpoint: ep, Bootstraps: []Bootstrap{b}, Relay: RelayNever, ConnectTimeout: timeout})
	socks := &countingListen{}
	a := startNodeCfg(t, Config{Bootstraps: []Bootstrap{b}, Relay: RelayForce, RelayIdle: 300 * time.Millisecond,
		RelayListen: socks.listen, ConnectTimeout: timeout})
	g0 := runtime.NumGoroutine()
	const total, parallel = 100, 10
	allocated := 0
	for round := range total / parallel {
		var wg sync.WaitGroup
		var mu sync.Mutex
		var succeeded int
		var firstErr error
		for range parallel {
			wg.Add(1)
			go func() {
				defer wg.Done()
				_, err := a.Connect(context.Background(), peer.ID())
				mu.Lock()
				if err == nil {
					succeeded++
				} else if round == 0 && firstErr == nil {
					firstErr = err
				}
				mu.Unlock()
			}()
		}
		wg.Wait()
		if succeeded != 0 {
			t.Fatalf("round %d: %d attempts succeeded", round, succeeded)
		}
		allocated = max(allocated, rs.Allocations())
		if round == 0 {
			t.Logf("first round fails with: %v", firstErr)
		}
	}
	if allocated == 0 {
		t.Fatal("the attempts never allocated: they failed before the relay phase")
	}
	// Generous: under a loaded CI machine, closing connections and
	// releasing the allocation take their time; a leak never ends.
	deadline := time.Now().Add(30 * time.Second)
	var g1 int
	for time.Now().Before(deadline) {
		g1 = runtime.NumGoroutine()
		if rs.Allocations() == 0 && socks.Open() == 0 && g1 <= g0 {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Logf("max %d allocations during the attempts; afterwards %d allocations, %d TURN sockets, goroutines %d -> %d",
		allocated, rs.Allocations(), socks.Open(), g0, g1)
	if rs.Allocations() != 0 {
		t.Errorf("%d allocations left on the relay", rs.Allocations())
	}
	if socks.Open() != 0 {
		t.Errorf("%d TURN client sockets left open", socks.Open())
	}
	if g1 > g0 {
		var b strings.Builder
		pprof.Lookup("goroutine").WriteTo(&b, 1)
		t.Errorf("goroutines %d -> %d:\n%s", g0, g1, b.String())
	}
}

// waitRegistered waits until every node is registered with all its
// bootstraps (startNodeCfg waits for one).
func waitRegistered(t *testing.T, nodes ...*Node) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for _, n := range nodes {
		for {
			all := true
			for _, b := range n.Bootstraps() {
				all = all && b.Registered
			}
			if all {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s not registered with every bootstrap: %+v", n.ID().Short(), n.Bootstraps())
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
}

// TestAlternateBootstrapRelay: when the relay of the bootstrap that made
// the introduction is gone (its bootstrap is up), the attempt introduces
// again through the other bootstrap and connects through its relay.
func TestAlternateBootstrapRelay(t *testing.T) {
	b0, rs0 := relayBootstrap(t, relay.ServerConfig{})
	b1, _ := relayBootstrap(t, relay.ServerConfig{})
	rs0.Close() // bootstrap 0 lives on; its relay does not answer
	rec := &recorder{}
	a := startNodeCfg(t, Config{Bootstraps: []Bootstrap{b0, b1}, Relay: RelayForce, Recorder: rec})
	bn := startNodeCfg(t, Config{Bootstraps: []Bootstrap{b0, b1}})
	// Both registered with both bootstraps: bootstrap 0 introduces (an
	// unknown peer there would be another recovery).
	waitRegistered(t, a, bn)
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	c, err := a.Connect(ctx, bn.ID())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if c.Path() != event.PathRelay {
		t.Fatalf("path %s", c.Path())
	}
	if _, err := c.SendVerified(ctx, 64<<10); err != nil {
		t.Fatal(err)
	}
	found := false
	for _, ev := range rec.Kind(event.KindRecovery) {
		found = found || (ev.Detail == "alternate_bootstrap" && ev.Bootstrap == "1" &&
			(ev.Reason == event.ReasonRelayUnavailable || ev.Reason == event.ReasonRelayQuota))
	}
	if !found {
		t.Fatalf("no alternate_bootstrap recovery to bootstrap 1: %+v", rec.Kind(event.KindRecovery))
	}
}

func TestReachedAt(t *testing.T) {
	boot := netip.MustParseAddrPort("203.0.113.1:4433")
	tests := []struct {
		name       string
		relay, out string
	}{
		{"concrete address kept", "198.51.100.7:4435", "198.51.100.7:4435"},
		{"IPv4 wildcard is the bootstrap's address", "0.0.0.0:4435", "203.0.113.1:4435"},
		{"IPv6 wildcard is the bootstrap's address", "[::]:4434", "203.0.113.1:4434"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := reachedAt(netip.MustParseAddrPort(tc.relay), boot); got.String() != tc.out {
				t.Fatalf("reachedAt(%s) = %s, want %s", tc.relay, got, tc.out)
			}
		})
	}
	if got := reachedAt(netip.AddrPort{}, boot); got.IsValid() {
		t.Fatalf("no address became %s", got)
	}
}
