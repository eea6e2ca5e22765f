package testnet

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"
)

// DefaultSpec is the acceptance topology: two sites of every class of the
// default set (DefaultClasses; the first eim-apdf and cgnat sites with two
// hosts, for same-NAT pairs; the carrier NAT hairpins, the eim-apdf router
// does not), every access link impaired by link.
func DefaultSpec(prefix string, link Impairment) Spec {
	return SpecFor(prefix, link, nil)
}

// SpecFor is DefaultSpec plus two sites of each class of classes that is
// not in the default set (--classes apdm-portmap,...: the class is then
// built and paired although the default leaves it out).
func SpecFor(prefix string, link Impairment, classes []Class) Spec {
	s := Spec{Prefix: prefix, Link: link}
	def := DefaultClasses()
	for _, c := range Classes() {
		if !slices.Contains(def, c) && !slices.Contains(classes, c) {
			continue
		}
		first := SiteSpec{Name: string(c) + "-1", Class: c}
		switch c {
		case ClassEIMAPDF:
			first.Hosts = 2
		case ClassCGNAT:
			first.Hosts, first.Hairpin = 2, true
		}
		s.Sites = append(s.Sites, first, SiteSpec{Name: string(c) + "-2", Class: c})
	}
	return s
}

// Topologies of a pair.
const (
	TopoDifferent   = "different-nat"     // two sites
	TopoSameNAT     = "same-nat"          // two hosts behind one NAT router
	TopoSameCarrier = "same-carrier-nat"  // two homes behind one carrier NAT
	TopoSamePublic  = "same-public-class" // two public hosts
)

// PairSpec is one ordered pair of hosts to connect, A dialling B.
type PairSpec struct {
	A, B     Class
	Topology string
	From, To Host
}

// Key names the pair in expectations and reports: "A/B", with
// "@topology" for same-NAT topologies.
func (p PairSpec) Key() string {
	k := string(p.A) + "/" + string(p.B)
	if p.Topology == TopoSameNAT || p.Topology == TopoSameCarrier {
		k += "@" + p.Topology
	}
	return k
}

// NeedsBirthday reports whether a pair needs the birthday search to go
// direct (one side destination-dependent, the other port-restricted).
func (p PairSpec) NeedsBirthday() bool {
	hard := func(c Class) bool { return c == ClassAPDM }
	restricted := func(c Class) bool {
		return c == ClassEIMAPDF || c == ClassCGNAT || c == ClassV6NAT64 || c == ClassDualStack
	}
	return (hard(p.A) && restricted(p.B)) || (hard(p.B) && restricted(p.A))
}

// Races reports whether a pair races the two address families
// (dual-stack with dual-stack): its expectation (IPv6 wins at least half
// the runs) is a rate, judged over as many runs as a birthday pair's.
// Under 2 % loss a lost IPv6 packet early on can let IPv4 win: 30 of 30
// runs went over IPv6 in one measurement, but 2 of 3 over IPv4 in a lossy
// pass beside the other dual-stack pairs, which failed the expectation
// over three runs.
func (p PairSpec) Races() bool { return p.A == ClassDualStack && p.B == ClassDualStack }

// Pairs returns every ordered pair of classes present in the testbed
// (across two sites of the classes; the same class uses its two sites),
// plus same-NAT pairs for sites with two hosts. classes filters (nil: all).
func (tb *Testbed) Pairs(spec Spec, classes []Class) []PairSpec {
	spec, _ = spec.Validate()
	bySite := map[Class][]SiteSpec{}
	for _, s := range spec.Sites {
		bySite[s.Class] = append(bySite[s.Class], s)
	}
	var present []Class
	for _, c := range Classes() {
		if len(bySite[c]) > 0 && (classes == nil || slices.Contains(classes, c)) {
			present = append(present, c)
		}
	}
	first := func(site string) Host { return tb.HostsOf(site)[0] }
	var out []PairSpec
	for _, a := range present {
		for _, b := range present {
			if a == b {
				if len(bySite[a]) < 2 {
					continue
				}
				out = append(out, PairSpec{A: a, B: b, Topology: TopoDifferent,
					From: first(bySite[a][0].Name), To: first(bySite[a][1].Name)})
				continue
			}
			out = append(out, PairSpec{A: a, B: b, Topology: TopoDifferent,
				From: first(bySite[a][0].Name), To: first(bySite[b][0].Name)})
		}
	}
	for _, c := range present {
		for _, s := range bySite[c] {
			if hs := tb.HostsOf(s.Name); len(hs) == 2 {
				topo := TopoSameNAT
				if c == ClassCGNAT {
					topo = TopoSameCarrier
				}
				out = append(out, PairSpec{A: c, B: c, Topology: topo, From: hs[0], To: hs[1]})
			}
		}
	}
	return out
}

