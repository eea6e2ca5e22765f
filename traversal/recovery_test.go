package traversal

import (
	"context"
	"testing"
	"time"

	"github.com/antnode/antnode/internal/testkit"

	"github.com/antnode/antnode/bootstrap"
	"github.com/antnode/antnode/endpoint"
	"github.com/antnode/antnode/event"
	"github.com/antnode/antnode/identity"
)

func TestTimeoutsFor(t *testing.T) {
	ms, s := time.Millisecond, time.Second
	limit := PhaseTimeouts{Sync: 5 * s, Punch: 3 * s, Relay: 10 * s, Handshake: 5 * s}
	tests := []struct {
		name       string
		rttB, rttP time.Duration
		limit      PhaseTimeouts
		want       PhaseTimeouts
	}{
		{"unknown peer rtt", 20 * ms, 0, limit,
			PhaseTimeouts{Sync: 500 * ms, Punch: 3 * s, Relay: 2 * s, Handshake: 5 * s}},
		{"lan: lower bounds", ms, 2 * ms, limit,
			PhaseTimeouts{Sync: 500 * ms, Punch: s, Relay: 2 * s, Handshake: 2 * s}},
		{"internet: round trips", 40 * ms, 80 * ms, limit,
			PhaseTimeouts{Sync: 500 * ms, Punch: 2400 * ms, Relay: 2 * s, Handshake: 2 * s}},
		{"far bootstrap and peer", 300 * ms, 400 * ms, limit,
			PhaseTimeouts{Sync: 1200 * ms, Punch: 3 * s, Relay: 3 * s, Handshake: 4 * s}},
		{"satellite: upper bounds", 600 * ms, 1200 * ms, limit,
			PhaseTimeouts{Sync: 2400 * ms, Punch: 3 * s, Relay: 6 * s, Handshake: 5 * s}},
		{"beyond every upper bound", 3 * s, 3 * s, limit,
			PhaseTimeouts{Sync: 5 * s, Punch: 3 * s, Relay: 10 * s, Handshake: 5 * s}},
		{"upper bounds below the lower ones win", ms, ms, PhaseTimeouts{Sync: 100 * ms, Punch: 300 * ms, Relay: 200 * ms, Handshake: 300 * ms},
			PhaseTimeouts{Sync: 100 * ms, Punch: 300 * ms, Relay: 200 * ms, Handshake: 300 * ms}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := TimeoutsFor(tc.rttB, tc.rttP, tc.limit); got != tc.want {
				t.Fatalf("got %+v, want %+v", got, tc.want)
			}
		})
	}
}

func TestDegrader(t *testing.T) {
	var d degrader
	a, b := testkit.Identity(t).ID(), testkit.Identity(t).ID()
	now := time.Unix(1000, 0)
	if g := d.begin(a, 2, now); g.RelayOnly || g.Light {
		t.Fatalf("first attempt degraded: %+v", g)
	}
	d.end()
	d.directFailed(a, now)
	d.directFailed(a, now.Add(time.Minute))
	if g := d.begin(a, 2, now.Add(2*time.Minute)); !g.RelayOnly || g.Reason != event.ReasonPunchTimeout {
		t.Fatalf("after two direct failures: %+v", g)
	}
	d.end()
	if g := d.begin(a, 2, now.Add(time.Hour)); g.RelayOnly {
		t.Fatal("old failures still count")
	}
	d.end()
	if g := d.begin(b, 2, now); g.RelayOnly {
		t.Fatal("another peer's failures count")
	}
	d.begin(b, 2, now)
	if g := d.begin(b, 2, now); !g.Light || g.Reason != event.ReasonOverloaded || !d.busy(2) {
		t.Fatalf("three in flight over a limit of two: %+v", g)
	}
	d.end()
	d.end()
	d.end()
	d.directWorked(a)
	if g := d.begin(a, 2, now.Add(2*time.Minute)); g.RelayOnly {
		t.Fatal("a success did not clear the failures")
	}
}

// TestBootstrapBreakerFailsOver: the first bootstrap goes silent (its
// socket is gone, no close is sent); connects still work through the
// second, and after BreakerThreshold failures the first is skipped without
// waiting.
func TestBootstrapBreakerFailsOver(t *testing.T) {
	b0, b0ep, b0srv := deadableBootstrap(t)
	b1 := startBootstrap(t)
	rec := &recorder{}
	// Nothing remembered: every connect asks a bootstrap.
	a := startNodeCfg(t, Config{Bootstraps: []Bootstrap{b0, b1}, Recorder: rec, BreakerThreshold: 2, BreakerDelay: time.Hour, RememberFor: -1})
	peer := startNodeCfg(t, Config{Bootstraps: []Bootstrap{b1}})
	deadline := time.Now().Add(5 * time.Second)
	for len(a.registered()) < 2 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	b0ep.Close() // silent: no CONNECTION_CLOSE reaches the peers
	b0srv.Close()
	for i := range 4 {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		c, err := a.Connect(ctx, peer.ID())
		cancel()
		if err != nil {
			t.Fatalf("connect %d: %v", i, err)
		}
		c.Close()
	}
	st := a.Bootstraps()
	if st[0].Breaker != "open" || st[1].Breaker != "closed" {
		t.Fatalf("breakers %s and %s, want open and closed", st[0].Breaker, st[1].Breaker)
	}
	// The first two connects asked bootstrap 0 (and waited for its
	// acknowledgement in vain); once the breaker is open it is skipped.
	asked := 0
	for _, ev := range rec.Kind(event.KindBootstrapRequest) {
		if ev.Bootstrap == "0" && ev.Detail == "connect" {
			asked++
		}
	}
	if asked != 2 {
		t.Fatalf("bootstrap 0 was asked %d times, want 2 (the breaker threshold)", asked)
	}
	opened := false
	for _, ev := range rec.Kind(event.KindBreaker) {
		opened = opened || (ev.Bootstrap == "0" && ev.Detail == "open")
	}
	if !opened {
		t.Fatal("no breaker event")
	}
}

// deadableBootstrap is a bootstrap whose endpoint the test can close.
func deadableBootstrap(t *testing.T) (Bootstrap, *endpoint.Endpoint, *bootstrap.Server) {
	id, _ := identity.Generate()
	ep := testkit.Endpoint(t)
	srv, err := bootstrap.NewServer(bootstrap.ServerConfig{Identity: id, Endpoint: ep})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close() })
	return Bootstrap{Addr: srv.Addr(), ID: id.ID()}, ep, srv
}
