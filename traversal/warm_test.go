package traversal

import (
	"context"
	"net"
	"net/netip"
	"slices"
	"testing"
	"time"

	"github.com/antnode/antnode/bootstrap"
	"github.com/antnode/antnode/bootstrap/wire"
	"github.com/antnode/antnode/endpoint"
	"github.com/antnode/antnode/event"
	"github.com/antnode/antnode/nattype"
	"github.com/antnode/antnode/relay"
)

func TestNeedsWarmRelay(t *testing.T) {
	blocked := nattype.Type{Mapping: nattype.MappingEIM, Filtering: nattype.FilteringBlocked}
	apdm := nattype.Type{Mapping: nattype.MappingAPDM, Filtering: nattype.FilteringAPDF}
	cone := nattype.Type{Mapping: nattype.MappingEIM, Filtering: nattype.FilteringAPDF}
	tests := []struct {
		name   string
		mode   WarmRelayMode
		relay  RelayMode
		nat    nattype.Type
		mapped bool
		want   bool
	}{
		{"udp blocked", WarmRelayAuto, RelayAuto, blocked, false, true},
		{"symmetric", WarmRelayAuto, RelayAuto, apdm, false, true},
		{"symmetric, relay forced", WarmRelayAuto, RelayForce, apdm, false, true},
		{"cone NAT is reachable", WarmRelayAuto, RelayAuto, cone, false, false},
		{"unknown type", WarmRelayAuto, RelayAuto, nattype.Type{}, false, false},
		{"port mapped", WarmRelayAuto, RelayAuto, apdm, true, false},
		{"relay never", WarmRelayAuto, RelayNever, blocked, false, false},
		{"off", WarmRelayOff, RelayAuto, blocked, false, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := NeedsWarmRelay(tc.mode, tc.relay, tc.nat, tc.mapped); got != tc.want {
				t.Fatalf("NeedsWarmRelay = %v, want %v", got, tc.want)
			}
		})
	}
}

func TestParseWarmRelayMode(t *testing.T) {
	for in, want := range map[string]WarmRelayMode{"": WarmRelayAuto, "auto": WarmRelayAuto, "off": WarmRelayOff} {
		if got, err := ParseWarmRelayMode(in); err != nil || got != want {
			t.Errorf("ParseWarmRelayMode(%q) = %v, %v", in, got, err)
		}
	}
	if _, err := ParseWarmRelayMode("on"); err == nil {
		t.Error("ParseWarmRelayMode(on): no error")
	}
}

func TestWarmRelayTimes(t *testing.T) {
	t0 := time.Unix(1_000_000, 0)
	tests := []struct {
		name      string
		lifetime  time.Duration
		at        time.Duration // since t0
		refreshAt time.Duration
		expiring  bool
	}{
		{"bootstrap default, fresh", 10 * time.Minute, time.Minute, 400 * time.Second, false},
		{"bootstrap default, last 3 minutes", 10 * time.Minute, 7*time.Minute + time.Second, 400 * time.Second, true},
		{"an hour, 10 minutes left", time.Hour, 50 * time.Minute, 40 * time.Minute, false},
		{"an hour, 4 minutes left", time.Hour, 56 * time.Minute, 40 * time.Minute, true},
		{"3 s, at 1 s", 3 * time.Second, time.Second, 2 * time.Second, false},
		{"3 s, at 2.5 s", 3 * time.Second, 2500 * time.Millisecond, 2 * time.Second, true},
		{"expired", time.Minute, 2 * time.Minute, 40 * time.Second, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			exp := t0.Add(tc.lifetime)
			if got := warmRefreshAt(t0, exp); !got.Equal(t0.Add(tc.refreshAt)) {
				t.Errorf("warmRefreshAt = %v after the start, want %v", got.Sub(t0), tc.refreshAt)
			}
			if got := expiringSoon(t0, exp, t0.Add(tc.at)); got != tc.expiring {
				t.Errorf("expiringSoon = %v, want %v", got, tc.expiring)
			}
		})
	}
}