// ConnectResult is the JSON that `antnode connect --json` prints.
type ConnectResult struct {
	Peer          string  `json:"peer"`
	NAT           string  `json:"nat"`
	PeerNAT       string  `json:"peer_nat"`
	Connected     bool    `json:"connected"`
	Path          string  `json:"path"`
	TimeToConnect float64 `json:"time_to_connect_ms"`
	RTT           float64 `json:"rtt_ms"`
	BytesVerified int64   `json:"bytes_verified"`
	// ThroughputMbps is the verified transfer's goodput, from its
	// stream's opening on the established connection to the receiver's
	// digest.
	ThroughputMbps float64 `json:"throughput_mbps"`
	// Family is the address family the connecting node's socket used,
	// NAT64 the prefix it reached IPv4 through (if any).
	Family      string `json:"family"`
	NAT64       string `json:"nat64"`
	Phase       string `json:"failed_phase"`
	Reason      string `json:"reason"`
	Error       string `json:"error"`
	FinalPath   string `json:"final_path"`
	FinalFamily string `json:"final_family"`
	Migrations  []struct {
		Kind       string  `json:"kind"`
		Reason     string  `json:"reason"`
		OK         bool    `json:"ok"`
		DurationMS float64 `json:"duration_ms"`
		From       string  `json:"from"`
		To         string  `json:"to"`
		AtMS       float64 `json:"at_ms"`
		AtUnixMS   int64   `json:"at_unix_ms"`
	} `json:"migrations"`
	MappingLifetimeMS float64 `json:"mapping_lifetime_ms"`
	KeepaliveMS       float64 `json:"keepalive_ms"`
}

// migrated returns the first successful migration of kind and whether
// there was one.
func (r ConnectResult) migrated(kind string) (string, bool) {
	for _, m := range r.Migrations {
		if m.Kind == kind && m.OK {
			return fmt.Sprintf("%s (%s) at +%.0f ms took %.0f ms, %s -> %s", m.Kind, m.Reason, m.AtMS, m.DurationMS, m.From, m.To), true
		}
	}
	return "", false
}

// moves renders every migration of the connect, failed ones included,
// for a scenario's detail ("no moves" when there were none): what a
// failure report needs to tell a fallback that failed from one that
// never started.
func (r ConnectResult) moves() string {
	if len(r.Migrations) == 0 {
		return "no moves"
	}
	out := make([]string, 0, len(r.Migrations))
	for _, m := range r.Migrations {
		out = append(out, fmt.Sprintf("%s (%s) ok=%v at +%.0f ms took %.0f ms, %s -> %s", m.Kind, m.Reason, m.OK, m.AtMS, m.DurationMS, m.From, m.To))
	}
	return "moves: " + strings.Join(out, "; ")
}

// PairReport is one pair's line in the report.
type PairReport struct {
	A         Class   `json:"a"`
	B         Class   `json:"b"`
	Topology  string  `json:"topology"`
	Runs      int     `json:"runs"`
	Connected int     `json:"connected"`
	Direct    int     `json:"direct"`
	Relay     int     `json:"relay"`
	P50       float64 `json:"time_to_connect_ms_p50"`
	P95       float64 `json:"time_to_connect_ms_p95"`
	RTTP50    float64 `json:"rtt_ms_p50"`
	// RTTsP50 is P50 / RTTP50: the median time to connect in round trips
	// between the peers (zero when either is unknown).
	RTTsP50 float64 `json:"rtts_p50"`
	// InTime counts the runs that reached the expected level within the
	// expectation's time ("direct>=0.9 within 10s"); nil when it has none.
	InTime        *int  `json:"reached_in_time,omitempty"`
	BytesVerified int64 `json:"bytes_verified"`
	// Families counts the connected runs by the address family their
	// connection ran in (the connect's "family").
	Families map[string]int `json:"families,omitempty"`
	Failures map[string]int `json:"failures"`
	Expect   string         `json:"expect"`
	Met      bool           `json:"met"`
	Errors   []string       `json:"errors,omitempty"` // one sample error per reason
}

// ScenarioResult is one fault scenario's outcome.
type ScenarioResult struct {
	Name   string `json:"name"`
	OK     bool   `json:"ok"`
	Detail string `json:"detail"`
	// DurationS is how long the scenario ran, in seconds.
	DurationS float64 `json:"duration_s"`
	// Tunnels are the downloads through `antnode forward` of the tunnel
	// scenarios.
	Tunnels []TunnelRun `json:"tunnels,omitempty"`
}

// Report is testbed-report.json.
type Report struct {
	Started    string              `json:"started"`
	Commit     string              `json:"commit"`
	Link       LinkReport          `json:"link"`
	NATClasses map[string]Measured `json:"nat_classes"`
	Sites      map[string]Measured `json:"sites"`
	Pairs      []PairReport        `json:"pairs"`
	Scenarios  []ScenarioResult    `json:"scenarios"`
	// Counters compares the nodes' own metrics with the matrix.
	Counters   *CounterCheck `json:"counters,omitempty"`
	BuildMS    float64       `json:"build_ms"`
	TeardownMS float64       `json:"teardown_ms"`
	DurationS  float64       `json:"duration_s"`
	Namespaces int           `json:"namespaces"`
	// Unmet lists the pairs that did worse than their expectation.
	Unmet []string `json:"unmet"`
}

// LinkReport is the impairment on every access link.
type LinkReport struct {
	DelayMS float64 `json:"delay_ms"`
	LossPct float64 `json:"loss_pct"`
}

