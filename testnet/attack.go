package testnet

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"
)

// The attack scenario replays the probe's classes of attack (issue 21)
// against a live bootstrap of its own: the real binary on S1:attackPort
// in the server namespace, under a limit of attackFDLimit descriptors
// (prlimit), with a registry of attackMaxPeers and attackPerIP per
// address. The attacker sits in the server namespace on addresses of its
// own (attackSource), so its floods do not go through the delay lines.
//
//  1. idle flood: attackIdleConns idle TCP connections to the relay's TCP
//     port exhaust the descriptors; /readyz must say 503 meanwhile, and
//     once they go the control port must complete a TLS handshake, the
//     relay's TCP port answer a STUN Binding and /readyz say 200 within
//     attackBackWithin;
//  2. partial frames: attackPartialConns connections to each TCP port
//     leave a frame incomplete; the bootstrap must close every one within
//     its frame deadline (5 s) and a margin;
//  3. STUN flood: attackSTUNPackets Binding requests, half to each STUN
//     port; a Binding must be answered afterwards;
//  4. registry flood: attackRegistrations registrations over TCP from one
//     address; exactly attackPerIP must be accepted, the rest refused as
//     rate_limited;
//  5. cross-origin POST: a peer daemon's API, asked with the token but
//     with Origin: https://evil.example to connect, must answer 403, and
//     no connection attempt may follow on either side.
//
// When the attack ends (every attacker socket closed) two honest peers on
// public sites must register and be introduced and connected within
// attackHonestWithin, and the bootstrap's RSS must come back within
// attackRSSSlack of its level before the attack (waiting up to
// attackRSSWait for the Go runtime to return memory).

const (
	attackPort          = 5433 // QUIC and TCP control; +1 STUN; +2 relay
	attackMetricsPort   = metricsPort + 6
	attackFDLimit       = 256
	attackIdleConns     = 300
	attackPartialConns  = 100 // per TCP port
	attackSTUNPackets   = 20_000
	attackMaxPeers      = 20
	attackPerIP         = 8
	attackRegistrations = 20
	attackSources       = 10
	attackHonestPort    = 4100
	attackHonestWithin  = 2 * time.Second
	attackBackWithin    = 2 * time.Second
	attackFrameDeadline = 5 * time.Second  // the bootstrap's default --frame-timeout
	attackAuthDeadline  = 10 * time.Second // and --auth-timeout
	attackLiveSlack     = 1.2              // the live heap after, to before
	attackRSSSlack      = 1.5              // the resident set after, to before
	attackMemWait       = 30 * time.Second
)

// attackSource is attacker address i (0 to attackSources-1).
func attackSource(i int) netip.Addr { return netip.AddrFrom4([4]byte{203, 0, 113, byte(100 + i)}) }

// attack is the attack scenario in progress.
type attack struct {
	e    *Env
	ns   string // the server namespace
	boot *Proc
	id   string // the attacked bootstrap's peer ID
	// honestID is the peer ID of the honest daemon started after the
	// attack.
	honestID string
	addr     netip.Addr
	http     *http.Client
	rss      *rssSampler

	notes []string // measurements, in order
	fails []string // what fell short
}

func (a *attack) control() netip.AddrPort { return netip.AddrPortFrom(a.addr, attackPort) }
func (a *attack) stunAlt() netip.AddrPort { return netip.AddrPortFrom(a.addr, attackPort+1) }
func (a *attack) relay() netip.AddrPort   { return netip.AddrPortFrom(a.addr, attackPort+2) }

func (a *attack) notef(format string, args ...any) {
	a.notes = append(a.notes, fmt.Sprintf(format, args...))
}

// check records what fell short when ok is false, and returns ok.
func (a *attack) check(ok bool, format string, args ...any) bool {
	if !ok {
		a.fails = append(a.fails, fmt.Sprintf(format, args...))
	}
	return ok
}

