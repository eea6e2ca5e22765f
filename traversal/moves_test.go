package traversal

import (
	"context"
	"net"
	"net/netip"
	"runtime/pprof"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/antnode/antnode/endpoint"
	"github.com/antnode/antnode/event"
	"github.com/antnode/antnode/internal/testkit"
	"github.com/antnode/antnode/migration"
	"github.com/antnode/antnode/relay"
)

// gateConn drops every datagram to and from one address while shut: a
// direct path that is blocked (or blackholed), then opens.
type gateConn struct {
	net.PacketConn
	to   netip.AddrPort
	shut atomic.Bool
}

func (g *gateConn) WriteTo(b []byte, addr net.Addr) (int, error) {
	if ua, ok := addr.(*net.UDPAddr); ok && g.shut.Load() && ua.AddrPort() == g.to {
		return len(b), nil
	}
	return g.PacketConn.WriteTo(b, addr)
}

func (g *gateConn) ReadFrom(b []byte) (int, net.Addr, error) {
	for {
		n, addr, err := g.PacketConn.ReadFrom(b)
		if err == nil && g.shut.Load() {
			if ua, ok := addr.(*net.UDPAddr); ok && ua.AddrPort() == g.to {
				continue
			}
		}
		return n, addr, err
	}
}

// TestRelayUpgradesToDirect: a connection that had to start on the relay
// (its direct path blocked) moves to the direct path once it opens, in
// the middle of a transfer that completes verified; the allocation is
// released and both ends see the direct path.
func TestRelayUpgradesToDirect(t *testing.T) {
	b, rs := relayBootstrap(t, relay.ServerConfig{})
	peerRec := &recorder{}
	peer := startNodeCfg(t, Config{Bootstraps: []Bootstrap{b}, Recorder: peerRec})
	raw, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	gate := &gateConn{PacketConn: raw, to: peer.cfg.Endpoint.LocalAddr()}
	gate.shut.Store(true)
	ep, err := endpoint.New(endpoint.Config{Conn: gate})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ep.Close() })
	rec := &recorder{}
	a := startNodeCfg(t, Config{Endpoint: ep, Bootstraps: []Bootstrap{b}, Recorder: rec,
		PunchBudget: 300 * time.Millisecond, UpgradeBase: 200 * time.Millisecond, UpgradeMax: 400 * time.Millisecond})
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	eps0 := endpointsRunning()
	c, err := a.Connect(ctx, peer.ID())
	if err != nil {
		t.Fatal(err)
	}
	if c.Path() != event.PathRelay || rs.Allocations() != 1 {
		t.Fatalf("path %s with %d allocations, want the relay", c.Path(), rs.Allocations())
	}
	// A transfer runs while the path opens and the connection moves.
	const size = 24 << 20
	done := make(chan error, 1)
	go func() {
		res, err := c.SendVerified(ctx, size)
		if err == nil && res.Bytes != size {
			err = errNotRelay
		}
		done <- err
	}()
	time.Sleep(300 * time.Millisecond)
	gate.shut.Store(false)
	if err := <-done; err != nil {
		t.Fatalf("transfer across the upgrade: %v", err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for c.Path() != event.PathDirect && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if c.Path() != event.PathDirect {
		t.Fatalf("still on %s; migrations %+v", c.Path(), c.Migrations())
	}
	var up *Migration
	for _, m := range c.Migrations() {
		if m.Kind == "upgrade" && m.OK {
			up = &m
		}
	}
	if up == nil || up.From != event.PathRelay || up.To != event.PathDirect ||
		up.Reason != event.ReasonDirectAvailable || up.Duration <= 0 {
		t.Fatalf("migrations %+v", c.Migrations())
	}
	t.Logf("upgraded in %v; migrations %+v", up.Duration, c.Migrations())
	// The allocation is released at once (no idle wait), the peer sees
	// the direct path, and the connection still carries verified bytes.
	deadline = time.Now().Add(5 * time.Second)
	for rs.Allocations() != 0 && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if n := rs.Allocations(); n != 0 {
		t.Fatalf("%d allocations left after the upgrade", n)
	}
	waitPeerPath(t, peer, a, event.PathDirect)
	waitPeerState(t, peer, a, StateConnectedDirect)
	peerMoved(t, peer, a, event.ReasonDirectAvailable)
	noRefusedMoves(t, rec)
	noRefusedMoves(t, peerRec)
	if res, err := c.SendVerified(ctx, 1<<20); err != nil || res.Bytes != 1<<20 {
		t.Fatalf("after the upgrade: %+v %v", res, err)
	}
	// The relay's transport (an endpoint on the relayed socket) outlived
	// its allocation only for the connection that migrated off it: once
	// that connection is gone, so is the endpoint (its reader ends).
	if n := endpointsRunning(); n != eps0+1 {
		t.Fatalf("%d endpoints running before the connect, %d while it runs (want the relay's one more)", eps0, n)
	}
	c.Close()
	deadline = time.Now().Add(10 * time.Second)
	for endpointsRunning() > eps0 && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	if n := endpointsRunning(); n > eps0 {
		t.Fatalf("%d endpoints running before the connect, %d after it closed: the relay's transport was not retired", eps0, n)
	}
}

// endpointsRunning counts the endpoints whose reader goroutine runs.
func endpointsRunning() int {
	var b strings.Builder
	pprof.Lookup("goroutine").WriteTo(&b, 2)
	return strings.Count(b.String(), "endpoint.(*Endpoint).readLoop(")
}

func waitPeerPath(t *testing.T, peer, of *Node, want event.Path) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		for _, pc := range peer.Conns() {
			if pc.Peer() == of.ID() && pc.Path() == want {
				return
			}
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("the peer does not see the %s path", want)
}

// waitPeerState waits until peer's machine for of is in want (the state
// the API and the dashboard show).
func waitPeerState(t *testing.T, peer, of *Node, want State) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	var got State
	for time.Now().Before(deadline) {
		for _, ps := range peer.Peers() {
			if ps.ID == of.ID() {
				if got = ps.State; got == want {
					return
				}
			}
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("the peer's state for the mover is %s, want %s", got, want)
}

// peerMoved waits until peer has recorded of's move with the mover's
// reason and duration (carried by the path notice).
func peerMoved(t *testing.T, peer, of *Node, want event.Reason) {
	t.Helper()
	var seen []Migration
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		seen = seen[:0]
		for _, pc := range peer.Conns() {
			if pc.Peer() != of.ID() {
				continue
			}
			for _, m := range pc.Migrations() {
				if m.Kind == "peer-moved" && m.Reason == want && m.Duration > 0 {
					return
				}
				seen = append(seen, m)
			}
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("the peer's migrations %+v lack a peer-moved with reason %s and a duration", seen, want)
}

// TestBlackholedPathFallsBackToRelay: the direct path of a connection
// starts dropping everything in the middle of a transfer; the dialling
// side notices the silence, moves the connection to the relay, and the
// transfer completes verified.
func TestBlackholedPathFallsBackToRelay(t *testing.T) {
	for _, tc := range []struct {
		name          string
		networkChange bool // the host's addresses change as the path dies
	}{{"blackhole", false}, {"network change leaves no direct path", true}} {
		t.Run(tc.name, func(t *testing.T) { blackholeToRelay(t, tc.networkChange) })
	}
}

func blackholeToRelay(t *testing.T, networkChange bool) {
	b, rs := relayBootstrap(t, relay.ServerConfig{})
	peer := startNodeCfg(t, Config{Bootstraps: []Bootstrap{b}})
	raw, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	gate := &gateConn{PacketConn: raw, to: peer.cfg.Endpoint.LocalAddr()}
	ep, err := endpoint.New(endpoint.Config{Conn: gate})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ep.Close() })
	rec := &recorder{}
	a := startNodeCfg(t, Config{Endpoint: ep, Bootstraps: []Bootstrap{b}, UpgradeBase: time.Hour, Recorder: rec})
	defer func() {
		for _, ev := range rec.Kind(event.KindMigration) {
			t.Logf("migration event: %s %s %v", ev.Detail, ev.Outcome, ev.Err)
		}
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c, err := a.Connect(ctx, peer.ID())
	if err != nil {
		t.Fatal(err)
	}
	if c.Path() != event.PathDirect {
		t.Fatalf("path %s", c.Path())
	}
	const size = 24 << 20
	sent := c.qc.ConnectionStats().PacketsSent
	done := make(chan error, 1)
	go func() {
		res, err := c.SendVerified(ctx, size)
		if err == nil && res.Bytes != size {
			err = errNotRelay
		}
		done <- err
	}()
	// Blackholed once the transfer is under way (a few dozen packets
	// out), not after a fixed time: on an idle machine loopback carries
	// the whole transfer within 200 ms.
	testkit.WaitFor(t, 10*time.Second, "the transfer under way", func() bool {
		return c.qc.ConnectionStats().PacketsSent >= sent+40
	})
	shut := time.Now()
	gate.shut.Store(true)
	if networkChange {
		// The rebind round towards the "new" address fails (nothing
		// gets through): the connection must still end on the relay.
		a.paths.NetworkChanged(migration.Change{})
	}
	if err := <-done; err != nil {
		t.Fatalf("transfer across the blackhole: %v; migrations %+v", err, c.Migrations())
	}
	var fb *Migration
	for _, m := range c.Migrations() {
		if m.Kind == "fallback" && m.OK {
			fb = &m
		}
	}
	if fb == nil || c.Path() != event.PathRelay || rs.Allocations() != 1 ||
		fb.Reason != event.ReasonPathBlackholed || fb.Duration <= 0 {
		t.Fatalf("path %s, %d allocations, migrations %+v", c.Path(), rs.Allocations(), c.Migrations())
	}
	t.Logf("blackholed at +0; fallback done at +%v (took %v)", fb.At.Add(fb.Duration).Sub(shut), fb.Duration)
	waitPeerPath(t, peer, a, event.PathRelay)
	peerMoved(t, peer, a, event.ReasonPathBlackholed)
	rebinds := 0
	for _, ev := range rec.Kind(event.KindMigration) {
		if ev.Reason == event.ReasonNone {
			t.Errorf("migration event without a reason: %+v", ev)
		}
		if ev.Detail == "rebind" {
			rebinds++
		}
	}
	if networkChange && rebinds == 0 {
		t.Error("the network change made no rebind attempt")
	}
}
