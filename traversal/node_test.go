package traversal

import (
	"context"
	"errors"
	"net/netip"
	"reflect"
	"testing"
	"time"

	"github.com/antnode/antnode/bootstrap"
	"github.com/antnode/antnode/bootstrap/wire"
	"github.com/antnode/antnode/event"
	"github.com/antnode/antnode/identity"
	"github.com/antnode/antnode/internal/testkit"
)

func startBootstrap(t testing.TB) Bootstrap {
	t.Helper()
	return startBootstrapCfg(t, bootstrap.ServerConfig{})
}

// startBootstrapCfg starts a bootstrap with cfg (its key and socket are
// made here).
func startBootstrapCfg(t testing.TB, cfg bootstrap.ServerConfig) Bootstrap {
	t.Helper()
	id := testkit.Identity(t)
	cfg.Identity, cfg.Endpoint = id, testkit.Endpoint(t)
	srv, err := bootstrap.NewServer(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close() })
	return Bootstrap{Addr: srv.Addr(), ID: id.ID()}
}

// noRefusedMoves fails the test if the node tried a state change its
// transition table does not allow (its API would show a stale state).
func noRefusedMoves(t *testing.T, rec *recorder) {
	t.Helper()
	for _, ev := range rec.Kind(event.KindStateChange) {
		if ev.Outcome == event.OutcomeFail {
			t.Fatalf("refused state change %s -> %s (reason %s)", ev.Detail, ev.To, ev.Reason)
		}
	}
}

// recorder keeps every event, for assertions.
type recorder = testkit.Recorder

func startNode(t testing.TB, rec event.Recorder, bs ...Bootstrap) *Node {
	t.Helper()
	return startReady(t, Config{Bootstraps: bs, Recorder: rec})
}

