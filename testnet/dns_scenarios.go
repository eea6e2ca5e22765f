package testnet

import (
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"os/exec"
	"path/filepath"
	"strings"
	"time"
)

// The ticket and DNS discovery scenarios: a connect by ticket between
// peers that share no bootstrap, and peers that find their bootstraps in
// SRV records served by Debian's dnsmasq in the simulated internet.

// dnsServer is the testbed's DNS server: dnsmasq on a TEST-NET address
// of the server network, started only by the scenarios that use it.
func dnsServer() netip.Addr { return ServerAddr(53) }

// dnsName is the name whose SRV records (_antnode._udp.fleet.test) list
// the bootstraps.
const dnsName = "fleet.test"

// Ports and API ports of the scenarios' own daemons (beside each host's
// daemon on daemonPort, its API on metricsPort).
const (
	extraDaemonPort = 4200
	extraAPIPort    = metricsPort + 10
)

// dnsTarget is one SRV target: a bootstrap at addr:4433 with peer ID id.
type dnsTarget struct {
	host string
	addr netip.Addr
	id   string
}

// bootTarget is bootstrap i's SRV target.
func (e *Env) bootTarget(i int) dnsTarget {
	return dnsTarget{host: fmt.Sprintf("boot%d.%s", i, dnsName), addr: ServerAddr(i + 1), id: e.bootIDs[i]}
}

// addServerAddr gives the server network one more address (idempotent).
func (e *Env) addServerAddr(ctx context.Context, a netip.Addr) error {
	_, err := runIn(ctx, e.TB.Server(), "ip", "addr", "replace", a.String()+"/24", "dev", "eth0")
	return err
}

// startDNS starts dnsmasq on dnsServer():53 serving the SRV records of
// dnsName for targets (port 4433, with their A and TXT records), with a
// TTL of 1 s (the nodes hold it at their floor, 30 s). The caller stops
// it; the testbed's Close kills it if not.
func (e *Env) startDNS(ctx context.Context, targets []dnsTarget) (*Proc, error) {
	if _, err := exec.LookPath("dnsmasq"); err != nil {
		return nil, fmt.Errorf("dnsmasq is not installed: apt-get install dnsmasq-base")
	}
	if err := e.addServerAddr(ctx, dnsServer()); err != nil {
		return nil, err
	}
	args := []string{"dnsmasq", "--keep-in-foreground", "--conf-file=/dev/null", "--pid-file=", "--no-resolv", "--no-hosts",
		"--port=53", "--listen-address=" + dnsServer().String(), "--bind-interfaces", "--local-ttl=1",
		"--log-queries", "--log-facility=-", "--user=root"}
	for _, t := range targets {
		args = append(args, "--srv-host=_antnode._udp."+dnsName+","+t.host+",4433,10,10",
			"--host-record="+t.host+","+t.addr.String(), "--txt-record="+t.host+",antnode-id="+t.id)
	}
	p, err := e.TB.Start(e.TB.Server(), args...)
	if err != nil {
		return nil, err
	}
	if err := waitOutput(ctx, p, "started", 5*time.Second); err != nil {
		p.Stop(time.Second)
		return nil, fmt.Errorf("dnsmasq: %w: %s", err, tail(p.Output(), 300))
	}
	return p, nil
}

// startExtraDaemon starts a second peer daemon on h with its own key
// (name.key in the work directory), on extraDaemonPort with its API on
// extraAPIPort, registering with bootstraps (a --bootstrap-nodes value),
// and waits until it is registered. It returns the daemon and its ID.
func (e *Env) startExtraDaemon(ctx context.Context, h Host, name, bootstraps string, extra ...string) (*Proc, string, error) {
	id, err := e.keyID(ctx, name)
	if err != nil {
		return nil, "", err
	}
	args := append([]string{e.Bin, "--listen", fmt.Sprintf("0.0.0.0:%d", extraDaemonPort), "--bootstrap-nodes", bootstraps,
		"--key", filepath.Join(e.Dir, name+".key"),
		"--metrics-addr", fmt.Sprintf("127.0.0.1:%d", extraAPIPort), "--metrics-token-file", e.tokenFile()}, extra...)
	args = append(args, e.logArgs("info")...)
	p, err := e.TB.Start(h.NS, args...)
	if err != nil {
		return nil, "", err
	}
	if err := waitOutput(ctx, p, "bootstrap up", 15*time.Second); err != nil {
		p.Stop(time.Second)
		return nil, "", fmt.Errorf("daemon %s on %s: %w: %s", name, h.NS, err, tail(p.Output(), 400))
	}
	return p, id, nil
}

