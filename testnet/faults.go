package testnet

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"
)

// Fault injection on a running testbed: the primitives that the named
// scenarios use.

// FlushConntrack deletes every conntrack entry of the site's routers: the
// NAT forgets its mappings (rebinding).
func (tb *Testbed) FlushConntrack(ctx context.Context, site string) error {
	for _, r := range tb.Routers {
		if r.Site != site {
			continue
		}
		if _, err := runIn(ctx, r.NS, "conntrack", "-F"); err != nil {
			return err
		}
	}
	return nil
}

// SetUDPTimeout makes the site's outer NAT forget idle UDP mappings after
// secs seconds (conntrack timeouts and the ruleset's dynamic maps).
func (tb *Testbed) SetUDPTimeout(ctx context.Context, site string, secs int) error {
	r := tb.RouterOf(site)
	if r == nil {
		return fmt.Errorf("testnet: site %s has no router", site)
	}
	if _, err := runIn(ctx, r.NS, "sysctl", "-q", "-w",
		"net.netfilter.nf_conntrack_udp_timeout="+strconv.Itoa(secs),
		"net.netfilter.nf_conntrack_udp_timeout_stream="+strconv.Itoa(secs)); err != nil {
		return err
	}
	r.Ruleset.Timeout = secs
	return tb.reload(ctx, r)
}

func (tb *Testbed) reload(ctx context.Context, r *Router) error {
	text, err := r.Ruleset.Render()
	if err != nil {
		return err
	}
	return runStdin(ctx, r.NS, text, "nft", "-f", "-")
}

// SetDirectBlocked drops (on) or passes again (off) every UDP packet that
// the site's outer router forwards between the site and anything but the
// server network: peers can still reach the bootstraps and the relay, but
// not each other directly. A dual-stack site's IPv6 UDP is dropped
// altogether (its nodes use the servers' IPv4 addresses).
func (tb *Testbed) SetDirectBlocked(ctx context.Context, site string, on bool) error {
	r := tb.RouterOf(site)
	if r == nil {
		return fmt.Errorf("testnet: site %s has no router", site)
	}
	rule := `meta l4proto udp ip daddr != 203.0.113.0/24 ip saddr != 203.0.113.0/24 counter drop comment "direct blocked"`
	r.Ruleset.Extra = slicesWithout(r.Ruleset.Extra, rule)
	// A dual-stack site's IPv6: all UDP (its nodes reach the bootstraps
	// and relays over IPv4).
	rule6 := `meta l4proto udp counter drop comment "direct blocked"`
	r.Ruleset.Extra6 = slicesWithout(r.Ruleset.Extra6, rule6)
	if on {
		r.Ruleset.Extra = append(r.Ruleset.Extra, rule)
		if r.Ruleset.Firewall6 && !r.Ruleset.v6Only() {
			r.Ruleset.Extra6 = append(r.Ruleset.Extra6, rule6)
		}
	}
	return tb.reload(ctx, r)
}

func slicesWithout(xs []string, x string) []string {
	var out []string
	for _, v := range xs {
		if v != x {
			out = append(out, v)
		}
	}
	return out
}

// ChangeAddress gives a host a new LAN address (its old one disappears), as
// when a laptop gets a new DHCP lease: the NAT then maps it anew. It
// returns the new address.
func (tb *Testbed) ChangeAddress(ctx context.Context, h *Host) (netip.Addr, error) {
	if h.Router == "" {
		return netip.Addr{}, fmt.Errorf("testnet: %s is a public host", h.NS)
	}
	b := h.Addr.As4()
	gw := netip.AddrFrom4([4]byte{b[0], b[1], b[2], 1})
	b[3]++
	next := netip.AddrFrom4(b)
	lines := []string{
		"addr flush dev eth0",
		fmt.Sprintf("addr add %s/24 dev eth0", next),
		fmt.Sprintf("route add default via %s", gw),
	}
	if err := nsBatch(ctx, h.NS, lines); err != nil {
		return netip.Addr{}, err
	}
	h.Addr = next
	return next, nil
}