// startReady starts a node with cfg (a key and a loopback socket of its
// own) and waits until a bootstrap registered it.
func startReady(t testing.TB, cfg Config) *Node {
	t.Helper()
	cfg.Identity, cfg.Endpoint = testkit.Identity(t), testkit.Endpoint(t)
	n, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { n.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := n.WaitReady(ctx); err != nil {
		t.Fatal(err)
	}
	return n
}

func TestConnectAndVerifiedTransfer(t *testing.T) {
	b := startBootstrap(t)
	recA, recB := &recorder{}, &recorder{}
	a, bn := startNode(t, recA, b), startNode(t, recB, b)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := a.Connect(ctx, bn.ID())
	if err != nil {
		t.Fatal(err)
	}
	if c.Peer() != bn.ID() || c.Path() != event.PathDirect {
		t.Fatalf("conn to %s over %s", c.Peer().Short(), c.Path())
	}
	if c.TimeToConnect() <= 0 || c.Attempt() == 0 {
		t.Fatalf("time to connect %v, attempt %v", c.TimeToConnect(), c.Attempt())
	}
	for _, size := range []int64{0, 1, 1 << 20} {
		res, err := c.SendVerified(ctx, size)
		if err != nil {
			t.Fatalf("transfer of %d bytes: %v", size, err)
		}
		if res.Bytes != size {
			t.Fatalf("verified %d of %d bytes", res.Bytes, size)
		}
	}
	// Every phase event of the initiator's attempt carries its ID; the
	// others are the node's own NAT classification.
	var phases []event.Phase
	outcome := map[event.Phase]event.Outcome{}
	for _, ev := range recA.Kind(event.KindPhaseEnd) {
		if ev.Attempt == 0 && ev.Phase == event.PhaseClassify {
			continue
		}
		if ev.Attempt != c.Attempt() {
			t.Fatalf("phase %s event with attempt %v, want %v", ev.Phase, ev.Attempt, c.Attempt())
		}
		phases = append(phases, ev.Phase)
		outcome[ev.Phase] = ev.Outcome
	}
	want := []event.Phase{event.PhaseDiscover, event.PhaseCoordinate, event.PhaseSync}
	if len(phases) < 4 || !reflect.DeepEqual(phases[:3], want) {
		t.Fatalf("phases %v, want %v first", phases, want)
	}
	for _, p := range want {
		if outcome[p] != event.OutcomeOK {
			t.Fatalf("phase %s ended %s", p, outcome[p])
		}
	}
	if outcome[event.PhaseHandshake] != event.OutcomeOK {
		t.Fatalf("handshake ended %s (phases %v)", outcome[event.PhaseHandshake], phases)
	}
	// Checks may have been overtaken by the speculative dial; they end
	// either way.
	if o := outcome[event.PhasePunch]; o != event.OutcomeOK && o != event.OutcomeCanceled {
		t.Fatalf("punch ended %s", o)
	}
	// The peer's state machine went the whole way, and every move is an
	// event.
	var states []string
	for _, ev := range recA.Kind(event.KindStateChange) {
		if ev.Peer == bn.ID().String() && ev.Outcome != event.OutcomeFail {
			states = append(states, ev.To)
		}
	}
	if want := []string{"discovering", "coordinating", "punching", "connected-direct"}; !reflect.DeepEqual(states, want) {
		t.Fatalf("states %v, want %v", states, want)
	}
	ends := recA.Kind(event.KindAttemptEnd)
	if len(ends) != 1 || ends[0].Outcome != event.OutcomeOK || ends[0].Path != event.PathDirect {
		t.Fatalf("initiator attempt ends: %+v", ends)
	}
	// The responder finished its own attempt successfully.
	deadline := time.Now().Add(3 * time.Second)
	for len(recB.Kind(event.KindAttemptEnd)) == 0 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if ends := recB.Kind(event.KindAttemptEnd); len(ends) != 1 || ends[0].Outcome != event.OutcomeOK || ends[0].Detail != "responder" {
		t.Fatalf("responder attempt ends: %+v", ends)
	}
	noRefusedMoves(t, recA)
	noRefusedMoves(t, recB)
	c.Close()
	deadline = time.Now().Add(3 * time.Second)
	for time.Now().Before(deadline) {
		ps := a.Peers()
		if len(ps) == 1 && ps[0].State == StateClosed {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("after close: %+v", a.Peers())
}

func TestConnectFailures(t *testing.T) {
	b := startBootstrap(t)
	a := startNode(t, nil, b)
	tests := []struct {
		name   string
		peer   identity.PeerID
		reason event.Reason
		is     error
	}{
		{"unknown peer", testkit.Identity(t).ID(), event.ReasonUnknownPeer, bootstrap.ErrUnknownPeer},
		{"self", a.ID(), event.ReasonSelf, ErrSelf},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			start := time.Now()
			_, err := a.Connect(context.Background(), tc.peer)
			var ce *ConnectError
			if !errors.As(err, &ce) || ce.Reason != tc.reason || !errors.Is(err, tc.is) {
				t.Fatalf("got %v, want reason %s", err, tc.reason)
			}
			if d := time.Since(start); d > time.Second {
				t.Fatalf("failure took %v", d)
			}
		})
	}
}

func TestTransferLimit(t *testing.T) {
	b := startBootstrap(t)
	a := startNode(t, nil, b)
	bn, err := New(Config{Identity: testkit.Identity(t), Endpoint: testkit.Endpoint(t), Bootstraps: []Bootstrap{b}, MaxTransfer: 1000})
	if err != nil {
		t.Fatal(err)
	}
	defer bn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := bn.WaitReady(ctx); err != nil {
		t.Fatal(err)
	}
	c, err := a.Connect(ctx, bn.ID())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.SendVerified(ctx, 1000); err != nil {
		t.Fatalf("at the limit: %v", err)
	}
	if _, err := c.SendVerified(ctx, 1001); !errors.Is(err, ErrTransferTooLarge) {
		t.Fatalf("over the limit: %v, want ErrTransferTooLarge", err)
	}
}

func TestAlternateBootstrap(t *testing.T) {
	// b1 knows only A; b2 knows both. A connect to B via b1 fails with
	// unknown peer and must be passed on to b2.
	b1, b2 := startBootstrap(t), startBootstrap(t)
	rec := &recorder{}
	a := startNode(t, rec, b1, b2)
	bn := startNode(t, nil, b2)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	deadline := time.Now().Add(5 * time.Second)
	for len(a.registered()) < 2 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if _, err := a.Connect(ctx, bn.ID()); err != nil {
		t.Fatal(err)
	}
	rs := rec.Kind(event.KindRecovery)
	if len(rs) != 1 || rs[0].Detail != "alternate_bootstrap" || rs[0].Reason != event.ReasonUnknownPeer || rs[0].Outcome != event.OutcomeOK {
		t.Fatalf("recovery events %+v", rs)
	}
}

func TestHostCandidates(t *testing.T) {
	ifs := []netip.Addr{
		netip.MustParseAddr("127.0.0.1"), netip.MustParseAddr("192.168.1.10"), netip.MustParseAddr("fe80::1"),
		netip.MustParseAddr("169.254.3.4"), netip.MustParseAddr("2001:db8::5"), netip.MustParseAddr("10.0.0.2"),
		netip.MustParseAddr("192.168.1.10"),
	}
	addrs := func(cs []wire.Candidate) []string {
		var out []string
		for _, c := range cs {
			out = append(out, c.Addr.String())
		}
		return out
	}
	tests := []struct {
		name  string
		local string
		pol   HostPolicy
		want  []string
	}{
		{"wildcard v4", "0.0.0.0:4000", HostPolicy{}, []string{"10.0.0.2:4000", "192.168.1.10:4000"}},
		{"wildcard v4 with loopback", "0.0.0.0:4000", HostPolicy{Loopback: true}, []string{"10.0.0.2:4000", "127.0.0.1:4000", "192.168.1.10:4000"}},
		{"wildcard v6", "[::]:4000", HostPolicy{}, []string{"[2001:db8::5]:4000"}},
		{"dual-stack: both families, IPv6 first", "[::]:4000", HostPolicy{DualStack: true},
			[]string{"[2001:db8::5]:4000", "10.0.0.2:4000", "192.168.1.10:4000"}},
		{"bound", "192.168.1.10:5", HostPolicy{}, []string{"192.168.1.10:5"}},
		{"bound loopback not allowed", "127.0.0.1:5", HostPolicy{}, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := HostCandidates(netip.MustParseAddrPort(tc.local), ifs, tc.pol)
			if !reflect.DeepEqual(addrs(got), tc.want) {
				t.Fatalf("got %v, want %v", addrs(got), tc.want)
			}
			for _, c := range got {
				if c.Kind != wire.KindHost {
					t.Fatalf("kind %v", c.Kind)
				}
				for _, o := range got {
					if c.Addr.Addr().IsLoopback() && !o.Addr.Addr().IsLoopback() && c.Priority >= o.Priority {
						t.Fatalf("loopback %v outranks %v", c.Addr, o.Addr)
					}
				}
			}
		})
	}
}

