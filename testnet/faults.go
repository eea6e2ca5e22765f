package testnet

import (
	"context"
	"fmt"
	"net/netip"
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
// not each other directly.
func (tb *Testbed) SetDirectBlocked(ctx context.Context, site string, on bool) error {
	r := tb.RouterOf(site)
	if r == nil {
		return fmt.Errorf("testnet: site %s has no router", site)
	}
	rule := `meta l4proto udp ip daddr != 203.0.113.0/24 ip saddr != 203.0.113.0/24 counter drop comment "direct blocked"`
	r.Ruleset.Extra = slicesWithout(r.Ruleset.Extra, rule)
	if on {
		r.Ruleset.Extra = append(r.Ruleset.Extra, rule)
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

// ScenarioFunc runs one named fault scenario on a running testbed.
type ScenarioFunc func(ctx context.Context, e *Env) (ok bool, detail string)

// Scenarios returns the named scenarios the runner knows.
func Scenarios() map[string]ScenarioFunc {
	return map[string]ScenarioFunc{
		"bootstrap-restart": scenarioBootstrapRestart,
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
	d := e.Daemons[b.NS]
	before := strings.Count(d.Output(), "bootstrap up")
	for i, p := range e.Bootstraps {
		p.Stop(2 * time.Second)
		np, err := e.StartBootstrap(ctx, i)
		if err != nil {
			return false, err.Error()
		}
		e.Bootstraps[i] = np
	}
	start := time.Now()
	for strings.Count(d.Output(), "bootstrap up") < before+2 {
		if time.Since(start) > 20*time.Second {
			return false, "daemon did not re-register with both bootstraps within 20 s"
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

// DefaultScenarios are the scenarios `make testbed` runs.
func DefaultScenarios() []string { return ScenarioNames() }
