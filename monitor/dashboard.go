package monitor

import (
	"bytes"
	"crypto/sha256"
	"crypto/subtle"
	"embed"
	"encoding/json"
	"io/fs"
	"net/http"
	"slices"
	"sort"
	"time"
)

// The live dashboard: a page at / with its script and style embedded in
// the binary (no CDN, nothing fetched at run time), fed by
// /api/v1/dashboard (one frame) and /api/v1/stream (server-sent events, a
// frame a second while it changes). The page and its data follow the API's
// token rules; a browser opens /?token=... once and gets the token as an
// HttpOnly, SameSite=Strict cookie.

//go:embed dashboard
var dashboardAssets embed.FS

// DashboardJSON is one frame of the dashboard.
type DashboardJSON struct {
	Generated time.Time     `json:"generated"`
	Status    any           `json:"status"`
	Peers     any           `json:"peers"`
	Services  any           `json:"services"`
	Attempts  []AttemptJSON `json:"attempts"` // newest first
	ByNAT     []NATStat     `json:"by_nat"`
	Latency   LatencyJSON   `json:"time_to_connect_ms"`
	Findings  []Finding     `json:"findings"`
	Stored    int           `json:"stored_attempts"`
}

// NATStat is the outcome of the stored attempts between two NAT classes.
type NATStat struct {
	NAT      string  `json:"nat"`
	PeerNAT  string  `json:"peer_nat"`
	Attempts int     `json:"attempts"`
	OK       int     `json:"ok"`
	Direct   int     `json:"direct"`
	Rate     float64 `json:"success_rate"`
}

// LatencyJSON are percentiles of the time to connect of stored successes.
type LatencyJSON struct {
	P50 float64 `json:"p50"`
	P95 float64 `json:"p95"`
	P99 float64 `json:"p99"`
	N   int     `json:"n"`
}

// dashboardAttempts is how many recent attempts a frame carries; the
// statistics cover up to dashboardWindow stored ones.
const (
	dashboardAttempts = 20
	dashboardWindow   = 1000
	tokenCookie       = "antnode_token"
)

// Dashboard returns the current frame.
func (s *Server) Dashboard() DashboardJSON {
	now := s.cfg.Now()
	d := DashboardJSON{Generated: now, Attempts: []AttemptJSON{}, ByNAT: []NATStat{}, Findings: []Finding{}}
	if s.cfg.Status != nil {
		d.Status = s.cfg.Status()
	}
	if s.cfg.Peers != nil {
		d.Peers = s.cfg.Peers()
	}
	if s.cfg.Services != nil {
		d.Services = s.cfg.Services()
	}
	recs := s.cfg.Monitor.Store().Attempts(AttemptFilter{Limit: dashboardWindow})
	d.Stored = len(recs)
	byNAT := map[[2]string]*NATStat{}
	var ttc []float64
	for i := range recs {
		r := &recs[i]
		if i < dashboardAttempts {
			d.Attempts = append(d.Attempts, s.cfg.Monitor.AttemptJSON(r, false))
		}
		k := [2]string{r.NAT, r.PeerNAT}
		st := byNAT[k]
		if st == nil {
			st = &NATStat{NAT: k[0], PeerNAT: k[1]}
			byNAT[k] = st
		}
		st.Attempts++
		if r.Outcome == OutcomeOK {
			st.OK++
			if r.Path == PathDirect {
				st.Direct++
			}
			ttc = append(ttc, msOf(r.Duration))
		}
	}
	for _, st := range byNAT {
		st.Rate = float64(st.OK) / float64(st.Attempts)
		d.ByNAT = append(d.ByNAT, *st)
	}
	sort.Slice(d.ByNAT, func(i, j int) bool {
		a, b := d.ByNAT[i], d.ByNAT[j]
		if a.NAT != b.NAT {
			return a.NAT < b.NAT
		}
		return a.PeerNAT < b.PeerNAT
	})
	if len(ttc) > 0 {
		slices.Sort(ttc)
		pct := func(p float64) float64 { return ttc[min(len(ttc)-1, int(float64(len(ttc))*p/100))] }
		d.Latency = LatencyJSON{P50: pct(50), P95: pct(95), P99: pct(99), N: len(ttc)}
	}
	var facts NodeFacts
	if s.cfg.Facts != nil {
		facts = s.cfg.Facts()
	}
	if rep := s.cfg.Monitor.Diagnostics(facts, now); rep.Findings != nil {
		d.Findings = rep.Findings
	}
	return d
}