func TestWarmBackoff(t *testing.T) {
	want := []time.Duration{time.Second, 2 * time.Second, 4 * time.Second, 8 * time.Second, 16 * time.Second,
		32 * time.Second, time.Minute, time.Minute}
	for i, w := range want {
		if got := warmBackoff(i + 1); got != w {
			t.Errorf("warmBackoff(%d) = %v, want %v", i+1, got, w)
		}
	}
	if got := warmBackoff(1000); got != time.Minute {
		t.Errorf("warmBackoff(1000) = %v", got)
	}
}

func TestRelayedCandidatesStayOffDirectLegs(t *testing.T) {
	relayed := wire.Candidate{Kind: wire.KindRelay, Addr: netip.MustParseAddrPort("127.0.0.1:5000"), Origin: wire.OriginObservedIP}
	srflx := wire.Candidate{Kind: wire.KindServerReflexive, Addr: netip.MustParseAddrPort("127.0.0.1:4000"), Origin: wire.OriginObserved}
	host := wire.Candidate{Kind: wire.KindHost, Addr: netip.MustParseAddrPort("10.0.0.1:4000"), Origin: wire.OriginAnnounced}
	cands := []wire.Candidate{relayed, srflx, host}
	if got := withoutRelayed(cands); !slices.Equal(got, []wire.Candidate{srflx, host}) {
		t.Errorf("withoutRelayed = %v", got)
	}
	if got := observedOnly(cands); !slices.Equal(got, []wire.Candidate{srflx}) {
		t.Errorf("observedOnly = %v (a relayed address on the observed IP is no target of a search)", got)
	}
	if got := relayedOf(cands); !slices.Equal(got, []netip.AddrPort{relayed.Addr}) {
		t.Errorf("relayedOf = %v", got)
	}
}

// startBlockedNode starts a node whose UDP is blocked (it registers over
// TCP and classifies itself udp-blocked).
func startBlockedNode(t *testing.T, cfg Config) *Node {
	t.Helper()
	raw, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ep, err := endpoint.New(endpoint.Config{Conn: blockedConn{raw}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ep.Close() })
	cfg.Endpoint = ep
	n := startNodeCfg(t, cfg)
	if got := n.NAT().Class(); got != "udp-blocked" {
		t.Fatalf("classified %s", got)
	}
	return n
}

