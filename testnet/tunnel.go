package testnet

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"io"
	"math"
	"math/rand/v2"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// The tunnel scenarios: application traffic through `antnode forward`. A
// peer daemon exposes an HTTP server of its host (--expose, --allow); the
// other host runs `antnode forward` and fetches a body through the local
// port with curl. The body must arrive whole and unchanged.
//
// The HTTP server runs in this process, on a listener opened inside the
// serving host's namespace (InNS): it serves a pseudo-random body from a
// seed, so nothing is written to disk and the testbed needs no HTTP
// server installed (CI installs curl but not python3).

// Payload is a pseudo-random body of Size bytes, the same for the same
// Seed (ChaCha8).
type Payload struct {
	Seed uint64
	Size int64
}

// NewPayload returns a payload of size bytes with a random seed.
func NewPayload(size int64) Payload { return Payload{Seed: rand.Uint64(), Size: size} }

// Reader returns the body.
func (p Payload) Reader() io.Reader {
	var seed [32]byte
	binary.LittleEndian.PutUint64(seed[:], p.Seed)
	return io.LimitReader(rand.NewChaCha8(seed), p.Size)
}

// SHA256 returns the hex SHA-256 of the body.
func (p Payload) SHA256() string {
	h := sha256.New()
	io.Copy(h, p.Reader())
	return hex.EncodeToString(h.Sum(nil))
}

// fileServer serves payloads by name (GET /NAME) over HTTP/1.1 on a
// loopback listener inside a namespace.
type fileServer struct {
	srv    *http.Server
	Addr   netip.AddrPort
	served atomic.Int64 // body bytes written, as they are written
}

func serveInNS(ns string, files map[string]Payload) (*fileServer, error) {
	var ln net.Listener
	if err := InNS(ns, func() error {
		var err error
		ln, err = net.Listen("tcp4", "127.0.0.1:0")
		return err
	}); err != nil {
		return nil, err
	}
	return serveOn(ln, files), nil
}

// serveOn serves files on ln until Close.
func serveOn(ln net.Listener, files map[string]Payload) *fileServer {
	fs := &fileServer{Addr: ln.Addr().(*net.TCPAddr).AddrPort()}
	fs.srv = &http.Server{ReadHeaderTimeout: 10 * time.Second, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p, ok := files[strings.TrimPrefix(r.URL.Path, "/")]
		if !ok {
			http.NotFound(w, r)
			return
		}
		w.Header().Set("Content-Type", "application/octet-stream")
		w.Header().Set("Content-Length", strconv.FormatInt(p.Size, 10))
		if r.Method == http.MethodHead {
			return
		}
		io.Copy(countingWriter{w, &fs.served}, p.Reader())
	})}
	go fs.srv.Serve(ln)
	return fs
}

func (fs *fileServer) Close() { fs.srv.Close() }

// countingWriter adds what it writes to n.
type countingWriter struct {
	w io.Writer
	n *atomic.Int64
}

func (c countingWriter) Write(b []byte) (int, error) {
	k, err := c.w.Write(b)
	c.n.Add(int64(k))
	return k, err
}

// ForwardReady is what `antnode forward --json` prints once it is ready.
type ForwardReady struct {
	Listening string  `json:"listening"`
	Peer      string  `json:"peer"`
	Service   string  `json:"service"`
	Path      string  `json:"path"`
	RTTMS     float64 `json:"rtt_ms"`
}

// parseForwardReady finds forward's ready object in its output (stdout
// and stderr mixed: a log line may come before or after it).
func parseForwardReady(out string) (ForwardReady, bool) {
	for _, line := range strings.Split(out, "\n") {
		line = strings.TrimSpace(line)
		if !strings.HasPrefix(line, "{") {
			continue
		}
		var r ForwardReady
		if json.Unmarshal([]byte(line), &r) == nil && r.Listening != "" {
			return r, true
		}
	}
	return ForwardReady{}, false
}

