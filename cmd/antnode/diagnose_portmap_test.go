package main

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/antnode/antnode/monitor"
	"github.com/antnode/antnode/nat64"
	"github.com/antnode/antnode/portmap"
	"github.com/antnode/antnode/traversal"
)

// The port-mapping probe of `antnode diagnose`. Every test's traffic is
// on loopback: a gateway at 127.0.0.1, with a UPnP IGD of the test and,
// where a case needs PCP or NAT-PMP, a responder on 127.0.0.1:5351 (their
// fixed server port; the case is skipped when the port is taken).

var (
	pmLoopback = netip.MustParseAddr("127.0.0.1")
	pmExternal = netip.MustParseAddrPort("198.51.100.9:40000")
)

const pmService = "urn:schemas-upnp-org:service:WANIPConnection:2"

// testIGD is a UPnP Internet Gateway Device of the test: its description
// names one WANIPConnection:2 service, whose control answers each action
// as a granting router does, or with the UPnP error code of fault.
type testIGD struct {
	fault map[string]int
	mu    sync.Mutex
	calls []string
}

func (g *testIGD) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	switch r.URL.Path {
	case "/desc.xml":
		w.Header().Set("Content-Type", "text/xml")
		fmt.Fprintf(w, `<?xml version="1.0"?><root xmlns="urn:schemas-upnp-org:device-1-0"><specVersion><major>1</major><minor>0</minor></specVersion>
<device><deviceType>urn:schemas-upnp-org:device:InternetGatewayDevice:2</deviceType><UDN>uuid:igd</UDN>
<deviceList><device><deviceType>urn:schemas-upnp-org:device:WANDevice:2</deviceType><UDN>uuid:wan</UDN>
<deviceList><device><deviceType>urn:schemas-upnp-org:device:WANConnectionDevice:2</deviceType><UDN>uuid:conn</UDN>
<serviceList><service><serviceType>%s</serviceType><serviceId>urn:upnp-org:serviceId:WANIPConn1</serviceId>
<SCPDURL>/scpd.xml</SCPDURL><controlURL>/ctl</controlURL><eventSubURL>/evt</eventSubURL></service></serviceList>
</device></deviceList></device></deviceList></device></root>`, pmService)
	case "/ctl":
		_, _ = io.Copy(io.Discard, r.Body)
		action, _ := strings.CutPrefix(strings.Trim(r.Header.Get("SOAPACTION"), `"`), pmService+"#")
		g.mu.Lock()
		g.calls = append(g.calls, action)
		code := g.fault[action]
		g.mu.Unlock()
		const env = `<?xml version="1.0"?><s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/envelope/" s:encodingStyle="http://schemas.xmlsoap.org/soap/encoding/"><s:Body>%s</s:Body></s:Envelope>`
		if code != 0 {
			w.WriteHeader(http.StatusInternalServerError)
			fmt.Fprintf(w, env, fmt.Sprintf(`<s:Fault><faultcode>s:Client</faultcode><faultstring>UPnPError</faultstring><detail><UPnPError xmlns="urn:schemas-upnp-org:control-1-0"><errorCode>%d</errorCode><errorDescription>test</errorDescription></UPnPError></detail></s:Fault>`, code))
			return
		}
		out := ""
		switch action {
		case "AddAnyPortMapping":
			out = fmt.Sprintf("<NewReservedPort>%d</NewReservedPort>", pmExternal.Port())
		case "GetExternalIPAddress":
			out = "<NewExternalIPAddress>" + pmExternal.Addr().String() + "</NewExternalIPAddress>"
		}
		fmt.Fprintf(w, env, fmt.Sprintf(`<u:%sResponse xmlns:u="%s">%s</u:%sResponse>`, action, pmService, out, action))
	default:
		http.NotFound(w, r)
	}
}

func (g *testIGD) actions() []string {
	g.mu.Lock()
	defer g.mu.Unlock()
	return slices.Clone(g.calls)
}

// serveTestIGD serves g on 127.0.0.1 and returns its description's URL.
func serveTestIGD(t *testing.T, g *testIGD) string {
	t.Helper()
	srv := httptest.NewServer(g)
	t.Cleanup(srv.Close)
	return srv.URL + "/desc.xml"
}