// RunConfig configures a matrix run.
type RunConfig struct {
	Bin          string        // the antnode binary. Required.
	Spec         Spec          // the topology. Zero: DefaultSpec with Link.
	Classes      []Class       // restrict pairs to these classes. Nil: all.
	Runs         int           // runs per pair. Zero: 3.
	BirthdayRuns int           // runs for pairs that need the birthday search. Zero: 10.
	Send         int64         // bytes verified per run. Zero: 1 MiB.
	Timeout      time.Duration // per connect. Zero: 15 s.
	Parallel     int           // concurrent connects. Zero: 6.
	Expect       Expectations
	Commit       string
	Progress     io.Writer // progress lines. Nil: discarded.
	// Scenarios to run after the matrix (by name; see Scenarios()).
	Scenarios []string
	// Keep leaves the topology and daemons up until ctx ends.
	Keep bool
	// WorkDir holds keys and logs. Empty: a temporary directory.
	WorkDir string
	// LogDir, if set, receives every daemon's and bootstrap's output, and
	// the output of failed connects, when the run ends.
	LogDir string
	// SoakFor is how long the soak scenario runs. Zero: 10 min.
	SoakFor time.Duration
}

// Env is a running testbed with its bootstrap nodes and peer daemons.
type Env struct {
	TB         *Testbed
	Spec       Spec
	Bin        string
	Dir        string
	Bootstraps []*Proc
	// BootstrapAddrs is the --bootstrap-nodes value (ID@addr,...), and
	// BootstrapAddrs6 the same bootstraps at their IPv6 addresses (for
	// the hosts of IPv6-only sites: bootstrapsFor).
	BootstrapAddrs, BootstrapAddrs6 string
	bootIDs                         []string
	Daemons                         map[string]*Proc // by host namespace
	PeerIDs                         map[string]string
	Progress                        io.Writer
	Timeout                         time.Duration
	LogDir                          string
	SoakFor                         time.Duration // the soak scenario's length (zero: 10 min)
	// tunnels collects the running scenario's downloads (addTunnel).
	tunnels []TunnelRun
}

func (e *Env) logf(format string, args ...any) {
	if e.Progress != nil {
		fmt.Fprintf(e.Progress, format+"\n", args...)
	}
}

// keyID creates a key and returns its peer ID.
func (e *Env) keyID(ctx context.Context, name string) (string, error) {
	path := filepath.Join(e.Dir, name+".key")
	out, err := runCmd(ctx, e.Bin, "id", "--key", path)
	if err != nil {
		return "", err
	}
	return strings.TrimSpace(out), nil
}

func runCmd(ctx context.Context, args ...string) (string, error) {
	return run(ctx, args...)
}

// StartBootstrap starts bootstrap i (0 or 1) on S(i+1):4433, with extra
// flags.
func (e *Env) StartBootstrap(ctx context.Context, i int, extra ...string) (*Proc, error) {
	// One socket per family; the relay on the first (IPv4).
	addr := fmt.Sprintf("%s:4433,[%s]:4433", ServerAddr(i+1), ServerAddr6(i+1))
	// S3 is never contacted by peers: the filtering probes "from another
	// address" leave from it.
	args := append([]string{e.Bin, "--bootstrap", "--listen", addr, "--probe-addr", ServerAddr(3).String() + "," + ServerAddr6(3).String(),
		"--key", filepath.Join(e.Dir, fmt.Sprintf("bootstrap%d.key", i)), "--log-level", "info",
		"--metrics-addr", fmt.Sprintf("127.0.0.1:%d", metricsPort+i)}, extra...)
	p, err := e.TB.Start(e.TB.Server(), args...)
	if err != nil {
		return nil, err
	}
	if err := waitOutput(ctx, p, "listening on", 5*time.Second); err != nil {
		return nil, fmt.Errorf("bootstrap %d: %w\n%s", i, err, p.Output())
	}
	return p, nil
}

// StartDaemon starts the peer daemon of a host.
func (e *Env) StartDaemon(h Host) (*Proc, error) {
	args := append([]string{e.Bin, "--listen", listenOn(h, daemonPort)}, e.reachArgs(h)...)
	args = append(args, "--key", filepath.Join(e.Dir, h.NS+".key"), "--metrics-token-file", e.tokenFile())
	args = append(args, e.logArgs("info")...)
	return e.TB.Start(h.NS, args...)
}

// bootstrapsFor is the --bootstrap-nodes value for a node on host h: the
// bootstraps at addresses of h's family, or at their IPv4 addresses for
// a host behind NAT64 (which it reaches through it).
func (e *Env) bootstrapsFor(h Host) string {
	if h.Addr.Is6() && h.Class != ClassV6NAT64 {
		return e.BootstrapAddrs6
	}
	return e.BootstrapAddrs
}

// reachArgs are the flags a node on host h needs to reach the bootstraps:
// --bootstrap-nodes (bootstrapsFor), and for a host behind NAT64 the
// DNS64 that reveals its prefix (--dns-server).
func (e *Env) reachArgs(h Host) []string {
	args := []string{"--bootstrap-nodes", e.bootstrapsFor(h)}
	if h.Class == ClassV6NAT64 {
		args = append(args, "--dns-server", netip.AddrPortFrom(dns64Server(), 53).String())
	}
	return args
}

// listenOn is the --listen value for a node on host h on port (0: any):
// the wildcard address of h's family, or of both for a dual-stack host.
func listenOn(h Host, port int) string {
	if h.Addr6.IsValid() { // one dual-stack socket
		return fmt.Sprintf("0.0.0.0:%d,[::]:%d", port, port)
	}
	if h.Addr.Is6() {
		return fmt.Sprintf("[::]:%d", port)
	}
	return fmt.Sprintf("0.0.0.0:%d", port)
}