// TunnelRun is one download through a forward, in a scenario's report.
type TunnelRun struct {
	Pair string `json:"pair"` // classes, forwarder/server
	Kind string `json:"kind"` // direct, birthday, relay-only, migration
	// Path is the forward's path when it became ready (its --json);
	// FinalPath is the serving daemon's connection at the end (its
	// antnode_connections gauge).
	Path      string `json:"path"`
	FinalPath string `json:"final_path,omitempty"`
	// FinalPeerState is the serving daemon's state machine for the
	// forwarder at the end (its antnode_peers gauge).
	FinalPeerState string `json:"final_peer_state,omitempty"`
	// ExpectedPath is the path the pair should take, if it has one.
	ExpectedPath string  `json:"expected_path,omitempty"`
	RTTMS        float64 `json:"rtt_ms"`
	// ReadyMS is from the forward's start to its ready line.
	ReadyMS   float64 `json:"ready_ms"`
	WantBytes int64   `json:"want_bytes"`
	Bytes     int64   `json:"bytes"`
	DownloadS float64 `json:"download_s"`
	Mbps      float64 `json:"mbit_s"`
	SHAOK     bool    `json:"sha_ok"`
	CurlExit  int     `json:"curl_exit"`
	// Faults are the faults injected during the download.
	Faults []FaultMark `json:"faults,omitempty"`
	// PathChanges is the serving daemon's connection path over the
	// download, as it changed.
	PathChanges []PathMark `json:"path_changes,omitempty"`
	// ProgressMiB is the MiB received by each whole second.
	ProgressMiB []float64 `json:"progress_mib,omitempty"`
	// MaxStallS is the longest time no byte arrived (to 200 ms).
	MaxStallS float64 `json:"max_stall_s"`
	// Migrations is the rise of the serving daemon's
	// antnode_migrations_total over the download, by "reason/outcome".
	Migrations map[string]float64 `json:"migrations,omitempty"`
	Error      string             `json:"error,omitempty"`
}

// FaultMark is when a fault landed, from the download's start.
type FaultMark struct {
	Name string  `json:"name"`
	AtS  float64 `json:"at_s"`
	// Bytes had arrived when the fault landed.
	Bytes int64 `json:"bytes"`
	// ResumedAfterS is how long after the fault the next byte arrived
	// (to the watcher's 200 ms); -1 if none did.
	ResumedAfterS float64 `json:"resumed_after_s"`
}

// PathMark is a path the serving daemon's connection was on, from the
// download's start.
type PathMark struct {
	AtS  float64 `json:"at_s"`
	Path string  `json:"path"`
}

// OK reports whether the download was whole and unchanged.
func (t TunnelRun) OK() bool {
	return t.Error == "" && t.CurlExit == 0 && t.Bytes == t.WantBytes && t.SHAOK
}

// mbitPerS is bytes over d in Mbit/s, rounded to 0.1.
func mbitPerS(bytes int64, d time.Duration) float64 {
	if d <= 0 {
		return 0
	}
	return math.Round(float64(bytes)*8/d.Seconds()/1e5) / 10
}

// connPaths returns the paths on which a node has open peer connections
// (its antnode_connections gauge above zero), sorted, "+"-joined; "none"
// when it has none.
func connPaths(metrics string) (string, error) {
	return gaugeLabels(metrics, "antnode_connections", "path")
}

// peerStates returns the states of a node's peer state machines (its
// antnode_peers gauge above zero), as connPaths.
func peerStates(metrics string) (string, error) {
	return gaugeLabels(metrics, "antnode_peers", "state")
}

// gaugeLabels returns the values of label of the samples of gauge name
// above zero, sorted, "+"-joined; "none" when there are none.
func gaugeLabels(metrics, name, label string) (string, error) {
	mfs, err := parseMetrics(metrics)
	if err != nil {
		return "", err
	}
	var vals []string
	for _, m := range mfs[name].GetMetric() {
		if m.GetGauge().GetValue() <= 0 {
			continue
		}
		for _, l := range m.GetLabel() {
			if l.GetName() == label {
				vals = append(vals, l.GetValue())
			}
		}
	}
	if len(vals) == 0 {
		return "none", nil
	}
	sort.Strings(vals)
	return strings.Join(vals, "+"), nil
}

// migrationCounts returns antnode_migrations_total by "reason/outcome".
func migrationCounts(metrics string) (map[string]float64, error) {
	mfs, err := parseMetrics(metrics)
	if err != nil {
		return nil, err
	}
	out := map[string]float64{}
	for _, m := range mfs["antnode_migrations_total"].GetMetric() {
		var reason, outcome string
		for _, l := range m.GetLabel() {
			switch l.GetName() {
			case "reason":
				reason = l.GetValue()
			case "outcome":
				outcome = l.GetValue()
			}
		}
		out[reason+"/"+outcome] += m.GetCounter().GetValue()
	}
	return out, nil
}

// counterRise returns after - before for the keys that rose.
func counterRise(before, after map[string]float64) map[string]float64 {
	out := map[string]float64{}
	for k, v := range after {
		if d := v - before[k]; d > 0 {
			out[k] = d
		}
	}
	if len(out) == 0 {
		return nil
	}
	return out
}

