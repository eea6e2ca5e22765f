package testnet

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"time"
)

// warmLifetime is the relay lifetime (credentials and allocations) of
// bootstrap 0 during the warm-relay scenario: short, so that the warm
// allocation is replaced several times within seconds.
const warmLifetime = 4 * time.Second

// warmRTTs is the target for relay-only pairs: a connect within
// this many round trips of its path.
const warmRTTs = 2.5

// warmStatus is the warm relay in a daemon's /api/v1/status.
type warmStatus struct {
	WarmRelay struct {
		State     string `json:"state"`
		Bootstrap string `json:"bootstrap"`
		Relayed   string `json:"relayed"`
		Transport string `json:"transport"`
		Refreshes int    `json:"refreshes"`
		LastError string `json:"last_error"`
	} `json:"warm_relay"`
}

// relayEvents counts bootstrap i's relay log records of detail (allocate
// or release) for peer id.
func (e *Env) relayEvents(i int, detail, id string) int {
	n := 0
	for line := range strings.SplitSeq(e.Bootstraps[i].Output(), "\n") {
		if strings.Contains(line, "detail="+detail) && strings.Contains(line, "peer="+id) {
			n++
		}
	}
	return n
}

// scenarioWarmRelay: bootstrap 0 restarts with a relay lifetime of
// warmLifetime; a daemon on a udp-blocked host, registered with it only,
// keeps a warm allocation there and replaces it across at least two
// lifetimes; a connect from a cgnat host lands on the relay within
// warmRTTs round trips (on clean links) with the transfer verified; the
// daemon's shutdown
// releases its allocation (the relay logs as many releases as
// allocations for it). The site's own daemon, whose warm allocation the
// restarted bootstrap forgot, holds a new one.
func scenarioWarmRelay(ctx context.Context, e *Env) (bool, string) {
	a, ok1 := e.firstHost(ClassCGNAT, 0)
	b, ok2 := e.firstHost(ClassUDPBlocked, 0)
	if !ok1 || !ok2 {
		return false, "needs a cgnat and a udp-blocked site"
	}
	// The site's own daemon keeps a warm relay too: after the restart
	// (its bootstrap forgot the allocation) it must hold a new one.
	var fixture warmStatus
	e.waitDaemonJSON(ctx, b, apiURL("/api/v1/status"), 5*time.Second, &fixture, func() bool { return fixture.WarmRelay.State == "ready" })
	before := fixture.WarmRelay
	e.Bootstraps[0].Stop(2 * time.Second)
	p0, err := e.StartBootstrap(ctx, 0, "--relay-lifetime", warmLifetime.String())
	if err != nil {
		return false, err.Error()
	}
	e.Bootstraps[0] = p0
	defer func() {
		e.Bootstraps[0].Stop(2 * time.Second)
		e.restartBootstrapRegistered(context.WithoutCancel(ctx), 0, 15*time.Second)
	}()
	p, id, err := e.startExtraDaemon(ctx, b, "warm-b", e.bootAddr(0))
	if err != nil {
		return false, err.Error()
	}
	defer e.saveLog("warm-b-"+b.NS, p) // after the Stop below
	defer p.Stop(2 * time.Second)
	start := time.Now()
	var st warmStatus
	relayed := map[string]bool{}
	ok := e.waitDaemonJSON(ctx, b, extraStatusURL, 6*warmLifetime, &st, func() bool {
		if st.WarmRelay.Relayed != "" {
			relayed[st.WarmRelay.Relayed] = true
		}
		return st.WarmRelay.State == "ready" && st.WarmRelay.Refreshes >= 2 && time.Since(start) > 2*warmLifetime
	})
	detail := fmt.Sprintf("warm relay %s over %s on bootstrap %s, %d refreshes in %.1f s (lifetime %v), %d relayed addresses seen",
		st.WarmRelay.State, st.WarmRelay.Transport, st.WarmRelay.Bootstrap, st.WarmRelay.Refreshes, time.Since(start).Seconds(), warmLifetime, len(relayed))
	if !ok {
		return false, detail + "; last error: " + st.WarmRelay.LastError
	}
	replaced := e.waitDaemonJSON(ctx, b, apiURL("/api/v1/status"), 10*time.Second, &fixture, func() bool {
		return fixture.WarmRelay.State == "ready" && fixture.WarmRelay.Refreshes > before.Refreshes && fixture.WarmRelay.Relayed != before.Relayed
	})
	detail += fmt.Sprintf("; the site's daemon: warm relay %s before the restart (%d refreshes), %s after (%d refreshes, bootstrap %s)",
		before.State, before.Refreshes, fixture.WarmRelay.State, fixture.WarmRelay.Refreshes, fixture.WarmRelay.Bootstrap)
	if !replaced {
		return false, detail + "; last error: " + fixture.WarmRelay.LastError
	}
	const size = 262144
	res, rtts, swapped := e.warmConnect(ctx, a, b, id, size)
	detail += fmt.Sprintf("; connect from cgnat: %s, %d bytes verified, %.0f ms, %.2f round trips of %.1f ms", res.Path, res.BytesVerified,
		res.TimeToConnect, rtts, res.RTT)
	if rtts > warmRTTs && swapped != "" {
		// The scenario's short lifetime replaces the allocation every
		// couple of seconds; a connect that straddles a replacement checks
		// an address that is going away, which says nothing of the warm
		// relay's speed: measured once more.
		res, rtts, _ = e.warmConnect(ctx, a, b, id, size)
		detail += fmt.Sprintf(" (the warm allocation was replaced meanwhile, %s; again: %s, %.0f ms, %.2f round trips)", swapped, res.Path, res.TimeToConnect, rtts)
	}
	if !res.Connected {
		return false, detail + "; " + res.Reason + ": " + res.Error
	}
	// A one-shot connect from the udp-blocked site waits for a warm relay
	// of its own and says so in its JSON.
	out := e.connectTarget(ctx, b, e.PeerIDs[a.NS], e.bootAddr(0), size)
	warm := "absent"
	if out.WarmRelay != nil {
		warm = out.WarmRelay.State
	}
	detail += fmt.Sprintf("; connect from udp-blocked: %s, %d bytes verified, its warm relay %s", out.Path, out.BytesVerified, warm)
	if out.Path != "relay" || out.BytesVerified != size || warm != "ready" {
		return false, detail + "; " + out.Reason + ": " + out.Error
	}
	p.Stop(2 * time.Second)
	allocs := e.relayEvents(0, "allocate", id)
	deadline := time.Now().Add(5 * time.Second)
	for e.relayEvents(0, "release", id) < allocs && time.Now().Before(deadline) {
		time.Sleep(100 * time.Millisecond)
	}
	released := e.relayEvents(0, "release", id)
	detail += fmt.Sprintf("; the relay's log has %d allocation and %d release records of the daemon after its shutdown", allocs, released)
	// Under loss a retransmitted handshake packet costs a loss timeout,
	// not a round trip: the bound holds on clean links only.
	fast := rtts <= warmRTTs || e.lossy()
	return res.Path == "relay" && res.BytesVerified == size && fast && allocs >= 3 && released == allocs, detail
}