// tokenFile is the path of the daemons' API token file (apiToken); Setup
// writes it.
func (e *Env) tokenFile() string { return filepath.Join(e.Dir, "api.token") }

func waitOutput(ctx context.Context, p *Proc, s string, d time.Duration) error {
	deadline := time.Now().Add(d)
	for !strings.Contains(p.Output(), s) {
		select {
		case <-p.Done():
			return fmt.Errorf("exited: %w", p.Err())
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("no %q after %v", s, d)
		}
	}
	return nil
}

// Setup builds nothing: it starts the bootstraps and every host's daemon
// on a built testbed and waits (bounded) for them to register.
func Setup(ctx context.Context, tb *Testbed, spec Spec, bin, dir, logDir string, progress io.Writer) (*Env, error) {
	e := &Env{TB: tb, Spec: spec, Bin: bin, Dir: dir, Daemons: map[string]*Proc{}, PeerIDs: map[string]string{}, Progress: progress, LogDir: logDir}
	var addrs, addrs6 []string
	for i := range 2 {
		id, err := e.keyID(ctx, fmt.Sprintf("bootstrap%d", i))
		if err != nil {
			return nil, err
		}
		e.bootIDs = append(e.bootIDs, id)
		addrs = append(addrs, fmt.Sprintf("%s@%s:4433", id, ServerAddr(i+1)))
		addrs6 = append(addrs6, fmt.Sprintf("%s@[%s]:4433", id, ServerAddr6(i+1)))
	}
	e.BootstrapAddrs, e.BootstrapAddrs6 = strings.Join(addrs, ","), strings.Join(addrs6, ",")
	if err := os.WriteFile(e.tokenFile(), []byte(apiToken+"\n"), 0o600); err != nil {
		return nil, fmt.Errorf("testnet: API token: %w", err)
	}
	for i := range 2 {
		p, err := e.StartBootstrap(ctx, i)
		if err != nil {
			return nil, err
		}
		e.Bootstraps = append(e.Bootstraps, p)
	}
	for _, h := range tb.Hosts {
		id, err := e.keyID(ctx, h.NS)
		if err != nil {
			return nil, err
		}
		e.PeerIDs[h.NS] = id
		p, err := e.StartDaemon(h)
		if err != nil {
			return nil, err
		}
		e.Daemons[h.NS] = p
	}
	// Wait for registration (over TCP where UDP is blocked) and NAT
	// classification.
	for _, h := range tb.Hosts {
		if err := waitOutput(ctx, e.Daemons[h.NS], "bootstrap up", 10*time.Second); err != nil {
			e.logf("warning: daemon %s (%s) not registered: %v", h.NS, h.Class, err)
		}
		if err := waitOutput(ctx, e.Daemons[h.NS], "nat type", 10*time.Second); err != nil {
			e.logf("warning: daemon %s (%s) did not classify its NAT: %v", h.NS, h.Class, err)
		}
	}
	return e, nil
}

// Connect runs `antnode connect` from host `from` to the daemon of `to`.
func (e *Env) Connect(ctx context.Context, from, to Host, send int64, timeout time.Duration, extra ...string) ConnectResult {
	args := append([]string{e.Bin, "connect", e.PeerIDs[to.NS], "--json", "--listen", listenOn(from, 0)}, e.reachArgs(from)...)
	args = append(args, "--send", fmt.Sprint(send), "--timeout", timeout.String())
	args = append(args, e.logArgs("")...)
	args = append(args, extra...)
	cctx, cancel := context.WithTimeout(ctx, timeout+10*time.Second)
	defer cancel()
	out, stderr, err := e.TB.RunBoth(cctx, from.NS, args...)
	// Every connect's log, failed or not: a slow one is worth reading too.
	e.keepLog(fmt.Sprintf("connect-%s-to-%s", from.NS, to.NS), stderr)
	var res ConnectResult
	if jerr := json.Unmarshal([]byte(strings.TrimSpace(out)), &res); jerr != nil {
		res = ConnectResult{Path: "none", Reason: "crash", Error: fmt.Sprintf("no JSON result (%v): %q", err, tail(out, 300))}
		var ce *CommandError
		if errors.As(err, &ce) {
			res.Error += " stderr: " + tail(ce.Output, 300)
			if cctx.Err() != nil && ctx.Err() == nil {
				// It outlived its own --timeout: a hang. Its goroutines
				// (SIGQUIT) go to a file and their gist to stderr.
				res.Reason = "hung"
				res.Error = e.saveHang(from, ce.Output) + res.Error
			}
		}
	}
	return res
}

// saveHang writes the goroutine dump of a connect that hung to the log
// directory (or the working directory), prints the goroutines that are in
// antnode's own code to stderr, and returns a note naming the file.
func (e *Env) saveHang(from Host, dump string) string {
	dir := e.LogDir
	if dir == "" {
		dir = "."
	}
	os.MkdirAll(dir, 0o755)
	name := filepath.Join(dir, fmt.Sprintf("hang-%s-%d.log", from.NS, time.Now().UnixNano()))
	if err := os.WriteFile(name, []byte(dump), 0o644); err != nil {
		name = "(not saved: " + err.Error() + ")"
	}
	fmt.Fprintf(os.Stderr, "HANG: a connect from %s outlived its timeout; goroutines in %s; ours:\n", from.NS, name)
	shown := 0
	for _, g := range strings.Split(dump, "\n\n") {
		if shown < 40 && strings.HasPrefix(g, "goroutine ") && strings.Contains(g, "antnode/") {
			fmt.Fprintln(os.Stderr, tail(g, 1500))
			shown++
		}
	}
	return "goroutines in " + name + ": "
}