func parseMetrics(text string) (map[string]*dto.MetricFamily, error) {
	p := expfmt.NewTextParser(model.UTF8Validation)
	mfs, err := p.TextToMetricFamilies(strings.NewReader(text))
	if err != nil {
		return nil, fmt.Errorf("testnet: parse metrics: %w", err)
	}
	return mfs, nil
}

// progressHash hashes and counts what is written to it; Bytes may be read
// while it is written.
type progressHash struct {
	h hash.Hash
	n atomic.Int64
}

func newProgressHash() *progressHash { return &progressHash{h: sha256.New()} }

func (p *progressHash) Write(b []byte) (int, error) {
	p.h.Write(b)
	p.n.Add(int64(len(b)))
	return len(b), nil
}

func (p *progressHash) Bytes() int64 { return p.n.Load() }

func (p *progressHash) Sum() string { return hex.EncodeToString(p.h.Sum(nil)) }

// fetchResult is the outcome of a curl download.
type fetchResult struct {
	Took   time.Duration
	Exit   int // curl's exit status (-1: it did not run or was killed)
	Stderr string
}

// fetch downloads url with curl inside ns into ph (one GET, the body only,
// --fail), at most maxTime.
func (tb *Testbed) fetch(ctx context.Context, ns, url string, maxTime time.Duration, ph *progressHash) fetchResult {
	args := []string{"netns", "exec", ns, "curl", "-sS", "--fail", "--max-time", strconv.Itoa(int(maxTime.Seconds())), url}
	cctx, cancel := context.WithTimeout(ctx, maxTime+10*time.Second)
	defer cancel()
	cmd := exec.CommandContext(cctx, "ip", args...)
	var errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = ph, &errb
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	cmd.WaitDelay = 3 * time.Second
	start := time.Now()
	err := cmd.Run()
	res := fetchResult{Took: time.Since(start), Stderr: strings.TrimSpace(errb.String())}
	var ee *exec.ExitError
	switch {
	case err == nil:
	case errors.As(err, &ee) && ee.Exited():
		res.Exit = ee.ExitCode()
	default:
		res.Exit = -1
		res.Stderr = strings.TrimSpace(res.Stderr + " " + err.Error())
	}
	return res
}

// exposerPort and exposerMetricsPort are the UDP port and metrics port of
// the second daemon a tunnel scenario starts next to a host's own (which
// uses 4000 and metricsPort).
const (
	exposerPort        = 4001
	exposerMetricsPort = metricsPort + 10
	forwardPort        = 18080
)

// startExposer starts a daemon in b's namespace with its own key (named
// key) that exposes target as service "web" to allow, and waits (bounded)
// until it is registered. It returns the process and its peer ID.
func (e *Env) startExposer(ctx context.Context, b Host, key, target, allow string) (*Proc, string, error) {
	id, err := e.keyID(ctx, key)
	if err != nil {
		return nil, "", err
	}
	args := []string{e.Bin, "--listen", fmt.Sprintf("0.0.0.0:%d", exposerPort), "--bootstrap-nodes", e.BootstrapAddrs,
		"--key", filepath.Join(e.Dir, key+".key"), "--metrics-addr", fmt.Sprintf("127.0.0.1:%d", exposerMetricsPort),
		"--expose", "web=" + target, "--allow", allow}
	args = append(args, e.logArgs("info")...)
	p, err := e.TB.Start(b.NS, args...)
	if err != nil {
		return nil, "", err
	}
	if err := waitOutput(ctx, p, "bootstrap up", 15*time.Second); err != nil {
		p.Stop(time.Second)
		return nil, "", fmt.Errorf("exposing daemon in %s did not register: %w: %s", b.NS, err, tail(p.Output(), 300))
	}
	// The strategy needs the NAT type; a daemon that cannot classify
	// (UDP blocked) still serves over the relay.
	waitOutput(ctx, p, "nat type", 10*time.Second)
	return p, id, nil
}