func fakeResolve(host string) (netip.Addr, error) {
	if host == "boot.example" {
		return netip.MustParseAddr("203.0.113.9"), nil
	}
	return netip.Addr{}, errors.New("no such host")
}

func TestParseBootstrap(t *testing.T) {
	id := testkit.Identity(t).ID()
	tests := []struct {
		in      string
		want    Bootstrap
		wantErr bool
	}{
		{"127.0.0.1:4433", Bootstrap{Addr: netip.MustParseAddrPort("127.0.0.1:4433")}, false},
		{" " + id.String() + "@203.0.113.1:3478", Bootstrap{Addr: netip.MustParseAddrPort("203.0.113.1:3478"), ID: id}, false},
		{"boot.example:4433", Bootstrap{Addr: netip.MustParseAddrPort("203.0.113.9:4433")}, false},
		{"[2001:db8::1]:9", Bootstrap{Addr: netip.MustParseAddrPort("[2001:db8::1]:9")}, false},
		{"unknown.example:4433", Bootstrap{}, true},
		{"nonsense@1.2.3.4:5", Bootstrap{}, true},
		{"1.2.3.4", Bootstrap{}, true},
		{"1.2.3.4:0", Bootstrap{}, true},
		{"1.2.3.4:70000", Bootstrap{}, true},
		{"0.0.0.0:4433", Bootstrap{}, true},
		{":4433", Bootstrap{}, true},
	}
	for _, tc := range tests {
		t.Run(tc.in, func(t *testing.T) {
			got, err := parseBootstrap(tc.in, fakeResolve)
			if (err != nil) != tc.wantErr {
				t.Fatalf("err %v", err)
			}
			if err == nil && got != tc.want {
				t.Fatalf("got %+v, want %+v", got, tc.want)
			}
		})
	}
}

func FuzzParseBootstraps(f *testing.F) {
	f.Add("127.0.0.1:1,[::1]:2")
	f.Add("x@y")
	f.Add("boot.example:4433")
	f.Fuzz(func(t *testing.T, s string) {
		bs, err := parseBootstraps(s, fakeResolve) // never touches DNS
		if err != nil {
			return
		}
		for _, b := range bs {
			if !b.Addr.IsValid() || b.Addr.Port() == 0 {
				t.Fatalf("accepted an invalid address from %q: %v", s, b.Addr)
			}
		}
	})
}

// TestPeerStatesAreBounded: attempts to ever new peers do not grow the
// node's per-peer state past MaxPeerStates, and the newest are kept.
func TestPeerStatesAreBounded(t *testing.T) {
	b := startBootstrap(t)
	const limit = 16
	a := startNodeCfg(t, Config{Bootstraps: []Bootstrap{b}, MaxPeerStates: limit})
	var last identity.PeerID
	for range 5 * limit {
		last = testkit.Identity(t).ID()
		if _, err := a.Connect(t.Context(), last); err == nil {
			t.Fatal("a connect to an unregistered peer succeeded")
		}
	}
	peers := a.Peers()
	if len(peers) > limit {
		t.Fatalf("%d peer states kept, limit %d", len(peers), limit)
	}
	found := false
	for _, p := range peers {
		found = found || p.ID == last
	}
	if !found {
		t.Fatalf("the newest peer's state was evicted: %+v", peers)
	}
}
