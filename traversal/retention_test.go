package traversal

import (
	"context"
	"net"
	"os"
	"runtime"
	"runtime/pprof"
	"testing"
	"time"

	"github.com/antnode/antnode/internal/testkit"

	"github.com/antnode/antnode/bootstrap"
	"github.com/antnode/antnode/endpoint"
	"github.com/antnode/antnode/identity"
	"github.com/antnode/antnode/monitor"
)

// What failed attempts leave behind. A node makes attempts that fail in
// the ways that end early and leave the most half-built state: a target
// the bootstrap does not know, and an attempt on a live peer cancelled a
// few milliseconds in (during coordination, punching or the handshake).
// Its attempt store is full before the count starts, so what the store
// keeps by design (bounded) is not counted; anything else that grows is
// retained by failed attempts.

// retentionRig is a bootstrap, a live peer and a node with a full store.
type retentionRig struct {
	node *Node
	live identity.PeerID
	rng  uint64
}

// retentionStore is how many ended attempts, node events and peer states
// (all bounded by design) the node keeps: the warm-up fills them all.
const retentionStore = 100

// retentionBootstrap lifts the bootstrap's per-peer request and message
// rates: the attempts come as fast as they fail, far above what the
// bootstrap allows one peer (it would refuse them, then disconnect it).
var retentionBootstrap = bootstrap.ServerConfig{RequestRate: 1e6, RequestBurst: 1e6, MessageRate: 1e6, MessageBurst: 1e6}

func newRetentionRig(tb testing.TB) *retentionRig {
	b := startBootstrapCfg(tb, retentionBootstrap)
	st, err := monitor.NewStore(monitor.StoreConfig{MaxAttempts: retentionStore, MaxDetailed: retentionStore,
		MaxNodeEvents: retentionStore})
	if err != nil {
		tb.Fatal(err)
	}
	mon, err := monitor.New(monitor.Config{Store: st})
	if err != nil {
		tb.Fatal(err)
	}
	// The live peer reaches its bootstrap and nothing else: attempts on it
	// get through coordination and fail (or are cancelled) punching.
	raw, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	ep, err := endpoint.New(endpoint.Config{Conn: onlyToConn{raw, b.Addr}})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { ep.Close() })
	// Its half-open QUIC connections (dials that reach it; its answers
	// are dropped) end quickly: quic-go's connection map, which never
	// shrinks, then peaks as low in the warm-up as later.
	live := startNodeCfg(tb, Config{Endpoint: ep, Bootstraps: []Bootstrap{b}, Relay: RelayNever,
		HandshakeTimeout: 300 * time.Millisecond})
	node := startNodeCfg(tb, Config{Bootstraps: []Bootstrap{b}, Recorder: mon, MaxPeerStates: retentionStore})
	r := &retentionRig{node: node, live: live.ID()}
	r.fail(tb, 4*retentionStore) // fills the store, warms pools and caches
	return r
}

// fail runs n attempts that fail, half of each kind.
func (r *retentionRig) fail(tb testing.TB, n int) {
	for i := 0; i < n; {
		if i%2 == 0 {
			if _, err := r.node.Connect(context.Background(), testkit.Identity(tb).ID()); err == nil {
				tb.Fatal("a connect to an unregistered peer succeeded")
			}
			i++
			continue
		}
		r.rng = r.rng*6364136223846793005 + 1442695040888963407
		d := time.Duration(r.rng>>33%20000) * time.Microsecond // 0-20 ms
		ctx, cancel := context.WithTimeout(context.Background(), d)
		_, err := r.node.Connect(ctx, r.live)
		cancel()
		if err == nil {
			tb.Fatal("a connect to a peer that reaches nothing but its bootstrap succeeded")
		}
		i++
	}
}