// startForward starts `antnode forward PEER web` in a's namespace with its
// own key (named key) on 127.0.0.1:forwardPort and waits (at most limit)
// for its ready line. It returns the process, the ready line and how
// long it took.
func (e *Env) startForward(ctx context.Context, a Host, key, peer string, limit time.Duration) (*Proc, ForwardReady, time.Duration, error) {
	args := []string{e.Bin, "forward", peer, "web", "--local", fmt.Sprintf("127.0.0.1:%d", forwardPort),
		"--bootstrap-nodes", e.BootstrapAddrs, "--key", filepath.Join(e.Dir, key+".key"), "--json",
		"--timeout", limit.String()}
	args = append(args, e.logArgs("info")...)
	start := time.Now()
	p, err := e.TB.Start(a.NS, args...)
	if err != nil {
		return nil, ForwardReady{}, 0, err
	}
	deadline := time.Now().Add(limit + 5*time.Second)
	for {
		if r, ok := parseForwardReady(p.Output()); ok {
			return p, r, time.Since(start), nil
		}
		select {
		case <-p.Done():
			e.saveLog("forward-"+a.NS, p)
			return nil, ForwardReady{}, 0, fmt.Errorf("forward exited before it was ready (%w): %s", p.Err(), forwardFailure(p.Output()))
		case <-ctx.Done():
			p.Stop(time.Second)
			return nil, ForwardReady{}, 0, ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			p.Stop(time.Second)
			e.saveLog("forward-"+a.NS, p)
			return nil, ForwardReady{}, 0, fmt.Errorf("forward not ready after %v: %s", limit+5*time.Second, forwardFailure(p.Output()))
		}
	}
}

// forwardFailure returns forward's own failure line ("antnode forward:
// REASON: ...") from its output, or the output's end.
func forwardFailure(out string) string {
	lines := strings.Split(strings.TrimSpace(out), "\n")
	for i := len(lines) - 1; i >= 0; i-- {
		if strings.HasPrefix(lines[i], "antnode forward:") {
			return lines[i]
		}
	}
	return tail(out, 300)
}

// saveLog writes a process's output to the log directory, if there is one.
func (e *Env) saveLog(name string, p *Proc) {
	if p != nil {
		e.keepLog(name, p.Output())
	}
}

// keepLog writes text to the log directory as NAME-NANOSECONDS.log, if
// there is one.
func (e *Env) keepLog(name, text string) {
	if e.LogDir == "" {
		return
	}
	os.MkdirAll(e.LogDir, 0o755)
	os.WriteFile(filepath.Join(e.LogDir, fmt.Sprintf("%s-%d.log", name, time.Now().UnixNano())), []byte(text), 0o644)
}

// logArgs are a node's logging flags: debug with full addresses when the
// run keeps logs (LogDir), else level (none when empty).
func (e *Env) logArgs(level string) []string {
	switch {
	case e.LogDir != "":
		return []string{"--log-level", "debug", "--log-addresses", "full"}
	case level != "":
		return []string{"--log-level", level}
	}
	return nil
}

// tunnelSetup is one forwarder/server pair with its HTTP server and
// exposing daemon.
type tunnelSetup struct {
	kind    string
	a, b    Host
	payload Payload
	sum     string
	srv     *fileServer
	exposer *Proc
	peer    string // the exposing daemon's ID
	fwdKey  string
}

func (t *tunnelSetup) close(e *Env) {
	if t.exposer != nil {
		t.exposer.Stop(2 * time.Second)
		e.saveLog("exposer-"+t.b.NS, t.exposer)
	}
	if t.srv != nil {
		t.srv.Close()
	}
}

// setupTunnel starts the HTTP server and the exposing daemon of a pair:
// b serves payload as /body to a's forward (its own key, named after
// scenario and a).
func (e *Env) setupTunnel(ctx context.Context, scenario, kind string, a, b Host, payload Payload) (*tunnelSetup, error) {
	t := &tunnelSetup{kind: kind, a: a, b: b, payload: payload, fwdKey: "fwd-" + scenario + "-" + a.NS}
	fwdID, err := e.keyID(ctx, t.fwdKey)
	if err != nil {
		return t, err
	}
	if t.srv, err = serveInNS(b.NS, map[string]Payload{"body": payload}); err != nil {
		return t, err
	}
	t.exposer, t.peer, err = e.startExposer(ctx, b, "exp-"+scenario+"-"+b.NS, t.srv.Addr.String(), fwdID)
	return t, err
}

func (t *tunnelSetup) pair() string { return string(t.a.Class) + "/" + string(t.b.Class) }

// scrapeExposer reads the exposing daemon's metrics.
func (e *Env) scrapeExposer(ctx context.Context, t *tunnelSetup) (string, error) {
	return runIn(ctx, t.b.NS, "curl", "-sf", "--max-time", "2", fmt.Sprintf("http://127.0.0.1:%d/metrics", exposerMetricsPort))
}

// progress is a download's received bytes at a time from its start.
type progress struct {
	at    time.Duration
	bytes int64
}

// longestStall returns the longest span of samples over which no byte
// arrived (samples in time order).
func longestStall(samples []progress) time.Duration {
	var longest time.Duration
	for i := 0; i < len(samples); {
		j := i
		for j+1 < len(samples) && samples[j+1].bytes == samples[i].bytes {
			j++
		}
		longest = max(longest, samples[j].at-samples[i].at)
		i = j + 1
	}
	return longest
}

