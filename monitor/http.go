package monitor

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net"
	"net/http"
	"net/netip"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// ServerConfig configures the monitoring HTTP surface.
type ServerConfig struct {
	// Listener is where the surface serves; it is separate from the QUIC
	// port and should be on loopback or a management network. Required.
	Listener net.Listener
	// Gatherer is scraped on /metrics. Required.
	Gatherer prometheus.Gatherer
	// Monitor supplies the store, the address sanitiser, and receives the
	// surface's security events (authentication failures, rate limits).
	// Required.
	Monitor *Monitor
	// Token, when set, must be presented as "Authorization: Bearer TOKEN"
	// on everything but /healthz and /readyz. Empty: no authentication.
	Token string
	// Status and Peers produce the JSON of /api/v1/status and
	// /api/v1/peers. Nil: 404.
	Status func() any
	Peers  func() any
	// Services produces /api/v1/services: the application services the
	// node serves and dials, with their counters. Nil: 404.
	Services func() any
	// Ready says whether the node can do its job; /readyz answers 503 with
	// the error otherwise. Nil: always ready.
	Ready func() error
	// Facts describe the node for /api/v1/diagnostics. Nil: no facts.
	Facts func() NodeFacts
	// Connect makes the node connect to a peer (and verify a transfer of
	// send bytes) for POST /api/v1/connect: a connectivity test an
	// operator can run from afar. Nil: 404.
	Connect func(ctx context.Context, peer string, send int64) (any, error)
	// Rate and Burst bound the requests of each client (by IP address), in
	// requests per second. Zero: 20 per second, bursts of 40.
	Rate  float64
	Burst int
	// MaxClients bounds the rate limiter's table. Zero: 10 000.
	MaxClients int
	// AllowedHosts are further names a request's Host may carry, besides
	// the listener's address and loopback names (a name in front of the
	// node: a proxy, a DNS name on a management network). Lower case, no
	// port.
	AllowedHosts []string
	// HostsHint and TokenHint end the messages of a refused Host and of a
	// state-changing request on a node without a token: how the operator
	// changes that (the node's flags). Empty: nothing more is said.
	HostsHint, TokenHint string
	// MaxStreams and MaxStreamsPerClient bound the dashboard's live
	// streams, in total and per client IP. Zero: 8 and 2.
	MaxStreams, MaxStreamsPerClient int
	// Logger receives the server's own errors. Nil: discarded.
	Logger *slog.Logger
	// Now is the clock. Nil: time.Now.
	Now func() time.Time
}

// ErrBadServerConfig is returned for an unusable ServerConfig.
var ErrBadServerConfig = errors.New("monitor: bad server configuration")