// serveGatewayPort answers PCP and NAT-PMP requests on 127.0.0.1:5351
// with the result code refuse (0: stays silent) until the test ends; it
// skips the test when the port is taken.
func serveGatewayPort(t *testing.T, refuse uint8) {
	t.Helper()
	conn, err := net.ListenUDP("udp4", net.UDPAddrFromAddrPort(netip.AddrPortFrom(pmLoopback, 5351)))
	if err != nil {
		t.Skipf("127.0.0.1:5351 is taken: %v", err)
	}
	var wg sync.WaitGroup
	wg.Go(func() {
		buf := make([]byte, 1500)
		for {
			n, from, err := conn.ReadFromUDPAddrPort(buf)
			if err != nil {
				return
			}
			if refuse == 0 || n < 2 {
				continue
			}
			var answer []byte
			if buf[0] == 2 { // PCP: the request echoed as a response, with the code
				answer = append([]byte(nil), buf[:n]...)
				answer[1] |= 0x80
				answer[2], answer[3] = 0, refuse
				clear(answer[4:24])
			} else { // NAT-PMP: the error response, header and epoch
				answer = []byte{0, 0x80 | buf[1], 0, refuse, 0, 0, 0, 0}
				binary.BigEndian.PutUint32(answer[4:], 1000)
			}
			_, _ = conn.WriteToUDPAddrPort(answer, from)
		}
	})
	t.Cleanup(func() {
		_ = conn.Close()
		wg.Wait()
	})
}

// loopbackProbe is a probe of mode against the gateway 127.0.0.1 (the
// test-only hook: the command leaves base zero), its UPnP description at
// desc.
func loopbackProbe(mode portmap.Protocol, desc string, wait time.Duration) portmapProbe {
	return portmapProbe{mode: mode, flag: mode.String(), wait: wait,
		base: portmap.Config{Gateway: pmLoopback, LocalAddr: pmLoopback, UPnPDescription: desc}}
}

func results(pm portmapCheckJSON) []string {
	var out []string
	for _, j := range pm.Protocols {
		out = append(out, j.Result)
	}
	return out
}

// assertPortmapReport checks what every report holds: the three
// protocols in order, each with its words; a code only with a refusal.
func assertPortmapReport(t *testing.T, pm portmapCheckJSON) {
	t.Helper()
	if len(pm.Protocols) != 3 || pm.Detail == "" || pm.Mode == "" {
		t.Fatalf("report %+v", pm)
	}
	for i, want := range []string{"pcp", "natpmp", "upnp"} {
		j := pm.Protocols[i]
		if j.Protocol != want || j.Detail == "" || !strings.HasPrefix(j.Detail, strings.ReplaceAll(j.Result, "-", " ")) ||
			(j.Code != 0) != (j.Result == "refused") {
			t.Errorf("protocol %d: %+v", i, j)
		}
	}
}

