package monitor

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/cookiejar"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// syncBuffer is a bytes.Buffer safe for a logger and a reader.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

type surface struct {
	srv   *Server
	mon   *Monitor
	base  string
	audit *syncBuffer
}

func newSurface(t *testing.T, cfg ServerConfig) *surface {
	t.Helper()
	reg := prometheus.NewRegistry()
	audit := &syncBuffer{}
	mon, err := New(Config{Registerer: reg, Audit: slog.New(slog.NewJSONHandler(audit, nil))})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	cfg.Listener, cfg.Gatherer, cfg.Monitor = ln, reg, mon
	srv, err := NewServer(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close() })
	return &surface{srv: srv, mon: mon, base: "http://" + ln.Addr().String(), audit: audit}
}

func (s *surface) get(t *testing.T, path, token string) (int, http.Header, string) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, s.base+path, nil)
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, resp.Header, string(b)
}

const testToken = "s3cret-token-for-tests"

func TestSurfaceAuth(t *testing.T) {
	s := newSurface(t, ServerConfig{Token: testToken, Status: func() any { return map[string]string{"id": "x"} }})
	tests := []struct {
		name, path, token string
		want              int
	}{
		{"healthz needs no token", "/healthz", "", 200},
		{"readyz needs no token", "/readyz", "", 200},
		{"metrics without token", "/metrics", "", 401},
		{"metrics with a wrong token", "/metrics", "wrong", 401},
		{"metrics with a token that is a prefix", "/metrics", testToken[:5], 401},
		{"metrics with the token", "/metrics", testToken, 200},
		{"api without token", "/api/v1/status", "", 401},
		{"api with the token", "/api/v1/status", testToken, 200},
		{"attempts without token", "/api/v1/attempts", "", 401},
		{"peers not provided", "/api/v1/peers", testToken, 404},
		{"unknown path", "/nope", testToken, 404},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			code, h, _ := s.get(t, tc.path, tc.token)
			if code != tc.want {
				t.Fatalf("%s: %d, want %d", tc.path, code, tc.want)
			}
			if code == 401 && !strings.HasPrefix(h.Get("WWW-Authenticate"), "Bearer") {
				t.Fatal("401 without WWW-Authenticate")
			}
		})
	}
	// Every refusal is an audit record with the client's address.
	if n := strings.Count(s.audit.String(), `"reason":"refused"`); n != 5 {
		t.Fatalf("%d refusals audited, want 5:\n%s", n, s.audit.String())
	}
	if code, _, _ := s.get(t, "/metrics", testToken); code != 200 {
		t.Fatal(code)
	}
}

func TestSurfaceRateLimit(t *testing.T) {
	s := newSurface(t, ServerConfig{Rate: 0.5, Burst: 3})
	for i := range 3 {
		if code, _, _ := s.get(t, "/metrics", ""); code != 200 {
			t.Fatalf("request %d: %d", i, code)
		}
	}
	for range 5 {
		code, h, _ := s.get(t, "/metrics", "")
		if code != 429 || h.Get("Retry-After") == "" {
			t.Fatalf("over the limit: %d, Retry-After %q", code, h.Get("Retry-After"))
		}
	}
	// The health probes are exempt, even for a client over its limit: a
	// burst of liveness probes all get their answer.
	for _, path := range []string{"/healthz", "/readyz"} {
		for i := range 60 {
			if code, _, _ := s.get(t, path, ""); code == 429 {
				t.Fatalf("%s request %d of a burst: rate limited", path, i)
			}
		}
	}
	// Five refusals in a row are one audit record, not five.
	if n := strings.Count(s.audit.String(), `"reason":"rate_limited"`); n != 1 {
		t.Fatalf("%d rate-limit audit records, want 1", n)
	}
}

func TestLimiterTableIsBounded(t *testing.T) {
	c := &clock{t: time.Unix(1e9, 0)}
	l := newLimiter(10, 10, 3, c.now)
	for i := range 3 {
		if ok, _, _ := l.allow(netip.AddrFrom4([4]byte{10, 0, 0, byte(i)})); !ok {
			t.Fatal("refused a fresh client")
		}
	}
	if ok, _, _ := l.allow(netip.MustParseAddr("10.0.0.9")); ok {
		t.Fatal("a fourth client got in while the table is full of active ones")
	}
	c.advance(2 * time.Second) // buckets refill: the old clients are forgettable
	if ok, _, _ := l.allow(netip.MustParseAddr("10.0.0.9")); !ok || len(l.clients) != 1 {
		t.Fatalf("table not swept: %d entries", len(l.clients))
	}
}