// extraStatus is the part of /api/v1/status the scenarios read.
type extraStatus struct {
	ID         string `json:"id"`
	Ticket     string `json:"ticket"`
	Bootstraps []struct {
		Label      string `json:"label"`
		Addr       string `json:"addr"`
		ID         string `json:"id"`
		Registered bool   `json:"registered"`
	} `json:"bootstraps"`
}

// registeredAt lists the addresses of the bootstraps st is registered
// with, and the number it has.
func (st extraStatus) registeredAt() ([]string, int) {
	var out []string
	for _, b := range st.Bootstraps {
		if b.Registered {
			out = append(out, b.Addr)
		}
	}
	return out, len(st.Bootstraps)
}

// extraDaemonStatus reads the /api/v1/status of h's extra daemon.
func (e *Env) extraDaemonStatus(ctx context.Context, h Host) (extraStatus, error) {
	var st extraStatus
	url := fmt.Sprintf("http://127.0.0.1:%d/api/v1/status", extraAPIPort)
	out, err := runIn(ctx, h.NS, append(append([]string{"curl", "-sf", "--max-time", "5"}, apiAuth()...), url)...)
	if err != nil {
		return st, err
	}
	if err := json.Unmarshal([]byte(out), &st); err != nil {
		return st, fmt.Errorf("status: %w: %q", err, tail(out, 200))
	}
	return st, nil
}

// waitExtraStatus polls h's extra daemon until ok(status) or d passes; it
// returns the last status read and whether ok held.
func (e *Env) waitExtraStatus(ctx context.Context, h Host, d time.Duration, ok func(extraStatus) bool) (extraStatus, bool) {
	deadline := time.Now().Add(d)
	for {
		st, err := e.extraDaemonStatus(ctx, h)
		if err == nil && ok(st) {
			return st, true
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return st, false
		}
		time.Sleep(250 * time.Millisecond)
	}
}

// ticketConnectResult is connect's JSON with the bootstraps it used.
type ticketConnectResult struct {
	ConnectResult
	Bootstraps []struct {
		Label      string `json:"label"`
		Registered bool   `json:"registered"`
	} `json:"bootstraps"`
	WarmRelay *struct {
		State   string `json:"state"`
		Relayed string `json:"relayed"`
	} `json:"warm_relay"`
}

// connectTarget runs `antnode connect target` (a peer ID or a ticket)
// from h with --bootstrap-nodes bootstraps.
func (e *Env) connectTarget(ctx context.Context, h Host, target, bootstraps string, send int64) ticketConnectResult {
	timeout := 15 * time.Second
	cctx, cancel := context.WithTimeout(ctx, timeout+10*time.Second)
	defer cancel()
	args := []string{e.Bin, "connect", target, "--bootstrap-nodes", bootstraps, "--json",
		"--send", fmt.Sprint(send), "--timeout", timeout.String()}
	args = append(args, e.logArgs("")...)
	out, stderr, err := e.TB.RunBoth(cctx, h.NS, args...)
	e.keepLog("connect-"+h.NS+"-target", stderr)
	var res ticketConnectResult
	if jerr := lastJSON(out, &res); jerr != nil {
		res.Path, res.Reason, res.Error = "none", "crash", fmt.Sprintf("no JSON result (%v): %q", err, tail(out, 300))
	}
	return res
}

// bootAddr is bootstrap i's --bootstrap-nodes entry.
func (e *Env) bootAddr(i int) string {
	return fmt.Sprintf("%s@%s:4433", e.bootIDs[i], ServerAddr(i+1))
}