// scenarioAttack runs the attack scenario (see above) and judges it.
func scenarioAttack(ctx context.Context, e *Env) (bool, string) {
	honestA, ok1 := e.firstHost(ClassPublic, 0)
	honestB, ok2 := e.firstHost(ClassPublic, 1)
	if !ok1 || !ok2 {
		return false, "needs two public sites"
	}
	ctx, cancel := context.WithTimeout(ctx, 3*time.Minute)
	defer cancel()
	a := &attack{e: e, ns: e.TB.Server(), addr: ServerAddr(1)}
	defer a.close()
	if err := a.start(ctx); err != nil {
		return false, err.Error()
	}
	a.warmUp(ctx, honestA)
	before := a.memory(ctx)
	a.crossOrigin(ctx, honestA, honestB)
	a.idleFlood(ctx)
	held := a.registryFlood(ctx)
	a.partialFlood(ctx)
	a.stunFlood(ctx)
	for _, c := range held {
		c.Close()
	}
	end := time.Now()
	a.honest(ctx, end, honestA, honestB)
	a.readyAfter(ctx)
	a.judgeMemory(ctx, before, end)
	select {
	case <-a.boot.Done():
		a.check(false, "the bootstrap exited: %v: %s", a.boot.Err(), tail(a.boot.Output(), 300))
	default:
	}
	detail := strings.Join(a.notes, "; ")
	if len(a.fails) > 0 {
		return false, "FAILED: " + strings.Join(a.fails, "; ") + " | " + detail
	}
	return true, detail
}

func mib(b float64) float64 { return b / (1 << 20) }

// start adds the attacker's addresses and starts the attacked bootstrap
// under its descriptor limit, with a keep-alive client for its /readyz.
func (a *attack) start(ctx context.Context) error {
	var lines []string
	for i := range attackSources {
		lines = append(lines, fmt.Sprintf("addr add %s/32 dev lo", attackSource(i)))
	}
	if err := nsBatch(ctx, a.ns, lines); err != nil {
		return fmt.Errorf("attacker addresses: %w", err)
	}
	id, err := a.e.keyID(ctx, "attack-bootstrap")
	if err != nil {
		return err
	}
	a.id = id
	if a.honestID, err = a.e.keyID(ctx, "attack-honest"); err != nil {
		return err
	}
	p, err := a.e.TB.Start(a.ns, "prlimit", fmt.Sprintf("--nofile=%d:%d", attackFDLimit, attackFDLimit), "--",
		a.e.Bin, "--bootstrap", "--listen", a.control().String(), "--probe-addr", ServerAddr(3).String(),
		"--key", filepath.Join(a.e.Dir, "attack-bootstrap.key"), "--log-level", "info",
		"--max-peers", strconv.Itoa(attackMaxPeers), "--max-peers-per-ip", strconv.Itoa(attackPerIP),
		"--metrics-addr", fmt.Sprintf("127.0.0.1:%d", attackMetricsPort))
	if err != nil {
		return err
	}
	a.boot = p
	if err := waitOutput(ctx, p, "listening on", 5*time.Second); err != nil {
		return fmt.Errorf("attacked bootstrap: %w\n%s", err, tail(p.Output(), 500))
	}
	a.rss = startRSSSampler(p.Cmd.Process.Pid)
	a.http = &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			return dialIn(ctx, a.ns, netip.Addr{}, addr)
		},
		MaxIdleConnsPerHost: 1, IdleConnTimeout: time.Minute}}
	if code := a.readyz(ctx); code != http.StatusOK {
		return fmt.Errorf("attacked bootstrap: /readyz %d before the attack", code)
	}
	return nil
}

// close stops the bootstrap and the sampler and removes the attacker's
// addresses; it is safe on a partly started attack.
func (a *attack) close() {
	if a.rss != nil {
		a.rss.stop()
	}
	if a.http != nil {
		a.http.CloseIdleConnections()
	}
	if a.boot != nil {
		a.boot.Stop(2 * time.Second)
	}
	var lines []string
	for i := range attackSources {
		lines = append(lines, fmt.Sprintf("addr del %s/32 dev lo", attackSource(i)))
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	nsBatch(ctx, a.ns, lines)
	if a.e.LogDir != "" && a.boot != nil {
		os.MkdirAll(a.e.LogDir, 0o755)
		os.WriteFile(filepath.Join(a.e.LogDir, "attack-bootstrap.log"), []byte(a.boot.Output()), 0o644)
	}
}

// readyz returns the status of the bootstrap's /readyz (0: no answer),
// over the kept-alive connection when there is one.
func (a *attack) readyz(ctx context.Context) int {
	code, _ := a.readiness(ctx)
	return code
}

// readiness is /readyz's status code and the start of its body (0 and
// the error when there is no answer).
func (a *attack) readiness(ctx context.Context) (int, string) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, fmt.Sprintf("http://127.0.0.1:%d/readyz", attackMetricsPort), nil)
	if err != nil {
		return 0, err.Error()
	}
	resp, err := a.http.Do(req)
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<20))
	return resp.StatusCode, tail(strings.TrimSpace(string(body)), 300)
}

