package bootstrap

import (
	"context"
	"crypto/tls"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/antnode/antnode/identity"
	"github.com/antnode/antnode/internal/testkit"
)

// countingCache is a session cache that counts the sessions put in it
// (in puts, which several caches may share).
type countingCache struct {
	tls.ClientSessionCache
	puts *atomic.Int64
}

func (c *countingCache) Put(key string, cs *tls.ClientSessionState) {
	c.puts.Add(1)
	c.ClientSessionCache.Put(key, cs)
}

// TestSessionResumedAfterRestart: a peer registered with a bootstrap that
// then restarts on the same address with the same identity resumes its
// TLS session (its ticket key survives the restart), and both sides still
// know who the other is; a bootstrap of another identity on that address
// cannot resume it, and the peer refuses it, whether its ID was
// configured or pinned at first contact.
func TestSessionResumedAfterRestart(t *testing.T) {
	tests := []struct {
		name       string
		sameKey    bool
		configured bool // the bootstrap's ID is configured (else pinned)
	}{
		{"same identity", true, true},
		{"same identity, ID pinned at first contact", true, false},
		{"another identity", false, true},
		{"another identity, ID pinned at first contact", false, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			id := newIdentity(t)
			// The helper picks a UDP port whose TCP port number is free too
			// (a given endpoint's TCP port was taken by another package's
			// socket once: "bind: address already in use").
			srv := startServer(t, ServerConfig{Identity: id})
			ep := srv.ep
			addr := ep.LocalAddr()
			cache := &countingCache{ClientSessionCache: tls.NewLRUClientSessionCache(4), puts: new(atomic.Int64)}
			cfg := ClientConfig{Identity: newIdentity(t), SessionCache: cache}
			if tc.configured {
				cfg.ID = id.ID()
			}
			c := startClient(t, srv, cfg)
			ready(t, c)
			if st := c.Status(); st.Resumed {
				t.Fatal("the first registration resumed a session")
			}
			testkit.WaitFor(t, 5*time.Second, "a session ticket", func() bool { return cache.puts.Load() > 0 })
			first := c.Status().Session

			srv.Close()
			ep.Close()
			testkit.WaitFor(t, 5*time.Second, "the client to notice the loss", func() bool { return !c.Status().Registered })
			id2 := id
			if !tc.sameKey {
				id2 = newIdentity(t)
			}
			srv2 := restartServer(t, id2, addr)
			if !tc.sameKey {
				ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
				defer cancel()
				if err := c.WaitReady(ctx); !errors.Is(err, identity.ErrKeyMismatch) {
					t.Fatalf("WaitReady: %v, want ErrKeyMismatch", err)
				}
				if srv2.NumPeers() != 0 {
					t.Fatal("the other bootstrap registered the peer")
				}
				return
			}
			testkit.WaitFor(t, 10*time.Second, "re-registration", func() bool { return c.Status().Registered && srv2.NumPeers() == 1 })
			st := c.Status()
			if !st.Resumed || st.Session <= first {
				t.Fatalf("after the restart: resumed %v, session %d (was %d)", st.Resumed, st.Session, first)
			}
			if p := srv2.Peers(); len(p) != 1 || p[0].ID != cfg.Identity.ID() {
				t.Fatalf("the restarted bootstrap registered %+v, want the peer", p)
			}
			if got := c.ServerID(); got != id.ID() {
				t.Fatalf("the client holds bootstrap %s, want %s", got.Short(), id.ID().Short())
			}
		})
	}
}

// TestRegisteredTellsRegistrySize: each registration is told the size of
// the registry it joined, and each heartbeat's answer the size now.
func TestRegisteredTellsRegistrySize(t *testing.T) {
	srv := startServer(t, ServerConfig{})
	told := func(c *Client) uint64 {
		c.mu.Lock()
		defer c.mu.Unlock()
		if c.cur == nil {
			return 0
		}
		return c.cur.peers.Load()
	}
	first := startClient(t, srv, ClientConfig{ID: srv.ID(), Heartbeat: 20 * time.Millisecond})
	ready(t, first)
	for want := uint64(1); want <= 3; want++ {
		c := first
		if want > 1 {
			c = startClient(t, srv, ClientConfig{ID: srv.ID(), Heartbeat: -1})
			ready(t, c)
		}
		if got := told(c); got != want {
			t.Fatalf("registration %d was told %d peers", want, got)
		}
	}
	testkit.WaitFor(t, 5*time.Second, "a heartbeat's answer with the registry's size", func() bool { return told(first) == 3 })
}