// perSecond returns the MiB received by each whole second of the
// download (the last sample at or before it), rounded to 0.1.
func perSecond(samples []progress) []float64 {
	if len(samples) == 0 {
		return nil
	}
	var out []float64
	i := 0
	for sec := time.Second; sec <= samples[len(samples)-1].at; sec += time.Second {
		for i+1 < len(samples) && samples[i+1].at <= sec {
			i++
		}
		out = append(out, math.Round(float64(samples[i].bytes)/(1<<20)*10)/10)
	}
	return out
}

// resumedAfter returns how long after at the first byte past bytes
// arrived (samples in time order), and false if none did.
func resumedAfter(samples []progress, at time.Duration, bytes int64) (time.Duration, bool) {
	for _, s := range samples {
		if s.at >= at && s.bytes > bytes {
			return s.at - at, true
		}
	}
	return 0, false
}

// watcher follows a download: its received bytes and the exposing
// daemon's connection path, every 200 ms.
type watcher struct {
	mu      sync.Mutex
	marks   []PathMark
	samples []progress
	stop    chan struct{}
	done    chan struct{}
}

func (e *Env) watch(ctx context.Context, t *tunnelSetup, start time.Time, got func() int64) *watcher {
	w := &watcher{stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(w.done)
		tick := time.NewTicker(200 * time.Millisecond)
		defer tick.Stop()
		for n := 0; ; n++ {
			w.mu.Lock()
			w.samples = append(w.samples, progress{time.Since(start), got()})
			w.mu.Unlock()
			// The path every 400 ms: a scrape is a process.
			if n%2 == 0 {
				if out, err := e.scrapeExposer(ctx, t); err == nil {
					if p, err := connPaths(out); err == nil {
						w.addPath(time.Since(start), p)
					}
				}
			}
			select {
			case <-w.stop:
				return
			case <-ctx.Done():
				return
			case <-tick.C:
			}
		}
	}()
	return w
}

func (w *watcher) addPath(at time.Duration, path string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if n := len(w.marks); n > 0 && w.marks[n-1].Path == path {
		return
	}
	w.marks = append(w.marks, PathMark{AtS: secs(at), Path: path})
}

// finish stops the watcher, adds a last sample and returns what it saw.
func (w *watcher) finish(at time.Duration, bytes int64) ([]PathMark, []progress) {
	close(w.stop)
	<-w.done
	w.mu.Lock()
	defer w.mu.Unlock()
	w.samples = append(w.samples, progress{at, bytes})
	return slices.Clone(w.marks), slices.Clone(w.samples)
}

// secs is d in seconds, rounded to 0.01.
func secs(d time.Duration) float64 { return math.Round(d.Seconds()*100) / 100 }

// download runs forward on t, fetches the body through it with curl and,
// while the download runs, calls during (if not nil) with the download's
// start and a progress reader. It fills a TunnelRun.
func (e *Env) download(ctx context.Context, t *tunnelSetup, maxTime time.Duration,
	during func(start time.Time, got func() int64) []FaultMark) TunnelRun {
	run := TunnelRun{Pair: t.pair(), Kind: t.kind, WantBytes: t.payload.Size, CurlExit: -1}
	fwd, ready, took, err := e.startForward(ctx, t.a, t.fwdKey, t.peer, 30*time.Second)
	if err != nil {
		run.Error = err.Error()
		return run
	}
	defer func() {
		fwd.Stop(2 * time.Second)
		e.saveLog("forward-"+t.a.NS, fwd)
	}()
	run.Path, run.RTTMS, run.ReadyMS = ready.Path, ready.RTTMS, ms(took)
	before := ""
	if out, err := e.scrapeExposer(ctx, t); err == nil {
		before = out
	}
	served := t.srv.served.Load()
	ph := newProgressHash()
	start := time.Now()
	watch := e.watch(ctx, t, start, ph.Bytes)
	resc := make(chan fetchResult, 1)
	go func() {
		resc <- e.TB.fetch(ctx, t.a.NS, fmt.Sprintf("http://127.0.0.1:%d/body", forwardPort), maxTime, ph)
	}()
	if during != nil {
		run.Faults = during(start, ph.Bytes)
	}
	res := <-resc
	run.Bytes, run.CurlExit = ph.Bytes(), res.Exit
	var samples []progress
	run.PathChanges, samples = watch.finish(res.Took, run.Bytes)
	run.FinalPath = lastPath(run.PathChanges)
	run.MaxStallS = secs(longestStall(samples))
	run.ProgressMiB = perSecond(samples)
	for i, f := range run.Faults {
		run.Faults[i].ResumedAfterS = -1
		if d, ok := resumedAfter(samples, time.Duration(f.AtS*float64(time.Second)), f.Bytes); ok {
			run.Faults[i].ResumedAfterS = secs(d)
		}
	}
	run.DownloadS = secs(res.Took)
	run.Mbps = mbitPerS(run.Bytes, res.Took)
	run.SHAOK = run.Bytes == t.payload.Size && ph.Sum() == t.sum
	if after, err := e.scrapeExposer(ctx, t); err == nil && before != "" {
		b, err1 := migrationCounts(before)
		a, err2 := migrationCounts(after)
		if err1 == nil && err2 == nil {
			run.Migrations = counterRise(b, a)
		}
		run.FinalPeerState, _ = peerStates(after)
	}
	if res.Exit != 0 {
		run.Error = fmt.Sprintf("curl exit %d: %s; the server wrote %d bytes", res.Exit, tail(res.Stderr, 200), t.srv.served.Load()-served)
		select {
		case <-fwd.Done():
			run.Error += "; forward exited: " + forwardFailure(fwd.Output())
		default:
		}
	}
	return run
}