// dialIn opens a TCP connection to addr from namespace ns, from src
// unless it is zero.
func dialIn(ctx context.Context, ns string, src netip.Addr, addr string) (net.Conn, error) {
	d := net.Dialer{Timeout: 2 * time.Second}
	if src.IsValid() {
		d.LocalAddr = net.TCPAddrFromAddrPort(netip.AddrPortFrom(src, 0))
	}
	var c net.Conn
	err := InNS(ns, func() error {
		var err error
		c, err = d.DialContext(ctx, "tcp4", addr)
		return err
	})
	return c, err
}

// rssSampler reads a process's resident set every 100 ms and keeps the
// highest reading.
type rssSampler struct {
	pid  int
	done chan struct{}
	wg   sync.WaitGroup

	mu   sync.Mutex
	peak float64
}

func startRSSSampler(pid int) *rssSampler {
	s := &rssSampler{pid: pid, done: make(chan struct{})}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		t := time.NewTicker(100 * time.Millisecond)
		defer t.Stop()
		for {
			s.read()
			select {
			case <-s.done:
				return
			case <-t.C:
			}
		}
	}()
	return s
}

func (s *rssSampler) stop() {
	select {
	case <-s.done:
	default:
		close(s.done)
	}
	s.wg.Wait()
}

// read returns the resident set now (0 if the process is gone) and
// counts it towards the peak.
func (s *rssSampler) read() float64 {
	v, err := processStatus(s.pid, "VmRSS:")
	if err != nil {
		return 0
	}
	s.mu.Lock()
	s.peak = max(s.peak, v)
	s.mu.Unlock()
	return v
}

func (s *rssSampler) max() float64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.peak
}

// errNoField is returned for a field a process's status does not have.
var errNoField = errors.New("testnet: no such field in the process's status")

// processStatus returns a field of a process's status that is a size
// (VmRSS:, RssAnon:, ...) in bytes.
func processStatus(pid int, field string) (float64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, fmt.Errorf("testnet: process status: %w", err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) >= 2 && f[0] == field {
			kb, err := strconv.ParseFloat(f[1], 64)
			if err != nil {
				return 0, fmt.Errorf("testnet: %s %w", field, err)
			}
			return kb * 1024, nil
		}
	}
	return 0, fmt.Errorf("%w: %s", errNoField, field)
}

// honest checks that, from end (the attack's end), a fresh daemon on b's
// host registers with the attacked bootstrap and a connect from a's host
// is introduced to it and connected within attackHonestWithin.
func (a *attack) honest(ctx context.Context, end time.Time, from, to Host) {
	boot := fmt.Sprintf("%s@%s", a.id, a.control())
	d, err := a.e.TB.Start(to.NS, a.e.Bin, "--listen", fmt.Sprintf("0.0.0.0:%d", attackHonestPort), "--bootstrap-nodes", boot,
		"--key", filepath.Join(a.e.Dir, "attack-honest.key"), "--metrics-addr", "off", "--log-level", "info")
	if !a.check(err == nil, "honest peers: %v", err) {
		return
	}
	defer d.Stop(2 * time.Second)
	if err := waitOutput(ctx, d, "bootstrap up", 10*time.Second); !a.check(err == nil, "honest peers: the daemon did not register: %v: %s", err, tail(d.Output(), 300)) {
		return
	}
	up := time.Since(end)
	cctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	startAt := time.Since(end)
	out, err := a.e.TB.Run(cctx, from.NS, a.e.Bin, "connect", a.honestID, "--bootstrap-nodes", boot, "--json",
		"--send", "65536", "--timeout", "10s")
	var res ConnectResult
	if jerr := json.Unmarshal([]byte(strings.TrimSpace(out)), &res); jerr != nil {
		a.check(false, "honest peers: no connect result (%v): %q", err, tail(out, 300))
		return
	}
	introduced := startAt + time.Duration(res.TimeToConnect*float64(time.Millisecond))
	a.notef("honest peers: registered %d ms and introduced and connected (%s) %d ms after the attack's end",
		up.Milliseconds(), res.Path, introduced.Milliseconds())
	a.check(res.Connected && res.BytesVerified == 65536, "honest peers: connect failed: %s %s", res.Reason, res.Error)
	a.check(introduced <= attackHonestWithin, "honest peers: connected %d ms after the attack's end, want within %v",
		introduced.Milliseconds(), attackHonestWithin)
}

