package testnet

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base32"
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"time"
)

// The diagnostics scenarios: each injects one fault and checks that the
// node's own diagnosis (/api/v1/diagnostics, or `antnode diagnose`) names
// it.

// apiURL is a daemon's monitoring surface inside its namespace.
func apiURL(path string) string { return fmt.Sprintf("http://127.0.0.1:%d%s", metricsPort, path) }

// apiToken is the peer daemons' API token (--metrics-token-file): POST
// /api/v1/connect is off without one. It guards nothing here but the
// rule; every curl of the testbed sends it (a node without a token
// ignores it).
const apiToken = "testbed-api-token-0123456789abcdef"

// apiAuth is curl's arguments that send apiToken.
func apiAuth() []string { return []string{"-H", "Authorization: Bearer " + apiToken} }

// diagFinding is the part of a finding the scenarios read.
type diagFinding struct {
	Cause      string  `json:"cause"`
	Scope      string  `json:"scope"`
	Severity   string  `json:"severity"`
	Confidence float64 `json:"confidence"`
	Summary    string  `json:"summary"`
}

// diagnostics reads a daemon's findings.
func (e *Env) diagnostics(ctx context.Context, ns string) ([]diagFinding, error) {
	out, err := runIn(ctx, ns, append(append([]string{"curl", "-sf", "--max-time", "5"}, apiAuth()...), apiURL("/api/v1/diagnostics"))...)
	if err != nil {
		return nil, err
	}
	var rep struct {
		Findings []diagFinding `json:"findings"`
	}
	if err := json.Unmarshal([]byte(out), &rep); err != nil {
		return nil, fmt.Errorf("testnet: diagnostics of %s: %w", ns, err)
	}
	return rep.Findings, nil
}

// waitFinding polls a daemon's diagnostics until a finding of cause (and
// scope, if not empty) shows, for at most d.
func (e *Env) waitFinding(ctx context.Context, ns, cause, scope string, d time.Duration) (diagFinding, bool, string) {
	deadline := time.Now().Add(d)
	var last []diagFinding
	for time.Now().Before(deadline) && ctx.Err() == nil {
		fs, err := e.diagnostics(ctx, ns)
		if err == nil {
			last = fs
			for _, f := range fs {
				if f.Cause == cause && (scope == "" || f.Scope == scope) {
					return f, true, ""
				}
			}
		}
		time.Sleep(500 * time.Millisecond)
	}
	var seen []string
	for _, f := range last {
		seen = append(seen, f.Cause+"("+f.Scope+")")
	}
	return diagFinding{}, false, "findings: " + strings.Join(seen, ", ")
}

func named(f diagFinding) string {
	return fmt.Sprintf("diagnosis names %s (%s, %s, confidence %.2f)", f.Cause, f.Scope, f.Severity, f.Confidence)
}

// apiConnect asks a daemon to connect to another (POST /api/v1/connect).
func (e *Env) apiConnect(ctx context.Context, from Host, peerID string, send int64) (string, error) {
	return runIn(ctx, from.NS, append(append([]string{"curl", "-s", "--max-time", "70", "-X", "POST"}, apiAuth()...),
		apiURL(fmt.Sprintf("/api/v1/connect?peer=%s&send=%d", peerID, send)))...)
}

// randomPeerID is a well-formed peer ID nobody has.
func randomPeerID() string {
	pub, _, _ := ed25519.GenerateKey(rand.Reader)
	return strings.ToLower(base32.StdEncoding.WithPadding(base32.NoPadding).EncodeToString(pub))
}

func scenarioDiagBootstrapDown(ctx context.Context, e *Env) (bool, string) {
	h, ok := e.firstHost(ClassPublic, 0)
	if !ok {
		return false, "needs a public site"
	}
	e.Bootstraps[1].Cmd.Process.Kill()
	<-e.Bootstraps[1].Done()
	defer e.restartBootstrap(context.WithoutCancel(ctx), 1)
	f, ok, seen := e.waitFinding(ctx, h.NS, "bootstrap_unreachable", "bootstrap 1", 30*time.Second)
	if !ok {
		return false, "bootstrap 1 killed; " + seen
	}
	return true, "bootstrap 1 killed; " + named(f)
}

func scenarioDiagUDPBlocked(ctx context.Context, e *Env) (bool, string) {
	h, ok := e.firstHost(ClassUDPBlocked, 0)
	if !ok {
		return false, "needs a udp-blocked site"
	}
	f, ok, seen := e.waitFinding(ctx, h.NS, "udp_blocked", "", 15*time.Second)
	if !ok {
		return false, seen
	}
	out, err := e.TB.Run(ctx, h.NS, e.Bin, "diagnose", "--bootstrap-nodes", e.BootstrapAddrs, "--json", "--portmap", "off")
	var rep struct {
		NAT      struct{ Class string } `json:"nat"`
		Findings []diagFinding          `json:"findings"`
	}
	if jerr := json.Unmarshal([]byte(out), &rep); jerr != nil {
		return false, fmt.Sprintf("antnode diagnose: %v %v", err, tail(out, 200))
	}
	for _, df := range rep.Findings {
		if df.Cause == "udp_blocked" {
			return true, named(f) + "; antnode diagnose too (NAT class " + rep.NAT.Class + ")"
		}
	}
	return false, named(f) + "; but antnode diagnose did not: " + fmt.Sprint(rep.Findings)
}