// SetIPv6 takes a dual-stack host's global IPv6 address away (up false:
// the address and the routes through it go, as when a network's IPv6
// fails) or gives it back with its default route.
func (tb *Testbed) SetIPv6(ctx context.Context, h Host, up bool) error {
	if !h.Addr6.IsValid() {
		return fmt.Errorf("testnet: %s has no IPv6 address of its own", h.NS)
	}
	gw := h.Addr6.As16()
	gw[15] = 1 // the site's router on its /64 (siteLAN6)
	lines := []string{fmt.Sprintf("addr del %s/64 dev eth0", h.Addr6)}
	if up {
		lines = []string{fmt.Sprintf("addr add %s/64 dev eth0 nodad", h.Addr6),
			fmt.Sprintf("route replace ::/0 via %s", netip.AddrFrom16(gw))}
	}
	return nsBatch(ctx, h.NS, lines)
}

// ScenarioFunc runs one named fault scenario on a running testbed.
type ScenarioFunc func(ctx context.Context, e *Env) (ok bool, detail string)

// Scenarios returns the named scenarios the runner knows.
func Scenarios() map[string]ScenarioFunc {
	return map[string]ScenarioFunc{
		"attack":                 scenarioAttack,
		"bootstrap-restart":      scenarioBootstrapRestart,
		"bootstrap-failover":     scenarioBootstrapFailover,
		"network-change":         scenarioNetworkChange,
		"nat-rebinding":          scenarioNATRebinding,
		"birthday-rebinding":     scenarioBirthdayRebinding,
		"mapping-expiry":         scenarioMappingExpiry,
		"relay-upgrade":          scenarioRelayUpgrade,
		"family-upgrade":         scenarioFamilyUpgrade,
		"blackhole":              scenarioBlackhole,
		"family-loss":            scenarioFamilyLoss,
		"family-return":          scenarioFamilyReturn,
		"diag-bootstrap-down":    scenarioDiagBootstrapDown,
		"diag-udp-blocked":       scenarioDiagUDPBlocked,
		"diag-both-symmetric":    scenarioDiagBothSymmetric,
		"diag-unknown-peer":      scenarioDiagUnknownPeer,
		"diag-wrong-key":         scenarioDiagWrongKey,
		"diag-mapping-expiry":    scenarioDiagMappingExpiry,
		"diag-relay-quota":       scenarioDiagRelayQuota,
		"diag-blackhole":         scenarioDiagBlackhole,
		"diag-nat-classes":       scenarioDiagNATClasses,
		"relay-coturn":           scenarioRelayCoturn,
		"soak":                   scenarioSoak,
		"tunnel":                 scenarioTunnel,
		"tunnel-migration":       scenarioTunnelMigration,
		"portmap-pcp":            scenarioPortmap("pcp"),
		"portmap-natpmp":         scenarioPortmap("natpmp"),
		"portmap-upnp":           scenarioPortmap("upnp"),
		"portmap-router-restart": scenarioPortmapRouterRestart,
		"ticket-disjoint":        scenarioTicketDisjoint,
		"dns-bootstrap":          scenarioDNSBootstrap,
		"dns-failover":           scenarioDNSFailover,
		"warm-relay":             scenarioWarmRelay,
	}
}

// ScenarioNames returns the scenario names, sorted.
func ScenarioNames() []string {
	var out []string
	for n := range Scenarios() {
		out = append(out, n)
	}
	sort.Strings(out)
	return out
}

// firstHost returns the first host of the first site of class c.
func (e *Env) firstHost(c Class, skip int) (Host, bool) {
	n := 0
	for _, h := range e.TB.Hosts {
		if h.Class == c && h.Index == 0 {
			if n == skip {
				return h, true
			}
			n++
		}
	}
	return Host{}, false
}

