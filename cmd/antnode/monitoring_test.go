package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/antnode/antnode/internal/testkit"
)

// lockedBuffer collects a daemon's output while the test reads it.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// daemon runs `antnode args...` in-process until the test ends.
func daemon(t *testing.T, args ...string) (stdout, stderr *lockedBuffer) {
	t.Helper()
	stdout, stderr, _ = stoppableDaemon(t, args...)
	return stdout, stderr
}

// stoppableDaemon is daemon with a stop func, which returns once the
// command has ended (and is called again, harmlessly, at cleanup).
func stoppableDaemon(t *testing.T, args ...string) (stdout, stderr *lockedBuffer, stop func()) {
	t.Helper()
	stdout, stderr = &lockedBuffer{}, &lockedBuffer{}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan int, 1)
	go func() { done <- realMain(ctx, args, stdout, stderr) }()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			select {
			case <-done:
			case <-time.After(10 * time.Second):
				t.Errorf("daemon %v did not stop", args)
			}
		})
	}
	t.Cleanup(stop)
	return stdout, stderr, stop
}

// freePorts returns a loopback port p with p, p+1 and p+2 free on UDP
// and TCP (a bootstrap uses all three).
func freePorts(t *testing.T) int { return freePortsOn(t, "127.0.0.1") }

// freePortsOn is freePorts on another loopback address (an IP literal).
func freePortsOn(t *testing.T, host string) int {
	t.Helper()
	for range 50 {
		l, err := net.ListenPacket(udpNetwork(net.JoinHostPort(host, "0")), net.JoinHostPort(host, "0"))
		if err != nil {
			t.Fatal(err)
		}
		p := l.LocalAddr().(*net.UDPAddr).Port
		l.Close()
		if p > 65000 {
			continue
		}
		ok := true
		for i := range 3 {
			a := net.JoinHostPort(host, strconv.Itoa(p+i))
			u, err1 := net.ListenPacket(udpNetwork(a), a)
			c, err2 := net.Listen(tcpNetwork(a), a)
			ok = ok && err1 == nil && err2 == nil
			if u != nil {
				u.Close()
			}
			if c != nil {
				c.Close()
			}
		}
		if ok {
			return p
		}
	}
	t.Fatal("no three consecutive free ports")
	return 0
}

func freeTCP(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

func httpGet(t *testing.T, u, token string) (int, string) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, u, nil)
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// seedNames are the metric names the monitoring specification fixes, with
// their abbreviated units ("_ms"); linters flag exactly those.
var seedNames = []string{"nat_attempts_total", "nat_results_total", "nat_duration_ms", "bootstrap_requests_total",
	"bootstrap_response_time_ms", "nat_traversal_by_type_total", "connection_latency_ms", "connection_throughput_mbps"}

