package testnet

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// The migration scenarios: a fault under a transfer in flight, or under an
// idle connection; the connection must carry on.

// hostPtr returns the testbed's own record of a host (faults change it).
func (e *Env) hostPtr(h Host) *Host {
	for i := range e.TB.Hosts {
		if e.TB.Hosts[i].NS == h.NS {
			return &e.TB.Hosts[i]
		}
	}
	return nil
}

// transferDuring starts `antnode connect` from a to b with a transfer of
// size bytes, runs fault after delay, and returns the connect's result
// and how long it ran.
func (e *Env) transferDuring(ctx context.Context, a, b Host, size int64, delay time.Duration, fault func() error, extra ...string) (ConnectResult, time.Duration, error) {
	args := append([]string{e.Bin, "connect", e.PeerIDs[b.NS], "--bootstrap-nodes", e.BootstrapAddrs, "--json",
		"--send", fmt.Sprint(size), "--timeout", "60s"}, extra...)
	// The fault lands a given time after the connection is up (the
	// attempt_end record), not after the start: a slow coordination must
	// not turn a mid-transfer fault into a mid-handshake one.
	if e.LogDir != "" {
		args = append(args, "--log-level", "debug", "--log-addresses", "full")
	} else {
		args = append(args, "--log-level", "info")
	}
	start := time.Now()
	p, err := e.TB.Start(a.NS, args...)
	if err != nil {
		return ConnectResult{}, 0, err
	}
	if e.LogDir != "" {
		defer func() {
			os.MkdirAll(e.LogDir, 0o755)
			os.WriteFile(filepath.Join(e.LogDir, fmt.Sprintf("transfer-%s-to-%s-%d.log", a.NS, b.NS, time.Now().UnixNano())), []byte(p.Output()), 0o644)
		}()
	}
	if err := waitConnected(ctx, p, 30*time.Second); err != nil {
		p.Stop(time.Second)
		return ConnectResult{}, time.Since(start), err
	}
	select {
	case <-time.After(delay):
	case <-p.Done():
		return ConnectResult{}, time.Since(start), fmt.Errorf("the connect ended before the fault: %s", tail(p.Output(), 300))
	}
	if err := fault(); err != nil {
		p.Stop(time.Second)
		return ConnectResult{}, 0, err
	}
	select {
	case <-p.Done():
	case <-ctx.Done():
		p.Stop(time.Second)
		return ConnectResult{}, 0, ctx.Err()
	case <-time.After(90 * time.Second):
		p.Stop(time.Second)
		return ConnectResult{}, 0, fmt.Errorf("the connect did not finish: %s", tail(p.Output(), 300))
	}
	took := time.Since(start)
	out := strings.TrimRight(p.Output(), "\n")
	line := out[strings.LastIndex(out, "\n")+1:]
	var res ConnectResult
	if err := json.Unmarshal([]byte(line), &res); err != nil {
		return res, took, fmt.Errorf("no JSON result: %w: %q", err, tail(out, 300))
	}
	return res, took, nil
}