func tail(s string, n int) string {
	if len(s) > n {
		return s[len(s)-n:]
	}
	return s
}

// SaveLogs writes every daemon's and bootstrap's output to dir, and the
// log of every apdm-portmap router's miniupnpd.
func (e *Env) SaveLogs(dir string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	for i, p := range e.Bootstraps {
		os.WriteFile(filepath.Join(dir, fmt.Sprintf("bootstrap%d.log", i)), []byte(p.Output()), 0o644)
	}
	for ns, p := range e.Daemons {
		os.WriteFile(filepath.Join(dir, ns+".log"), []byte(p.Output()), 0o644)
	}
	return e.TB.SavePortmapLogs(dir)
}

// Close stops the daemons and bootstraps (the testbed's Close would too).
func (e *Env) Close() {
	var wg sync.WaitGroup
	for _, p := range e.Daemons {
		wg.Add(1)
		go func() { defer wg.Done(); p.Stop(2 * time.Second) }()
	}
	for _, p := range e.Bootstraps {
		wg.Add(1)
		go func() { defer wg.Done(); p.Stop(2 * time.Second) }()
	}
	wg.Wait()
}

func percentile(xs []float64, p float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	s := slices.Clone(xs)
	sort.Float64s(s)
	i := int(math.Ceil(p/100*float64(len(s)))) - 1
	i = max(0, min(i, len(s)-1))
	return math.Round(s[i]*10) / 10
}

// Run builds the testbed, verifies it, runs the matrix and the scenarios,
// tears everything down and returns the report. A testbed whose routers
// do not behave as their classes say is not used: Run then returns the
// report (with the measurements) and an error.
func Run(ctx context.Context, cfg RunConfig) (*Report, error) {
	started := time.Now()
	cfg, spec, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	dir := cfg.WorkDir
	if dir == "" {
		if dir, err = os.MkdirTemp("", "antnode-testbed-"); err != nil {
			return nil, err
		}
		defer os.RemoveAll(dir)
	}
	rep := newReport(started, cfg.Commit, spec)
	progress := cfg.Progress
	if progress == nil {
		progress = io.Discard
	}
	fmt.Fprintf(progress, "building testbed %s: %d sites\n", spec.Prefix, len(spec.Sites))
	tb, err := Build(ctx, spec)
	if err != nil {
		return rep, err
	}
	defer func() {
		if tb != nil {
			rep.TeardownMS = ms(tb.Close())
		}
	}()
	rep.BuildMS = ms(tb.BuildTime)
	rep.Namespaces = len(tb.Namespaces)
	if err := verifyTestbed(ctx, tb, spec, rep, progress); err != nil {
		if cfg.LogDir != "" {
			tb.SavePortmapLogs(cfg.LogDir)
		}
		return rep, err
	}
	env, err := Setup(ctx, tb, spec, cfg.Bin, dir, cfg.LogDir, progress)
	if err != nil {
		return rep, err
	}
	env.Timeout = cfg.Timeout
	env.SoakFor = cfg.SoakFor
	defer env.Close()

	pairs := tb.Pairs(spec, cfg.Classes)
	base, cerr := env.ScrapeCounters(ctx)
	results := env.runMatrix(ctx, cfg, pairs, progress)
	if ctx.Err() != nil {
		return rep, ctx.Err()
	}
	rep.Counters = env.checkCounters(ctx, base, cerr, results)
	if !rep.Counters.Agree {
		rep.Unmet = append(rep.Unmet, "counters: "+rep.Counters.Detail)
	}
	fmt.Fprintf(progress, "counters: %d connects, %d connected; the nodes counted %+v; agree=%v\n",
		rep.Counters.Connects, rep.Counters.Connected, rep.Counters.Counters, rep.Counters.Agree)
	rep.judgeAntnodeNAT(spec, natSeen(pairs, results), cfg.Expect.NATExempt)
	for i, p := range pairs {
		rep.AddPair(p, results[i], cfg.Expect.ForPair(p))
	}
	rep.runScenarios(ctx, env, cfg.Scenarios, progress)
	if cfg.Keep {
		fmt.Fprintf(progress, "keeping the testbed up (prefix %s); enter a host with: ip netns exec %sh0a bash; Ctrl-C to tear down\n", spec.Prefix, spec.Prefix)
		<-ctx.Done()
	}
	env.Close()
	if cfg.LogDir != "" {
		env.SaveLogs(cfg.LogDir)
	}
	rep.TeardownMS = ms(tb.Close())
	tb = nil
	rep.DurationS = math.Round(time.Since(started).Seconds()*10) / 10
	return rep, nil
}

