package main

import (
	"encoding/json"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/antnode/antnode/identity"
	"github.com/antnode/antnode/internal/testkit"
)

// TestDefaultMetricsPortInUse: a second node on a host whose default
// metrics port is taken carries on, on the next free port, and says where;
// an explicit --metrics-addr that is taken stays fatal and names it.
func TestDefaultMetricsPortInUse(t *testing.T) {
	// Take the default port (it may be taken already: just as good).
	if l, err := net.Listen("tcp", defaultMetricsAddr); err == nil {
		t.Cleanup(func() { l.Close() })
	}
	taken, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	tests := []struct {
		name    string
		metrics []string // --metrics-addr, if given
		fatal   bool
	}{
		{"default port taken", nil, false},
		{"explicit address taken", []string{"--metrics-addr", taken.Addr().String()}, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			args := append([]string{"--bootstrap", "--listen", "127.0.0.1:" + strconv.Itoa(freePorts(t)), "--no-relay"}, tc.metrics...)
			if tc.fatal {
				code, _, errOut := run(args...)
				if code != exitFailure || !strings.Contains(errOut, taken.Addr().String()) {
					t.Fatalf("exit %d, stderr %q: want 1 and the address as typed", code, errOut)
				}
				return
			}
			stdout, stderr := daemon(t, args...)
			re := regexp.MustCompile(`metrics on http://(127\.0\.0\.1:(\d+))/metrics`)
			var m []string
			testkit.WaitFor(t, 10*time.Second, "the metrics address on stdout", func() bool {
				m = re.FindStringSubmatch(stdout.String())
				return m != nil
			})
			if m[2] == "9464" {
				t.Fatalf("served on the taken default port: %s", stdout)
			}
			if code, _ := httpGet(t, "http://"+m[1]+"/healthz", ""); code != 200 {
				t.Fatalf("healthz on %s: %d", m[1], code)
			}
			if !strings.Contains(stderr.String(), "default metrics port is taken") || !strings.Contains(stderr.String(), "port="+m[2]) {
				t.Fatalf("the log does not say so: %s", stderr)
			}
		})
	}
}

// TestOwnErrorsShowOwnAddresses: an error about the user's own
// configuration, and a node's own bootstrap list in its API, show the
// addresses as typed; what leaves the host (log records, diagnose
// --redact) is hashed.
func TestOwnErrorsShowOwnAddresses(t *testing.T) {
	busy, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	tests := []struct {
		name string
		args []string
		code int
		want string
	}{
		{"bootstrap without a port", []string{"--bootstrap-nodes", "203.0.113.9", "--metrics-addr", "off"}, exitUsage, `"203.0.113.9"`},
		{"listen port in use", []string{"--bootstrap", "--no-relay", "--listen", busy.LocalAddr().String(), "--metrics-addr", "off"}, exitFailure, busy.LocalAddr().String()},
		{"IPv6 bootstrap for an IPv4 node", []string{"--listen", "127.0.0.1:0", "--bootstrap-nodes", "[2001:db8::1]:4433", "--metrics-addr", "off"}, exitUsage, "2001:db8::1"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			code, _, errOut := run(tc.args...)
			if code != tc.code || !strings.Contains(errOut, tc.want) || strings.Contains(errOut, "ip4-") {
				t.Fatalf("exit %d (want %d), stderr %q: want %s as typed", code, tc.code, errOut, tc.want)
			}
		})
	}

	t.Run("own bootstraps in the API", func(t *testing.T) {
		boot := startBootstrap(t)
		_, bootAddr, _ := strings.Cut(boot, "@")
		metrics := freeTCP(t)
		_, logs := daemon(t, "--listen", "127.0.0.1:0", "--bootstrap-nodes", boot, "--metrics-addr", metrics, "--log-level", "debug")
		testkit.WaitFor(t, 10*time.Second, "the peer to be ready", func() bool {
			code, _ := httpGet(t, "http://"+metrics+"/readyz", "")
			return code == 200
		})
		_, body := httpGet(t, "http://"+metrics+"/api/v1/status", "")
		var st struct{ Bootstraps []struct{ Addr string } }
		if err := json.Unmarshal([]byte(body), &st); err != nil || len(st.Bootstraps) != 1 || st.Bootstraps[0].Addr != bootAddr {
			t.Fatalf("status %s: want the bootstrap at %s", body, bootAddr)
		}
		// The log records, which may be shipped elsewhere, stay hashed.
		if strings.Contains(logs.String(), bootAddr) {
			t.Fatalf("a log record shows the bootstrap's address: %s", logs)
		}
	})

	t.Run("diagnose --redact hashes", func(t *testing.T) {
		dead, _ := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
		addr := dead.LocalAddr().String()
		dead.Close()
		for _, redact := range []bool{false, true} {
			args := []string{"diagnose", "--bootstrap-nodes", addr, "--json", "--timeout", "1s"}
			if redact {
				args = append(args, "--redact")
			}
			_, out, _ := run(args...)
			if shown := strings.Contains(out, addr); shown == redact {
				t.Fatalf("--redact=%v: address shown %v in %s", redact, shown, out)
			}
		}
	})
}

