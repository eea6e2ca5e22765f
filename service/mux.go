package service

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/quic-go/quic-go"

	"github.com/antnode/antnode/event"
	"github.com/antnode/antnode/identity"
)

// Config configures a Mux.
type Config struct {
	// Local is this node's ID (the local address of its streams).
	Local identity.PeerID
	// MaxStreamsPerPeer bounds the streams one peer may have open to this
	// node's services at once; past it a stream is refused with
	// CodeStreamLimit. Zero: 1024.
	MaxStreamsPerPeer int
	// IdleTimeout ends a stream on which no byte moved either way for
	// this long (CodeIdle). Zero: 10 minutes; negative: never.
	IdleTimeout time.Duration
	// HeaderTimeout bounds the wait for an incoming stream's header, and
	// for a Listener to take a stream from its backlog. Zero: 10 s.
	HeaderTimeout time.Duration
	// Names are service names this node dials, to label their metrics;
	// the services it serves are labelled by their names. Any other name
	// is counted as UnknownLabel.
	Names []string
	// Registerer receives the service metrics. Nil: not registered.
	Registerer prometheus.Registerer
	// Recorder receives security events (refusals of peers that are not
	// allowed: the audit trail). Nil: discarded.
	Recorder event.Recorder
	// Logger receives debug records of refused and failed streams. Nil:
	// discarded.
	Logger *slog.Logger
}