// warmConnect connects from a to the extra daemon id on b, over bootstrap
// 0, and returns the result, its round trips, and the change of the
// daemon's warm relayed address during the connect ("" when none was
// seen).
func (e *Env) warmConnect(ctx context.Context, a, b Host, id string, size int64) (ticketConnectResult, float64, string) {
	relayed := func() string {
		var st warmStatus
		e.waitDaemonJSON(ctx, b, extraStatusURL, time.Second, &st, func() bool { return st.WarmRelay.Relayed != "" })
		return st.WarmRelay.Relayed
	}
	before := relayed()
	res := e.connectTarget(ctx, a, id, e.bootAddr(0), size)
	after := relayed()
	rtts := 0.0
	if res.RTT > 0 {
		rtts = res.TimeToConnect / res.RTT
	}
	swapped := ""
	if before != "" && after != "" && before != after {
		swapped = before + " to " + after
	}
	return res, rtts, swapped
}

// extraStatusURL is the /api/v1/status of a host's extra daemon.
var extraStatusURL = fmt.Sprintf("http://127.0.0.1:%d/api/v1/status", extraAPIPort)

// waitDaemonJSON polls url (a daemon's API in h's namespace) into v until
// done holds or d passes, and says whether done held.
func (e *Env) waitDaemonJSON(ctx context.Context, h Host, url string, d time.Duration, v any, done func() bool) bool {
	deadline := time.Now().Add(d)
	for {
		out, err := runIn(ctx, h.NS, append(append([]string{"curl", "-sf", "--max-time", "5"}, apiAuth()...), url)...)
		if err == nil && json.Unmarshal([]byte(out), v) == nil && done() {
			return true
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return false
		}
		time.Sleep(250 * time.Millisecond)
	}
}
