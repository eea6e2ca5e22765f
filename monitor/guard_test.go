package monitor

import (
	"bufio"
	"context"
	"io"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// rawStatus sends a raw request line and headers to addr and returns the
// response's status code.
func rawStatus(t *testing.T, addr, head string) int {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.WriteString(c, head+"\r\n"); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

// newSurfaceOn is newSurface on a listener of the caller's.
func newSurfaceOn(t *testing.T, ln net.Listener, cfg ServerConfig) *Server {
	t.Helper()
	reg := prometheus.NewRegistry()
	mon, err := New(Config{Registerer: reg})
	if err != nil {
		t.Fatal(err)
	}
	cfg.Listener, cfg.Gatherer, cfg.Monitor = ln, reg, mon
	srv, err := NewServer(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close() })
	return srv
}

// TestHostMustNameTheNode: DNS rebinding. A request whose Host is not the
// listen address, a loopback address or name, or a listed name is
// refused with 421, whatever the path (the health probes too).
func TestHostMustNameTheNode(t *testing.T) {
	status := func() any { return map[string]string{"id": "x"} }
	tests := []struct {
		name   string
		listen string // where the surface listens
		host   string // the Host header; "-" for none (HTTP/1.0)
		path   string
		want   int
	}{
		{"listen address", "127.0.0.1:0", "LISTEN", "/api/v1/status", 200},
		{"loopback IP without port", "127.0.0.1:0", "127.0.0.1", "/api/v1/status", 200},
		{"other loopback IP", "127.0.0.1:0", "127.0.0.5:80", "/api/v1/status", 200},
		{"IPv6 loopback", "127.0.0.1:0", "[::1]:9464", "/api/v1/status", 200},
		{"localhost", "127.0.0.1:0", "localhost:9464", "/api/v1/status", 200},
		{"localhost in capitals with a dot", "127.0.0.1:0", "LOCALHOST.", "/api/v1/status", 200},
		{"a .localhost name", "127.0.0.1:0", "dash.localhost:9464", "/api/v1/status", 200},
		{"a listed name", "127.0.0.1:0", "node.example:9464", "/api/v1/status", 200},
		{"a rebound name", "127.0.0.1:0", "evil.example:9464", "/api/v1/status", 421},
		{"a rebound name on healthz", "127.0.0.1:0", "evil.example", "/healthz", 421},
		{"a rebound name on the dashboard", "127.0.0.1:0", "evil.example", "/", 421},
		{"a name ending in a listed one", "127.0.0.1:0", "evilnode.example", "/api/v1/status", 421},
		{"localhost as a prefix", "127.0.0.1:0", "localhost.evil.example", "/api/v1/status", 421},
		{"another IP", "127.0.0.1:0", "192.0.2.1:9464", "/api/v1/status", 421},
		{"no Host at all", "127.0.0.1:0", "-", "/api/v1/status", 421},
		{"wildcard listener: any IP", "0.0.0.0:0", "192.0.2.1:9464", "/api/v1/status", 200},
		{"wildcard listener: a rebound name", "0.0.0.0:0", "evil.example", "/api/v1/status", 421},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ln, err := net.Listen("tcp4", tc.listen)
			if err != nil {
				t.Fatal(err)
			}
			newSurfaceOn(t, ln, ServerConfig{Status: status, AllowedHosts: []string{"node.example"}})
			_, port, _ := net.SplitHostPort(ln.Addr().String())
			addr := "127.0.0.1:" + port
			head := "GET " + tc.path + " HTTP/1.1\r\nHost: " + strings.ReplaceAll(tc.host, "LISTEN", ln.Addr().String()) + "\r\nConnection: close\r\n"
			if tc.host == "-" {
				head = "GET " + tc.path + " HTTP/1.0\r\n"
			}
			if got := rawStatus(t, addr, head); got != tc.want {
				t.Fatalf("Host %q: %d, want %d", tc.host, got, tc.want)
			}
		})
	}
}