func (c *Config) validate() error {
	if c.MaxStreamsPerPeer < 0 {
		return fmt.Errorf("service: MaxStreamsPerPeer %d: want >= 0", c.MaxStreamsPerPeer)
	}
	if c.MaxStreamsPerPeer == 0 {
		c.MaxStreamsPerPeer = 1024
	}
	if c.IdleTimeout == 0 {
		c.IdleTimeout = 10 * time.Minute
	}
	if c.IdleTimeout < 0 {
		c.IdleTimeout = 0
	}
	if c.HeaderTimeout <= 0 {
		c.HeaderTimeout = 10 * time.Second
	}
	for _, n := range c.Names {
		if err := ValidName(n); err != nil {
			return err
		}
	}
	if c.Recorder == nil {
		c.Recorder = event.Nop{}
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	return nil
}

// Allow says which peers may use a service.
type Allow struct {
	// Any lets every authenticated peer in.
	Any   bool
	Peers []identity.PeerID
}

// AllowAny lets every authenticated peer use a service.
var AllowAny = Allow{Any: true}

// ParseAllow parses "any" or a comma-separated list of peer IDs. The
// empty string allows nobody.
func ParseAllow(s string) (Allow, error) {
	s = strings.TrimSpace(s)
	if s == "any" {
		return AllowAny, nil
	}
	var a Allow
	for _, f := range strings.Split(s, ",") {
		if f = strings.TrimSpace(f); f == "" {
			continue
		}
		id, err := identity.ParsePeerID(f)
		if err != nil {
			return Allow{}, fmt.Errorf("service: allow list: %w", err)
		}
		a.Peers = append(a.Peers, id)
	}
	return a, nil
}

// Allows says whether peer may use the service.
func (a Allow) Allows(peer identity.PeerID) bool {
	if a.Any {
		return true
	}
	for _, p := range a.Peers {
		if p == peer {
			return true
		}
	}
	return false
}

// Nobody says whether the list lets no peer in.
func (a Allow) Nobody() bool { return !a.Any && len(a.Peers) == 0 }

func (a Allow) String() string {
	switch {
	case a.Any:
		return "any"
	case len(a.Peers) == 0:
		return "nobody"
	}
	if len(a.Peers) == 1 {
		return "1 peer"
	}
	return fmt.Sprintf("%d peers", len(a.Peers))
}

// Handler serves the streams of one service. It must Accept or Refuse
// the request; it runs on a goroutine of its own per stream and may use
// it for the stream's whole life.
type Handler func(r *Request)

// Mux routes the streams peers open to the services this node serves,
// opens streams to peers' services, and counts both. It starts no
// goroutines: Serve runs on its caller's.
type Mux struct {
	cfg    Config
	labels *labels
	gate   gate // bounds the refusal events recorded

	mu       sync.Mutex
	services map[string]*entry
	perPeer  map[identity.PeerID]int
	closed   bool
}

type entry struct {
	handler Handler
	allow   Allow
	target  string // what the service reaches, for the API; may be empty
}

// New returns a Mux. It registers its metrics with cfg.Registerer.
func New(cfg Config) (*Mux, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	m := &Mux{cfg: cfg, labels: newLabels(cfg.Names), services: map[string]*entry{},
		perPeer: map[identity.PeerID]int{}}
	if cfg.Registerer != nil {
		if err := cfg.Registerer.Register(collector{m.labels}); err != nil {
			return nil, fmt.Errorf("service: register metrics: %w", err)
		}
	}
	return m, nil
}

// MaxStreamsPerPeer is the per-peer stream limit in force.
func (m *Mux) MaxStreamsPerPeer() int { return m.cfg.MaxStreamsPerPeer }

// ErrServiceExists is returned for a service name already served.
var ErrServiceExists = errors.New("service: already served")

// ErrClosed is returned by a closed Mux.
var ErrClosed = errors.New("service: closed")

// Handle serves the service name with h, for the peers allow lets in.
// target describes what the service reaches (for the API; may be empty).
func (m *Mux) Handle(name string, allow Allow, target string, h Handler) error {
	if err := ValidName(name); err != nil {
		return err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return ErrClosed
	}
	if m.services[name] != nil {
		return fmt.Errorf("%w: %q", ErrServiceExists, name)
	}
	m.services[name] = &entry{handler: h, allow: allow, target: target}
	m.labels.add(name)
	return nil
}

func (m *Mux) remove(name string, e *entry) {
	m.mu.Lock()
	if m.services[name] == e {
		delete(m.services, name)
	}
	m.mu.Unlock()
}

// Close stops serving: streams that arrive after it are refused with
// CodeShutdown. Streams already open are their owners' to close.
func (m *Mux) Close() error {
	m.mu.Lock()
	m.closed = true
	m.mu.Unlock()
	return nil
}

// Services returns the counters of every service label, served or
// dialled, sorted by name.
func (m *Mux) Services() []Stats {
	var out []Stats
	m.labels.each(func(name string, s *stats) {
		st := s.snapshot(name)
		m.mu.Lock()
		if e := m.services[name]; e != nil {
			st.Served, st.Target, st.Allow = true, e.target, e.allow.String()
		}
		m.mu.Unlock()
		out = append(out, st)
	})
	return out
}

// acquire takes one of peer's stream slots.
func (m *Mux) acquire(peer identity.PeerID) (release func(), ok bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.perPeer[peer] >= m.cfg.MaxStreamsPerPeer {
		return nil, false
	}
	m.perPeer[peer]++
	var once sync.Once
	return func() {
		once.Do(func() {
			m.mu.Lock()
			if m.perPeer[peer]--; m.perPeer[peer] <= 0 {
				delete(m.perPeer, peer)
			}
			m.mu.Unlock()
		})
	}, true
}

// Open opens a stream on qc to peer's service name and sends its header.
// It does not wait for the service's answer: Conn.Accepted does, and the
// first Read does too.
func (m *Mux) Open(ctx context.Context, qc *quic.Conn, peer identity.PeerID, name string) (*Conn, error) {
	hdr, err := AppendHeader(make([]byte, 0, 6+len(name)), name)
	if err != nil {
		return nil, err
	}
	str, err := qc.OpenStreamSync(ctx)
	if err != nil {
		return nil, fmt.Errorf("service: open stream to %s: %w", Addr{peer, name}, err)
	}
	if _, err := str.Write(hdr); err != nil {
		str.CancelWrite(quic.StreamErrorCode(CodeClosed))
		str.CancelRead(quic.StreamErrorCode(CodeClosed))
		return nil, fmt.Errorf("service: open stream to %s: %w", Addr{peer, name}, err)
	}
	st, _ := m.labels.get(name)
	st.opened.Add(1)
	c := newConn(str, Addr{m.cfg.Local, name}, Addr{peer, name}, true, st, m.cfg.IdleTimeout, nil)
	c.refused = func(code Code) { m.recordRefusal(peer, name, code, false) }
	return c, nil
}