// scenarioBootstrapRestart restarts both bootstraps; the daemons must
// re-register by themselves and a connect through them must then work.
func scenarioBootstrapRestart(ctx context.Context, e *Env) (bool, string) {
	a, ok1 := e.firstHost(ClassEIMEIF, 0)
	b, ok2 := e.firstHost(ClassPublic, 0)
	if !ok1 || !ok2 {
		return false, "needs an eim-eif and a public site"
	}
	for i, p := range e.Bootstraps {
		p.Stop(2 * time.Second)
		np, err := e.StartBootstrap(ctx, i)
		if err != nil {
			return false, err.Error()
		}
		e.Bootstraps[i] = np
	}
	// Each new bootstrap process logs the daemon's registration.
	start := time.Now()
	id := e.PeerIDs[b.NS]
	for !strings.Contains(e.Bootstraps[0].Output(), id) || !strings.Contains(e.Bootstraps[1].Output(), id) {
		if time.Since(start) > 30*time.Second {
			return false, "daemon did not re-register with both bootstraps within 30 s"
		}
		time.Sleep(50 * time.Millisecond)
	}
	rereg := time.Since(start)
	res := e.Connect(ctx, a, b, 64<<10, 15*time.Second)
	if !res.Connected || res.BytesVerified != 64<<10 {
		return false, fmt.Sprintf("re-registered in %v but connect failed: %s %s", rereg.Round(time.Millisecond), res.Reason, res.Error)
	}
	return true, fmt.Sprintf("both bootstraps restarted; daemon re-registered in %v; connect %s in %.0f ms", rereg.Round(time.Millisecond), res.Path, res.TimeToConnect)
}

// DefaultScenarios are the scenarios `make testbed` runs: all but the
// soak, which runs for minutes and only on demand.
func DefaultScenarios() []string {
	return slices.DeleteFunc(ScenarioNames(), func(n string) bool { return n == "soak" })
}

// scenarioBootstrapFailover kills (SIGKILL: no goodbye) the bootstrap a
// peer introduces itself through while it connects again and again: every
// run must still connect, through the other bootstrap, and the dead one's
// circuit breaker must end up open.
func scenarioBootstrapFailover(ctx context.Context, e *Env) (bool, string) {
	a, ok1 := e.firstHost(ClassEIMAPDF, 0)
	b, ok2 := e.firstHost(ClassPublic, 0)
	if !ok1 || !ok2 {
		return false, "needs an eim-apdf and a public site"
	}
	defer e.restartBootstrap(ctx, 0)
	args := []string{e.Bin, "connect", e.PeerIDs[b.NS], "--bootstrap-nodes", e.BootstrapAddrs, "--json",
		"--send", "65536", "--timeout", "10s", "--repeat", "8", "--interval", "300ms", "--breaker-threshold", "3",
		"--remember=false"} // every run through a bootstrap: a remembered path would need none
	p, err := e.TB.Start(a.NS, args...)
	if err != nil {
		return false, err.Error()
	}
	// Let the first runs go through bootstrap 0, then kill it.
	time.Sleep(1200 * time.Millisecond)
	e.Bootstraps[0].Cmd.Process.Kill()
	<-e.Bootstraps[0].Done()
	select {
	case <-p.Done():
	case <-time.After(90 * time.Second):
		p.Stop(time.Second)
		return false, "the repeated connect did not finish"
	}
	var res struct {
		Runs []struct {
			Connected bool   `json:"connected"`
			Path      string `json:"path"`
			Reason    string `json:"reason"`
		} `json:"runs"`
		Bootstraps []struct {
			Label   string `json:"label"`
			Breaker string `json:"breaker"`
		} `json:"bootstraps"`
	}
	if err := lastJSON(p.Output(), &res); err != nil {
		return false, fmt.Sprintf("no JSON result: %v: %q", err, tail(p.Output(), 300))
	}
	connected := 0
	for _, r := range res.Runs {
		if r.Connected {
			connected++
		}
	}
	if len(res.Bootstraps) != 2 || len(res.Runs) != 8 {
		return false, fmt.Sprintf("unexpected result %+v", res)
	}
	detail := fmt.Sprintf("%d/%d runs connected after bootstrap 0 was killed; breakers: 0 %s, 1 %s",
		connected, len(res.Runs), res.Bootstraps[0].Breaker, res.Bootstraps[1].Breaker)
	return connected == len(res.Runs) && res.Bootstraps[0].Breaker == "open" && res.Bootstraps[1].Breaker == "closed", detail
}

func (e *Env) restartBootstrap(ctx context.Context, i int) {
	if p, err := e.StartBootstrap(ctx, i); err == nil {
		e.Bootstraps[i] = p
	}
}