// waitFor polls cond every 10 ms until it holds or d passes; each poll
// also runs watch (nil: none).
func waitFor(t *testing.T, d time.Duration, what string, cond func() bool, watch func()) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if watch != nil {
			watch()
		}
		if time.Now().After(deadline) {
			t.Fatalf("not within %v: %s", d, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestWarmRelayLifecycle: a udp-blocked node allocates a warm relay and
// announces it, replaces it before its short credentials expire (never
// holding more than two allocations on the relay, one once it settled),
// and releases it when it closes.
func TestWarmRelayLifecycle(t *testing.T) {
	const lifetime = 3 * time.Second
	b, rs := relayBootstrapCfg(t, relay.ServerConfig{MaxLifetime: lifetime}, bootstrap.ServerConfig{RelayTTL: lifetime})
	rec := &recorder{}
	n := startBlockedNode(t, Config{Bootstraps: []Bootstrap{b}, Recorder: rec})

	// Allocate: WaitWarmRelay returns once it is ready (it is wanted as
	// soon as the node knows its UDP is blocked).
	waitFor(t, 5*time.Second, "the node to want a warm relay", n.wantsWarmRelay, nil)
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	if err := n.WaitWarmRelay(ctx); err != nil {
		t.Fatal(err)
	}
	st := n.WarmRelay()
	if st.State != WarmStateReady {
		t.Fatalf("WaitWarmRelay returned with the warm relay %s", st.State)
	}
	if !st.Relayed.IsValid() || !st.TCP || st.Bootstrap != "0" || rs.Allocations() != 1 {
		t.Fatalf("warm relay %+v, %d allocations on the relay", st, rs.Allocations())
	}
	if !slices.ContainsFunc(n.candidates(), func(c wire.Candidate) bool { return c.Kind == wire.KindRelay && c.Addr == st.Relayed }) {
		t.Fatalf("the relayed address %s is not a candidate: %v", st.Relayed, n.candidates())
	}

	// Refresh, twice at least, with at most two allocations at once.
	most := 0
	seen := map[netip.AddrPort]bool{st.Relayed: true}
	waitFor(t, 6*lifetime, "two refreshes", func() bool { return n.WarmRelay().Refreshes >= 2 }, func() {
		most = max(most, rs.Allocations())
		seen[n.WarmRelay().Relayed] = true
	})
	if most > 2 {
		t.Fatalf("%d allocations at once on the relay", most)
	}
	waitFor(t, 2*time.Second, "one allocation after the refreshes", func() bool { return rs.Allocations() == 1 }, nil)
	seen[n.WarmRelay().Relayed] = true
	if delete(seen, netip.AddrPort{}); len(seen) < 3 {
		t.Errorf("relayed addresses %v: want a new one for each refresh", seen)
	}
	if st := n.WarmRelay(); st.LastRefresh.IsZero() || st.LastError != nil {
		t.Errorf("after refreshes: %+v", st)
	}
	if len(rec.Kind(event.KindRelay)) == 0 {
		t.Error("no relay events")
	}

	// Release.
	n.Close()
	waitFor(t, 2*time.Second, "the allocation released at close", func() bool { return rs.Allocations() == 0 }, nil)
}

// TestWaitWarmRelayNotWanted: a node that keeps no warm relay does not
// wait for one, whatever its context.
func TestWaitWarmRelayNotWanted(t *testing.T) {
	n := startNode(t, nil, startBootstrap(t))
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if err := n.WaitWarmRelay(ctx); err != nil {
		t.Fatalf("WaitWarmRelay on a node that wants none: %v", err)
	}
}

// TestWarmRelayQuota: with one allocation per peer, a relayed connection
// to a udp-blocked node shares its warm allocation (no second one, no
// quota refusal), and the connection carries verified bytes.
func TestWarmRelayQuota(t *testing.T) {
	b, rs := relayBootstrap(t, relay.ServerConfig{MaxAllocationsPerPeer: 1})
	rec := &recorder{}
	blocked := startBlockedNode(t, Config{Bootstraps: []Bootstrap{b}, Recorder: rec})
	waitFor(t, 5*time.Second, "a warm relay", func() bool { return blocked.WarmRelay().State == WarmStateReady }, nil)
	peer := startNodeCfg(t, Config{Bootstraps: []Bootstrap{b}})
	ctx, cancel := context.WithTimeout(t.Context(), 15*time.Second)
	defer cancel()
	c, err := peer.Connect(ctx, blocked.ID())
	if err != nil {
		t.Fatal(err)
	}
	if c.Path() != event.PathRelay {
		t.Fatalf("path %s", c.Path())
	}
	if _, err := c.SendVerified(ctx, 256<<10); err != nil {
		t.Fatal(err)
	}
	if a := rs.Allocations(); a != 1 {
		t.Fatalf("%d allocations, want the warm one only", a)
	}
	for _, ev := range rec.Kind(event.KindRelay) {
		if ev.Detail == "allocate" && ev.Attempt != 0 {
			t.Fatalf("the attempt allocated (%+v): the warm allocation was not shared", ev)
		}
	}
	if blocked.WarmRelay().Refreshes != 0 {
		t.Fatalf("refreshed: %+v", blocked.WarmRelay())
	}
}

// TestWarmRelayQuotaRefresh: with one allocation per peer, the keeper
// cannot make before break; it releases its allocation and makes the
// next.
func TestWarmRelayQuotaRefresh(t *testing.T) {
	const lifetime = 3 * time.Second
	b, rs := relayBootstrapCfg(t, relay.ServerConfig{MaxLifetime: lifetime, MaxAllocationsPerPeer: 1}, bootstrap.ServerConfig{RelayTTL: lifetime})
	n := startBlockedNode(t, Config{Bootstraps: []Bootstrap{b}})
	waitFor(t, 4*lifetime, "a refresh under a quota of one", func() bool {
		st := n.WarmRelay()
		return st.Refreshes >= 1 && st.State == WarmStateReady
	}, nil)
	if a := rs.Allocations(); a != 1 {
		t.Fatalf("%d allocations", a)
	}
}

func TestPlanWarmRelay(t *testing.T) {
	blocked := nattype.Type{Mapping: nattype.MappingEIM, Filtering: nattype.FilteringBlocked}
	apdm := nattype.Type{Mapping: nattype.MappingAPDM, Filtering: nattype.FilteringAPDF}
	tests := []struct {
		name          string
		local, remote nattype.Type
		initiator     bool
		warm          bool
		want          RelayPlan
		ok            bool
	}{
		{"initiator dials the blocked responder's warm relay", apdm, blocked, true, true, RelayPlan{Dial: true}, true},
		{"blocked responder accepts on its warm relay", blocked, apdm, false, true, RelayPlan{Allocate: true, TCP: true, PeerOnRelay: true}, true},
		{"symmetric pair: the initiator dials", apdm, apdm, true, true, RelayPlan{Dial: true}, true},
		{"symmetric pair: the responder accepts over UDP", apdm, apdm, false, true, RelayPlan{Allocate: true, PeerOnRelay: true}, true},
		{"no warm relay", apdm, apdm, true, false, RelayPlan{}, false},
		{"blocked initiator cannot dial from its socket", blocked, apdm, true, true, RelayPlan{}, false},
		{"responder of a blocked initiator", apdm, blocked, false, true, RelayPlan{}, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, ok := PlanWarmRelay(tc.local, tc.remote, tc.initiator, tc.warm)
			if got != tc.want || ok != tc.ok {
				t.Fatalf("PlanWarmRelay = %+v, %v; want %+v, %v", got, ok, tc.want, tc.ok)
			}
		})
	}
}

// TestWarmRelayConnects: connections between a udp-blocked node with a
// warm relay and others, each way, and between two such nodes, land on
// the relay and carry verified bytes; no attempt allocates (the warm
// allocations are shared), and the relay holds one allocation per
// blocked node afterwards.
func TestWarmRelayConnects(t *testing.T) {
	b, rs := relayBootstrap(t, relay.ServerConfig{})
	recs := []*recorder{{}, {}, {}}
	b1 := startBlockedNode(t, Config{Bootstraps: []Bootstrap{b}, Recorder: recs[0]})
	b2 := startBlockedNode(t, Config{Bootstraps: []Bootstrap{b}, Recorder: recs[1]})
	open := startNodeCfg(t, Config{Bootstraps: []Bootstrap{b}, Recorder: recs[2]})
	for _, n := range []*Node{b1, b2} {
		waitFor(t, 5*time.Second, "warm relays", func() bool { return n.WarmRelay().State == WarmStateReady }, nil)
	}
	tests := []struct {
		name     string
		from, to *Node
	}{
		{"open to blocked", open, b1},
		{"blocked to open", b2, open},
		{"blocked to blocked", b1, b2},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(t.Context(), 15*time.Second)
			defer cancel()
			c, err := tc.from.Connect(ctx, tc.to.ID())
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			if c.Path() != event.PathRelay {
				t.Fatalf("path %s", c.Path())
			}
			if _, err := c.SendVerified(ctx, 128<<10); err != nil {
				t.Fatal(err)
			}
		})
	}
	for i, rec := range recs {
		for _, ev := range rec.Kind(event.KindRelay) {
			if ev.Detail == "allocate" {
				t.Errorf("node %d: an attempt allocated (%+v): the warm allocation was not used", i, ev)
			}
		}
	}
	if a := rs.Allocations(); a != 2 {
		t.Errorf("%d allocations, want the two warm ones", a)
	}
}