// withDefaults checks cfg, fills in the defaults of its zero fields (see
// RunConfig) and validates its spec and scenarios. It returns cfg so
// filled and the validated spec.
func (cfg RunConfig) withDefaults() (RunConfig, Spec, error) {
	if cfg.Bin == "" {
		return cfg, Spec{}, errors.New("testnet: RunConfig.Bin is required")
	}
	if cfg.Runs <= 0 {
		cfg.Runs = 3
	}
	if cfg.BirthdayRuns <= 0 {
		cfg.BirthdayRuns = 10
	}
	if cfg.Send <= 0 {
		cfg.Send = 1 << 20
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = 15 * time.Second
	}
	if cfg.Parallel <= 0 {
		cfg.Parallel = 6
	}
	if cfg.Spec.Prefix == "" {
		cfg.Spec.Prefix = DefaultPrefix()
	}
	spec, err := cfg.Spec.Validate()
	if err != nil {
		return cfg, Spec{}, err
	}
	for _, n := range cfg.Scenarios {
		if _, ok := Scenarios()[n]; !ok {
			return cfg, Spec{}, fmt.Errorf("testnet: unknown scenario %q (have %s)", n, strings.Join(ScenarioNames(), ", "))
		}
	}
	return cfg, spec, nil
}

// newReport returns an empty report of a run of spec started at started
// on commit.
func newReport(started time.Time, commit string, spec Spec) *Report {
	return &Report{Started: started.UTC().Format(time.RFC3339), Commit: commit,
		Link:       LinkReport{DelayMS: float64(spec.Link.Delay.Microseconds()) / 1000, LossPct: spec.Link.Loss},
		NATClasses: map[string]Measured{}, Sites: map[string]Measured{}, Pairs: []PairReport{}, Scenarios: []ScenarioResult{}, Unmet: []string{}}
}

// verifyTestbed measures how tb's routers behave and records it in rep,
// per site and per class (a class keeps a site that failed verification,
// if any). It returns an error if the testbed does not behave as spec
// says, else prints each site's measurement.
func verifyTestbed(ctx context.Context, tb *Testbed, spec Spec, rep *Report, progress io.Writer) error {
	fmt.Fprintf(progress, "built %d namespaces in %.0f ms; verifying NAT behaviour\n", len(tb.Namespaces), rep.BuildMS)
	meas, verr := tb.Verify(ctx, spec)
	for _, s := range spec.Sites {
		m := meas[s.Name]
		rep.Sites[s.Name] = m
		prev, seen := rep.NATClasses[string(s.Class)]
		if !seen || (prev.Verified && !m.Verified) {
			rep.NATClasses[string(s.Class)] = m
		}
	}
	if verr != nil {
		return fmt.Errorf("testnet: the testbed does not behave as specified; refusing to run: %w", verr)
	}
	for _, s := range spec.Sites {
		m := rep.Sites[s.Name]
		fmt.Fprintf(progress, "  %-14s %-12s mapping %-5s filtering %-8s verified\n", s.Name, s.Class, m.Mapping, m.Filtering)
		if m.Portmap != "" {
			fmt.Fprintf(progress, "  %-14s %-12s port mapping answered: %s\n", s.Name, s.Class, m.Portmap)
		}
	}
	return nil
}

// matrixJob is one connect of the matrix: run number run of pairs[pair],
// in phase phase.
type matrixJob struct {
	pair  int
	run   int
	phase int
}

// matrixJobs lists the matrix's connects: runs per pair, or birthdayRuns
// if more for a pair that needs the birthday search or races the address
// families (PairSpec.Races), in three phases
// (runMatrix starts each when the one before has ended): the pairs of
// IPv4 classes; then those with an IPv6-only class; then the birthday
// pairs. A birthday search sends thousands of probes from hundreds of
// sockets, and the user-space delay of every link then queues the
// packets of the connects beside it. Measured in a full matrix: 19 of 75
// EIM connects run beside the searches took 146 to 175 ms instead of 130
// (their round-trip bound is 1.8, about 150 ms). The IPv6-only classes'
// pairs with IPv4 ones run relay to relay, a verified transfer each
// through the relay's user-space forwarding: beside them, in one CI
// matrix, 12 of 75 EIM connects took 177 to 220 ms and four pairs'
// medians went over 1.8.
//
// Within a phase the runs go round by round (every pair's first run, then
// every pair's second, ...), not pair by pair: a pair's runs are then far
// apart in time, and a stretch of slow links (a busy host) reaches at most
// one run of each pair, which its median rides out. Pair by pair, one CI
// matrix had every connect from one host for 20 s at 140 to 210 ms
// instead of 130, and a pair's median over its bound of 1.8 (1.83): all
// three of its runs were in that stretch.
func matrixJobs(pairs []PairSpec, runs, birthdayRuns int) []matrixJob {
	var phases [3][]matrixJob
	for r := range max(runs, birthdayRuns) {
		for i, p := range pairs {
			n, phase := runs, 0
			switch {
			case p.NeedsBirthday():
				n, phase = max(runs, birthdayRuns), 2
			case p.Races():
				n = max(runs, birthdayRuns)
			case p.A.IPv6Only() || p.B.IPv6Only():
				phase = 1
			}
			if r < n {
				phases[phase] = append(phases[phase], matrixJob{pair: i, run: r, phase: phase})
			}
		}
	}
	return slices.Concat(phases[:]...)
}