// TestPostNeedsTokenOriginAndNoForm: POST /api/v1/connect is off without
// a token, and with one it needs the token, this node's origin, and a
// header no HTML form can send. Only the allowed requests reach Connect.
func TestPostNeedsTokenOriginAndNoForm(t *testing.T) {
	var calls atomic.Int32
	connect := func(context.Context, string, int64) (any, error) {
		calls.Add(1)
		return map[string]bool{"connected": true}, nil
	}
	open := newSurface(t, ServerConfig{Connect: connect, TokenHint: "; start the node with --metrics-token-file FILE"})
	s := newSurface(t, ServerConfig{Connect: connect, Token: testToken})
	self := s.base
	tests := []struct {
		name     string
		srv      *surface
		bearer   bool   // Authorization: Bearer TOKEN
		cookie   bool   // the dashboard's login cookie
		ctype    string // Content-Type
		origin   string
		fetch    string // Sec-Fetch-Site
		want     int
		wantBody string
	}{
		{"no token configured", open, true, false, "application/json", "", "", 403, "--metrics-token-file"},
		{"no token sent", s, false, false, "application/json", "", "", 401, ""},
		{"curl with the token", s, true, false, "", "", "", 200, ""},
		{"curl with the token from another origin", s, true, false, "", "https://evil.example", "", 403, "cross-origin"},
		{"same site, another port", s, true, false, "application/json", "http://127.0.0.1:1", "same-site", 403, "cross-origin"},
		{"cross-site fetch metadata", s, false, true, "application/json", "", "cross-site", 403, "cross-origin"},
		{"null origin", s, true, false, "application/json", "null", "", 403, "cross-origin"},
		{"cookie form post (urlencoded)", s, false, true, "application/x-www-form-urlencoded", self, "same-origin", 415, "application/json"},
		{"cookie form post (text/plain)", s, false, true, "text/plain", "", "", 415, "application/json"},
		{"cookie, no content type", s, false, true, "", "", "", 415, "application/json"},
		{"dashboard script: cookie and JSON", s, false, true, "application/json; charset=utf-8", self, "same-origin", 200, ""},
	}
	want := int32(0)
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			req, _ := http.NewRequest(http.MethodPost, tc.srv.base+"/api/v1/connect?peer=somepeer", strings.NewReader("{}"))
			if tc.bearer {
				req.Header.Set("Authorization", "Bearer "+testToken)
			}
			if tc.cookie {
				req.AddCookie(&http.Cookie{Name: tokenCookie, Value: testToken})
			}
			for k, v := range map[string]string{"Content-Type": tc.ctype, "Origin": tc.origin, "Sec-Fetch-Site": tc.fetch} {
				if v != "" {
					req.Header.Set(k, v)
				}
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			b, _ := io.ReadAll(resp.Body)
			if resp.StatusCode != tc.want || !strings.Contains(string(b), tc.wantBody) {
				t.Fatalf("%d %s, want %d with %q", resp.StatusCode, b, tc.want, tc.wantBody)
			}
			if tc.want == 200 {
				want++
			}
			if got := calls.Load(); got != want {
				t.Fatalf("Connect called %d times, want %d", got, want)
			}
		})
	}
	if n := strings.Count(s.audit.String(), `"detail":"http: cross-origin"`); n != 4 {
		t.Fatalf("%d cross-origin refusals audited, want 4:\n%s", n, s.audit.String())
	}
}

// TestStreamsPerClient: one client cannot hold every dashboard stream;
// the total is bounded too, and a slot comes back when its stream ends.
func TestStreamsPerClient(t *testing.T) {
	s := newSurface(t, ServerConfig{MaxStreams: 3, MaxStreamsPerClient: 2})
	// from opens a stream from a loopback source IP and returns its status
	// and a func that ends it.
	from := func(ip string) (int, func()) {
		t.Helper()
		tr := &http.Transport{DialContext: (&net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(ip)}}).DialContext}
		ctx, cancel := context.WithCancel(t.Context())
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, s.base+"/api/v1/stream", nil)
		resp, err := (&http.Client{Transport: tr}).Do(req)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { resp.Body.Close() })
		if resp.StatusCode == 200 { // the first frame: the slot is held
			bufio.NewReader(resp.Body).ReadString('\n')
		}
		return resp.StatusCode, func() { cancel(); resp.Body.Close(); tr.CloseIdleConnections() }
	}
	steps := []struct {
		name string
		ip   string
		want int
	}{
		{"first of client A", "127.0.0.1", 200},
		{"second of client A", "127.0.0.1", 200},
		{"third of client A: over its share", "127.0.0.1", 503},
		{"first of client B", "127.0.0.2", 200},
		{"second of client B: over the total", "127.0.0.2", 503},
	}
	var ends []func()
	defer func() {
		for _, end := range ends {
			end()
		}
	}()
	for _, st := range steps {
		code, end := from(st.ip)
		ends = append(ends, end)
		if code != st.want {
			t.Fatalf("%s: %d, want %d", st.name, code, st.want)
		}
	}
	ends[0]() // client A leaves one: B may take it
	deadline := time.Now().Add(5 * time.Second)
	for {
		code, end := from("127.0.0.2")
		ends = append(ends, end)
		if code == 200 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the freed slot never came back: %d", code)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
