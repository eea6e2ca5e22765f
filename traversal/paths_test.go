package traversal

import (
	"context"
	"net/netip"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/antnode/antnode/bootstrap/wire"
	"github.com/antnode/antnode/event"
	"github.com/antnode/antnode/internal/testkit"
	"github.com/antnode/antnode/migration"
)

func TestRebindRoundAndRefusal(t *testing.T) {
	b := startBootstrap(t)
	a := startNodeCfg(t, Config{Bootstraps: []Bootstrap{b}})
	peer := startNodeCfg(t, Config{Bootstraps: []Bootstrap{b}})
	stranger := startNodeCfg(t, Config{Bootstraps: []Bootstrap{b}})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	// Without a connection the peer refuses a rebind round.
	if _, err := stranger.checkRound(ctx, peer.ID(), wire.PurposeRebind, stranger.candidates(), nil); err == nil {
		t.Fatal("a rebind round without a connection was accepted")
	}

	c, err := a.Connect(ctx, peer.ID())
	if err != nil {
		t.Fatal(err)
	}
	waitConn(t, peer, c)
	if err := c.mc.Rebind(event.ReasonNetworkChanged); err != nil {
		t.Fatalf("rebind: %v", err)
	}
	ms := c.Migrations()
	if len(ms) != 1 || ms[0].Kind != "rebind" || !ms[0].OK || ms[0].Duration <= 0 {
		t.Fatalf("migrations %+v", ms)
	}
	// The connection still carries verified bytes.
	if res, err := c.SendVerified(ctx, 256<<10); err != nil || res.Bytes != 256<<10 {
		t.Fatalf("after rebind: %+v %v", res, err)
	}
}