// runMatrix runs the matrix's connects over pairs, cfg.Parallel at a time,
// printing each as it ends, and returns each pair's results (in the order
// they ended). It starts no more once ctx ends.
func (e *Env) runMatrix(ctx context.Context, cfg RunConfig, pairs []PairSpec, progress io.Writer) [][]ConnectResult {
	jobs := matrixJobs(pairs, cfg.Runs, cfg.BirthdayRuns)
	results := make([][]ConnectResult, len(pairs))
	var mu sync.Mutex
	done := 0
	sem := make(chan struct{}, cfg.Parallel)
	var wg sync.WaitGroup
	fmt.Fprintf(progress, "running %d connects over %d pairs, %d at a time\n", len(jobs), len(pairs), cfg.Parallel)
	phase := 0
	for _, j := range jobs {
		if ctx.Err() != nil {
			break
		}
		if j.phase != phase {
			wg.Wait() // a phase starts when the one before has ended
			phase = j.phase
		}
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			p := pairs[j.pair]
			res := e.Connect(ctx, p.From, p.To, cfg.Send, cfg.Timeout)
			mu.Lock()
			results[j.pair] = append(results[j.pair], res)
			done++
			what := res.Path
			if !res.Connected {
				what = "FAIL " + res.Reason
			}
			fmt.Fprintf(progress, "[%3d/%d] %-32s run %2d: %-24s %7.1f ms\n", done, len(jobs), p.Key(), j.run+1, what, res.TimeToConnect)
			mu.Unlock()
		}()
	}
	wg.Wait()
	return results
}

// natSeen counts, per site, the NAT types antnode measured in the connects
// made from there ("unknown" when it reported none).
func natSeen(pairs []PairSpec, results [][]ConnectResult) map[string]map[string]int {
	seen := map[string]map[string]int{}
	for i, p := range pairs {
		for _, r := range results[i] {
			if seen[p.From.Site] == nil {
				seen[p.From.Site] = map[string]int{}
			}
			nat := r.NAT
			if nat == "" {
				nat = "unknown"
			}
			seen[p.From.Site][nat]++
		}
	}
	return seen
}

// mostSeen returns the NAT type counted most (the first by name of a tie).
func mostSeen(counts map[string]int) string {
	var got string
	for nat, n := range counts {
		if got == "" || n > counts[got] || (n == counts[got] && nat < got) {
			got = nat
		}
	}
	return got
}

// judgeAntnodeNAT records, per site and per class, what antnode measured
// at each site (seen, from natSeen) and whether it agrees with the site's
// class; a site that disagrees, unless its class is exempt, is unmet.
func (r *Report) judgeAntnodeNAT(spec Spec, seen map[string]map[string]int, exempt []Class) {
	for _, s := range spec.Sites {
		counts := seen[s.Name]
		if len(counts) == 0 {
			continue
		}
		got := mostSeen(counts)
		agrees := len(counts) == 1 && got == s.Class.AntnodeClass()
		m := r.Sites[s.Name]
		m.Antnode, m.AntnodeAgrees, m.AntnodeSeen = got, &agrees, counts
		r.Sites[s.Name] = m
		cm := r.NATClasses[string(s.Class)]
		if cm.Antnode == "" || !agrees {
			cm.Antnode, cm.AntnodeAgrees = got, &agrees
			r.NATClasses[string(s.Class)] = cm
		}
		if !agrees && !slices.Contains(exempt, s.Class) {
			r.Unmet = append(r.Unmet, fmt.Sprintf("site %s (%s): antnode measured %v, want %s", s.Name, s.Class, counts, s.Class.AntnodeClass()))
		}
	}
}

// runScenarios runs the named scenarios one after the other on env and
// adds their results, with the tunnels each measured, to the report.
func (r *Report) runScenarios(ctx context.Context, env *Env, names []string, progress io.Writer) {
	for _, name := range names {
		fmt.Fprintf(progress, "scenario %s ...\n", name)
		env.tunnels = nil
		start := time.Now()
		ok, detail := Scenarios()[name](ctx, env)
		took := math.Round(time.Since(start).Seconds()*10) / 10
		r.Scenarios = append(r.Scenarios, ScenarioResult{Name: name, OK: ok, Detail: detail, DurationS: took, Tunnels: env.tunnels})
		fmt.Fprintf(progress, "scenario %s: ok=%v (%.1f s) %s\n", name, ok, took, detail)
	}
}

func ms(d time.Duration) float64 { return math.Round(float64(d.Microseconds())/100) / 10 }

// AddPair judges a pair's runs against its expectation e (from
// Expectations.ForPair), adds the pair's line to the report and, when it
// falls short, a line to Unmet; it returns the pair's line.
func (r *Report) AddPair(p PairSpec, rs []ConnectResult, e Expectation) PairReport {
	pr, unmet := judge(p, rs, e)
	if unmet != "" {
		r.Unmet = append(r.Unmet, unmet)
	}
	r.Pairs = append(r.Pairs, pr)
	return pr
}

// judge summarizes a pair's runs and checks them against its expectation
// e (from Expectations.ForPair). It returns the pair's report line and,
// when the pair falls short, its line for Report.Unmet (else "").
func judge(p PairSpec, rs []ConnectResult, e Expectation) (PairReport, string) {
	pr := summarize(p, rs, e)
	pr.Expect = e.String()
	short := e.Check(pr)
	if d := familyShortfall(p, rs); d != "" {
		short = append(short, Shortfall{Kind: ShortFamily, Detail: d})
	}
	pr.Met = len(short) == 0
	if pr.Met {
		return pr, ""
	}
	details := make([]string, len(short))
	for i, s := range short {
		details[i] = s.Detail
	}
	return pr, p.Key() + ": " + strings.Join(details, "; ")
}

