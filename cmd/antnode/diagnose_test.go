package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/antnode/antnode/bootstrap"
	"github.com/antnode/antnode/endpoint"
	"github.com/antnode/antnode/identity"
	"github.com/antnode/antnode/internal/testkit"
	"github.com/antnode/antnode/monitor"
	"github.com/antnode/antnode/traversal"
)

// TestDiagnoseRedact runs `antnode diagnose --json --redact` against a
// loopback bootstrap: the report is complete (UDP, NAT, bootstrap RTT,
// relay allocations over UDP and TCP) and holds none of the host's
// addresses.
func TestDiagnoseRedact(t *testing.T) {
	boot := startBootstrap(t)
	code, out, errOut := run("diagnose", "--bootstrap-nodes", boot, "--json", "--redact", "--timeout", "15s")
	if code != exitOK && code != exitFailure {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	var rep diagnoseReport
	if err := json.Unmarshal([]byte(out), &rep); err != nil {
		t.Fatalf("not JSON: %v\n%s", err, out)
	}
	if !rep.Redacted || !rep.UDP.OK || rep.NAT.Class == "" || len(rep.Bootstraps) != 1 || !rep.Bootstraps[0].Registered || rep.Bootstraps[0].RTTMS <= 0 {
		t.Fatalf("report %+v", rep)
	}
	var addrs []string
	ifs, _ := net.InterfaceAddrs()
	for _, a := range ifs {
		if p, err := netip.ParsePrefix(a.String()); err == nil {
			addrs = append(addrs, p.Addr().String())
		}
	}
	addrs = append(addrs, "127.0.0.1")
	for _, a := range addrs {
		if strings.Contains(out, a) {
			t.Errorf("redacted output holds %s", a)
		}
	}
	// Without --redact the addresses are there.
	_, full, _ := run("diagnose", "--bootstrap-nodes", boot, "--json", "--timeout", "15s")
	if !strings.Contains(full, "127.0.0.1") {
		t.Fatal("the unredacted report lacks the bootstrap's address")
	}
}

// TestDiagnoseNamesAWrongKey: a bootstrap configured with another peer ID
// than its own is a key mismatch, and the diagnosis says so.
func TestDiagnoseNamesAWrongKey(t *testing.T) {
	boot := startBootstrap(t)
	_, addr, _ := strings.Cut(boot, "@")
	other, err := identity.Generate()
	if err != nil {
		t.Fatal(err)
	}
	wrong := other.ID().String() + "@" + addr
	code, out, _ := run("diagnose", "--bootstrap-nodes", wrong, "--json", "--timeout", "15s")
	if code != exitFailure {
		t.Fatalf("exit %d, want a failure: %s", code, out)
	}
	var rep diagnoseReport
	if err := json.Unmarshal([]byte(out), &rep); err != nil {
		t.Fatal(err)
	}
	if len(rep.Findings) == 0 || rep.Findings[0].Cause != "key_mismatch" {
		t.Fatalf("findings %+v", rep.Findings)
	}
}

// startSplitBootstrap runs a loopback bootstrap whose TCP fallback
// listens on a port P whose UDP nothing serves (its QUIC and STUN are on
// another port): to a node given P, UDP to the bootstrap is blocked and
// TCP to it works, as behind a firewall that drops UDP.
func startSplitBootstrap(t *testing.T) string {
	t.Helper()
	id, _ := identity.Generate()
	tcp, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := tcp.Addr().(*net.TCPAddr).AddrPort()
	// The UDP port P must be free (and stays unserved).
	if u, err := net.ListenUDP("udp4", net.UDPAddrFromAddrPort(p)); err != nil {
		tcp.Close()
		t.Skipf("UDP %s is taken: %v", p, err)
	} else {
		u.Close()
	}
	ep, err := endpoint.Listen("udp4", "127.0.0.1:0", endpoint.Config{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ep.Close() })
	srv, err := bootstrap.NewServer(bootstrap.ServerConfig{Identity: id, Endpoint: ep, TCP: tcp})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close() })
	return id.ID().String() + "@" + p.String()
}

// deadBootstrap is a bootstrap address on which nothing listens, on UDP
// or TCP.
func deadBootstrap(t *testing.T) string {
	t.Helper()
	id, _ := identity.Generate()
	return id.ID().String() + "@127.0.0.1:" + strconv.Itoa(freePorts(t))
}

