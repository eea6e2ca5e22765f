package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/antnode/antnode/internal/testkit"
)

// fleetNetnsEnv marks the re-executed test binary that runs inside the
// private namespaces; its value is the directory to work in.
const fleetNetnsEnv = "ANTNODE_FLEET_NETNS_DIR"

// TestFleetScrapeThroughDNS runs the shipped fleet scrape configuration
// (deploy/prometheus/prometheus.yml, job antnode-fleet) end to end: a real
// dnsmasq serves the fleet's SRV records, a real Prometheus finds two
// bootstrap daemons through them and scrapes them with the token, under
// the readable instance label, and the fleet alert goes pending when one
// of them stops.
//
// Prometheus's dns_sd_configs has no DNS server option: it reads
// /etc/resolv.conf, whose nameserver lines take no port. So the test
// re-executes itself under unshare in new network, mount and PID
// namespaces: loopback only, dnsmasq on 127.0.0.1:53 there, and a
// resolv.conf bind-mounted over /etc/resolv.conf in that mount namespace
// alone. The host's resolver and network are untouched, and everything
// started inside dies with the namespace.
func TestFleetScrapeThroughDNS(t *testing.T) {
	if dir := os.Getenv(fleetNetnsEnv); dir != "" {
		fleetInNamespace(t, dir)
		return
	}
	testkit.NeedRoot(t, "unshare", "ip", "dnsmasq", "prometheus")
	dir := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), 150*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, "unshare", "--net", "--mount", "--pid", "--fork", "--kill-child", "--mount-proc",
		os.Args[0], "-test.run=^TestFleetScrapeThroughDNS$", "-test.v", "-test.timeout=140s")
	cmd.Env = append(os.Environ(), fleetNetnsEnv+"="+dir)
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	cmd.WaitDelay = 5 * time.Second
	out, err := cmd.CombinedOutput()
	if err != nil || !strings.Contains(string(out), "--- PASS: TestFleetScrapeThroughDNS") {
		t.Fatalf("in the namespaces: %v\n%s", err, out)
	}
	t.Logf("in the namespaces:\n%s", out)
}