func lastPath(ms []PathMark) string {
	if len(ms) == 0 {
		return ""
	}
	return ms[len(ms)-1].Path
}

// describe renders a run for a scenario's detail.
func (t TunnelRun) describe() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s %s: ", t.Kind, t.Pair)
	if t.Path == "" {
		fmt.Fprintf(&b, "FAILED %s", t.Error)
		return b.String()
	}
	fmt.Fprintf(&b, "path %s", t.Path)
	if t.FinalPath != "" && t.FinalPath != t.Path {
		fmt.Fprintf(&b, " (at the end %s)", t.FinalPath)
	}
	fmt.Fprintf(&b, ", ready in %.0f ms (rtt %.0f ms), %d/%d bytes in %.2f s = %.1f Mbit/s", t.ReadyMS, t.RTTMS, t.Bytes, t.WantBytes, t.DownloadS, t.Mbps)
	fmt.Fprintf(&b, ", longest stall %.1f s, sha ok %v", t.MaxStallS, t.SHAOK)
	if t.Error != "" {
		fmt.Fprintf(&b, ", %s", t.Error)
	}
	return b.String()
}

// tunnelSizes returns the bodies of the tunnel and tunnel-migration
// scenarios for links that lose lossPct percent of their packets: 64 and
// 256 MiB on clean links; on lossy ones, where a QUIC flow gets about
// 1 Mbit/s (2 % per access link at 80 ms, see bulk.go), 1 and 2 MiB, so
// that the downloads take seconds: about 8 s for each of tunnel's four,
// and 16 s for tunnel-migration's, whose faults land by progress.
func tunnelSizes(lossPct float64) (tunnel, migration int64) {
	if lossPct > 0 {
		return 1 << 20, 2 << 20
	}
	return 64 << 20, 256 << 20
}

// scenarioTunnel: an HTTP server in B's namespace, exposed by a daemon
// there to A only; A runs `antnode forward` and fetches 64 MiB (1 MiB on
// lossy links, see tunnelSizes) through it with curl, for a direct pair,
// a birthday pair and a relay-only pair both ways (the UDP-blocked side
// forwarding, then serving). Every body
// must arrive whole with the served SHA-256; the path each pair should
// take is reported next to the one it took, not judged (the matrix
// judges paths, over many runs).
func scenarioTunnel(ctx context.Context, e *Env) (bool, string) {
	type pairSpec struct {
		kind         string
		a, b         Class
		aSkip, bSkip int // which site of the class
		expect       string
	}
	specs := []pairSpec{
		{"direct", ClassEIMEIF, ClassEIMAPDF, 0, 0, "direct"},
		{"birthday", ClassAPDM, ClassEIMAPDF, 0, 1, "direct"},
		// Both ways: the side whose UDP is blocked must allocate over
		// TCP, and it is the forwarder or the server.
		{"relay-only", ClassUDPBlocked, ClassCGNAT, 0, 0, "relay"},
		{"relay-only", ClassCGNAT, ClassUDPBlocked, 1, 1, "relay"},
	}
	size, _ := tunnelSizes(e.Spec.Link.Loss)
	payload := NewPayload(size)
	sum := payload.SHA256()
	// Every pair's server and daemon start at once; the downloads run
	// one after the other (their numbers are each alone on the links).
	type hosts struct{ a, b Host }
	var hs []hosts
	for _, s := range specs {
		a, ok1 := e.firstHost(s.a, s.aSkip)
		b, ok2 := e.firstHost(s.b, s.bSkip)
		if !ok1 || !ok2 {
			return false, fmt.Sprintf("needs %d %s and %d %s sites", s.aSkip+1, s.a, s.bSkip+1, s.b)
		}
		hs = append(hs, hosts{a, b})
	}
	setups := make([]*tunnelSetup, len(specs))
	errs := make([]error, len(specs))
	var wg sync.WaitGroup
	for i, s := range specs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			setups[i], errs[i] = e.setupTunnel(ctx, "tunnel", s.kind, hs[i].a, hs[i].b, payload)
			setups[i].sum = sum
		}()
	}
	wg.Wait()
	defer func() {
		for _, t := range setups {
			t.close(e)
		}
	}()
	ok := true
	var lines []string
	for i, t := range setups {
		var run TunnelRun
		if errs[i] != nil {
			run = TunnelRun{Pair: t.pair(), Kind: t.kind, WantBytes: size, CurlExit: -1, Error: errs[i].Error()}
		} else {
			run = e.download(ctx, t, 90*time.Second, nil)
		}
		run.ExpectedPath = specs[i].expect
		line := run.describe()
		if run.Path != "" && run.Path != run.ExpectedPath {
			line += fmt.Sprintf(" (expected %s)", run.ExpectedPath)
		}
		e.logf("  tunnel %s", line)
		e.addTunnel(run)
		ok = ok && run.OK()
		lines = append(lines, line)
	}
	return ok, fmt.Sprintf("%d MiB over HTTP through forward, sha256 %s...: %s", size>>20, sum[:12], strings.Join(lines, "; "))
}

