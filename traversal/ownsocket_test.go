package traversal

import (
	"context"
	"errors"
	"net/netip"
	"slices"
	"testing"
	"time"

	"github.com/antnode/antnode/bootstrap"
	"github.com/antnode/antnode/bootstrap/wire"
	"github.com/antnode/antnode/internal/testkit"
	"github.com/antnode/antnode/relay"
)

// TestOwnEndpointReroutesThere: a connection on a socket of its own (the
// birthday search's) is rerouted on that socket, not the node's, and its
// endpoint and injector go with the connection.
func TestOwnEndpointReroutesThere(t *testing.T) {
	n, err := New(Config{Identity: testkit.Identity(t), Endpoint: testkit.Endpoint(t), NetworkPoll: -1})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { n.Close() })
	pair := testkit.NewQUICPair(t, nil)
	other := testkit.NewQUICPair(t, nil)
	ep := testkit.Endpoint(t)
	n.ownEndpoint(pair.Dialer, ep)
	if got := n.endpointOf(pair.Dialer); got != ep {
		t.Fatalf("endpointOf the birthday connection = %v, want its own endpoint", got.LocalAddr())
	}
	if got := n.endpointOf(other.Dialer); got != n.cfg.Endpoint {
		t.Fatalf("endpointOf another connection = %v, want the node's", got.LocalAddr())
	}
	inj, err := n.injector(ep)
	if err != nil {
		t.Fatal(err)
	}
	if again, _ := n.injector(ep); again != inj {
		t.Fatal("a second injector for the same endpoint")
	}
	if main, _ := n.injector(n.cfg.Endpoint); main == inj {
		t.Fatal("the node's socket shares the connection's injector")
	}
	pair.Dialer.CloseWithError(0, "done")
	testkit.WaitFor(t, 5*time.Second, "the connection's endpoint and injector released", func() bool {
		n.injMu.Lock()
		defer n.injMu.Unlock()
		return n.owned[pair.Dialer] == nil && n.injs[ep] == nil
	})
	if err := inj.Inject([]byte{0x40}); err == nil {
		t.Fatal("the released injector still sends")
	}
}

// TestRebindingMakesRelaysSuspect: once the NAT mapped the node anew, a
// shared allocation made before may be bound to a mapping that is gone;
// the next attempt allocates anew instead of sharing it.
func TestRebindingMakesRelaysSuspect(t *testing.T) {
	b, _ := relayBootstrap(t, relay.ServerConfig{})
	n := startNodeCfg(t, Config{Bootstraps: []Bootstrap{b}})
	bc := n.registered()[0]
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	first, err := n.acquireRelay(ctx, nil, bc, false)
	if err != nil {
		t.Fatal(err)
	}
	defer n.releaseRelay(first, false)
	shared, err := n.acquireRelay(ctx, nil, bc, false)
	if err != nil {
		t.Fatal(err)
	}
	n.releaseRelay(shared, false)
	if shared != first {
		t.Fatal("a second attempt did not share the allocation")
	}
	n.suspectRelays()
	fresh, err := n.acquireRelay(ctx, nil, bc, false)
	if err != nil {
		t.Fatal(err)
	}
	defer n.releaseRelay(fresh, false)
	if fresh == first {
		t.Fatal("the allocation from before the rebinding was shared again")
	}
}

func TestRoundTargets(t *testing.T) {
	host := wire.Candidate{Kind: wire.KindHost, Addr: netip.MustParseAddrPort("192.168.1.2:4000")}
	srflx := wire.Candidate{Kind: wire.KindServerReflexive, Addr: netip.MustParseAddrPort("198.51.100.2:4000")}
	relayed := wire.Candidate{Kind: wire.KindRelay, Addr: netip.MustParseAddrPort("203.0.113.1:50000")}
	tests := []struct {
		name    string
		purpose wire.Purpose
		in      []wire.Candidate
		want    []wire.Candidate
	}{
		{"a fallback checks the relayed address it reroutes through", wire.PurposeFallback, []wire.Candidate{relayed}, []wire.Candidate{relayed}},
		{"a rebind checks direct candidates only", wire.PurposeRebind, []wire.Candidate{host, srflx, relayed}, []wire.Candidate{host, srflx}},
		{"an upgrade checks direct candidates only", wire.PurposeUpgrade, []wire.Candidate{relayed, srflx}, []wire.Candidate{srflx}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := roundTargets(bootstrap.Intro{Purpose: tc.purpose, Candidates: tc.in})
			if !slices.Equal(got, tc.want) {
				t.Errorf("roundTargets = %v, want %v", got, tc.want)
			}
		})
	}
}

// TestPermitWithinGivesUp: a relay that answers no permission (gone, or
// knowing the allocation by a mapping the NAT dropped) costs a fallback
// permitWait, not pion's whole retransmission schedule.
func TestPermitWithinGivesUp(t *testing.T) {
	b, rs := relayBootstrap(t, relay.ServerConfig{})
	n := startNodeCfg(t, Config{Bootstraps: []Bootstrap{b}})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	r, err := n.acquireRelay(ctx, nil, n.registered()[0], false)
	if err != nil {
		t.Fatal(err)
	}
	defer n.releaseRelay(r, false)
	// A live relay answers at once, here with its policy's refusal (no
	// introduction named this address, and it is not the relay's own,
	// 127.0.0.1).
	if err := permitWithin(ctx, r.alloc, 5*time.Second, netip.MustParseAddrPort("127.0.0.3:9")); !errors.Is(err, relay.ErrRefused) {
		t.Fatalf("a live relay's answer: %v, want its refusal", err)
	}
	rs.Close()
	start := time.Now()
	err = permitWithin(ctx, r.alloc, 300*time.Millisecond, netip.MustParseAddrPort("127.0.0.2:9"))
	if !errors.Is(err, errPermitSlow) {
		t.Fatalf("permission from a relay that is gone: %v, want errPermitSlow", err)
	}
	if took := time.Since(start); took > 3*time.Second {
		t.Fatalf("gave up after %v", took)
	}
}