// TestDaemonsWithPrometheus runs a bootstrap and a peer daemon with the
// monitoring surface behind a token, connects to the peer, and checks the
// surface: authentication, promtool's lint of /metrics, a real Prometheus
// (Debian's) scraping the peer with the token and answering a query for a
// seed metric, and the logs: one attempt ID on every record of an
// attempt and no raw address anywhere.
func TestDaemonsWithPrometheus(t *testing.T) {
	promBin := testkit.NeedTool(t, "prometheus")
	promtool := testkit.NeedTool(t, "promtool")
	dir := t.TempDir()
	tokenFile := filepath.Join(dir, "token")
	const token = "integration-test-token-0123456789"
	if err := os.WriteFile(tokenFile, []byte(token+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	bootKey := filepath.Join(dir, "boot.key")
	if code, _, _ := run("id", "--key", bootKey); code != exitOK {
		t.Fatal("id")
	}
	_, idOut, _ := run("id", "--key", bootKey)
	bport := freePorts(t)
	boot := strings.TrimSpace(idOut) + "@127.0.0.1:" + strconv.Itoa(bport)
	bootMetrics, peerMetrics := freeTCP(t), freeTCP(t)
	auditLog, qlogDir := filepath.Join(dir, "audit.json"), filepath.Join(dir, "qlog")
	_, bootLog := daemon(t, "--bootstrap", "--listen", "127.0.0.1:"+strconv.Itoa(bport), "--key", bootKey,
		"--metrics-addr", bootMetrics, "--metrics-token-file", tokenFile, "--log-format", "json", "--log-level", "debug",
		"--audit-log", auditLog)
	_, peerLog := daemon(t, "--listen", "127.0.0.1:0", "--bootstrap-nodes", boot,
		"--metrics-addr", peerMetrics, "--metrics-token-file", tokenFile, "--log-format", "json", "--log-level", "debug",
		"--qlog-dir", qlogDir)
	peerURL := "http://" + peerMetrics
	testkit.WaitFor(t, 10*time.Second, "the peer to be ready", func() bool {
		code, _ := httpGet(t, peerURL+"/readyz", "")
		return code == 200
	})
	_, body := httpGet(t, peerURL+"/api/v1/status", token)
	var status struct{ ID string }
	if err := json.Unmarshal([]byte(body), &status); err != nil || status.ID == "" {
		t.Fatalf("status: %v %s", err, body)
	}

	code, out, connLog := run("connect", status.ID, "--bootstrap-nodes", boot, "--send", "64KiB", "--json",
		"--log-format", "json", "--log-level", "debug")
	if code != exitOK {
		t.Fatalf("connect: %d %s %s", code, out, connLog)
	}
	res := decode(t, out)

	t.Run("authentication", func(t *testing.T) {
		for _, u := range []string{peerURL, "http://" + bootMetrics} {
			if c, _ := httpGet(t, u+"/metrics", ""); c != 401 {
				t.Errorf("%s/metrics without token: %d", u, c)
			}
			if c, _ := httpGet(t, u+"/api/v1/status", ""); c != 401 {
				t.Errorf("%s/api/v1/status without token: %d", u, c)
			}
			if c, _ := httpGet(t, u+"/healthz", ""); c != 200 {
				t.Errorf("%s/healthz without token: %d", u, c)
			}
			if c, _ := httpGet(t, u+"/metrics", token); c != 200 {
				t.Errorf("%s/metrics with the token: %d", u, c)
			}
		}
	})

	t.Run("promtool check metrics", func(t *testing.T) {
		for _, u := range []string{peerURL, "http://" + bootMetrics} {
			_, metrics := httpGet(t, u+"/metrics", token)
			cmd := exec.Command(promtool, "check", "metrics")
			cmd.Stdin = strings.NewReader(metrics)
			outp, err := cmd.CombinedOutput()
			var ee *exec.ExitError
			if err != nil && !errors.As(err, &ee) {
				t.Fatal(err)
			}
			// The seed's names end in "_ms", which promtool calls an
			// abbreviated unit; they are a contract. Anything else fails.
			sc := bufio.NewScanner(bytes.NewReader(outp))
			for sc.Scan() {
				line := sc.Text()
				name, _, _ := strings.Cut(line, " ")
				if !(contains(seedNames, name) && strings.Contains(line, "abbreviated units")) {
					t.Errorf("promtool on %s: %s", u, line)
				}
			}
		}
	})

	t.Run("prometheus scrapes with the token", func(t *testing.T) {
		promAddr := freeTCP(t)
		cfg := fmt.Sprintf(`global:
  scrape_interval: 1s
scrape_configs:
  - job_name: antnode
    authorization:
      credentials_file: %s
    static_configs:
      - targets: ['%s']
`, tokenFile, peerMetrics)
		cfgFile := filepath.Join(dir, "prometheus.yml")
		os.WriteFile(cfgFile, []byte(cfg), 0o600)
		ctx, cancel := context.WithCancel(context.Background())
		prom := exec.CommandContext(ctx, promBin, "--config.file="+cfgFile, "--storage.tsdb.path="+filepath.Join(dir, "tsdb"),
			"--web.listen-address="+promAddr)
		var promOut lockedBuffer
		prom.Stdout, prom.Stderr = &promOut, &promOut
		if err := prom.Start(); err != nil {
			t.Fatal(err)
		}
		defer func() {
			cancel()
			prom.Wait()
		}()
		query := func(q string) (float64, bool) {
			c, body := httpGet(t, "http://"+promAddr+"/api/v1/query?query="+url.QueryEscape(q), "")
			if c != 200 {
				return 0, false
			}
			var r struct {
				Data struct {
					Result []struct {
						Value []any `json:"value"`
					} `json:"result"`
				} `json:"data"`
			}
			if json.Unmarshal([]byte(body), &r) != nil || len(r.Data.Result) != 1 || len(r.Data.Result[0].Value) != 2 {
				return 0, false
			}
			s, _ := r.Data.Result[0].Value[1].(string)
			v, err := strconv.ParseFloat(s, 64)
			return v, err == nil
		}
		var got float64
		testkit.WaitFor(t, 30*time.Second, "Prometheus to have scraped nat_attempts_total\n"+promOut.String(), func() bool {
			v, ok := query(`sum(nat_attempts_total{job="antnode",role="responder"})`)
			got = v
			return ok
		})
		if got != 1 {
			t.Fatalf("nat_attempts_total through Prometheus = %v, want 1 (one connect)", got)
		}
		if v, ok := query(`sum(nat_results_total{job="antnode",result="success"})`); !ok || v != 1 {
			t.Fatalf("nat_results_total{result=success} = %v %v", v, ok)
		}
		if v, ok := query(`up{job="antnode"}`); !ok || v != 1 {
			t.Fatalf("up = %v", v)
		}
	})

	t.Run("peers API", func(t *testing.T) {
		c, body := httpGet(t, peerURL+"/api/v1/peers", token)
		var r struct {
			Peers []struct {
				ID          string `json:"id"`
				Transitions []struct {
					To     string `json:"to"`
					Reason string `json:"reason"`
				} `json:"transitions"`
			} `json:"peers"`
			Transitions map[string][]string `json:"transitions"`
		}
		if c != 200 || json.Unmarshal([]byte(body), &r) != nil || len(r.Peers) != 1 || len(r.Transitions) == 0 {
			t.Fatalf("%d %s", c, body)
		}
		var states []string
		for _, tr := range r.Peers[0].Transitions {
			states = append(states, tr.To)
		}
		if r.Peers[0].ID == "" || !contains(states, "connected-direct") || r.Peers[0].Transitions[0].Reason != "none" {
			t.Fatalf("the connecting peer's history %v lacks connected-direct: %s", states, body)
		}
	})

	t.Run("latency and throughput from the connection", func(t *testing.T) {
		_, metrics := httpGet(t, peerURL+"/metrics", token)
		for _, want := range []string{`connection_latency_ms_count{family="ipv4",path="direct"} 1`, `connection_throughput_mbps_count{path="direct"} 1`} {
			if !strings.Contains(metrics, want) {
				t.Errorf("the peer's metrics lack %s:\n%s", want, grepLines(metrics, "connection_"))
			}
		}
	})

	t.Run("qlog", func(t *testing.T) {
		var traces []string
		testkit.WaitFor(t, 10*time.Second, "a qlog trace of the accepted connection", func() bool {
			traces, _ = filepath.Glob(filepath.Join(qlogDir, "*"))
			return len(traces) > 0
		})
		b, err := os.ReadFile(traces[0])
		if err != nil || !bytes.Contains(b, []byte("qlog")) {
			t.Fatalf("trace %s: %v, %.200s", traces[0], err, b)
		}
		if bytes.Contains(b, []byte("127.0.0.1")) {
			t.Fatal("the trace holds a raw address")
		}
	})

	t.Run("audit log", func(t *testing.T) {
		// The unauthenticated requests above, and a relay allocation.
		code, out, errOut := run("connect", status.ID, "--bootstrap-nodes", boot, "--relay", "force", "--send", "16KiB", "--json")
		if code != exitOK || decode(t, out).Path != "relay" {
			t.Fatalf("connect through the relay: %d %s %s", code, out, errOut)
		}
		var kinds []string
		testkit.WaitFor(t, 5*time.Second, "the relay allocation in the audit log", func() bool {
			b, _ := os.ReadFile(auditLog)
			kinds = kinds[:0]
			for _, rec := range jsonLines(t, string(b)) {
				if rec["audit"] != true {
					t.Fatalf("record without audit=true: %v", rec)
				}
				ev, _ := rec["event"].(string)
				detail, _ := rec["detail"].(string)
				kinds = append(kinds, ev+"/"+detail)
			}
			return contains(kinds, "relay/allocate")
		})
		security := false
		for _, k := range kinds {
			security = security || strings.HasPrefix(k, "security/")
		}
		if !security {
			t.Fatalf("no authentication failure in the audit log: %v", kinds)
		}
		if b, _ := os.ReadFile(auditLog); bytes.Contains(b, []byte("127.0.0.1")) {
			t.Fatal("the audit log holds a raw address")
		}
	})

	t.Run("logs", func(t *testing.T) {
		logs := map[string]string{"bootstrap": bootLog.String(), "peer": peerLog.String(), "connect": connLog}
		for name, l := range logs {
			if strings.Contains(l, "127.0.0.1") {
				i := strings.Index(l, "127.0.0.1")
				t.Errorf("%s log holds a raw address: %q", name, l[max(0, strings.LastIndex(l[:i], "\n")):min(len(l), i+80)])
			}
		}
		// Every record about the connect's attempt carries its ID, and
		// no other attempt's ID appears in the connect's log.
		n := 0
		for _, rec := range jsonLines(t, connLog) {
			ev, _ := rec["event"].(string)
			att, _ := rec["attempt"].(string)
			phase, _ := rec["phase"].(string)
			if (attemptKinds[ev] || attemptPhases[phase]) && att != res.Attempt {
				t.Errorf("record %v lacks the attempt ID %s", rec, res.Attempt)
			}
			if att != "" && att != res.Attempt {
				t.Errorf("a record of another attempt: %v", rec)
			}
			if att == res.Attempt {
				n++
			}
		}
		if n < 10 {
			t.Errorf("only %d records carry the attempt ID", n)
		}
	})
}

// attemptKinds are the event kinds, attemptPhases the phases, that only
// happen within an attempt (registration and classification are the
// node's own phases).
var (
	attemptKinds = map[string]bool{"attempt_start": true, "attempt_end": true, "candidate": true,
		"check_sent": true, "check_answered": true, "path_validated": true, "fallback": true}
	attemptPhases = map[string]bool{"coordinate": true, "sync": true, "punch": true, "validate": true,
		"handshake": true, "relay": true, "transfer": true}
)

func jsonLines(t *testing.T, s string) []map[string]any {
	t.Helper()
	var out []map[string]any
	for _, line := range strings.Split(s, "\n") {
		if strings.TrimSpace(line) == "" {
			continue
		}
		var m map[string]any
		if err := json.Unmarshal([]byte(line), &m); err != nil {
			t.Fatalf("not a JSON record: %q", line)
		}
		out = append(out, m)
	}
	return out
}

func contains(xs []string, x string) bool {
	for _, y := range xs {
		if x == y {
			return true
		}
	}
	return false
}

func TestConfigFile(t *testing.T) {
	dir := t.TempDir()
	write := func(s string) string {
		p := filepath.Join(dir, fmt.Sprintf("c%d.json", time.Now().UnixNano()))
		os.WriteFile(p, []byte(s), 0o600)
		return p
	}
	newFS := func() (*flag.FlagSet, *monitorFlags, *peerFlags) {
		fs := flag.NewFlagSet("t", flag.ContinueOnError)
		fs.SetOutput(io.Discard)
		var m monitorFlags
		var p peerFlags
		m.register(fs)
		p.register(fs)
		return fs, &m, &p
	}
	tests := []struct {
		name    string
		file    string
		args    []string
		wantErr string
		check   func(*monitorFlags, *peerFlags) bool
	}{
		{"values of every type", `{"sampling-rate": 0.05, "sampling-fixed": true, "store-retention": "2h", "breaker-threshold": 3}`, nil, "",
			func(m *monitorFlags, p *peerFlags) bool {
				return m.samplingRate == 0.05 && m.fixed && m.retention == 2*time.Hour && p.breakerThreshold == 3
			}},
		{"the command line wins", `{"sampling-rate": 0.05}`, []string{"--sampling-rate", "0.2"}, "",
			func(m *monitorFlags, _ *peerFlags) bool { return m.samplingRate == 0.2 }},
		{"unknown setting", `{"sampling_rate": 0.05}`, nil, `unknown setting "sampling_rate"`, nil},
		{"bad value", `{"store-retention": "forever"}`, nil, `"store-retention"`, nil},
		{"nested value", `{"store-size": {"max": 5}}`, nil, "want a string, a number or a boolean", nil},
		{"not JSON", `sampling-rate = 0.05`, nil, "invalid character", nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			fs, m, p := newFS()
			if err := fs.Parse(tc.args); err != nil {
				t.Fatal(err)
			}
			err := applyConfigFile(fs, write(tc.file))
			if tc.wantErr != "" {
				if !errors.Is(err, ErrConfig) || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err %v, want one containing %q", err, tc.wantErr)
				}
				return
			}
			if err != nil || !tc.check(m, p) {
				t.Fatalf("err %v, flags %+v %+v", err, m, p)
			}
		})
	}
	if err := applyConfigFile(flag.NewFlagSet("t", flag.ContinueOnError), filepath.Join(dir, "missing.json")); !errors.Is(err, ErrConfig) {
		t.Fatal(err)
	}
}