// addTunnel records a run for the scenario's report.
func (e *Env) addTunnel(r TunnelRun) { e.tunnels = append(e.tunnels, r) }

// Migration under a tunnel.
const (
	// The faults land by progress, so they land mid-transfer however
	// fast the machine is: the direct path opens 1.5 s into the download
	// (on the relay), the address changes at 30 % of the bytes, and the
	// conntrack flush at 60 % (after the download resumed from the
	// address change). Every wait is bounded by tunnelFaultWait.
	tunnelUnblockAt   = 1500 * time.Millisecond
	tunnelMoveAt      = 0.30
	tunnelFlushAt     = 0.60
	tunnelFaultWait   = 40 * time.Second
	tunnelUpgradeWait = 5 * time.Second
)

// scenarioTunnelMigration: a 256 MiB download (2 MiB on lossy links, see
// tunnelSizes) through forward while the path changes under it three
// times, one after the other: the direct path opens after a relay start
// (upgrade), the downloader's address changes (network change), and both
// NATs forget their mappings (conntrack flushed). curl must exit 0 with every byte, the SHA-256 must match, and
// the serving daemon must have seen the connection go from the relay to
// the direct path.
func scenarioTunnelMigration(ctx context.Context, e *Env) (bool, string) {
	a, ok1 := e.firstHost(ClassEIMAPDF, 1)
	b, ok2 := e.firstHost(ClassCGNAT, 1)
	if !ok1 || !ok2 {
		return false, "needs two eim-apdf and two cgnat sites"
	}
	if err := e.TB.SetDirectBlocked(ctx, a.Site, true); err != nil {
		return false, err.Error()
	}
	defer e.TB.SetDirectBlocked(context.WithoutCancel(ctx), a.Site, false)
	_, size := tunnelSizes(e.Spec.Link.Loss)
	payload := NewPayload(size)
	t, err := e.setupTunnel(ctx, "migration", "migration", a, b, payload)
	defer t.close(e)
	if err != nil {
		return false, err.Error()
	}
	t.sum = payload.SHA256()
	m := &migrationFaults{e: e, t: t, a: a, b: b, hp: e.hostPtr(a), size: size}
	run := e.download(ctx, t, 120*time.Second, func(start time.Time, got func() int64) []FaultMark {
		return m.inject(ctx, start, got)
	})
	e.addTunnel(run)
	ok, detail := judgeTunnelMigration(run, m.upgraded)
	if len(m.notes) > 0 {
		detail += "; " + strings.Join(m.notes, "; ")
	}
	e.logf("  tunnel %s", detail)
	return ok, detail
}

// migrationFaults changes the path under the migration scenario's
// download, from A (behind the blocked direct path) to B: what it found
// (whether the serving daemon went direct, and notes on faults that did
// not land) is read once the download ends.
type migrationFaults struct {
	e        *Env
	t        *tunnelSetup
	a, b     Host
	hp       *Host // a in the testbed, whose address changes
	size     int64 // the body's
	upgraded bool
	notes    []string
}