// TestDiagnoseTellsUDPBlockedFromBootstrapDown runs `antnode diagnose`
// against real loopback bootstraps: with its only bootstrap down (nothing
// on UDP or TCP) the first finding is bootstrap_unreachable and there is
// no udp_blocked; with UDP to the bootstrap unanswered and TCP to it
// answering, udp_blocked is found from that evidence; with another
// bootstrap answering UDP, one that is down is that bootstrap's problem,
// not UDP's. No printed field is empty.
func TestDiagnoseTellsUDPBlockedFromBootstrapDown(t *testing.T) {
	tests := []struct {
		name        string
		boots       func(t *testing.T) string
		udp         string
		first       monitor.Cause // the first finding, if set
		firstScope  string
		udpBlocked  bool
		unreachable []string // scopes with a bootstrap_unreachable finding
	}{
		{name: "the only bootstrap down", boots: deadBootstrap, udp: udpUnknown,
			first: monitor.CauseBootstrapUnreachable, firstScope: "node", unreachable: []string{"node", "bootstrap 0"}},
		{name: "UDP blocked, TCP to the same bootstrap answers", boots: startSplitBootstrap, udp: udpBlocked, udpBlocked: true},
		{name: "one of two bootstraps down, the other answers UDP",
			boots: func(t *testing.T) string { return startBootstrap(t) + "," + deadBootstrap(t) }, udp: udpOK,
			unreachable: []string{"bootstrap 1"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			boots := tc.boots(t)
			code, out, errOut := run("diagnose", "--bootstrap-nodes", boots, "--json", "--timeout", "20s")
			if code != exitOK && code != exitFailure {
				t.Fatalf("exit %d: %s", code, errOut)
			}
			var rep diagnoseReport
			if err := json.Unmarshal([]byte(out), &rep); err != nil {
				t.Fatalf("not JSON: %v\n%s", err, out)
			}
			if rep.UDP.Status != tc.udp {
				t.Fatalf("udp check %+v, want %s", rep.UDP, tc.udp)
			}
			if len(rep.Findings) == 0 && tc.first != "" {
				t.Fatal("no findings")
			}
			if tc.first != "" && (rep.Findings[0].Cause != tc.first || rep.Findings[0].Scope != tc.firstScope) {
				t.Fatalf("first finding %s (%s), want %s (%s): %+v", rep.Findings[0].Cause, rep.Findings[0].Scope, tc.first, tc.firstScope, rep.Findings)
			}
			var unreachable []string
			blocked := false
			for _, f := range rep.Findings {
				switch f.Cause {
				case monitor.CauseUDPBlocked:
					blocked = true
					if f.Confidence <= 0 || f.Sources < 1 || !strings.Contains(fmt.Sprint(f.Evidence), "TCP to the same port answered") {
						t.Errorf("udp_blocked without the TCP evidence: %+v", f)
					}
				case monitor.CauseBootstrapUnreachable:
					unreachable = append(unreachable, f.Scope)
				}
			}
			if blocked != tc.udpBlocked {
				t.Fatalf("udp_blocked found: %v, want %v: %+v", blocked, tc.udpBlocked, rep.Findings)
			}
			slices.Sort(unreachable)
			slices.Sort(tc.unreachable)
			if !slices.Equal(unreachable, tc.unreachable) {
				t.Fatalf("bootstrap_unreachable in %v, want %v", unreachable, tc.unreachable)
			}
			assertNoEmptyField(t, &rep)
		})
	}
}

// assertNoEmptyField prints the report as text and fails on an empty
// field: a bootstrap without its reason, a zero RTT, an empty mapped
// address, an empty error.
func assertNoEmptyField(t *testing.T, rep *diagnoseReport) {
	t.Helper()
	var b strings.Builder
	printDiagnose(&b, rep)
	text := b.String()
	t.Logf("antnode diagnose prints:\n%s", text)
	for _, bad := range []string{"NOT registered: ,", "NOT registered ()", "rtt 0.0 ms", "mapped ,", "mapped \n", "()", ": ,"} {
		if strings.Contains(text, bad) {
			t.Errorf("printed %q:\n%s", bad, text)
		}
	}
	for _, bj := range rep.Bootstraps {
		if !bj.Registered && bj.Error == "" || !bj.UDP.OK && bj.UDP.Error == "" || !bj.TCP.OK && bj.TCP.Error == "" {
			t.Errorf("bootstrap %s without its reason: %+v", bj.Label, bj)
		}
	}
}