// TestNetworkChangeTriggersRebind feeds the node's watcher a new address
// and checks that the connection it dialled is rebound.
func TestNetworkChangeTriggersRebind(t *testing.T) {
	b := startBootstrap(t)
	var mu sync.Mutex
	addrs := []netip.Addr{netip.MustParseAddr("192.0.2.10")}
	rec := &recorder{}
	a := startNodeCfg(t, Config{Bootstraps: []Bootstrap{b}, Recorder: rec, NetworkPoll: 10 * time.Millisecond,
		Addrs: func() ([]netip.Addr, error) {
			mu.Lock()
			defer mu.Unlock()
			return slices.Clone(addrs), nil
		}})
	peer := startNodeCfg(t, Config{Bootstraps: []Bootstrap{b}})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := a.Connect(ctx, peer.ID())
	if err != nil {
		t.Fatal(err)
	}
	waitConn(t, peer, c)
	mu.Lock()
	addrs = []netip.Addr{netip.MustParseAddr("192.0.2.11")}
	mu.Unlock()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		for _, m := range c.Migrations() {
			if m.Reason == event.ReasonNetworkChanged {
				if !m.OK {
					t.Fatalf("migration %+v", m)
				}
				return
			}
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("no rebind after the address change; events %v", rec.Kind(event.KindMigration))
}

// waitConn waits until n has a connection with peer.
// waitConn waits until n tracks the other end of c, alive: the one
// connection whose TLS exporter gives what c's gives. Any connection from
// c's node is not enough: its dialler may have had a second dial complete
// that it closes as superseded, and a check round the node answers then
// finds no live connection (CI: "rebind: request refused").
func waitConn(t *testing.T, n *Node, c *Conn) {
	t.Helper()
	key := func(c *Conn) string {
		st := c.qc.ConnectionState().TLS
		b, err := st.ExportKeyingMaterial("antnode test", nil, 16)
		if err != nil {
			t.Fatal(err)
		}
		return string(b)
	}
	want := key(c)
	testkit.WaitFor(t, 5*time.Second, "the peer to track the connection", func() bool {
		for _, o := range n.Conns() {
			if o.qc.Context().Err() == nil && key(o) == want {
				return true
			}
		}
		return false
	})
}

// TestMappingLifetimeIsLearned: when a bootstrap sees the node's mapping
// change under the same socket, the mapping lived less than a heartbeat;
// keepalives of new connections and of the bootstrap heartbeats go under
// that.
func TestMappingLifetimeIsLearned(t *testing.T) {
	b := startBootstrap(t)
	rec := &recorder{}
	a := startNodeCfg(t, Config{Bootstraps: []Bootstrap{b}, Recorder: rec})
	if a.MappingLifetime() != 0 || a.peerQUIC().KeepAlivePeriod != 10*time.Second {
		t.Fatalf("before: lifetime %v, keepalive %v", a.MappingLifetime(), a.peerQUIC().KeepAlivePeriod)
	}
	observed := a.observedFunc("0")
	observed(netip.MustParseAddrPort("198.51.100.7:40000"))
	observed(netip.MustParseAddrPort("198.51.100.7:40000")) // the same mapping: nothing learned
	if a.MappingLifetime() != 0 {
		t.Fatal("learned from an unchanged mapping")
	}
	a.paths.NetworkChanged(migration.Change{}) // the local addresses changed: a new mapping is no expiry
	observed(netip.MustParseAddrPort("198.51.100.8:40000"))
	if a.MappingLifetime() != 0 {
		t.Fatal("learned a lifetime from a network change")
	}
	observed(netip.MustParseAddrPort("198.51.100.8:40123")) // mapped anew
	if got := a.MappingLifetime(); got != 10*time.Second {
		t.Fatalf("learned %v, want the 10 s heartbeat", got)
	}
	if got := a.peerQUIC().KeepAlivePeriod; got != 4*time.Second {
		t.Fatalf("keepalive of new connections %v, want 4 s", got)
	}
	if got := a.bootstrapClients()[0].Heartbeat(); got != 4*time.Second {
		t.Fatalf("bootstrap heartbeat %v, want 4 s", got)
	}
	found := false
	for _, ev := range rec.Kind(event.KindMigration) {
		found = found || ev.Reason == event.ReasonMappingExpired && ev.Duration == 10*time.Second
	}
	if !found {
		t.Fatal("no event for the learned lifetime")
	}
}

// TestConnectionsKeepTheLearnedPace: a connection made before the NAT's
// mapping lifetime was learned keeps QUIC's keepalive period of then
// (10 s); once a shorter lifetime is learned, the connection is pinged at
// the new pace (here every second) instead of going quiet for longer than
// the mapping lives.
func TestConnectionsKeepTheLearnedPace(t *testing.T) {
	b := startBootstrap(t)
	a := startNodeCfg(t, Config{Bootstraps: []Bootstrap{b}, DeadPathCheck: 100 * time.Millisecond})
	peer := startNodeCfg(t, Config{Bootstraps: []Bootstrap{b}, DeadPathCheck: 100 * time.Millisecond})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := a.Connect(ctx, peer.ID()); err != nil {
		t.Fatal(err)
	}
	sent := func() uint64 { // by both ends: whichever dialled pings
		var n uint64
		for _, node := range []*Node{a, peer} {
			for _, c := range node.Conns() {
				n += c.qc.ConnectionStats().PacketsSent
			}
		}
		return n
	}
	idle := func() uint64 {
		before := sent()
		time.Sleep(2500 * time.Millisecond)
		return sent() - before
	}
	// Let the handshake's last packets and acknowledgements go by: wait
	// (at most 5 s) until nothing is sent for half a second.
	for last, deadline := sent(), time.Now().Add(5*time.Second); time.Now().Before(deadline); {
		time.Sleep(500 * time.Millisecond)
		now := sent()
		if now == last {
			break
		}
		last = now
	}
	quiet := idle()
	for _, node := range []*Node{a, peer} {
		node.paths.LearnMappingLifetime(2500 * time.Millisecond) // keepalive: 1 s
	}
	paced := idle()
	t.Logf("packets in 2.5 s idle: %d at QUIC's 10 s keepalive, %d at the learned 1 s pace", quiet, paced)
	// Two pings at least (each also answered), over whatever went by
	// before.
	if paced < quiet+2 {
		t.Fatalf("idle packets %d before and %d after learning a 2.5 s mapping lifetime", quiet, paced)
	}
}