// settled returns the live heap (bytes of reachable objects after a
// collection) and the goroutines once the node is quiet: goroutines of
// ended attempts may take a moment to exit, a check session keeps
// answering for 2 s after its attempt, and quic-go keeps a closed
// connection's IDs for a few round trips.
func settled(baseG int) (heap uint64, goroutines int) {
	time.Sleep(2500 * time.Millisecond)
	deadline := time.Now().Add(5 * time.Second)
	for {
		runtime.GC()
		goroutines = runtime.NumGoroutine()
		if goroutines <= baseG || time.Now().After(deadline) {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.HeapAlloc, goroutines
}

// TestFailedAttemptsRetainNothing: 1 000 failed attempts leave no
// goroutine behind and no memory beyond noise (under 256 B an attempt,
// counted in reachable bytes after a collection).
func TestFailedAttemptsRetainNothing(t *testing.T) {
	r := newRetentionRig(t)
	heap0, g0 := settled(0)
	heapProfile(t, "before")
	const n = 1000
	r.fail(t, n)
	heap1, g1 := settled(g0)
	heapProfile(t, "after")
	if g1 > g0 {
		buf := make([]byte, 1<<20)
		t.Fatalf("%d goroutines after %d failed attempts, %d before:\n%s", g1, n, g0, buf[:runtime.Stack(buf, true)])
	}
	per := (float64(heap1) - float64(heap0)) / n
	t.Logf("%d failed attempts: heap %d -> %d (%.0f B an attempt), goroutines %d -> %d", n, heap0, heap1, per, g0, g1)
	if per > 256 {
		t.Fatalf("%.0f B retained per failed attempt", per)
	}
}

// BenchmarkFailedAttemptRetention reports what each batch of 1 000
// failed attempts leaves behind: retained-B/attempt (reachable heap after
// a collection) and goroutines/attempt; and, for scale, store-B/attempt, what
// the attempt store keeps by design for each ended attempt it holds (it
// keeps StoreConfig.MaxAttempts of them).
func BenchmarkFailedAttemptRetention(b *testing.B) {
	r := newRetentionRig(b)
	heap0, g0 := settled(0)
	const n = 1000
	b.ResetTimer()
	for range b.N {
		r.fail(b, n)
	}
	b.StopTimer()
	heap1, g1 := settled(g0)
	b.ReportMetric((float64(heap1)-float64(heap0))/float64(n*b.N), "retained-B/attempt")
	b.ReportMetric(float64(g1-g0)/float64(n*b.N), "goroutines/attempt")
	b.ReportMetric(storeBytesPerAttempt(b), "store-B/attempt")
}

// storeBytesPerAttempt measures the store's own cost of an ended failed
// attempt kept as a summary and phase timeline (beyond the newest
// MaxDetailed, which keep their events too): the heap growth of filling an
// empty store with 1 000 of them.
func storeBytesPerAttempt(tb testing.TB) float64 {
	const n = 1000
	st, err := monitor.NewStore(monitor.StoreConfig{MaxAttempts: n, MaxDetailed: 1})
	if err != nil {
		tb.Fatal(err)
	}
	mon, err := monitor.New(monitor.Config{Store: st})
	if err != nil {
		tb.Fatal(err)
	}
	b := startBootstrapCfg(tb, retentionBootstrap)
	node := startNode(tb, mon, b)
	heap0, g0 := settled(0)
	for range n {
		if _, err := node.Connect(context.Background(), testkit.Identity(tb).ID()); err == nil {
			tb.Fatal("a connect to an unregistered peer succeeded")
		}
	}
	heap1, _ := settled(g0)
	if got := st.Stats().Attempts; got != n {
		tb.Fatalf("the store holds %d attempts, want %d", got, n)
	}
	return (float64(heap1) - float64(heap0)) / n
}

// heapProfile writes a heap profile to $ANTNODE_RETENTION_PROFILE.name
// when that is set (go tool pprof -base ...before ...after shows what
// the attempts left).
func heapProfile(tb testing.TB, name string) {
	p := os.Getenv("ANTNODE_RETENTION_PROFILE")
	if p == "" {
		return
	}
	f, err := os.Create(p + "." + name)
	if err != nil {
		tb.Fatal(err)
	}
	defer f.Close()
	if err := pprof.WriteHeapProfile(f); err != nil {
		tb.Fatal(err)
	}
}