func scenarioDiagBothSymmetric(ctx context.Context, e *Env) (bool, string) {
	a, ok1 := e.firstHost(ClassAPDM, 0)
	b, ok2 := e.firstHost(ClassAPDM, 1)
	if !ok1 || !ok2 {
		return false, "needs two apdm sites"
	}
	out, err := e.apiConnect(ctx, a, e.PeerIDs[b.NS], 64<<10)
	if err != nil || !strings.Contains(out, `"connected": true`) {
		var res ConnectResult
		if json.Unmarshal([]byte(out), &res) == nil {
			return false, fmt.Sprintf("the API connect failed in %s: %s: %s (path %s, %d bytes verified)",
				res.Phase, res.Reason, res.Error, res.Path, res.BytesVerified)
		}
		return false, fmt.Sprintf("the API connect failed: %v %s", err, tail(out, 300))
	}
	f, ok, seen := e.waitFinding(ctx, a.NS, "both_symmetric", "", 10*time.Second)
	if !ok {
		return false, seen
	}
	return true, "apdm to apdm through the relay; " + named(f)
}

func scenarioDiagUnknownPeer(ctx context.Context, e *Env) (bool, string) {
	a, ok := e.firstHost(ClassEIMEIF, 0)
	if !ok {
		return false, "needs an eim-eif site"
	}
	out, _ := e.apiConnect(ctx, a, randomPeerID(), 0)
	if !strings.Contains(out, "peer_not_registered") {
		return false, "the API connect's diagnosis: " + tail(out, 300)
	}
	f, ok, seen := e.waitFinding(ctx, a.NS, "peer_not_registered", "", 10*time.Second)
	if !ok {
		return false, seen
	}
	return true, "connect to an unregistered ID; " + named(f)
}

func scenarioDiagWrongKey(ctx context.Context, e *Env) (bool, string) {
	a, ok := e.firstHost(ClassEIMADF, 0)
	if !ok {
		return false, "needs an eim-adf site"
	}
	wrong := randomPeerID() + "@" + ServerAddr(1).String() + ":4433"
	out, _ := e.TB.Run(ctx, a.NS, e.Bin, "diagnose", "--bootstrap-nodes", wrong, "--json", "--timeout", "20s", "--portmap", "off")
	var rep struct {
		Findings []diagFinding `json:"findings"`
	}
	if err := json.Unmarshal([]byte(out), &rep); err != nil {
		return false, fmt.Sprintf("antnode diagnose: %v: %s", err, tail(out, 300))
	}
	if len(rep.Findings) == 0 || rep.Findings[0].Cause != "key_mismatch" {
		return false, fmt.Sprintf("antnode diagnose found %+v", rep.Findings)
	}
	return true, "bootstrap configured with another key; antnode diagnose " + named(rep.Findings[0])
}

func scenarioDiagMappingExpiry(ctx context.Context, e *Env) (bool, string) {
	h, ok := e.firstHost(ClassAPDM, 0)
	if !ok {
		return false, "needs an apdm site"
	}
	if err := e.TB.SetUDPTimeout(ctx, h.Site, 5); err != nil {
		return false, err.Error()
	}
	defer e.TB.SetUDPTimeout(context.WithoutCancel(ctx), h.Site, 120)
	f, ok, seen := e.waitFinding(ctx, h.NS, "mapping_expired", "", 60*time.Second)
	if !ok {
		return false, "5 s UDP timeout on a symmetric NAT; " + seen
	}
	return true, "5 s UDP timeout on a symmetric NAT; " + named(f)
}