func TestMonitoringFlagErrors(t *testing.T) {
	dir := t.TempDir()
	short := filepath.Join(dir, "short")
	os.WriteFile(short, []byte("abc\n"), 0o600)
	tests := []struct {
		name string
		args []string
	}{
		{"sampling rate above 1", []string{"--sampling-rate", "2"}},
		{"zero store", []string{"--store-size", "0"}},
		{"bad metrics address", []string{"--metrics-addr", "nope"}},
		{"unknown config key", []string{"--config", writeFile(t, dir, `{"colour": "blue"}`)}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			args := append([]string{"--bootstrap", "--listen", "127.0.0.1:0"}, tc.args...)
			if code, _, errOut := run(args...); code != exitUsage || errOut == "" {
				t.Fatalf("exit %d, %q", code, errOut)
			}
		})
	}
	t.Run("short token", func(t *testing.T) {
		code, _, errOut := run("--bootstrap", "--listen", "127.0.0.1:0", "--metrics-addr", "127.0.0.1:0", "--metrics-token-file", short)
		// A bad file named by a flag is bad input (exit 2), like the flag.
		if code != exitUsage || !strings.Contains(errOut, "at least 16") {
			t.Fatalf("exit %d, %q", code, errOut)
		}
	})
}

func writeFile(t *testing.T, dir, s string) string {
	t.Helper()
	f, err := os.CreateTemp(dir, "*.json")
	if err != nil {
		t.Fatal(err)
	}
	f.WriteString(s)
	f.Close()
	return f.Name()
}