func TestSurfaceAPI(t *testing.T) {
	ready := errors.New("no bootstrap reachable (last: dial 198.51.100.9:4433: timeout)")
	var mu sync.Mutex
	s := newSurface(t, ServerConfig{Ready: func() error { mu.Lock(); defer mu.Unlock(); return ready }})
	code, _, body := s.get(t, "/readyz", "")
	if code != 503 || !strings.Contains(body, "no bootstrap reachable") || strings.Contains(body, "198.51.100.9") {
		t.Fatalf("readyz: %d %s", code, body)
	}
	mu.Lock()
	ready = nil
	mu.Unlock()
	if code, _, _ := s.get(t, "/readyz", ""); code != 200 {
		t.Fatal(code)
	}

	a := StartAttempt(s.mon, "peerX", "initiator", "eim-apdf", "")
	a.Begin(PhasePunch)
	a.Record(Event{Kind: KindCheckSent, Addr: netip.MustParseAddrPort("203.0.113.77:5000")})
	a.End(PhasePunch, OutcomeFail, ReasonPunchTimeout)
	a.Finish(OutcomeFail, ReasonPunchTimeout, PathNone)
	s.mon.Record(Event{Kind: KindSecurity, Reason: ReasonRateLimited, Detail: "connect"})

	code, _, body = s.get(t, "/api/v1/attempts?outcome=fail", "")
	var list struct{ Attempts []AttemptJSON }
	if err := json.Unmarshal([]byte(body), &list); err != nil || code != 200 {
		t.Fatalf("%d %v %s", code, err, body)
	}
	if len(list.Attempts) != 1 || list.Attempts[0].ID != a.ID().String() || list.Attempts[0].Reason != "punch_timeout" ||
		len(list.Attempts[0].Phases) != 1 || list.Attempts[0].Events != nil {
		t.Fatalf("list %+v", list)
	}
	code, _, body = s.get(t, "/api/v1/attempts/"+a.ID().String(), "")
	var one AttemptJSON
	if err := json.Unmarshal([]byte(body), &one); err != nil || code != 200 {
		t.Fatalf("%d %v %s", code, err, body)
	}
	if !one.Sampled || len(one.Events) != 5 || strings.Contains(body, "203.0.113.77") || !strings.Contains(body, ":5000") {
		t.Fatalf("attempt detail (events must be there, addresses sanitised): %s", body)
	}
	code, _, body = s.get(t, "/api/v1/events?limit=10", "")
	if code != 200 || !strings.Contains(body, `"rate_limited"`) {
		t.Fatalf("events: %d %s", code, body)
	}
	bad := []string{"/api/v1/attempts?limit=0", "/api/v1/attempts?limit=abc", "/api/v1/attempts?limit=5000",
		"/api/v1/attempts?outcome=maybe", "/api/v1/attempts?open=perhaps", "/api/v1/attempts/zz",
		"/api/v1/attempts/0000000000000000", "/api/v1/events?limit=-1", "/api/v1/attempts?peer=" + strings.Repeat("a", 200)}
	for _, p := range bad {
		if code, _, body := s.get(t, p, ""); code != 400 || !strings.Contains(body, `"error"`) {
			t.Errorf("%s: %d %s", p, code, body)
		}
	}
	if code, _, _ := s.get(t, "/api/v1/attempts/00000000000000ff", ""); code != 404 {
		t.Errorf("unknown attempt: %d", code)
	}
	resp, err := http.Post(s.base+"/api/v1/attempts", "text/plain", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusMethodNotAllowed {
		t.Fatalf("POST: %d", resp.StatusCode)
	}
}

func TestSurfaceCloseIsIdempotent(t *testing.T) {
	s := newSurface(t, ServerConfig{})
	if err := s.srv.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.srv.Close(); err != nil {
		t.Fatal(err)
	}
	if resp, err := http.Get(s.base + "/healthz"); err == nil {
		resp.Body.Close()
		t.Fatal("still serving after Close")
	}
}

func TestServerConfigErrors(t *testing.T) {
	if _, err := NewServer(ServerConfig{}); !errors.Is(err, ErrBadServerConfig) {
		t.Fatal(err)
	}
}

func FuzzParseAttemptID(f *testing.F) {
	f.Add("00000000000000ff")
	f.Add("+000000000000000")
	f.Add("zz")
	f.Fuzz(func(t *testing.T, s string) {
		id, err := ParseAttemptID(s)
		if err == nil && id.String() != strings.ToLower(s) {
			t.Fatalf("%q parsed to %v", s, id)
		}
	})
}

// TestDashboard: the page and its data follow the token rules (a browser
// logs in once with /?token= and carries a cookie), the frame has the
// node's state and statistics, and the stream sends frames.
func TestDashboard(t *testing.T) {
	const token = "dashboard-token-0123456789"
	m, err := New(Config{})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 4 {
		a := StartAttempt(m, "peer", "initiator", "eim-apdf", "")
		a.SetNAT("eim-apdf", "apdm")
		if i == 3 {
			a.Finish(OutcomeFail, ReasonPunchTimeout, PathNone)
		} else {
			a.Finish(OutcomeOK, ReasonNone, PathDirect)
		}
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv, err := NewServer(ServerConfig{Listener: ln, Gatherer: prometheus.NewRegistry(), Monitor: m, Token: token,
		Status: func() any { return map[string]any{"id": "node-1", "nat": "eim-apdf"} }})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	base := "http://" + ln.Addr().String()
	jar, _ := cookiejar.New(nil)
	client := &http.Client{Jar: jar}
	// get returns a page's status, header and body (closed).
	type page struct {
		StatusCode int
		Header     http.Header
	}
	get := func(path string) (page, string) {
		t.Helper()
		resp, err := client.Get(base + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return page{resp.StatusCode, resp.Header}, string(b)
	}
	tests := []struct {
		name, path string
		code       int
	}{
		{"page without token", "/", http.StatusUnauthorized},
		{"script without token", "/assets/app.js", http.StatusUnauthorized},
		{"data without token", "/api/v1/dashboard", http.StatusUnauthorized},
		{"wrong token", "/?token=nope", http.StatusUnauthorized},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if resp, _ := get(tt.path); resp.StatusCode != tt.code {
				t.Fatalf("%s: %d, want %d", tt.path, resp.StatusCode, tt.code)
			}
		})
	}
	// Log in: the cookie opens the page, its files and its data.
	resp, body := get("/?token=" + token)
	if resp.StatusCode != http.StatusOK || !strings.Contains(body, `<script src="/assets/app.js"`) {
		t.Fatalf("login: %d %.200s", resp.StatusCode, body)
	}
	if resp, _ := get("/assets/app.js"); resp.StatusCode != http.StatusOK || !strings.Contains(resp.Header.Get("Content-Type"), "javascript") {
		t.Fatalf("app.js: %d %s", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	if resp, _ := get("/assets/missing.js"); resp.StatusCode != http.StatusNotFound {
		t.Fatalf("a missing asset: %d", resp.StatusCode)
	}
	_, body = get("/api/v1/dashboard")
	var d DashboardJSON
	if err := json.Unmarshal([]byte(body), &d); err != nil {
		t.Fatal(err)
	}
	if len(d.Attempts) != 4 || d.Stored != 4 || len(d.ByNAT) != 1 || d.ByNAT[0].Rate != 0.75 || d.ByNAT[0].Direct != 3 || d.Latency.N != 3 {
		t.Fatalf("frame: %d attempts, %d stored, by NAT %+v, latency %+v", len(d.Attempts), d.Stored, d.ByNAT, d.Latency)
	}
	// The stream sends a frame at once.
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, base+"/api/v1/stream", nil)
	sresp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer sresp.Body.Close()
	if ct := sresp.Header.Get("Content-Type"); ct != "text/event-stream" {
		t.Fatalf("stream content type %q", ct)
	}
	sc := bufio.NewScanner(sresp.Body)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	var frame DashboardJSON
	for sc.Scan() {
		if data, ok := strings.CutPrefix(sc.Text(), "data: "); ok {
			if err := json.Unmarshal([]byte(data), &frame); err != nil {
				t.Fatal(err)
			}
			break
		}
	}
	if frame.Stored != 4 {
		t.Fatalf("stream frame: %+v (%v)", frame, sc.Err())
	}
}