// familyShortfall says how the connected runs of a pair did not connect
// from the family of its first host's class: an IPv6-only class's node
// from IPv6, and a v6-nat64 one through the testbed's NAT64 prefix (its
// connects to IPv4 hosts would otherwise have been impossible, so this
// says the node found the prefix); a dual-stack one from IPv6 to
// v6-firewall (the one family in common), from IPv6 in at least half the
// runs to another dual-stack host (the race's preferred family: a lost
// IPv6 check lets IPv4 win a run, and the report says so), from either
// to v6-nat64 (which reaches both), from IPv4 to the others; every other
// from IPv4 without a prefix. Empty: all did. It is a pure function.
func familyShortfall(p PairSpec, rs []ConnectResult) string {
	want, wantNAT64 := "ipv4", ""
	switch {
	case p.A.IPv6Only(), p.A == ClassDualStack && p.B.IPv6Only() && p.B != ClassV6NAT64:
		want = "ipv6"
	case p.A == ClassDualStack && p.B == ClassV6NAT64:
		want = "" // both families are in common: either may win
	case p.A == ClassDualStack && p.B == ClassDualStack:
		return raceShortfall(rs)
	}
	if p.A == ClassV6NAT64 {
		wantNAT64 = NAT64Prefix
	}
	for i, r := range rs {
		if r.Connected && ((want != "" && r.Family != want) || r.NAT64 != wantNAT64) {
			return fmt.Sprintf("run %d connected over %q with NAT64 %q, want %s with %q", i+1, r.Family, r.NAT64, want, wantNAT64)
		}
	}
	return ""
}

// raceShortfall says how the connected runs of a dual-stack pair fell
// short of a race: every run reports ipv4 or ipv6, without NAT64, and
// IPv6 won at least half of them.
func raceShortfall(rs []ConnectResult) string {
	n, v6 := 0, 0
	for i, r := range rs {
		if !r.Connected {
			continue
		}
		if (r.Family != "ipv4" && r.Family != "ipv6") || r.NAT64 != "" {
			return fmt.Sprintf("run %d connected over %q with NAT64 %q, want ipv4 or ipv6 without", i+1, r.Family, r.NAT64)
		}
		n++
		if r.Family == "ipv6" {
			v6++
		}
	}
	if 2*v6 < n {
		return fmt.Sprintf("IPv6 won %d of %d runs, want at least half", v6, n)
	}
	return ""
}

// summarize builds a pair's report line from its runs: counts by path,
// failures by reason (with one sample error each), time-to-connect and RTT
// percentiles of the connected runs, and, when e has a time (Within), the
// runs that reached e's level within it.
func summarize(p PairSpec, rs []ConnectResult, e Expectation) PairReport {
	pr := PairReport{A: p.A, B: p.B, Topology: p.Topology, Runs: len(rs), Failures: map[string]int{}}
	var ttc, rtt []float64
	seen := map[string]bool{}
	if e.Within > 0 {
		n := 0
		for _, r := range rs {
			if reached(e.Level, r) && r.TimeToConnect <= float64(e.Within)/float64(time.Millisecond) {
				n++
			}
		}
		pr.InTime = &n
	}
	for _, r := range rs {
		if r.Connected && r.Error == "" {
			pr.Connected++
			switch r.Path {
			case "direct":
				pr.Direct++
			case "relay":
				pr.Relay++
			}
			ttc = append(ttc, r.TimeToConnect)
			rtt = append(rtt, r.RTT)
			pr.BytesVerified += r.BytesVerified
			if r.Family != "" {
				if pr.Families == nil {
					pr.Families = map[string]int{}
				}
				pr.Families[r.Family]++
			}
			continue
		}
		reason := r.Reason
		if reason == "" {
			reason = "unknown"
		}
		pr.Failures[reason]++
		if !seen[reason] {
			seen[reason] = true
			pr.Errors = append(pr.Errors, reason+": "+r.Error)
		}
	}
	pr.P50, pr.P95, pr.RTTP50 = percentile(ttc, 50), percentile(ttc, 95), percentile(rtt, 50)
	if pr.P50 > 0 && pr.RTTP50 > 0 {
		pr.RTTsP50 = math.Round(pr.P50/pr.RTTP50*100) / 100
	}
	return pr
}

// Table renders the pair results as a text table.
func (r *Report) Table() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%-34s %5s %5s %5s %5s %9s %9s %6s  %-24s %s\n", "pair (a/b@topology)", "runs", "conn", "dir", "relay", "p50 ms", "p95 ms", "rtts", "expect", "failures")
	for _, p := range r.Pairs {
		key := string(p.A) + "/" + string(p.B)
		if p.Topology != TopoDifferent {
			key += "@" + p.Topology
		}
		var fails []string
		for k, v := range p.Failures {
			fails = append(fails, fmt.Sprintf("%s:%d", k, v))
		}
		sort.Strings(fails)
		mark := ""
		if !p.Met {
			mark = " UNMET"
		}
		fmt.Fprintf(&b, "%-34s %5d %5d %5d %5d %9.1f %9.1f %6.2f  %-24s %s%s\n", key, p.Runs, p.Connected, p.Direct, p.Relay, p.P50, p.P95, p.RTTsP50, p.Expect, strings.Join(fails, " "), mark)
	}
	for _, s := range r.Scenarios {
		fmt.Fprintf(&b, "scenario %-24s ok=%-5v %6.1f s  %s\n", s.Name, s.OK, s.DurationS, s.Detail)
	}
	return b.String()
}