// FuzzConfigFile: any file content is either applied or refused with
// ErrConfig; it never panics.
func FuzzConfigFile(f *testing.F) {
	for _, s := range []string{`{"sampling-rate": 0.05, "sampling-fixed": true, "store-retention": "2h"}`,
		`{"breaker-threshold": 3}`, `{}`, `[]`, `{"config": "x"}`, `{"sampling-rate": {"a": 1}}`, "\x00"} {
		f.Add([]byte(s))
	}
	dir := f.TempDir()
	f.Fuzz(func(t *testing.T, data []byte) {
		p := filepath.Join(dir, "c.json")
		if err := os.WriteFile(p, data, 0o600); err != nil {
			t.Fatal(err)
		}
		fs := flag.NewFlagSet("t", flag.ContinueOnError)
		fs.SetOutput(io.Discard)
		var m monitorFlags
		var pf peerFlags
		m.register(fs)
		pf.register(fs)
		if err := applyConfigFile(fs, p); err != nil && !errors.Is(err, ErrConfig) {
			t.Fatalf("error without ErrConfig: %v", err)
		}
	})
}

// TestInfluxDBFlags: a bootstrap with --influxdb-url pushes its metrics,
// tagged with its peer ID, in line protocol to /write (the real InfluxDB
// round trip is monitor's TestInfluxDBExport; this checks the wiring).
func TestInfluxDBFlags(t *testing.T) {
	bodies := make(chan string, 16)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		if r.URL.Path != "/write" || r.URL.Query().Get("db") != "fleet" || r.URL.Query().Get("precision") != "ms" {
			http.Error(w, "bad request "+r.URL.String(), http.StatusBadRequest)
			return
		}
		select {
		case bodies <- string(b):
		default:
		}
		w.WriteHeader(http.StatusNoContent)
	}))
	defer srv.Close()
	keyDir := t.TempDir()
	key := filepath.Join(keyDir, "peer.key")
	_, idOut, _ := run("id", "--key", key)
	id := strings.TrimSpace(idOut)
	_, stderr := daemon(t, "--bootstrap", "--listen", "127.0.0.1:"+strconv.Itoa(freePorts(t)), "--key", key, "--metrics-addr", "off",
		"--influxdb-url", srv.URL, "--influxdb-db", "fleet", "--export-interval", "1s")
	select {
	case b := <-bodies:
		if !strings.Contains(b, "antnode_registered_peers,node="+id+" value=0 ") {
			t.Fatalf("no registered peers tagged with the bootstrap's ID in:\n%.2000s", b)
		}
	case <-time.After(15 * time.Second):
		t.Fatalf("no write to InfluxDB within 15 s; the daemon said:\n%s", stderr)
	}
}