func (c *ServerConfig) validate() error {
	switch {
	case c.Listener == nil:
		return fmt.Errorf("%w: no listener", ErrBadServerConfig)
	case c.Gatherer == nil:
		return fmt.Errorf("%w: no gatherer", ErrBadServerConfig)
	case c.Monitor == nil:
		return fmt.Errorf("%w: no monitor", ErrBadServerConfig)
	case c.Rate < 0 || math.IsNaN(c.Rate) || c.Burst < 0 || c.MaxClients < 0:
		return fmt.Errorf("%w: negative rate limit", ErrBadServerConfig)
	case c.MaxStreams < 0 || c.MaxStreams > MaxStreamsLimit || c.MaxStreamsPerClient < 0:
		return fmt.Errorf("%w: stream limits %d, %d: want 0 to %d", ErrBadServerConfig, c.MaxStreams, c.MaxStreamsPerClient, MaxStreamsLimit)
	}
	for _, h := range c.AllowedHosts {
		if h == "" || h != strings.ToLower(h) || strings.ContainsAny(h, ":/ []") {
			return fmt.Errorf("%w: allowed host %q: want a lower-case name without a port", ErrBadServerConfig, h)
		}
	}
	if c.MaxStreams == 0 {
		c.MaxStreams = defaultMaxStreams
	}
	if c.MaxStreamsPerClient == 0 {
		c.MaxStreamsPerClient = defaultMaxStreamsPerClient
	}
	if c.Rate == 0 {
		c.Rate = 20
	}
	if c.Burst == 0 {
		c.Burst = 40
	}
	if c.MaxClients == 0 {
		c.MaxClients = 10_000
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	return nil
}

// Server is the monitoring HTTP surface: /metrics, /healthz, /readyz and
// the JSON API under /api/v1/. NewServer starts one goroutine that serves
// (plus net/http's per-connection ones); Close stops them all.
type Server struct {
	cfg      ServerConfig
	srv      *http.Server
	token    [32]byte // SHA-256 of the token: compared in constant time
	lim      *limiter
	done     chan struct{}
	lagDone  chan struct{}
	stopLag  chan struct{}
	connects chan struct{} // bounds concurrent POST /api/v1/connect
	streams  *streamSlots  // bounds concurrent dashboard streams
	listenIP netip.Addr    // the listener's IP: a Host that names this node
	hosts    []string      // further names a Host may carry
	quit     chan struct{} // closed by Close: ends the streams
	once     sync.Once
	closed   error
}

// NewServer starts serving on cfg.Listener.
func NewServer(cfg ServerConfig) (*Server, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	s := &Server{cfg: cfg, done: make(chan struct{}), lagDone: make(chan struct{}), stopLag: make(chan struct{}),
		connects: make(chan struct{}, 2), streams: newStreamSlots(cfg.MaxStreams, cfg.MaxStreamsPerClient),
		quit: make(chan struct{}), lim: newLimiter(cfg.Rate, cfg.Burst, cfg.MaxClients, cfg.Now), hosts: cfg.AllowedHosts}
	if ap, err := netip.ParseAddrPort(cfg.Listener.Addr().String()); err == nil {
		s.listenIP = ap.Addr().Unmap()
	}
	if cfg.Token != "" {
		s.token = sha256.Sum256([]byte(cfg.Token))
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		fmt.Fprintln(w, "ok")
	})
	mux.HandleFunc("GET /readyz", s.readyz)
	mux.Handle("GET /metrics", s.auth(promhttp.HandlerFor(cfg.Gatherer, promhttp.HandlerOpts{
		ErrorHandling: promhttp.ContinueOnError, ErrorLog: slogErrorLog{cfg.Logger}})))
	mux.Handle("GET /api/v1/status", s.auth(s.jsonFunc(cfg.Status)))
	mux.Handle("GET /api/v1/peers", s.auth(s.jsonFunc(cfg.Peers)))
	mux.Handle("GET /api/v1/services", s.auth(s.jsonFunc(cfg.Services)))
	mux.Handle("GET /api/v1/attempts", s.auth(http.HandlerFunc(s.attempts)))
	mux.Handle("GET /api/v1/attempts/{id}", s.auth(http.HandlerFunc(s.attempt)))
	mux.Handle("GET /api/v1/events", s.auth(http.HandlerFunc(s.events)))
	mux.Handle("GET /api/v1/diagnostics", s.auth(http.HandlerFunc(s.diagnostics)))
	mux.Handle("POST /api/v1/connect", s.mutating(http.HandlerFunc(s.connect)))
	mux.Handle("GET /api/v1/dashboard", s.auth(s.jsonFunc(func() any { return s.Dashboard() })))
	mux.Handle("GET /api/v1/stream", s.auth(http.HandlerFunc(s.stream)))
	mux.HandleFunc("GET /{$}", s.page)
	mux.HandleFunc("GET /assets/{file}", s.page)
	s.srv = &http.Server{
		Handler:           s.limit(s.checkHost(mux)),
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       10 * time.Second,
		WriteTimeout:      30 * time.Second,
		IdleTimeout:       60 * time.Second,
		MaxHeaderBytes:    16 << 10,
		ErrorLog:          slog.NewLogLogger(cfg.Logger.Handler(), slog.LevelDebug),
	}
	go func() {
		defer close(s.done)
		if err := s.srv.Serve(cfg.Listener); err != nil && !errors.Is(err, http.ErrServerClosed) {
			cfg.Logger.Error("monitor: serve", "err", err)
		}
	}()
	go s.measureLag()
	return s, nil
}