// scenarioRelayCoturn runs Debian's coturn (a third-party TURN server with
// a shared secret) on S2 and connects two peers through it.
func scenarioRelayCoturn(ctx context.Context, e *Env) (bool, string) {
	a, ok1 := e.firstHost(ClassEIMAPDF, 0)
	b, ok2 := e.firstHost(ClassCGNAT, 0)
	if !ok1 || !ok2 {
		return false, "needs an eim-apdf and a cgnat site"
	}
	if _, err := exec.LookPath("turnserver"); err != nil {
		return false, "coturn (turnserver) is not installed: apt-get install coturn"
	}
	secret := "testbed-coturn-secret"
	conf := filepath.Join(e.Dir, "turnserver.conf")
	secretFile := filepath.Join(e.Dir, "turn.secret")
	addr := ServerAddr(2).String()
	cfg := strings.Join([]string{
		"listening-ip=" + addr, "listening-port=3480", "relay-ip=" + addr,
		"min-port=40000", "max-port=40999", "realm=antnode",
		"use-auth-secret", "static-auth-secret=" + secret,
		"no-tls", "no-dtls", "no-cli", "fingerprint", "log-file=stdout", "simple-log", "verbose",
		"pidfile=" + filepath.Join(e.Dir, "turnserver.pid"),
	}, "\n") + "\n"
	if err := os.WriteFile(conf, []byte(cfg), 0o600); err != nil {
		return false, err.Error()
	}
	if err := os.WriteFile(secretFile, []byte(secret+"\n"), 0o600); err != nil {
		return false, err.Error()
	}
	ts, err := e.TB.Start(e.TB.Server(), "turnserver", "-c", conf)
	if err != nil {
		return false, err.Error()
	}
	defer ts.Stop(2 * time.Second)
	time.Sleep(500 * time.Millisecond) // coturn binds its sockets
	size := int64(1 << 20)
	if e.lossy() {
		size = lossyCoturnSize
	}
	res := e.Connect(ctx, a, b, size, 15*time.Second, "--relay", "force",
		"--turn-server", addr+":3480", "--turn-secret-file", secretFile)
	// coturn (verbose) logs "incoming packet ALLOCATE processed, success".
	allocated := strings.Contains(ts.Output(), "ALLOCATE processed, success")
	detail := fmt.Sprintf("path %s, %d bytes verified, %.0f ms; coturn logged a successful allocation: %v",
		res.Path, res.BytesVerified, res.TimeToConnect, allocated)
	if !res.Connected {
		detail += "; " + res.Reason + ": " + res.Error + "; coturn: " + tail(ts.Output(), 400)
	}
	return res.Connected && res.Path == "relay" && res.BytesVerified == size && allocated, detail
}

// TxBytes returns the bytes that the host in namespace ns has sent on its
// link (eth0), from the kernel's counter: every packet with its headers,
// retransmissions included. A scenario reads it to land a fault at a
// point of a transfer's progress, and to prove that bytes were still to
// be sent when it landed.
func TxBytes(ns string) (int64, error) {
	var text []byte
	err := InNS(ns, func() error {
		var err error
		text, err = os.ReadFile("/proc/thread-self/net/dev")
		return err
	})
	if err != nil {
		return 0, fmt.Errorf("testnet: link counters of %s: %w", ns, err)
	}
	n, err := parseTxBytes(string(text), "eth0")
	if err != nil {
		return 0, fmt.Errorf("testnet: link counters of %s: %w", ns, err)
	}
	return n, nil
}

// parseTxBytes returns the transmitted bytes of dev in the text of
// /proc/net/dev: after "dev:", eight receive columns, then the transmitted
// bytes.
func parseTxBytes(text, dev string) (int64, error) {
	for _, line := range strings.Split(text, "\n") {
		name, rest, ok := strings.Cut(line, ":")
		if !ok || strings.TrimSpace(name) != dev {
			continue
		}
		f := strings.Fields(rest)
		if len(f) < 9 {
			return 0, fmt.Errorf("%s: %d columns, want at least 9", dev, len(f))
		}
		n, err := strconv.ParseInt(f[8], 10, 64)
		if err != nil {
			return 0, fmt.Errorf("%s: transmitted bytes: %w", dev, err)
		}
		return n, nil
	}
	return 0, fmt.Errorf("no device %s", dev)
}