// page serves the dashboard's files; /?token=... logs a browser in.
func (s *Server) page(w http.ResponseWriter, r *http.Request) {
	if tok := r.URL.Query().Get("token"); tok != "" && s.cfg.Token != "" {
		if !s.tokenOK(tok) {
			s.cfg.Monitor.Record(Event{Kind: KindSecurity, Reason: ReasonRefused, Detail: "http: bad token", Addr: clientAddr(r)})
			httpError(w, http.StatusUnauthorized, "wrong token")
			return
		}
		http.SetCookie(w, &http.Cookie{Name: tokenCookie, Value: tok, Path: "/", HttpOnly: true, SameSite: http.SameSiteStrictMode})
		http.Redirect(w, r, "/", http.StatusSeeOther)
		return
	}
	if !s.authorized(r) {
		s.refuse(w, r)
		return
	}
	name := "dashboard/index.html"
	if f := r.PathValue("file"); f != "" {
		name = "dashboard/" + f
	}
	b, err := fs.ReadFile(dashboardAssets, name)
	if err != nil {
		httpError(w, http.StatusNotFound, "no such file")
		return
	}
	w.Header().Set("Content-Security-Policy", "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; connect-src 'self'; frame-ancestors 'none'")
	http.ServeContent(w, r, name, time.Time{}, bytes.NewReader(b))
}

// stream sends a frame a second (when it changed, and at least every
// 15 s) until the client leaves or the server closes.
func (s *Server) stream(w http.ResponseWriter, r *http.Request) {
	ip := clientIP(r)
	if ok, why := s.streams.acquire(ip); !ok {
		w.Header().Set("Retry-After", "5")
		httpError(w, http.StatusServiceUnavailable, why)
		return
	}
	defer s.streams.release(ip)
	rc := http.NewResponseController(w)
	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("X-Accel-Buffering", "no")
	t := time.NewTicker(time.Second)
	defer t.Stop()
	var last [32]byte
	lastSent := time.Time{}
	for {
		// Compare without the timestamp: a frame is news when its data is.
		frame := s.Dashboard()
		generated := frame.Generated
		frame.Generated = time.Time{}
		bare, err := json.Marshal(frame)
		if err != nil {
			return
		}
		sum := sha256.Sum256(bare)
		if sum != last || time.Since(lastSent) >= 15*time.Second {
			frame.Generated = generated
			b, err := json.Marshal(frame)
			if err != nil {
				return
			}
			rc.SetWriteDeadline(time.Now().Add(10 * time.Second))
			if _, err := w.Write(append(append([]byte("event: frame\ndata: "), b...), '\n', '\n')); err != nil {
				return
			}
			if rc.Flush() != nil {
				return
			}
			last, lastSent = sum, time.Now()
		}
		select {
		case <-r.Context().Done():
			return
		case <-s.quit:
			return
		case <-t.C:
		}
	}
}

// authorized reports whether r carries the token (header or cookie), or
// no token is configured.
func (s *Server) authorized(r *http.Request) bool {
	if s.cfg.Token == "" {
		return true
	}
	if got, ok := bearer(r); ok {
		return s.tokenOK(got)
	}
	if c, err := r.Cookie(tokenCookie); err == nil {
		return s.tokenOK(c.Value)
	}
	return false
}

func (s *Server) tokenOK(tok string) bool {
	sum := sha256.Sum256([]byte(tok))
	return subtle.ConstantTimeCompare(sum[:], s.token[:]) == 1
}