// measureLag samples how late a 100 ms ticker fires: the scheduling
// latency every goroutine of the node suffers (a stand-in for an event
// loop's lag). The monitor exports the worst of each 10 s.
func (s *Server) measureLag() {
	defer close(s.lagDone)
	const every = 100 * time.Millisecond
	t := time.NewTicker(every)
	defer t.Stop()
	last := time.Now()
	var worst time.Duration
	n := 0
	for {
		select {
		case <-s.stopLag:
			return
		case now := <-t.C:
			worst = max(worst, now.Sub(last)-every)
			last = now
			if n++; n == 100 {
				s.cfg.Monitor.setLag(worst)
				worst, n = 0, 0
			}
		}
	}
}

// Addr returns the address the surface listens on.
func (s *Server) Addr() net.Addr { return s.cfg.Listener.Addr() }

// Handler returns the surface's handler (for mounting further paths in
// tests or embedding).
func (s *Server) Handler() http.Handler { return s.srv.Handler }

// Close stops serving, gives requests in flight a second to finish, and
// returns once the serving goroutine has exited. It is idempotent.
func (s *Server) Close() error {
	s.once.Do(func() {
		close(s.quit)
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		if err := s.srv.Shutdown(ctx); err != nil {
			s.closed = s.srv.Close()
		}
		<-s.done
		close(s.stopLag)
		<-s.lagDone
	})
	return s.closed
}

type slogErrorLog struct{ l *slog.Logger }

func (e slogErrorLog) Println(v ...any) { e.l.Warn("monitor: metrics", "err", fmt.Sprint(v...)) }

// clientIP is the rate-limit key of a request: its peer IP. A proxy in
// front would make every client one; the surface is meant to be reached
// directly.
func clientIP(r *http.Request) netip.Addr {
	ap, err := netip.ParseAddrPort(r.RemoteAddr)
	if err != nil {
		return netip.Addr{}
	}
	return ap.Addr().Unmap()
}

func clientAddr(r *http.Request) netip.AddrPort {
	ap, _ := netip.ParseAddrPort(r.RemoteAddr)
	return ap
}

// limit applies the per-client rate limit to every request.
//
// The health probes are exempt: a liveness probe that is refused for
// coming too often would restart a healthy node. They are cheap and
// answer no data.
func (s *Server) limit(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/healthz" || r.URL.Path == "/readyz" {
			w.Header().Set("Cache-Control", "no-store")
			next.ServeHTTP(w, r)
			return
		}
		ok, first, wait := s.lim.allow(clientIP(r))
		if !ok {
			if first { // one audit record per episode, not per request
				s.cfg.Monitor.Record(Event{Kind: KindSecurity, Reason: ReasonRateLimited, Detail: "http", Addr: clientAddr(r)})
			}
			w.Header().Set("Retry-After", strconv.Itoa(int(math.Ceil(wait.Seconds()))))
			httpError(w, http.StatusTooManyRequests, "rate limited")
			return
		}
		w.Header().Set("Cache-Control", "no-store")
		w.Header().Set("X-Content-Type-Options", "nosniff")
		next.ServeHTTP(w, r)
	})
}

// auth requires the bearer token when one is configured.
func (s *Server) auth(next http.Handler) http.Handler {
	if s.cfg.Token == "" {
		return next
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !s.authorized(r) {
			s.refuse(w, r)
			return
		}
		next.ServeHTTP(w, r)
	})
}

// bearer returns the request's bearer token.
func bearer(r *http.Request) (string, bool) {
	got, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	return strings.TrimSpace(got), ok
}

// refuse answers an unauthorized request and audits it.
func (s *Server) refuse(w http.ResponseWriter, r *http.Request) {
	detail := "http: bad token"
	if _, ok := bearer(r); !ok {
		if _, err := r.Cookie(tokenCookie); err != nil {
			detail = "http: no token"
		}
	}
	s.cfg.Monitor.Record(Event{Kind: KindSecurity, Reason: ReasonRefused, Detail: detail, Addr: clientAddr(r)})
	w.Header().Set("WWW-Authenticate", `Bearer realm="antnode"`)
	httpError(w, http.StatusUnauthorized, "a bearer token is required (a browser: open /?token=...)")
}

// readiness is /readyz's answer: ready or why not, and the process's
// health.
type readiness struct {
	Ready          bool    `json:"ready"`
	Error          string  `json:"error,omitempty"`
	Goroutines     int     `json:"goroutines"`
	HeapBytes      uint64  `json:"heap_bytes"`
	OpenFDs        int     `json:"open_fds,omitempty"`
	SchedulerLagMS float64 `json:"scheduler_lag_ms"`
}