// inject is the download's during (ctx is the scenario's): it opens the direct path, waits for
// the upgrade, then changes A's address at tunnelMoveAt of the body and
// flushes both NATs' conntrack at tunnelFlushAt, and returns the faults
// that landed. It stops at the first that cannot land.
func (m *migrationFaults) inject(ctx context.Context, start time.Time, got func() int64) []FaultMark {
	e := m.e
	var marks []FaultMark
	mark := func(name string) {
		marks = append(marks, FaultMark{Name: name, AtS: secs(time.Since(start)), Bytes: got()})
	}
	reached := func(f float64) func() bool {
		return func() bool { return got() >= int64(f*float64(m.size)) }
	}
	select {
	case <-time.After(tunnelUnblockAt):
	case <-ctx.Done():
		return marks
	}
	if err := e.TB.SetDirectBlocked(ctx, m.a.Site, false); err != nil {
		m.notes = append(m.notes, "unblock: "+err.Error())
		return marks
	}
	mark("direct-opened")
	m.upgraded = waitUntil(ctx, tunnelUpgradeWait, func() bool { return strings.Contains(e.lastServedPath(ctx, m.t), "direct") })
	if !m.upgraded {
		m.notes = append(m.notes, fmt.Sprintf("the serving daemon saw no direct path within %v of the unblock", tunnelUpgradeWait))
	}
	if !waitUntil(ctx, tunnelFaultWait, reached(tunnelMoveAt)) {
		m.notes = append(m.notes, fmt.Sprintf("the download did not reach %.0f %% within %v", tunnelMoveAt*100, tunnelFaultWait))
		return marks
	}
	next, err := e.TB.ChangeAddress(ctx, m.hp)
	if err != nil {
		m.notes = append(m.notes, "change address: "+err.Error())
		return marks
	}
	mark("address-changed")
	m.notes = append(m.notes, fmt.Sprintf("%s moved to %s", m.a.NS, next))
	if !waitUntil(ctx, tunnelFaultWait, reached(tunnelFlushAt)) {
		m.notes = append(m.notes, fmt.Sprintf("the download did not reach %.0f %% within %v", tunnelFlushAt*100, tunnelFaultWait))
		return marks
	}
	err1 := e.TB.FlushConntrack(ctx, m.a.Site)
	err2 := e.TB.FlushConntrack(ctx, m.b.Site)
	if err := errors.Join(err1, err2); err != nil {
		m.notes = append(m.notes, "flush: "+err.Error())
		return marks
	}
	mark("conntrack-flushed")
	return marks
}

// waitUntil waits, at most d and while ctx lasts, for cond, checking every
// 50 ms; it reports whether cond came true.
func waitUntil(ctx context.Context, d time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			return false
		}
		select {
		case <-time.After(50 * time.Millisecond):
		case <-ctx.Done():
			return false
		}
	}
	return true
}

// judgeTunnelMigration renders the migration download and judges it: whole
// and unchanged, the three faults landed while bytes were still to come
// and bytes came again after each, and the connection was upgraded.
func judgeTunnelMigration(run TunnelRun, upgraded bool) (bool, string) {
	ok := run.OK() && len(run.Faults) == 3 && upgraded
	var faults []string
	for _, f := range run.Faults {
		s := fmt.Sprintf("%s at +%.2f s (%.0f%% through, bytes again %.1f s later)", f.Name, f.AtS, 100*float64(f.Bytes)/float64(run.WantBytes), f.ResumedAfterS)
		if f.Bytes >= run.WantBytes || f.ResumedAfterS < 0 {
			ok = false
			s += " NOT mid-transfer"
		}
		faults = append(faults, s)
	}
	var paths []string
	for _, p := range run.PathChanges {
		paths = append(paths, fmt.Sprintf("%s at +%.2f s", p.Path, p.AtS))
	}
	var migs []string
	for k, v := range run.Migrations {
		migs = append(migs, fmt.Sprintf("%s %.0f", k, v))
	}
	sort.Strings(migs)
	detail := fmt.Sprintf("%s; faults (%d of 3): %s; serving daemon's path: %s; its migrations: %s; its state for the peer at the end: %s",
		run.describe(), len(run.Faults), strings.Join(faults, ", "), strings.Join(paths, ", "), strings.Join(migs, ", "), run.FinalPeerState)
	if !upgraded {
		detail += "; NOT upgraded to direct"
	}
	return ok, detail
}

// lastServedPath scrapes the exposing daemon's connection path now.
func (e *Env) lastServedPath(ctx context.Context, t *tunnelSetup) string {
	out, err := e.scrapeExposer(ctx, t)
	if err != nil {
		return ""
	}
	p, _ := connPaths(out)
	return p
}