// TestWarmRelayRelayGone: the relay goes away under a warm allocation
// (its TCP connection ends: Dead); the keeper drops it, withdraws the
// relayed candidate and retries with backoff, never spinning.
func TestWarmRelayRelayGone(t *testing.T) {
	b, rs := relayBootstrap(t, relay.ServerConfig{})
	rec := &recorder{}
	n := startBlockedNode(t, Config{Bootstraps: []Bootstrap{b}, Recorder: rec})
	waitFor(t, 5*time.Second, "a warm relay", func() bool { return n.WarmRelay().State == WarmStateReady }, nil)
	rs.Close()
	waitFor(t, 5*time.Second, "retrying", func() bool {
		st := n.WarmRelay()
		return st.State == WarmStateRetrying && st.LastError != nil && !st.Relayed.IsValid()
	}, nil)
	if slices.ContainsFunc(n.candidates(), func(c wire.Candidate) bool { return c.Kind == wire.KindRelay }) {
		t.Fatal("the relayed candidate of a dead allocation is still announced")
	}
	time.Sleep(3 * time.Second) // the backoff's first steps: 1 s, 2 s
	fails := 0
	for _, ev := range rec.Kind(event.KindRelay) {
		if ev.Detail == "warm_allocate" && ev.Outcome == event.OutcomeFail {
			fails++
		}
	}
	if fails < 1 || fails > 4 {
		t.Fatalf("%d failed allocations in about 3 s: want a bounded backoff", fails)
	}
}