func (s *Server) readyz(w http.ResponseWriter, _ *http.Request) {
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	r := readiness{Ready: true, Goroutines: runtime.NumGoroutine(), HeapBytes: ms.HeapAlloc, OpenFDs: openFDs(),
		SchedulerLagMS: msOf(s.cfg.Monitor.Lag())}
	code := http.StatusOK
	if s.cfg.Ready != nil {
		if err := s.cfg.Ready(); err != nil {
			r.Ready, r.Error, code = false, s.cfg.Monitor.Sanitizer().Text(err.Error()), http.StatusServiceUnavailable
		}
	}
	writeJSON(w, code, r)
}

// openFDs counts the process's open file descriptors (Linux; 0 elsewhere).
func openFDs() int {
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		return 0
	}
	return len(ents)
}

func (s *Server) diagnostics(w http.ResponseWriter, r *http.Request) {
	var facts NodeFacts
	if s.cfg.Facts != nil {
		facts = s.cfg.Facts()
	}
	rep := s.cfg.Monitor.Diagnostics(facts, s.cfg.Now())
	if r.URL.Query().Get("format") == "markdown" {
		w.Header().Set("Content-Type", "text/markdown; charset=utf-8")
		io.WriteString(w, rep.Guide.Markdown)
		return
	}
	writeJSON(w, http.StatusOK, rep)
}

// maxConnectSend bounds the transfer an API connect may ask for.
const maxConnectSend = 256 << 20

func (s *Server) connect(w http.ResponseWriter, r *http.Request) {
	if s.cfg.Connect == nil {
		httpError(w, http.StatusNotFound, "not available on this node")
		return
	}
	q := r.URL.Query()
	peer := q.Get("peer")
	if peer == "" || len(peer) > 128 {
		httpError(w, http.StatusBadRequest, "peer: a peer ID is required")
		return
	}
	var send int64
	if v := q.Get("send"); v != "" {
		n, err := ParseSize(v)
		if err != nil || n > maxConnectSend {
			httpError(w, http.StatusBadRequest, fmt.Sprintf("send %q: want 0 to %d bytes (256MiB), e.g. 4MiB", v, maxConnectSend))
			return
		}
		send = n
	}
	select {
	case s.connects <- struct{}{}:
		defer func() { <-s.connects }()
	default:
		httpError(w, http.StatusTooManyRequests, "connect tests already running")
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), 60*time.Second)
	defer cancel()
	res, err := s.cfg.Connect(ctx, peer, send)
	if err != nil {
		var bad *BadRequestError
		if errors.As(err, &bad) {
			httpError(w, http.StatusBadRequest, bad.Error())
			return
		}
		httpError(w, http.StatusInternalServerError, s.cfg.Monitor.Sanitizer().Text(err.Error()))
		return
	}
	writeJSON(w, http.StatusOK, res)
}

// BadRequestError is returned by a ServerConfig callback for input it
// rejects (the surface answers 400).
type BadRequestError struct{ Err error }

func (e *BadRequestError) Error() string { return e.Err.Error() }
func (e *BadRequestError) Unwrap() error { return e.Err }

func (s *Server) jsonFunc(f func() any) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		if f == nil {
			httpError(w, http.StatusNotFound, "not available on this node")
			return
		}
		writeJSON(w, http.StatusOK, f())
	})
}

// maxLimit bounds how many records one API request returns.
const maxLimit = 1000

func parseLimit(q string, def int) (int, error) {
	if q == "" {
		return def, nil
	}
	n, err := strconv.Atoi(q)
	if err != nil || n < 1 || n > maxLimit {
		return 0, fmt.Errorf("limit %q: want 1..%d", q, maxLimit)
	}
	return n, nil
}

func parseOutcome(q string) (Outcome, error) {
	if q == "" {
		return OutcomeNone, nil
	}
	for o := OutcomeOK; o < Outcome(NumOutcomes); o++ {
		if o.String() == q {
			return o, nil
		}
	}
	return 0, fmt.Errorf("outcome %q: want ok, fail, canceled or skipped", q)
}