// TestReachVerdict: the probes of the bootstraps, UDP and TCP, make the
// UDP check and the observations for and against causes; UDP blocked
// only where TCP to the same bootstrap answered and no bootstrap answered
// over UDP.
func TestReachVerdict(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	errNo := errors.New("no answer")
	up := bootReach{UDP: true, UDPRTT: time.Millisecond, TCP: true, TCPRTT: time.Millisecond}
	tcpOnly := bootReach{UDPErr: errNo, TCP: true, TCPRTT: time.Millisecond}
	down := bootReach{UDPErr: errNo, TCPErr: errNo}
	untested := bootReach{UDPErr: tested(errNo), TCPErr: tested(errNo)}
	type want struct {
		cause   monitor.Cause
		scope   string
		against bool
	}
	tests := []struct {
		name   string
		reach  []bootReach
		status string
		probes []want
	}{
		{"one bootstrap up", []bootReach{up}, udpOK, []want{{monitor.CauseUDPBlocked, "node", true}}},
		{"the only bootstrap down", []bootReach{down}, udpUnknown,
			[]want{{monitor.CauseBootstrapUnreachable, "bootstrap 0", false}, {monitor.CauseBootstrapUnreachable, "node", false}}},
		{"UDP unanswered, TCP answered", []bootReach{tcpOnly}, udpBlocked, []want{{monitor.CauseUDPBlocked, "node", false}}},
		{"two bootstraps answer only TCP", []bootReach{tcpOnly, tcpOnly}, udpBlocked,
			[]want{{monitor.CauseUDPBlocked, "node", false}, {monitor.CauseUDPBlocked, "node", false}}},
		{"UDP unanswered by one, answered by another", []bootReach{up, tcpOnly}, udpOK,
			[]want{{monitor.CauseUDPBlocked, "node", true}, {monitor.CauseBootstrapUnreachable, "bootstrap 1", false}}},
		{"one down, one TCP only", []bootReach{down, tcpOnly}, udpBlocked,
			[]want{{monitor.CauseUDPBlocked, "node", false}, {monitor.CauseBootstrapUnreachable, "bootstrap 0", false}}},
		{"not tested before the time was up: no evidence", []bootReach{untested}, udpUnknown, nil},
		{"UDP silent, TCP not tested: no evidence", []bootReach{{UDPErr: errNo, TCPErr: errNotTested}}, udpUnknown, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			for i := range tc.reach {
				tc.reach[i].Label = strconv.Itoa(i)
			}
			check, probes := reachVerdict(tc.reach, now, func(s string) string { return s })
			if check.Status != tc.status || check.OK != (tc.status == udpOK) || check.Detail == "" {
				t.Fatalf("check %+v, want %s", check, tc.status)
			}
			var got []want
			for _, p := range probes {
				got = append(got, want{p.Cause, p.Scope, p.Against})
				if p.Source == "" || p.Strength <= 0 || p.Evidence.Detail == "" {
					t.Errorf("probe without its source or evidence: %+v", p)
				}
			}
			if !slices.Equal(got, tc.probes) {
				t.Fatalf("probes %+v, want %+v", got, tc.probes)
			}
			// Through the engine: each bootstrap an independent source;
			// contradictions alone find nothing.
			blockedBy := 0
			for _, p := range probes {
				if p.Cause == monitor.CauseUDPBlocked && !p.Against {
					blockedBy++
				}
			}
			found := 0
			for _, f := range monitor.Diagnose(monitor.DiagInput{Probes: probes, Now: now}) {
				if f.Cause == monitor.CauseUDPBlocked {
					found = f.Sources
				}
			}
			if found != blockedBy {
				t.Errorf("udp_blocked from %d sources, want %d", found, blockedBy)
			}
		})
	}
}

// TestBootstrapLineNamesWhatIsUnknown: a bootstrap never reached prints
// the reason for every field it has no value for.
func TestBootstrapLineNamesWhatIsUnknown(t *testing.T) {
	tests := []struct {
		name string
		b    traversal.BootstrapStatus
		want []string
	}{
		{"never reached, no error yet", traversal.BootstrapStatus{Label: "0", Addr: netip.MustParseAddrPort("127.0.0.1:9")},
			[]string{"NOT registered (no registration completed during the run)", "rtt unknown", "mapped address unknown", "udp no answer (no answer)", "tcp no answer (no answer)"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			mon, err := monitor.New(monitor.Config{Registerer: prometheus.NewRegistry()})
			if err != nil {
				t.Fatal(err)
			}
			js := bootstrapsJSON([]traversal.BootstrapStatus{tc.b}, []bootReach{{Label: "0"}}, mon.Sanitizer())
			line := bootstrapLine(js[0])
			for _, w := range tc.want {
				if !strings.Contains(line, w) {
					t.Errorf("line %q lacks %q", line, w)
				}
			}
		})
	}
}