func TestRelayLegTargets(t *testing.T) {
	host := wire.Candidate{Kind: wire.KindHost, Addr: netip.MustParseAddrPort("192.168.15.10:4000"), Origin: wire.OriginAnnounced}
	obs := wire.Candidate{Kind: wire.KindServerReflexive, Addr: netip.MustParseAddrPort("198.51.100.65:55138"), Origin: wire.OriginObserved}
	warm := relayCandidate(netip.MustParseAddrPort("203.0.113.1:49619"))
	blocked := nattype.Type{Filtering: nattype.FilteringBlocked}
	apdm := nattype.Type{Mapping: nattype.MappingAPDM, Filtering: nattype.FilteringAPDF}
	all := []wire.Candidate{host, obs, warm}
	tests := []struct {
		name  string
		cands []wire.Candidate
		nat   nattype.Type
		dial  bool
		other bool // the peer shares no address family with this side
		want  []wire.Candidate
	}{
		{"dial: the peer's own candidates", all, apdm, true, false, []wire.Candidate{host, obs}},
		{"accept: observed and warm", all, apdm, false, false, []wire.Candidate{obs, warm}},
		// CI's udp-blocked x udp-blocked: the dialler's checks to the
		// peer's host and TCP-observed addresses each waited for a
		// permission before the one to its relayed address left.
		{"blocked peer, dial: its warm relay only", all, blocked, true, false, []wire.Candidate{warm}},
		{"blocked peer, accept: its warm relay only", all, blocked, false, false, []wire.Candidate{warm}},
		{"blocked peer without a warm relay: wait for one", []wire.Candidate{host, obs}, blocked, true, false, []wire.Candidate{}},
		// Without a family in common: relayed addresses only (a check
		// to the peer's observed IPv4 address from an allocation cost a
		// permission round trip before the relayed one: 3.3 to 4.3
		// round trips instead of 3.2 to 3.8).
		{"no family in common, dial: relayed only", all, apdm, true, true, []wire.Candidate{warm}},
		{"no family in common, accept: relayed only", all, apdm, false, true, []wire.Candidate{warm}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := relayLegTargets(tc.cands, tc.nat, tc.dial, !tc.other)
			if !slices.Equal(got, tc.want) || (got == nil) != (tc.want == nil) {
				t.Fatalf("relayLegTargets = %v, want %v", got, tc.want)
			}
		})
	}
}