// scenarioTicketDisjoint: B' (a second daemon on the public host) is
// registered only with bootstrap 1; A (eim-apdf) knows only bootstrap 0.
// `antnode connect <B's ticket>` from A registers on demand with the
// ticket's bootstrap and connects direct, the transfer verified.
func scenarioTicketDisjoint(ctx context.Context, e *Env) (bool, string) {
	a, ok1 := e.firstHost(ClassEIMAPDF, 0)
	b, ok2 := e.firstHost(ClassPublic, 0)
	if !ok1 || !ok2 {
		return false, "needs an eim-apdf and a public site"
	}
	p, id, err := e.startExtraDaemon(ctx, b, "ticket-b", e.bootAddr(1))
	if err != nil {
		return false, err.Error()
	}
	defer p.Stop(2 * time.Second)
	st, ok := e.waitExtraStatus(ctx, b, 10*time.Second, func(st extraStatus) bool { return st.Ticket != "" })
	if !ok {
		return false, fmt.Sprintf("B' has no ticket in its status: %+v", st)
	}
	const size = 262144
	res := e.connectTarget(ctx, a, st.Ticket, e.bootAddr(0), size)
	var onDemand []string
	for _, bs := range res.Bootstraps {
		if strings.HasPrefix(bs.Label, "t") {
			onDemand = append(onDemand, fmt.Sprintf("%s registered=%v", bs.Label, bs.Registered))
		}
	}
	detail := fmt.Sprintf("B' %s... on bootstrap 1 only, A on bootstrap 0 only; connect by ticket: %s, %d bytes verified, %.0f ms; A's on-demand registrations: %v",
		id[:8], res.Path, res.BytesVerified, res.TimeToConnect, onDemand)
	if !res.Connected {
		detail += "; " + res.Reason + ": " + res.Error
	}
	return res.Connected && res.Path == "direct" && res.BytesVerified == size && len(onDemand) > 0, detail
}

// scenarioDNSBootstrap: a daemon started with --bootstrap-nodes
// dns:fleet.test (dnsmasq naming both bootstraps) registers with both,
// and a connect from another host reaches it.
func scenarioDNSBootstrap(ctx context.Context, e *Env) (bool, string) {
	a, ok1 := e.firstHost(ClassEIMAPDF, 0)
	b, ok2 := e.firstHost(ClassPublic, 0)
	if !ok1 || !ok2 {
		return false, "needs an eim-apdf and a public site"
	}
	start := time.Now()
	dns, p, id, err := e.startDNSDaemon(ctx, b, "dns-peer")
	if err != nil {
		return false, err.Error()
	}
	defer dns.Stop(time.Second)
	defer p.Stop(2 * time.Second)
	st, ok := e.waitExtraStatus(ctx, b, 15*time.Second, func(st extraStatus) bool {
		reg, n := st.registeredAt()
		return n == 2 && len(reg) == 2
	})
	reg, n := st.registeredAt()
	if !ok {
		return false, fmt.Sprintf("the daemon resolved %d bootstraps and registered with %v: %s", n, reg, tail(p.Output(), 400))
	}
	took := time.Since(start)
	res := e.connectTarget(ctx, a, id, e.BootstrapAddrs, 262144)
	detail := fmt.Sprintf("dns:%s resolved to %d bootstraps, registered with %v (%.1f s after dnsmasq and the daemon started); connect from eim-apdf: %s, %d bytes verified, %.0f ms",
		dnsName, n, reg, took.Seconds(), res.Path, res.BytesVerified, res.TimeToConnect)
	if !res.Connected {
		detail += "; " + res.Reason + ": " + res.Error
	}
	return res.Connected && res.BytesVerified == 262144, detail
}

// startDNSDaemon starts dnsmasq naming bootstraps 0 and 1, and a daemon
// called name on host h that finds its bootstraps through it
// (--bootstrap-nodes dns:fleet.test). The caller stops both.
func (e *Env) startDNSDaemon(ctx context.Context, h Host, name string) (dns, daemon *Proc, id string, err error) {
	dns, err = e.startDNS(ctx, []dnsTarget{e.bootTarget(0), e.bootTarget(1)})
	if err != nil {
		return nil, nil, "", err
	}
	daemon, id, err = e.startExtraDaemon(ctx, h, name, "dns:"+dnsName, "--dns-server", dnsServer().String()+":53")
	if err != nil {
		dns.Stop(time.Second)
		return nil, nil, "", err
	}
	return dns, daemon, id, nil
}

// dnsFailoverAddr is the third bootstrap's address in dns-failover.
func dnsFailoverAddr() netip.Addr { return ServerAddr(4) }