// TestPortmapReport: the probe's report from a Mapper's status says, per
// protocol, what was observed and nothing more: not tried is never "no
// answer", a request cut short by the wait is unknown, and only a router
// that refused with no protocol mapping is evidence for portmap_refused.
func TestPortmapReport(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	gw := netip.MustParseAddr("192.168.1.1")
	internal := netip.MustParseAddrPort("192.168.1.20:4242")
	probes := func(rs ...portmap.Probe) [3]portmap.Probe {
		out := idleStatus(portmap.Auto).Probes
		for _, r := range rs {
			for i := range out {
				if out[i].Protocol == r.Protocol {
					out[i] = r
				}
			}
		}
		return out
	}
	refused := func(p portmap.Protocol, code int) portmap.Probe {
		return portmap.Probe{Protocol: p, Result: portmap.Refused, Code: code, At: now}
	}
	res := func(p portmap.Protocol, r portmap.ProbeResult) portmap.Probe {
		return portmap.Probe{Protocol: p, Result: r, At: now}
	}
	auto := portmapProbe{mode: portmap.Auto, flag: "auto"}
	pcp := portmapProbe{mode: portmap.PCP, flag: "pcp"}
	tests := []struct {
		name    string
		probe   portmapProbe
		st      portmap.Status
		cut     bool
		delErr  error
		results []string
		details []string // substrings of the protocols' details, in order ("" skips)
		detail  string   // substring of the outcome
		refused int      // sources of the portmap_refused finding (0: none)
	}{
		{name: "off by the flag", probe: newPortmapProbe("off", portmap.Off, nil), st: idleStatus(portmap.Off),
			results: []string{"not-tried", "not-tried", "not-tried"}, details: []string{"--portmap off", "--portmap off", "--portmap off"},
			detail: "not tried: --portmap off"},
		{name: "auto with every bootstrap on loopback", probe: newPortmapProbe("auto", portmap.Auto,
			[]traversal.Bootstrap{{Addr: netip.MustParseAddrPort("127.0.0.1:4433")}}), st: idleStatus(portmap.Off),
			results: []string{"not-tried", "not-tried", "not-tried"}, detail: "every bootstrap is on loopback"},
		{name: "PCP refuses, NAT-PMP maps", probe: auto,
			st: portmap.Status{Mode: portmap.Auto, Active: true, Protocol: portmap.NATPMP, Gateway: gw, Internal: internal,
				External: pmExternal, Lease: time.Minute, Probes: probes(refused(portmap.PCP, 2), res(portmap.NATPMP, portmap.Answered))},
			results: []string{"refused", "ok", "not-tried"},
			details: []string{"result code 2 (NOT_AUTHORIZED)", "mapped the port", "natpmp mapped the port first"},
			detail:  "natpmp mapped 192.168.1.20:4242 to 198.51.100.9:40000 for 1m0s"},
		{name: "every protocol refuses", probe: auto,
			st: portmap.Status{Mode: portmap.Auto, Gateway: gw, Internal: internal, LastError: "portmap: pcp: refused with 2 (NOT_AUTHORIZED)\nmore",
				Probes: probes(refused(portmap.PCP, 2), refused(portmap.NATPMP, 2), refused(portmap.UPnP, 606))},
			results: []string{"refused", "refused", "refused"},
			details: []string{"NOT_AUTHORIZED", "Not Authorized/Refused", "result code 606 (Action not authorized)"},
			detail:  "no mapping: portmap: pcp: refused with 2 (NOT_AUTHORIZED); more", refused: 3},
		{name: "PCP refuses, the others do not answer", probe: auto,
			st: portmap.Status{Mode: portmap.Auto, Gateway: gw, LastError: "refused; no answer",
				Probes: probes(refused(portmap.PCP, 8), res(portmap.NATPMP, portmap.NoAnswer), res(portmap.UPnP, portmap.NoAnswer))},
			results: []string{"refused", "no-answer", "no-answer"}, details: []string{"NO_RESOURCES", "timed out", "timed out"}, refused: 1},
		{name: "PCP unanswered when the wait ended", probe: pcp, cut: true,
			st:      portmap.Status{Mode: portmap.PCP, Gateway: gw, Internal: internal, Probes: probes()},
			results: []string{"unknown", "not-tried", "not-tried"},
			details: []string{"no answer yet", "--portmap pcp", "--portmap pcp"}, detail: "no mapping yet"},
		{name: "NAT-PMP being asked when the wait ended", probe: auto, cut: true,
			st:      portmap.Status{Mode: portmap.Auto, Gateway: gw, Probes: probes(res(portmap.PCP, portmap.NoAnswer))},
			results: []string{"no-answer", "unknown", "not-tried"}, details: []string{"", "", "before diagnose stopped waiting"}},
		{name: "no gateway found before the wait ended", probe: auto, cut: true, st: portmap.Status{Mode: portmap.Auto, Probes: probes()},
			results: []string{"not-tried", "not-tried", "not-tried"}, details: []string{"no gateway found", "", ""}},
		{name: "no default gateway", probe: auto,
			st:      portmap.Status{Mode: portmap.Auto, LastError: "portmap: no default IPv4 gateway", Probes: probes()},
			results: []string{"not-tried", "not-tried", "not-tried"}, details: []string{"no request was sent", "", ""},
			detail: "no mapping: portmap: no default IPv4 gateway"},
		{name: "malformed answers and a local error", probe: auto,
			st: portmap.Status{Mode: portmap.Auto, Gateway: gw, LastError: "x",
				Probes: probes(res(portmap.PCP, portmap.Malformed), res(portmap.NATPMP, portmap.Malformed), res(portmap.UPnP, portmap.Failed))},
			results: []string{"malformed", "malformed", "error"}},
		{name: "the deletion failed", probe: auto, delErr: errors.New("portmap: deleting the pcp mapping: no answer"),
			st: portmap.Status{Mode: portmap.Auto, Active: true, Protocol: portmap.PCP, Gateway: gw, Internal: internal,
				External: pmExternal, Lease: time.Minute, Probes: probes(res(portmap.PCP, portmap.Answered))},
			results: []string{"ok", "not-tried", "not-tried"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			mon, err := monitor.New(monitor.Config{Registerer: prometheus.NewRegistry(), Addresses: monitor.AddressesFull})
			if err != nil {
				t.Fatal(err)
			}
			pm := portmapReport(tc.probe, tc.st, nil, tc.cut, tc.delErr, mon.Sanitizer())
			assertPortmapReport(t, pm)
			if got := results(pm); !slices.Equal(got, tc.results) {
				t.Fatalf("results %v, want %v", got, tc.results)
			}
			for i, want := range tc.details {
				if !strings.Contains(pm.Protocols[i].Detail, want) {
					t.Errorf("%s: %q lacks %q", pm.Protocols[i].Protocol, pm.Protocols[i].Detail, want)
				}
			}
			if !strings.Contains(pm.Detail, tc.detail) {
				t.Errorf("detail %q lacks %q", pm.Detail, tc.detail)
			}
			if pm.Tried != (tc.probe.mode != portmap.Off) || pm.Granted != tc.st.Active ||
				pm.Granted && (pm.Deleted != (tc.delErr == nil) || (pm.DeleteError != "") != (tc.delErr != nil)) {
				t.Errorf("tried %v, granted %v, deleted %v (%q)", pm.Tried, pm.Granted, pm.Deleted, pm.DeleteError)
			}
			var b strings.Builder
			printPortmap(&b, pm)
			if strings.Contains(b.String(), "()") || strings.Contains(b.String(), ": \n") {
				t.Errorf("printed an empty field:\n%s", b.String())
			}
			// Through diagnosis: one finding, a source per refusing
			// protocol, or none.
			sources := 0
			for _, f := range monitor.Diagnose(monitor.DiagInput{Probes: portmapVerdict(pm, now), Now: now}) {
				if f.Cause == monitor.CausePortMapRefused {
					sources = f.Sources
					if f.Severity != monitor.SeverityInfo || f.Confidence <= 0 || len(f.Evidence) != sources || f.Unknown == "" {
						t.Errorf("finding %+v", f)
					}
				}
			}
			if sources != tc.refused {
				t.Errorf("portmap_refused from %d sources, want %d", sources, tc.refused)
			}
		})
	}
}