func scenarioDiagRelayQuota(ctx context.Context, e *Env) (bool, string) {
	a, ok := e.firstHost(ClassEIMAPDF, 0)
	if !ok {
		return false, "needs an eim-apdf site"
	}
	e.Bootstraps[0].Stop(2 * time.Second)
	p, err := e.StartBootstrap(ctx, 0, "--relay-max-allocations", "1")
	if err != nil {
		return false, err.Error()
	}
	e.Bootstraps[0] = p
	defer func() {
		e.Bootstraps[0].Stop(2 * time.Second)
		e.restartBootstrap(context.WithoutCancel(ctx), 0)
	}()
	boot0 := strings.Split(e.BootstrapAddrs, ",")[0]
	out, _ := e.TB.Run(ctx, a.NS, e.Bin, "diagnose", "--bootstrap-nodes", boot0, "--json", "--timeout", "20s", "--portmap", "off")
	var rep struct {
		Findings []diagFinding `json:"findings"`
	}
	if err := json.Unmarshal([]byte(out), &rep); err != nil {
		return false, fmt.Sprintf("antnode diagnose: %v: %s", err, tail(out, 300))
	}
	for _, f := range rep.Findings {
		if f.Cause == "relay_quota" {
			return true, "relay quota of one allocation per peer; antnode diagnose " + named(f)
		}
	}
	return false, fmt.Sprintf("antnode diagnose found %+v", rep.Findings)
}

func scenarioDiagBlackhole(ctx context.Context, e *Env) (bool, string) {
	a, ok1 := e.firstHost(ClassEIMAPDF, 0)
	b, ok2 := e.firstHost(ClassCGNAT, 0)
	if !ok1 || !ok2 {
		return false, "needs an eim-apdf and a cgnat site"
	}
	defer e.TB.SetDirectBlocked(context.WithoutCancel(ctx), a.Site, false)
	// The transfer's start is the API request's (2 s of it on clean links).
	plan := e.bulkPlan(96<<20, 2*time.Second, lossyBulkSize)
	base, err := TxBytes(a.NS)
	if err != nil {
		return false, err.Error()
	}
	p, err := e.TB.Start(a.NS, append(append([]string{"curl", "-s", "--max-time", "70", "-X", "POST"}, apiAuth()...),
		apiURL(fmt.Sprintf("/api/v1/connect?peer=%s&send=%d", e.PeerIDs[b.NS], plan.Size)))...)
	if err != nil {
		return false, err.Error()
	}
	defer p.Stop(time.Second)
	sent, err := awaitFault(ctx, p, a.NS, base, plan)
	if err != nil {
		return false, "before the blackhole: " + err.Error()
	}
	if err := e.TB.SetDirectBlocked(ctx, a.Site, true); err != nil {
		return false, err.Error()
	}
	mid, note := midTransfer(sent, plan.Size)
	f, ok, seen := e.waitFinding(ctx, a.NS, "path_blackholed", "", 20*time.Second)
	if !ok {
		return false, "direct path blackholed under an API transfer (" + note + "); " + seen
	}
	return mid, "direct path blackholed under an API transfer (" + note + "); " + named(f)
}

// scenarioDiagNATClasses runs `antnode diagnose --json` in every site and
// compares the NAT class it measures with the site's verified class, and
// its port-mapping probe with the router: granted by PCP (auto's first) in
// the apdm-portmap sites, by nothing elsewhere. (The other diag scenarios
// run diagnose with --portmap off: no router of theirs maps, and asking
// would add the probe's wait.)
func scenarioDiagNATClasses(ctx context.Context, e *Env) (bool, string) {
	type result struct {
		site, want, got string
	}
	var mu sync.Mutex
	var results []result
	var wg sync.WaitGroup
	for _, s := range e.Spec.Sites {
		h, ok := e.siteHost(s.Name)
		if !ok {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			args := append([]string{e.Bin, "diagnose", "--listen", listenOn(h, 0), "--json", "--timeout", "30s"}, e.reachArgs(h)...)
			out, _ := e.TB.Run(ctx, h.NS, args...)
			var rep struct {
				NAT     struct{ Class string } `json:"nat"`
				Portmap struct {
					Granted  bool   `json:"granted"`
					Protocol string `json:"protocol"`
				} `json:"portmap"`
			}
			got, want := "error", s.Class.AntnodeClass()
			if json.Unmarshal([]byte(out), &rep) == nil {
				got = rep.NAT.Class
				if rep.Portmap.Granted {
					got += " mapped by " + rep.Portmap.Protocol
				}
			}
			if s.Class == ClassAPDMPortmap {
				want += " mapped by pcp"
			}
			mu.Lock()
			results = append(results, result{s.Name, want, got})
			mu.Unlock()
		}()
	}
	wg.Wait()
	var bad []string
	for _, r := range results {
		if r.got != r.want {
			bad = append(bad, fmt.Sprintf("%s: measured %s, verified %s", r.site, r.got, r.want))
		}
	}
	if len(bad) > 0 {
		return false, strings.Join(bad, "; ")
	}
	return true, fmt.Sprintf("antnode diagnose measured the verified NAT class in all %d sites; PCP mapped a port in the apdm-portmap ones only", len(results))
}

// siteHost returns the first host of a site.
func (e *Env) siteHost(site string) (Host, bool) {
	for _, h := range e.TB.Hosts {
		if h.Site == site && h.Index == 0 {
			return h, true
		}
	}
	return Host{}, false
}