// waitConnected waits until a connect's log shows its attempt ended, at
// most limit.
func waitConnected(ctx context.Context, p *Proc, limit time.Duration) error {
	deadline := time.Now().Add(limit)
	for time.Now().Before(deadline) {
		if strings.Contains(p.Output(), "event=attempt_end") {
			return nil
		}
		select {
		case <-p.Done():
			return fmt.Errorf("the connect ended before it connected: %s", tail(p.Output(), 300))
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
	}
	return fmt.Errorf("not connected after %v: %s", limit, tail(p.Output(), 300))
}

// verdict renders a transfer's outcome.
func verdict(res ConnectResult, size int64, took time.Duration, what string) (bool, string) {
	ok := res.Connected && res.BytesVerified == size && res.Error == ""
	if !ok {
		return false, fmt.Sprintf("%s: connected=%v, %d of %d bytes verified, %s %s", what, res.Connected, res.BytesVerified, size, res.Reason, res.Error)
	}
	path := res.Path
	if res.FinalPath != "" && res.FinalPath != res.Path {
		path += " then " + res.FinalPath
	}
	return true, fmt.Sprintf("%s; %d bytes verified over %s in %.1f s", what, size, path, took.Seconds())
}

// migrationSize is the transfer the migration scenarios run under: long
// enough (seconds on the testbed's delay lines) for a fault to land in it.
const migrationSize = 64 << 20

// scenarioNetworkChange: the initiating host gets a new address in the
// middle of a transfer; its NAT maps it anew, and the transfer completes.
func scenarioNetworkChange(ctx context.Context, e *Env) (bool, string) {
	a, ok1 := e.firstHost(ClassEIMAPDF, 0)
	b, ok2 := e.firstHost(ClassCGNAT, 0)
	if !ok1 || !ok2 {
		return false, "needs an eim-apdf and a cgnat site"
	}
	hp := e.hostPtr(a)
	var next string
	res, took, err := e.transferDuring(ctx, a, b, migrationSize, time.Second, func() error {
		addr, err := e.TB.ChangeAddress(ctx, hp)
		next = addr.String()
		return err
	})
	if err != nil {
		return false, err.Error()
	}
	ok, detail := verdict(res, migrationSize, took, fmt.Sprintf("%s moved to %s mid-transfer", a.NS, next))
	m, moved := res.migrated("rebind")
	if !moved {
		return false, detail + "; but no rebind was reported"
	}
	return ok, detail + "; " + m
}

// scenarioNATRebinding: both NATs forget every mapping (conntrack flushed)
// in the middle of a transfer; it completes.
func scenarioNATRebinding(ctx context.Context, e *Env) (bool, string) {
	a, ok1 := e.firstHost(ClassEIMAPDF, 0)
	b, ok2 := e.firstHost(ClassCGNAT, 0)
	if !ok1 || !ok2 {
		return false, "needs an eim-apdf and a cgnat site"
	}
	res, took, err := e.transferDuring(ctx, a, b, migrationSize, time.Second, func() error {
		if err := e.TB.FlushConntrack(ctx, a.Site); err != nil {
			return err
		}
		return e.TB.FlushConntrack(ctx, b.Site)
	})
	if err != nil {
		return false, err.Error()
	}
	return verdict(res, migrationSize, took, "both NATs' conntrack flushed mid-transfer")
}

// scenarioMappingExpiry: both NATs forget idle UDP mappings after 5 s; a
// connection left idle for 60 s must still carry a verified transfer.
func scenarioMappingExpiry(ctx context.Context, e *Env) (bool, string) {
	a, ok1 := e.firstHost(ClassEIMAPDF, 0)
	b, ok2 := e.firstHost(ClassCGNAT, 0)
	if !ok1 || !ok2 {
		return false, "needs an eim-apdf and a cgnat site"
	}
	for _, s := range []string{a.Site, b.Site} {
		if err := e.TB.SetUDPTimeout(ctx, s, 5); err != nil {
			return false, err.Error()
		}
		defer e.TB.SetUDPTimeout(context.WithoutCancel(ctx), s, 120)
	}
	const size = 1 << 20
	res, took, err := e.transferDuring(ctx, a, b, size, 0, func() error { return nil }, "--idle", "60s")
	if err != nil {
		return false, err.Error()
	}
	rebinds := 0
	for _, m := range res.Migrations {
		if m.Kind == "rebind" {
			rebinds++
		}
	}
	// The NATs of the testbed keep a mapping's port when they map a
	// socket anew (Linux's NAT preserves source ports), so an expiry may
	// go unseen and need no repair: the report says what the node saw.
	ok, detail := verdict(res, size, took, "idle 60 s behind NATs with a 5 s UDP timeout")
	lifetime := "none learned"
	if res.MappingLifetimeMS > 0 {
		lifetime = fmt.Sprintf("under %.0f ms", res.MappingLifetimeMS)
	}
	return ok, detail + fmt.Sprintf("; mapping lifetime %s, keepalive every %.0f ms, %d rebinds", lifetime, res.KeepaliveMS, rebinds)
}

// scenarioRelayUpgrade: a pair whose direct path is blocked starts on the
// relay; the path opens during a transfer; the connection moves to it
// (make before break), the transfer completes verified, and the relay
// allocation is released while the connection still runs.
func scenarioRelayUpgrade(ctx context.Context, e *Env) (bool, string) {
	a, ok1 := e.firstHost(ClassEIMAPDF, 0)
	b, ok2 := e.firstHost(ClassCGNAT, 0)
	if !ok1 || !ok2 {
		return false, "needs an eim-apdf and a cgnat site"
	}
	if err := e.TB.SetDirectBlocked(ctx, a.Site, true); err != nil {
		return false, err.Error()
	}
	defer e.TB.SetDirectBlocked(context.WithoutCancel(ctx), a.Site, false)
	const size = 128 << 20
	args := []string{e.Bin, "connect", e.PeerIDs[b.NS], "--bootstrap-nodes", e.BootstrapAddrs, "--json",
		"--send", fmt.Sprint(size), "--timeout", "60s"}
	start := time.Now()
	p, err := e.TB.Start(a.NS, args...)
	if err != nil {
		return false, err.Error()
	}
	defer p.Stop(time.Second)
	// Wait for the allocation, then open the direct path.
	waitAlloc := func(want func(float64) bool, d time.Duration) (time.Duration, bool) {
		deadline := time.Now().Add(d)
		for time.Now().Before(deadline) {
			select {
			case <-p.Done():
				return 0, false
			default:
			}
			if v, err := e.RelayAllocations(ctx); err == nil && want(v) {
				return time.Since(start), true
			}
			time.Sleep(100 * time.Millisecond)
		}
		return 0, false
	}
	onRelay, ok := waitAlloc(func(v float64) bool { return v >= 1 }, 20*time.Second)
	if !ok {
		return false, "the connection never allocated on the relay: " + tail(p.Output(), 300)
	}
	time.Sleep(time.Second)
	if err := e.TB.SetDirectBlocked(ctx, a.Site, false); err != nil {
		return false, err.Error()
	}
	opened := time.Since(start)
	released, ok := waitAlloc(func(v float64) bool { return v == 0 }, 40*time.Second)
	if !ok {
		return false, "the allocation was not released while the connection ran: " + tail(p.Output(), 300)
	}
	select {
	case <-p.Done():
	case <-time.After(90 * time.Second):
		return false, "the connect did not finish"
	}
	out := strings.TrimRight(p.Output(), "\n")
	var res ConnectResult
	if err := json.Unmarshal([]byte(out[strings.LastIndex(out, "\n")+1:]), &res); err != nil {
		return false, fmt.Sprintf("no JSON result: %v: %q", err, tail(out, 300))
	}
	ok, detail := verdict(res, size, time.Since(start), fmt.Sprintf("relay allocated at +%.1f s, direct opened at +%.1f s, allocation released at +%.1f s",
		onRelay.Seconds(), opened.Seconds(), released.Seconds()))
	m, moved := res.migrated("upgrade")
	if !moved || res.Path != "relay" || res.FinalPath != "direct" {
		return false, fmt.Sprintf("%s; path %s -> %s, migrations %+v", detail, res.Path, res.FinalPath, res.Migrations)
	}
	return ok, detail + "; " + m
}

// scenarioBlackhole: the direct path of a transfer in flight starts
// dropping everything (both ways, silently); the connection must be on
// the relay within 5 s and the transfer must complete verified.
func scenarioBlackhole(ctx context.Context, e *Env) (bool, string) {
	a, ok1 := e.firstHost(ClassEIMAPDF, 0)
	b, ok2 := e.firstHost(ClassCGNAT, 0)
	if !ok1 || !ok2 {
		return false, "needs an eim-apdf and a cgnat site"
	}
	defer e.TB.SetDirectBlocked(context.WithoutCancel(ctx), a.Site, false)
	var blocked time.Time
	res, took, err := e.transferDuring(ctx, a, b, migrationSize, time.Second, func() error {
		blocked = time.Now()
		return e.TB.SetDirectBlocked(ctx, a.Site, true)
	})
	if err != nil {
		return false, err.Error()
	}
	ok, detail := verdict(res, migrationSize, took, "direct path blackholed mid-transfer")
	for _, m := range res.Migrations {
		if m.Kind == "fallback" && m.OK {
			onRelay := time.UnixMilli(m.AtUnixMS).Add(time.Duration(m.DurationMS * float64(time.Millisecond))).Sub(blocked)
			detail += fmt.Sprintf("; on the relay %.2f s after the blackhole (detection and move, the move took %.0f ms)", onRelay.Seconds(), m.DurationMS)
			return ok && onRelay <= 5*time.Second, detail
		}
	}
	return false, fmt.Sprintf("%s; no successful fallback: %+v", detail, res.Migrations)
}