// TestDiagnosePortmapProbe runs the probe against responders on
// loopback: what each protocol did, the mapping deleted at the end.
func TestDiagnosePortmapProbe(t *testing.T) {
	tests := []struct {
		name     string
		mode     portmap.Protocol
		fault    map[string]int // the IGD's refusals
		gateway  uint8          // PCP and NAT-PMP on 5351: 0 none, 255 silent, else the refusal's code
		wait     time.Duration
		results  []string
		granted  bool
		igdCalls []string // the IGD's actions, in order
	}{
		{name: "UPnP maps, and the mapping is deleted", mode: portmap.UPnP, results: []string{"not-tried", "not-tried", "ok"}, granted: true,
			igdCalls: []string{"AddAnyPortMapping", "GetExternalIPAddress", "DeletePortMapping"}},
		{name: "UPnP refuses", mode: portmap.UPnP, fault: map[string]int{"AddAnyPortMapping": 606},
			results: []string{"not-tried", "not-tried", "refused"}, igdCalls: []string{"AddAnyPortMapping"}},
		{name: "auto: PCP and NAT-PMP refuse, UPnP maps", mode: portmap.Auto, gateway: 2,
			results: []string{"refused", "refused", "ok"}, granted: true,
			igdCalls: []string{"AddAnyPortMapping", "GetExternalIPAddress", "DeletePortMapping"}},
		{name: "PCP silent: no answer", mode: portmap.PCP, gateway: 255, results: []string{"no-answer", "not-tried", "not-tried"}},
		{name: "PCP silent, the wait shorter than its timeout: unknown", mode: portmap.PCP, gateway: 255, wait: 300 * time.Millisecond,
			results: []string{"unknown", "not-tried", "not-tried"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			switch tc.gateway {
			case 0:
			case 255:
				serveGatewayPort(t, 0)
			default:
				serveGatewayPort(t, tc.gateway)
			}
			igd := &testIGD{fault: tc.fault}
			desc := serveTestIGD(t, igd)
			mon, err := monitor.New(monitor.Config{Registerer: prometheus.NewRegistry(), Addresses: monitor.AddressesFull})
			if err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			start := time.Now()
			run := startPortmapProbe(ctx, loopbackProbe(tc.mode, desc, tc.wait), 4242, mon.Sanitizer(), nil)
			pm := run.finish(ctx)
			t.Logf("%s in %v: %+v", tc.name, time.Since(start).Round(time.Millisecond), pm)
			assertPortmapReport(t, pm)
			if got := results(pm); !slices.Equal(got, tc.results) {
				t.Fatalf("results %v, want %v", got, tc.results)
			}
			if pm.Granted != tc.granted || tc.granted && (!pm.Deleted || pm.External != pmExternal.String() || pm.Protocol != "upnp") {
				t.Fatalf("report %+v", pm)
			}
			if got := igd.actions(); !slices.Equal(got, tc.igdCalls) {
				t.Errorf("the IGD saw %v, want %v", got, tc.igdCalls)
			}
		})
	}
}