// TestBootstrapNATIsUnknown: a bootstrap does not measure its own NAT,
// and its diagnosis says unknown, not public.
func TestBootstrapNATIsUnknown(t *testing.T) {
	key := filepath.Join(t.TempDir(), "boot.key")
	maddr := freeTCP(t)
	daemon(t, "--bootstrap", "--no-relay", "--listen", "127.0.0.1:"+strconv.Itoa(freePorts(t)), "--key", key, "--metrics-addr", maddr)
	testkit.WaitFor(t, 10*time.Second, "the bootstrap's API", func() bool {
		code, _ := httpGet(t, "http://"+maddr+"/healthz", "")
		return code == 200
	})
	_, body := httpGet(t, "http://"+maddr+"/api/v1/diagnostics", "")
	var rep monitor.DiagReport
	if err := json.Unmarshal([]byte(body), &rep); err != nil {
		t.Fatalf("%v: %s", err, body)
	}
	if rep.Role != "bootstrap" || rep.NAT != "unknown" || !strings.Contains(rep.Guide.Markdown, "NAT: unknown.") {
		t.Fatalf("role %q, nat %q:\n%s", rep.Role, rep.NAT, rep.Guide.Markdown)
	}
	for _, s := range rep.Guide.Steps {
		if s.Title == "NAT type not measured yet" {
			t.Fatalf("a bootstrap is told to measure its NAT: %+v", rep.Guide.Steps)
		}
	}
}

// TestDiagnoseUDPDroppedByFirewall runs a real bootstrap process (UDP
// and TCP on one port) in a network namespace whose firewall (nftables)
// drops every UDP packet, and `antnode diagnose` in it: UDP is blocked
// (the bootstrap answered TLS over TCP on the same port, nothing over
// UDP), the node registered over TCP, and the bootstrap is not called
// unreachable.
func TestDiagnoseUDPDroppedByFirewall(t *testing.T) {
	testkit.NeedRoot(t, "ip", "nft", "curl")
	bin := buildBinary(t)
	dir := t.TempDir()
	ns := testNamespace(t, "203.0.113.7/24")
	key := filepath.Join(dir, "boot.key")
	out, err := exec.Command(bin, "id", "--key", key).Output()
	if err != nil {
		t.Fatal(err)
	}
	boot := strings.TrimSpace(string(out)) + "@203.0.113.7:4433"
	startNode(t, dir, []string{"netns", "exec", ns, bin, "--bootstrap", "--no-relay", "--listen", "203.0.113.7:4433",
		"--key", key, "--metrics-addr", "203.0.113.7:9100"})
	waitNS(t, ns, "http://203.0.113.7:9100/healthz", 10*time.Second)
	for _, rule := range [][]string{
		{"add", "table", "inet", "antdiag"},
		{"add", "chain", "inet", "antdiag", "in", "{ type filter hook input priority 0 ; }"},
		{"add", "rule", "inet", "antdiag", "in", "meta", "l4proto", "udp", "drop"},
	} {
		if o, err := exec.Command("ip", append([]string{"netns", "exec", ns, "nft"}, rule...)...).CombinedOutput(); err != nil {
			t.Fatalf("nft %v: %v %s", rule, err, o)
		}
	}
	cmd := exec.Command("ip", "netns", "exec", ns, bin, "diagnose", "--bootstrap-nodes", boot, "--json", "--timeout", "20s")
	out, _ = cmd.Output()
	var rep diagnoseReport
	if err := json.Unmarshal(out, &rep); err != nil {
		t.Fatalf("not JSON: %v\n%s", err, out)
	}
	if rep.UDP.Status != udpBlocked || len(rep.Bootstraps) != 1 || !rep.Bootstraps[0].TCP.OK || rep.Bootstraps[0].UDP.OK {
		t.Fatalf("udp %+v, bootstraps %+v", rep.UDP, rep.Bootstraps)
	}
	blocked := false
	for _, f := range rep.Findings {
		if f.Cause == monitor.CauseBootstrapUnreachable {
			t.Errorf("a bootstrap that answers over TCP called unreachable: %+v", f)
		}
		blocked = blocked || f.Cause == monitor.CauseUDPBlocked
	}
	if !blocked {
		t.Fatalf("no udp_blocked finding: %+v", rep.Findings)
	}
	assertNoEmptyField(t, &rep)
}