// TestFamilyMismatch: an IPv4 node given only IPv6 bootstraps (or an
// IPv6 node given IPv4 ones on a network without NAT64) is told that the
// families differ, instead of calling itself udp-blocked.
func TestFamilyMismatch(t *testing.T) {
	peer, _ := identity.Generate()
	tests := []struct {
		name string
		args []string
	}{
		{"connect: IPv4 listen, IPv6 bootstrap", []string{"connect", peer.ID().String(), "--bootstrap-nodes", "[2001:db8::1]:4433"}},
		{"connect: IPv6 listen, IPv4 bootstrap, no NAT64", []string{"connect", peer.ID().String(), "--listen", "[::1]:0", "--bootstrap-nodes", "203.0.113.1:4433",
			"--dns-server", testkit.DNS64(t)}},
		{"diagnose: IPv4 listen, IPv6 bootstrap", []string{"diagnose", "--bootstrap-nodes", "[2001:db8::1]:4433"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			code, _, errOut := run(append(tc.args, "--timeout", "2s")...)
			if code != exitUsage || !strings.Contains(errOut, "family") {
				t.Fatalf("exit %d, stderr %q", code, errOut)
			}
		})
	}
}

// writeToken writes a token file (mode 0600) and returns its path.
func writeToken(t *testing.T, token string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(p, []byte(token+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// apiPost POSTs to u as curl would (no Origin), with the bearer token
// when given, and returns the status and the body.
func apiPost(t *testing.T, u, token string) (int, string) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, u, nil)
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// TestAPIConnectLikeCLI: POST /api/v1/connect takes the CLI's size syntax
// and answers with the fields of `antnode connect --json`; on a node
// without a token it is off, and says how to turn it on.
func TestAPIConnectLikeCLI(t *testing.T) {
	const token = "api-connect-token-0123456789"
	boot := startBootstrap(t)
	target := startPeer(t, boot)
	metrics, open := freeTCP(t), freeTCP(t)
	daemon(t, "--listen", "127.0.0.1:0", "--bootstrap-nodes", boot, "--metrics-addr", metrics, "--metrics-token-file", writeToken(t, token))
	daemon(t, "--listen", "127.0.0.1:0", "--bootstrap-nodes", boot, "--metrics-addr", open)
	for _, m := range []string{metrics, open} {
		testkit.WaitFor(t, 10*time.Second, "the peer to be ready", func() bool {
			code, _ := httpGet(t, "http://"+m+"/readyz", "")
			return code == 200
		})
	}
	if code, body := apiPost(t, "http://"+open+"/api/v1/connect?peer="+target.String(), token); code != 403 ||
		!strings.Contains(body, "--metrics-token-file") {
		t.Fatalf("a node without a token: %d %s, want 403 naming --metrics-token-file", code, body)
	}
	code, body := apiPost(t, "http://"+metrics+"/api/v1/connect?peer="+target.String()+"&send=256KiB", token)
	var api map[string]any
	if err := json.Unmarshal([]byte(body), &api); err != nil || code != 200 {
		t.Fatalf("%d %v %s", code, err, body)
	}
	if api["connected"] != true || api["bytes_verified"] != float64(256<<10) || api["throughput_mbps"] == nil {
		t.Fatalf("API answer %v", api)
	}
	code, out, errOut := run("connect", target.String(), "--bootstrap-nodes", boot, "--send", "256KiB", "--json")
	if code != exitOK {
		t.Fatalf("connect: %d %s %s", code, out, errOut)
	}
	var cli map[string]any
	if err := json.Unmarshal([]byte(out), &cli); err != nil {
		t.Fatal(err)
	}
	for k := range cli {
		if _, ok := api[k]; !ok {
			t.Errorf("connect --json has %q, the API does not: %v", k, api)
		}
	}
	for _, bad := range []string{"lots", "1TiB"} {
		if code, _ := apiPost(t, "http://"+metrics+"/api/v1/connect?peer="+target.String()+"&send="+bad, token); code != 400 {
			t.Errorf("send=%s: %d, want 400", bad, code)
		}
	}
}