// TestDiagnosePortmapFlag runs `antnode diagnose --portmap` against a
// loopback bootstrap: auto maps nothing there, off nothing anywhere, and
// both say so; a protocol that does not exist is bad input.
func TestDiagnosePortmapFlag(t *testing.T) {
	boot := startBootstrap(t)
	tests := []struct {
		name   string
		flag   string
		code   int
		detail string
	}{
		{"auto with a loopback bootstrap", "auto", exitOK, "not tried: every bootstrap is on loopback"},
		{"off", "off", exitOK, "not tried: --portmap off"},
		{"no such protocol", "igd", exitUsage, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			code, out, errOut := run("diagnose", "--bootstrap-nodes", boot, "--portmap", tc.flag, "--json", "--timeout", "15s")
			if code != tc.code {
				t.Fatalf("exit %d, want %d: %s %s", code, tc.code, out, errOut)
			}
			if tc.code == exitUsage {
				if !strings.Contains(errOut, "--portmap") {
					t.Fatalf("stderr %q does not name the flag", errOut)
				}
				return
			}
			var rep diagnoseReport
			if err := json.Unmarshal([]byte(out), &rep); err != nil {
				t.Fatalf("not JSON: %v\n%s", err, out)
			}
			assertPortmapReport(t, rep.Portmap)
			if rep.Portmap.Mode != tc.flag || rep.Portmap.Tried || !strings.Contains(rep.Portmap.Detail, tc.detail) ||
				!slices.Equal(results(rep.Portmap), []string{"not-tried", "not-tried", "not-tried"}) {
				t.Fatalf("portmap %+v", rep.Portmap)
			}
		})
	}
}

// TestDiagnoseReportsPortMapping runs the whole diagnosis against a
// loopback bootstrap, with the probe pointed at a loopback gateway whose
// IGD maps (and, where the port is free, whose PCP and NAT-PMP refuse):
// the report and its text say which protocols answered, and how.
func TestDiagnoseReportsPortMapping(t *testing.T) {
	boot := startBootstrap(t)
	bs, err := traversal.ParseBootstraps(boot)
	if err != nil {
		t.Fatal(err)
	}
	serveGatewayPort(t, 2)
	igd := &testIGD{}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	rep, err := runDiagnose(ctx, bs, nat64.Prefix{}, "127.0.0.1:0", monitor.AddressesFull, loopbackProbe(portmap.Auto, serveTestIGD(t, igd), 0), nil)
	if err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	printDiagnose(&b, rep)
	text := b.String()
	t.Logf("antnode diagnose prints:\n%s", text)
	for _, want := range []string{
		"portmap (auto, gateway 127.0.0.1): upnp mapped 127.0.0.1:",
		"to 198.51.100.9:40000 for 1m0s; deleted again",
		"pcp     refused: the router answered with result code 2 (NOT_AUTHORIZED)",
		"natpmp  refused: the router answered with result code 2 (Not Authorized/Refused)",
		"upnp    ok: the router mapped the port",
	} {
		if !strings.Contains(text, want) {
			t.Errorf("the text lacks %q", want)
		}
	}
	for _, f := range rep.Findings {
		if f.Cause == monitor.CausePortMapRefused {
			t.Errorf("a router that mapped by UPnP is said to refuse: %+v", f)
		}
	}
	assertNoEmptyField(t, rep)
}