// scenarioDNSFailover: a daemon that found bootstraps 0 and 1 through DNS
// follows the zone without a restart: bootstrap 1 is removed from the SRV
// records and killed, a third bootstrap added; within the TTL (held at
// its 30 s floor) plus one retry the daemon is registered with the new
// one and no longer lists the removed one, and a connect that knows only
// the new bootstrap reaches it.
func scenarioDNSFailover(ctx context.Context, e *Env) (bool, string) {
	a, ok1 := e.firstHost(ClassEIMAPDF, 0)
	b, ok2 := e.firstHost(ClassPublic, 0)
	if !ok1 || !ok2 {
		return false, "needs an eim-apdf and a public site"
	}
	dns, p, id, err := e.startDNSDaemon(ctx, b, "dns-failover-peer")
	if err != nil {
		return false, err.Error()
	}
	defer func() { dns.Stop(time.Second) }()
	defer p.Stop(2 * time.Second)
	if st, ok := e.waitExtraStatus(ctx, b, 15*time.Second, func(st extraStatus) bool {
		reg, n := st.registeredAt()
		return n == 2 && len(reg) == 2
	}); !ok {
		reg, n := st.registeredAt()
		return false, fmt.Sprintf("before the change: %d bootstraps, registered with %v", n, reg)
	}
	// The third bootstrap, on a new address of the server network.
	if err := e.addServerAddr(ctx, dnsFailoverAddr()); err != nil {
		return false, err.Error()
	}
	id2, err := e.keyID(ctx, "bootstrap2")
	if err != nil {
		return false, err.Error()
	}
	b2, err := e.TB.Start(e.TB.Server(), e.Bin, "--bootstrap", "--listen", dnsFailoverAddr().String()+":4433",
		"--probe-addr", ServerAddr(3).String(), "--key", filepath.Join(e.Dir, "bootstrap2.key"), "--log-level", "info",
		"--metrics-addr", fmt.Sprintf("127.0.0.1:%d", metricsPort+2))
	if err != nil {
		return false, err.Error()
	}
	defer b2.Stop(2 * time.Second)
	if err := waitOutput(ctx, b2, "listening on", 5*time.Second); err != nil {
		return false, fmt.Sprintf("bootstrap 2: %v: %s", err, tail(b2.Output(), 300))
	}
	// The zone changes: bootstrap 1 out, bootstrap 2 in; bootstrap 1 dies.
	dns.Stop(time.Second)
	d2, err := e.startDNS(ctx, []dnsTarget{e.bootTarget(0), {host: "boot2." + dnsName, addr: dnsFailoverAddr(), id: id2}})
	if err != nil {
		return false, err.Error()
	}
	dns = d2
	defer e.restartBootstrapRegistered(ctx, 1, 30*time.Second)
	e.Bootstraps[1].Cmd.Process.Kill()
	<-e.Bootstraps[1].Done()
	changed := time.Now()
	newAddr := dnsFailoverAddr().String() + ":4433"
	oldAddr := ServerAddr(2).String() + ":4433"
	st, ok := e.waitExtraStatus(ctx, b, 65*time.Second, func(st extraStatus) bool {
		newUp, oldListed := false, false
		for _, bs := range st.Bootstraps {
			newUp = newUp || (bs.Addr == newAddr && bs.Registered)
			oldListed = oldListed || bs.Addr == oldAddr
		}
		return newUp && !oldListed
	})
	reg, n := st.registeredAt()
	if !ok {
		return false, fmt.Sprintf("65 s after the zone changed the daemon lists %d bootstraps, registered with %v: %s", n, reg, tail(p.Output(), 400))
	}
	followed := time.Since(changed)
	res := e.connectTarget(ctx, a, id, fmt.Sprintf("%s@%s", id2, newAddr), 262144)
	detail := fmt.Sprintf("zone changed (bootstrap 1 removed and killed, bootstrap 2 at %s added); the daemon followed in %.1f s without a restart, registered with %v; connect through bootstrap 2 only: %s, %d bytes verified, %.0f ms",
		newAddr, followed.Seconds(), reg, res.Path, res.BytesVerified, res.TimeToConnect)
	if !res.Connected {
		detail += "; " + res.Reason + ": " + res.Error
	}
	return res.Connected && res.BytesVerified == 262144, detail
}

// restartBootstrapRegistered starts bootstrap i again and waits (at most
// d) until every host's daemon has registered with it again, so that the
// scenarios after this one find the testbed as it was.
func (e *Env) restartBootstrapRegistered(ctx context.Context, i int, d time.Duration) {
	e.restartBootstrap(ctx, i)
	deadline := time.Now().Add(d)
	for _, id := range e.PeerIDs {
		for !strings.Contains(e.Bootstraps[i].Output(), id) && time.Now().Before(deadline) && ctx.Err() == nil {
			time.Sleep(100 * time.Millisecond)
		}
	}
}