// TestReturnDelay: the wait before the first re-registration after a
// registered connection ended spreads over the registry size told over
// the rate, at least the minimum backoff, at most the maximum spread.
func TestReturnDelay(t *testing.T) {
	ms := time.Millisecond
	tests := []struct {
		name      string
		minD, max time.Duration
		rate      float64
		peers     uint64
		r         float64
		want      time.Duration
	}{
		{"not told: minimum with jitter, least", 250 * ms, 5 * time.Second, 2000, 0, 0, 125 * ms},
		{"not told: most", 250 * ms, 5 * time.Second, 2000, 0, 0.999, 125*ms + 249750*time.Microsecond},
		{"small registry: the minimum window", 250 * ms, 5 * time.Second, 2000, 100, 0.5, 250 * ms},
		{"1 000 peers at 2 000/s: a 500 ms window", 250 * ms, 5 * time.Second, 2000, 1000, 0.5, 375 * ms},
		{"10 000 peers at 2 000/s: 5 s, the cap", 250 * ms, 5 * time.Second, 2000, 10000, 0.5, 2625 * ms},
		{"10 000 peers at 1 000/s: cut to the cap", 250 * ms, 5 * time.Second, 1000, 10000, 0.5, 2625 * ms},
		{"10 000 peers at 5 000/s: a 2 s window", 250 * ms, 5 * time.Second, 5000, 10000, 0.25, 625 * ms},
		{"a million peers, least", 250 * ms, 5 * time.Second, 2000, 1_000_000, 0, 125 * ms},
		{"cap below the minimum: the minimum", 250 * ms, 100 * ms, 2000, 10000, 0.5, 250 * ms},
		{"no rate: the minimum window", 250 * ms, 5 * time.Second, 0, 10000, 0.5, 250 * ms},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := returnDelay(tc.minD, tc.max, tc.rate, tc.peers, tc.r); got != tc.want {
				t.Fatalf("returnDelay(%v, %v, %v, %d, %v) = %v, want %v", tc.minD, tc.max, tc.rate, tc.peers, tc.r, got, tc.want)
			}
		})
	}
}

// TestKeyedCacheKeepsSessionsThroughFailures: a session survives
// maxTicketFailures-1 failed resuming handshakes in a row (crypto/tls
// drops it after each), is dropped at the next, and a new session resets
// the count; entries of two bootstraps do not mix.
func TestKeyedCacheKeepsSessionsThroughFailures(t *testing.T) {
	session := &tls.ClientSessionState{}
	tests := []struct {
		name string
		ops  string // s: a new session, f: a failed resuming handshake
		want bool   // a session is held after ops
	}{
		{"new session", "s", true},
		{"one failure", "sf", true},
		{"two failures", "sff", true},
		{"three failures: dropped", "sfff", false},
		{"a new session resets the count", "sffsff", true},
		{"failures before any session", "ffs", true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			shared := tls.NewLRUClientSessionCache(4)
			var failures, other atomic.Int32
			k := keyedCache{c: shared, prefix: "a/", failures: &failures}
			k2 := keyedCache{c: shared, prefix: "b/", failures: &other}
			k2.Put("antnode", session)
			for _, op := range tc.ops {
				if op == 's' {
					k.Put("antnode", session)
				} else {
					k.Put("antnode", nil)
				}
			}
			if _, ok := k.Get("antnode"); ok != tc.want {
				t.Fatalf("session held %v, want %v", ok, tc.want)
			}
			if _, ok := k2.Get("antnode"); !ok {
				t.Fatal("the other bootstrap's session was dropped")
			}
		})
	}
}