// readyAfter records /readyz once the attack is over.
func (a *attack) readyAfter(ctx context.Context) {
	code := a.readyz(ctx)
	a.notef("/readyz %d after the attack", code)
	a.check(code == http.StatusOK, "/readyz %d after the attack, want 200", code)
}

// warmUp has the bootstrap serve one of each kind of request the attack
// and the honest peers make (a QUIC registration and a connect request, a
// TCP registration, TLS, STUN over UDP and TCP, a partial relay frame), so
// that its level before the attack is that of a bootstrap in use: the
// code a request runs first is paged in then, and stays in its resident
// set.
func (a *attack) warmUp(ctx context.Context, from Host) {
	a.controlHandshake(ctx)
	a.relayBinding()
	a.udpBinding()
	if c, _ := a.register(ctx, ServerAddr(2)); c != nil {
		c.Close()
	}
	if c, err := dialIn(ctx, a.ns, netip.Addr{}, a.relay().String()); err == nil {
		c.Write(partialSTUN(1500, 100))
		c.Close()
	}
	cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	a.e.TB.Run(cctx, from.NS, a.e.Bin, "connect", randomPeerID(), "--bootstrap-nodes", fmt.Sprintf("%s@%s", a.id, a.control()),
		"--json", "--timeout", "3s")
}

// memorySample is the attacked bootstrap's memory at one time: its
// resident set (and the anonymous part of it) from /proc, and from its
// own metrics its heap goal (twice the heap live after the last GC, 4 MiB
// at least), its heap in use and its goroutines.
type memorySample struct {
	rss, anon, heapGoal, heapInuse, goroutines float64
}

func (a *attack) memory(ctx context.Context) memorySample {
	var m memorySample
	m.rss = a.rss.read()
	m.anon, _ = processStatus(a.rss.pid, "RssAnon:")
	m.heapGoal, _ = scrapeValue(ctx, a.ns, attackMetricsPort, "go_memstats_next_gc_bytes")
	m.heapInuse, _ = scrapeValue(ctx, a.ns, attackMetricsPort, "go_memstats_heap_inuse_bytes")
	m.goroutines, _ = scrapeValue(ctx, a.ns, attackMetricsPort, "go_goroutines")
	return m
}

// back reports whether after is back to before: the live heap (heap goal)
// within attackLiveSlack, the goroutines within 5, the resident set within
// attackRSSSlack.
func (m memorySample) back(before memorySample) bool {
	return m.rss > 0 && m.rss <= before.rss*attackRSSSlack && m.heapGoal > 0 &&
		m.heapGoal <= before.heapGoal*attackLiveSlack && m.goroutines <= before.goroutines+5
}

// judgeMemory waits (attackMemWait at most) for the bootstrap's memory to
// come back to its level before the attack (memorySample.back) and
// records it. The resident set is held to a looser bound than the live
// heap: the Go runtime keeps the heap spans the attack left partly used,
// and the code it ran paged in, a few MiB that are a large part of a
// 20 MiB bootstrap but are not held by the attack.
func (a *attack) judgeMemory(ctx context.Context, before memorySample, end time.Time) {
	start := time.Now()
	after := a.memory(ctx)
	for !after.back(before) && time.Since(start) < attackMemWait && ctx.Err() == nil {
		time.Sleep(500 * time.Millisecond)
		after = a.memory(ctx)
	}
	a.notef("RSS before %.1f MiB, peak %.1f MiB, after %.1f MiB (%.1f s after the attack's end; anonymous %.1f -> %.1f MiB; "+
		"heap goal %.1f -> %.1f MiB, heap in use %.1f -> %.1f MiB, goroutines %.0f -> %.0f)",
		mib(before.rss), mib(a.rss.max()), mib(after.rss), time.Since(end).Seconds(), mib(before.anon), mib(after.anon),
		mib(before.heapGoal), mib(after.heapGoal), mib(before.heapInuse), mib(after.heapInuse), before.goroutines, after.goroutines)
	a.check(after.back(before), "memory not back within %v: RSS %.1f MiB (want at most %.0f%% of %.1f), heap goal %.1f MiB (at most %.0f%% of %.1f), %.0f goroutines (%.0f before)",
		attackMemWait, mib(after.rss), attackRSSSlack*100, mib(before.rss), mib(after.heapGoal), attackLiveSlack*100, mib(before.heapGoal), after.goroutines, before.goroutines)
}