// TestCloudWatchFlags: a bootstrap with --cloudwatch-namespace puts its
// metrics, signed with the AWS credentials of its environment, to the
// endpoint given (monitor's TestCloudWatchExport checks the signature and
// the data; this checks the wiring).
func TestCloudWatchFlags(t *testing.T) {
	t.Setenv("AWS_ACCESS_KEY_ID", "AKIDWIRINGTEST")
	t.Setenv("AWS_SECRET_ACCESS_KEY", "secret")
	t.Setenv("AWS_CONFIG_FILE", filepath.Join(t.TempDir(), "none"))
	t.Setenv("AWS_SHARED_CREDENTIALS_FILE", filepath.Join(t.TempDir(), "none"))
	got := make(chan *http.Request, 4)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case got <- r:
		default:
		}
		w.Header().Set("Smithy-Protocol", "rpc-v2-cbor")
		w.Header().Set("Content-Type", "application/cbor")
		w.Write([]byte{0xa0}) // an empty CBOR map: PutMetricData's empty output
	}))
	defer srv.Close()
	key := filepath.Join(t.TempDir(), "boot.key")
	_, stderr := daemon(t, "--bootstrap", "--listen", "127.0.0.1:"+strconv.Itoa(freePorts(t)), "--key", key, "--metrics-addr", "off",
		"--cloudwatch-namespace", "antnode", "--cloudwatch-region", "eu-west-1", "--cloudwatch-endpoint", srv.URL, "--export-interval", "1s")
	select {
	case r := <-got:
		if !strings.HasSuffix(r.URL.Path, "/operation/PutMetricData") ||
			!strings.HasPrefix(r.Header.Get("Authorization"), "AWS4-HMAC-SHA256 Credential=AKIDWIRINGTEST/") ||
			!strings.Contains(r.Header.Get("Authorization"), "/eu-west-1/monitoring/aws4_request") {
			t.Fatalf("request %s with Authorization %q", r.URL.Path, r.Header.Get("Authorization"))
		}
	case <-time.After(15 * time.Second):
		t.Fatalf("no PutMetricData within 15 s; the daemon said:\n%s", stderr)
	}
}

// grepLines returns the lines of s that contain sub.
func grepLines(s, sub string) string {
	var b strings.Builder
	for line := range strings.Lines(s) {
		if strings.Contains(line, sub) {
			b.WriteString(line)
		}
	}
	return b.String()
}