// fleetInNamespace is TestFleetScrapeThroughDNS inside its namespaces.
func fleetInNamespace(t *testing.T, dir string) {
	if out, err := exec.Command("ip", "link", "set", "lo", "up").CombinedOutput(); err != nil {
		t.Fatalf("ip link set lo up: %v %s", err, out)
	}
	resolv := filepath.Join(dir, "resolv.conf")
	if err := os.WriteFile(resolv, []byte("nameserver 127.0.0.1\noptions timeout:1 attempts:2\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	// unshare made this mount namespace's mounts private: the bind
	// mount is seen by this process and its children only.
	if err := unix.Mount(resolv, "/etc/resolv.conf", "", unix.MS_BIND, ""); err != nil {
		t.Fatalf("bind-mount resolv.conf: %v", err)
	}
	t.Cleanup(func() { unix.Unmount("/etc/resolv.conf", 0) })

	const zone = "fleet.test"
	tokenFile := filepath.Join(dir, "token")
	const token = "fleet-test-token-0123456789abcdef"
	if err := os.WriteFile(tokenFile, []byte(token+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}

	// Two bootstraps, b1 and b2, each with its metrics on its own port,
	// answering to its SRV target name; a peer registered with b1.
	type boot struct {
		name, metrics string
		quic          int
		stop          func()
	}
	var boots []*boot
	for _, name := range []string{"b1", "b2"} {
		b := &boot{name: name + "." + zone, metrics: freeTCP(t), quic: freePorts(t)}
		key := filepath.Join(dir, name+".key")
		if code, _, errOut := run("id", "--key", key); code != exitOK {
			t.Fatalf("id: %s", errOut)
		}
		_, _, b.stop = stoppableDaemon(t, "--bootstrap", "--listen", "127.0.0.1:"+strconv.Itoa(b.quic), "--key", key,
			"--metrics-addr", b.metrics, "--metrics-token-file", tokenFile, "--http-allowed-hosts", b.name)
		boots = append(boots, b)
	}
	_, id1, _ := run("id", "--key", filepath.Join(dir, "b1.key"))
	daemon(t, "--listen", "127.0.0.1:0", "--metrics-addr", "off",
		"--bootstrap-nodes", strings.TrimSpace(id1)+"@127.0.0.1:"+strconv.Itoa(boots[0].quic))

	// The zone: the peers' SRV name (the QUIC ports) and the metrics
	// one, same targets, which Prometheus reads.
	args := []string{"--keep-in-foreground", "--conf-file=/dev/null", "--no-resolv", "--no-hosts",
		"--listen-address=127.0.0.1", "--bind-interfaces", "--port=53", "--pid-file=" + filepath.Join(dir, "dnsmasq.pid"),
		"--local-ttl=1", "--log-queries", "--log-facility=-"}
	for _, b := range boots {
		_, mport, _ := net.SplitHostPort(b.metrics)
		args = append(args,
			"--host-record="+b.name+",127.0.0.1",
			fmt.Sprintf("--srv-host=_antnode._udp.%s,%s,%d,0,0", zone, b.name, b.quic),
			fmt.Sprintf("--srv-host=_antnode-metrics._tcp.%s,%s,%s,0,0", zone, b.name, mport))
	}
	dnsOut := startTool(t, "dnsmasq", args...)
	res := &net.Resolver{PreferGo: true, Dial: func(ctx context.Context, network, _ string) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, network, "127.0.0.1:53")
	}}
	var srvs []*net.SRV
	testkit.WaitFor(t, 10*time.Second, "dnsmasq to answer the SRV query\n"+dnsOut.String(), func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		_, srvs, _ = res.LookupSRV(ctx, "antnode-metrics", "tcp", zone)
		return len(srvs) == 2
	})

	// The shipped configuration, with the test's zone, token and short
	// intervals: every replaced string must be there.
	cfg, err := os.ReadFile(filepath.Join(deployDir, "prometheus", "prometheus.yml"))
	if err != nil {
		t.Fatal(err)
	}
	s := string(cfg)
	for _, r := range [][2]string{
		{"/etc/prometheus/antnode-token", tokenFile},
		{"_antnode-metrics._tcp.fleet.example.net", "_antnode-metrics._tcp." + zone},
		{"scrape_interval: 15s", "scrape_interval: 1s"},
		{"evaluation_interval: 15s", "evaluation_interval: 1s"},
		{"refresh_interval: 30s", "refresh_interval: 1s"},
	} {
		if !strings.Contains(s, r[0]) {
			t.Fatalf("prometheus.yml lacks %q", r[0])
		}
		s = strings.ReplaceAll(s, r[0], r[1])
	}
	promDir := filepath.Join(dir, "prometheus")
	os.MkdirAll(promDir, 0o755)
	os.WriteFile(filepath.Join(promDir, "prometheus.yml"), []byte(s), 0o600)
	alerts, err := os.ReadFile(filepath.Join(deployDir, "prometheus", "alerts.yml"))
	if err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(promDir, "alerts.yml"), alerts, 0o600)
	promAddr := freeTCP(t)
	promOut := startTool(t, "prometheus", "--config.file="+filepath.Join(promDir, "prometheus.yml"),
		"--storage.tsdb.path="+filepath.Join(promDir, "tsdb"), "--web.listen-address="+promAddr)

	type sample struct {
		Metric map[string]string `json:"metric"`
		Value  []any             `json:"value"`
	}
	query := func(q string) []sample {
		c, body := httpGet(t, "http://"+promAddr+"/api/v1/query?query="+url.QueryEscape(q), "")
		if c != 200 {
			return nil
		}
		var r struct {
			Data struct {
				Result []sample `json:"result"`
			} `json:"data"`
		}
		json.Unmarshal([]byte(body), &r)
		return r.Data.Result
	}
	value := func(s sample) string {
		if len(s.Value) != 2 {
			return ""
		}
		v, _ := s.Value[1].(string)
		return v
	}
	// up per instance, e.g. "b1.fleet.test=1 b2.fleet.test=1".
	ups := func() string {
		var out []string
		for _, s := range query(`up{job="antnode-fleet"}`) {
			out = append(out, s.Metric["instance"]+"="+value(s)+" fleet="+s.Metric["fleet"])
		}
		slices.Sort(out)
		return strings.Join(out, " ")
	}
	want := "b1.fleet.test=1 fleet=fleet.test b2.fleet.test=1 fleet=fleet.test"
	got := ""
	for deadline := time.Now().Add(45 * time.Second); got != want; time.Sleep(100 * time.Millisecond) {
		if got = ups(); time.Now().After(deadline) {
			t.Fatalf("up{job=\"antnode-fleet\"} after 45 s: %q, want %q\n%s", got, want, promOut.String())
		}
	}
	t.Logf("up{job=\"antnode-fleet\"}: %s", got)

	testkit.WaitFor(t, 30*time.Second, "b1's registered peer through Prometheus", func() bool {
		r := query(`antnode_registered_peers{job="antnode-fleet",instance="b1.fleet.test"}`)
		return len(r) == 1 && value(r[0]) == "1"
	})

	// b2 stops: its target stays in DNS, its up goes to 0 and the fleet
	// alert goes pending on its readable instance.
	boots[1].stop()
	testkit.WaitFor(t, 30*time.Second, "b2 down, AntnodeFleetBootstrapDown pending\n"+promOut.String(), func() bool {
		r := query(`ALERTS{alertname="AntnodeFleetBootstrapDown",alertstate="pending"}`)
		return len(r) == 1 && r[0].Metric["instance"] == "b2.fleet.test" && r[0].Metric["severity"] == "critical"
	})
	if got := ups(); got != "b1.fleet.test=1 fleet=fleet.test b2.fleet.test=0 fleet=fleet.test" {
		t.Fatalf("up after b2 stopped: %s", got)
	}
	// Every rule of alerts.yml loaded and evaluates without error on real series.
	_, body := httpGet(t, "http://"+promAddr+"/api/v1/rules", "")
	var rules struct {
		Data struct {
			Groups []struct {
				Rules []struct {
					Name, Health, LastError string
				}
			}
		}
	}
	if err := json.Unmarshal([]byte(body), &rules); err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, g := range rules.Data.Groups {
		for _, r := range g.Rules {
			n++
			if r.Health != "ok" {
				t.Errorf("rule %s: health %q %s", r.Name, r.Health, r.LastError)
			}
		}
	}
	if n < 8 {
		t.Fatalf("Prometheus loaded %d rules: %s", n, body)
	}
}

// startTool starts a tool on PATH, killed when t ends (and with this
// process), and returns its combined output.
func startTool(t *testing.T, name string, args ...string) *lockedBuffer {
	t.Helper()
	var out lockedBuffer
	ctx, cancel := context.WithCancel(context.Background())
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Stdout, cmd.Stderr = &out, &out
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		cancel()
		t.Fatalf("%s: %v", name, err)
	}
	t.Cleanup(func() {
		cancel()
		cmd.Wait()
	})
	return &out
}
