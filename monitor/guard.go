package monitor

import (
	"mime"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"slices"
	"strings"
	"sync"
)

// The rules that keep the surface its operator's: a request must name
// this node in its Host (no DNS rebinding), and a state-changing request
// (POST) must carry the token, come from no other origin, and carry a
// header that an HTML form cannot send. See README.md, "Security".

// Defaults of the dashboard's stream limits.
const (
	defaultMaxStreams          = 8
	defaultMaxStreamsPerClient = 2
	// MaxStreamsLimit bounds ServerConfig.MaxStreams.
	MaxStreamsLimit = 1024
)

// hostAllowed reports whether a request's Host names this node: the
// listener's IP (any IP on a wildcard listener: an IP literal cannot be
// rebound), a loopback address or name, or a name the operator listed.
func (s *Server) hostAllowed(r *http.Request) bool {
	host := r.Host
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	}
	host = strings.TrimSuffix(strings.ToLower(strings.Trim(host, "[]")), ".")
	if host == "" {
		return false
	}
	if host == "localhost" || strings.HasSuffix(host, ".localhost") {
		return true
	}
	if a, err := netip.ParseAddr(host); err == nil {
		a = a.Unmap()
		if a.IsLoopback() || !s.listenIP.IsValid() || s.listenIP.IsUnspecified() || a == s.listenIP {
			return true
		}
	}
	return slices.Contains(s.hosts, host)
}

// checkHost refuses, with 421 Misdirected Request, a request whose Host
// does not name this node.
func (s *Server) checkHost(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !s.hostAllowed(r) {
			s.cfg.Monitor.Record(Event{Kind: KindSecurity, Reason: ReasonRefused, Detail: "http: foreign host", Addr: clientAddr(r)})
			httpError(w, http.StatusMisdirectedRequest, "the Host header does not name this node: use its listen address or a loopback name"+s.cfg.HostsHint)
			return
		}
		next.ServeHTTP(w, r)
	})
}

// sameOrigin reports whether a browser's request comes from this node's
// own pages: Sec-Fetch-Site, when sent, must be same-origin, and Origin,
// when sent, must be this Host over http. A client that sends neither is
// no browser (curl, the CLI).
func sameOrigin(r *http.Request) bool {
	if site := r.Header.Get("Sec-Fetch-Site"); site != "" && site != "same-origin" {
		return false
	}
	o := r.Header.Get("Origin")
	if o == "" {
		return true
	}
	u, err := url.Parse(o)
	return err == nil && u.Scheme == "http" && strings.EqualFold(u.Host, r.Host)
}

// formProof reports whether a request carries what no HTML form can send
// and what a cross-origin script cannot send without a CORS preflight
// (which the surface never grants): an Authorization header or the JSON
// content type.
func formProof(r *http.Request) bool {
	if r.Header.Get("Authorization") != "" {
		return true
	}
	mt, _, err := mime.ParseMediaType(r.Header.Get("Content-Type"))
	return err == nil && mt == "application/json"
}

// mutating guards a state-changing endpoint: off without a token, and
// only for the token's holder from this node's own origin.
func (s *Server) mutating(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch {
		case s.cfg.Token == "":
			httpError(w, http.StatusForbidden, "state-changing endpoints are off: this node has no API token"+s.cfg.TokenHint)
		case !s.authorized(r):
			s.refuse(w, r)
		case !sameOrigin(r):
			s.cfg.Monitor.Record(Event{Kind: KindSecurity, Reason: ReasonRefused, Detail: "http: cross-origin", Addr: clientAddr(r)})
			httpError(w, http.StatusForbidden, "cross-origin request refused")
		case !formProof(r):
			s.cfg.Monitor.Record(Event{Kind: KindSecurity, Reason: ReasonRefused, Detail: "http: form post", Addr: clientAddr(r)})
			httpError(w, http.StatusUnsupportedMediaType, "send Content-Type: application/json or an Authorization: Bearer header")
		default:
			next.ServeHTTP(w, r)
		}
	})
}

// streamSlots bounds the dashboard's live streams, in total and per
// client IP.
type streamSlots struct {
	max, perClient int

	mu     sync.Mutex
	total  int
	client map[netip.Addr]int
}

func newStreamSlots(max, perClient int) *streamSlots {
	return &streamSlots{max: max, perClient: perClient, client: make(map[netip.Addr]int)}
}

// acquire takes a slot for ip; why says which limit refused it.
func (s *streamSlots) acquire(ip netip.Addr) (ok bool, why string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	switch {
	case s.client[ip] >= s.perClient:
		return false, "too many dashboard streams from this client"
	case s.total >= s.max:
		return false, "too many dashboard streams"
	}
	s.client[ip]++
	s.total++
	return true, ""
}

func (s *streamSlots) release(ip netip.Addr) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.total--
	if s.client[ip]--; s.client[ip] <= 0 {
		delete(s.client, ip)
	}
}