func (s *Server) attempts(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	limit, err := parseLimit(q.Get("limit"), 100)
	if err != nil {
		httpError(w, http.StatusBadRequest, err.Error())
		return
	}
	outcome, err := parseOutcome(q.Get("outcome"))
	if err != nil {
		httpError(w, http.StatusBadRequest, err.Error())
		return
	}
	open := false
	if v := q.Get("open"); v != "" {
		if open, err = strconv.ParseBool(v); err != nil {
			httpError(w, http.StatusBadRequest, "open: want true or false")
			return
		}
	}
	peer := q.Get("peer")
	if len(peer) > 128 {
		httpError(w, http.StatusBadRequest, "peer: too long")
		return
	}
	recs := s.cfg.Monitor.Store().Attempts(AttemptFilter{Limit: limit, Outcome: outcome, Peer: peer, Open: open})
	out := make([]AttemptJSON, len(recs))
	for i := range recs {
		out[i] = s.cfg.Monitor.AttemptJSON(&recs[i], false)
	}
	writeJSON(w, http.StatusOK, map[string]any{"attempts": out})
}

func (s *Server) attempt(w http.ResponseWriter, r *http.Request) {
	id, err := ParseAttemptID(r.PathValue("id"))
	if err != nil {
		httpError(w, http.StatusBadRequest, err.Error())
		return
	}
	rec, ok := s.cfg.Monitor.Store().Attempt(id)
	if !ok {
		httpError(w, http.StatusNotFound, "no such attempt (it may have aged out of the store)")
		return
	}
	writeJSON(w, http.StatusOK, s.cfg.Monitor.AttemptJSON(&rec, true))
}

func (s *Server) events(w http.ResponseWriter, r *http.Request) {
	limit, err := parseLimit(r.URL.Query().Get("limit"), 100)
	if err != nil {
		httpError(w, http.StatusBadRequest, err.Error())
		return
	}
	evs := s.cfg.Monitor.Store().NodeEvents(limit)
	out := make([]EventJSON, len(evs))
	for i := range evs {
		out[i] = s.cfg.Monitor.EventJSON(&evs[i])
	}
	writeJSON(w, http.StatusOK, map[string]any{"events": out})
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.Encode(v) // the client may have gone; nothing to do about it
}

func httpError(w http.ResponseWriter, code int, msg string) {
	writeJSON(w, code, map[string]string{"error": msg})
}

// limiter is a token bucket per client with a bounded table.
type limiter struct {
	rate  float64
	burst float64
	max   int
	now   func() time.Time

	mu      sync.Mutex
	clients map[netip.Addr]*bucket
}

type bucket struct {
	tokens  float64
	last    time.Time
	limited bool // rejected since the last allowed request
}

func newLimiter(rate float64, burst, max int, now func() time.Time) *limiter {
	return &limiter{rate: rate, burst: float64(burst), max: max, now: now, clients: make(map[netip.Addr]*bucket)}
}

// allow takes a token for client. When it refuses, first says whether
// this is the first refusal since the client was last allowed, and wait
// how long until a token is back.
func (l *limiter) allow(client netip.Addr) (ok, first bool, wait time.Duration) {
	now := l.now()
	l.mu.Lock()
	defer l.mu.Unlock()
	b := l.clients[client]
	if b == nil {
		if len(l.clients) >= l.max {
			l.sweep(now)
		}
		if len(l.clients) >= l.max {
			// Full of active clients: a newcomer waits for room.
			return false, false, time.Second
		}
		b = &bucket{tokens: l.burst, last: now}
		l.clients[client] = b
	}
	b.tokens = min(l.burst, b.tokens+now.Sub(b.last).Seconds()*l.rate)
	b.last = now
	if b.tokens < 1 {
		first = !b.limited
		b.limited = true
		return false, first, time.Duration((1 - b.tokens) / l.rate * float64(time.Second))
	}
	b.tokens--
	b.limited = false
	return true, false, 0
}

// sweep forgets clients whose bucket has refilled: they are
// indistinguishable from new ones.
func (l *limiter) sweep(now time.Time) {
	full := time.Duration(l.burst / l.rate * float64(time.Second))
	for c, b := range l.clients {
		if now.Sub(b.last) >= full {
			delete(l.clients, c)
		}
	}
}
