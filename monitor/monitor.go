// Package monitor turns the events that every phase of antnode reports
// inline into Prometheus metrics, structured slog records, a bounded store
// of recent attempts, diagnostics and an HTTP surface.
//
// monitor is a leaf: it imports no other package of antnode. Producers call
// a Recorder (usually a *Monitor) where things happen; the Monitor updates
// counters and histograms exactly, writes log records with attempt IDs and
// sanitised addresses, and keeps sampled detail in its store.
//
// New starts no goroutines. The HTTP surface (Server) starts its own and
// stops them in Close.
package monitor

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"log/slog"
	"net/netip"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// AddressMode says how addresses appear in logs.
type AddressMode uint8

// Address modes.
const (
	// AddressesSanitized replaces each IP by a keyed hash that is stable
	// within the process, so records can be correlated but not traced to
	// a host. Ports are kept.
	AddressesSanitized AddressMode = iota
	// AddressesFull logs addresses as they are.
	AddressesFull
)

// ParseAddressMode parses "sanitized" (or "sanitised") and "full".
func ParseAddressMode(s string) (AddressMode, error) {
	switch s {
	case "sanitized", "sanitised", "":
		return AddressesSanitized, nil
	case "full":
		return AddressesFull, nil
	}
	return 0, fmt.Errorf("monitor: address mode %q: want sanitized or full", s)
}

// Config configures a Monitor.
type Config struct {
	// Logger receives one structured record per reported event of note.
	// Nil: discard.
	Logger *slog.Logger
	// Registerer receives the metrics. Nil: metrics are kept but not
	// registered anywhere.
	Registerer prometheus.Registerer
	// Addresses says how addresses appear in logs. Zero: sanitised.
	// Ignored when Sanitizer is set.
	Addresses AddressMode
	// Sanitizer renders addresses in logs; share it with the node's
	// logger (SanitizingHandler) so that all records render an address
	// alike. Nil: a new one for Addresses.
	Sanitizer *Sanitizer
	// Role is "peer" or "bootstrap"; it selects nothing but is reported.
	// Empty: "peer".
	Role string
	// Store keeps recent attempts for the API and diagnostics. Nil: a
	// store with the defaults.
	Store *Store
	// Audit receives security events (authentication failures, rate
	// limits, refused requests) and relay allocations, always, whatever
	// the log level. Nil: they go to Logger only.
	Audit *slog.Logger
}

// Monitor is the Recorder of a node. It is safe for concurrent use.
type Monitor struct {
	log     *slog.Logger
	audit   *slog.Logger
	san     *Sanitizer
	metrics *metrics
	store   *Store
	boots   bootTable
	lag     atomic.Int64 // worst recent scheduling lag, ns
	role    string
}

// Lag returns the worst scheduling lag of the last measurement window.
func (m *Monitor) Lag() time.Duration { return time.Duration(m.lag.Load()) }

func (m *Monitor) setLag(d time.Duration) { m.lag.Store(int64(d)) }

// New returns a Monitor and registers its metrics with cfg.Registerer.
func New(cfg Config) (*Monitor, error) {
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Role == "" {
		cfg.Role = "peer"
	}
	var err error
	san := cfg.Sanitizer
	if san == nil {
		if san, err = NewSanitizer(cfg.Addresses); err != nil {
			return nil, err
		}
	}
	if cfg.Store == nil {
		if cfg.Store, err = NewStore(StoreConfig{}); err != nil {
			return nil, err
		}
	}
	m := &Monitor{log: cfg.Logger, audit: cfg.Audit, san: san, store: cfg.Store, role: cfg.Role}
	m.metrics = newMetrics(cfg.Store, m.Lag)
	if cfg.Registerer != nil {
		if err := m.metrics.register(cfg.Registerer); err != nil {
			return nil, fmt.Errorf("monitor: register metrics: %w", err)
		}
	}
	return m, nil
}

// Sanitizer returns the address sanitiser the Monitor's logs use, so other
// log records of the node can render addresses the same way.
func (m *Monitor) Sanitizer() *Sanitizer { return m.san }

// SanitizeAddrPort renders an address as the monitor's logs do
// (event.AddrSanitizer).
func (m *Monitor) SanitizeAddrPort(ap netip.AddrPort) string { return m.san.AddrPort(ap) }

// Store returns the store of recent attempts.
func (m *Monitor) Store() *Store { return m.store }

// Record implements Recorder. Metrics are exact; the log record is written
// if its level is enabled; the store keeps the event, subject to sampling.
// An event without a time is stamped only if the store keeps it: metrics
// and log records (slog stamps its own) do not need one.
func (m *Monitor) Record(ev Event) {
	if ev.Time.IsZero() && (ev.Attempt != 0 || keepNodeEvent(&ev)) {
		ev.Time = time.Now()
	}
	m.metrics.observe(&ev)
	if ev.Kind == KindBootstrapRequest {
		m.boots.observe(&ev)
	}
	level, msg := levelOf(&ev)
	if m.log.Enabled(context.Background(), level) {
		m.logEvent(m.log, level, msg, &ev)
	}
	if m.audit != nil && audited(&ev) {
		m.logEvent(m.audit, slog.LevelInfo, msg, &ev)
	}
	m.store.add(&ev)
}

// audited says whether an event belongs in the audit log.
func audited(ev *Event) bool {
	switch ev.Kind {
	case KindSecurity:
		return true
	case KindRelay:
		return ev.Detail == "allocate" || ev.Detail == "credentials" || ev.Detail == "release"
	}
	return false
}

func (m *Monitor) logEvent(log *slog.Logger, level slog.Level, msg string, ev *Event) {
	ctx := context.Background()
	attrs := make([]slog.Attr, 0, 10)
	attrs = append(attrs, slog.String("event", ev.Kind.String()))
	if ev.Attempt != 0 {
		attrs = append(attrs, slog.String("attempt", ev.Attempt.String()))
	}
	if ev.Phase != PhaseNone {
		attrs = append(attrs, slog.String("phase", ev.Phase.String()))
	}
	if ev.Outcome != OutcomeNone {
		attrs = append(attrs, slog.String("outcome", ev.Outcome.String()))
	}
	if ev.Reason != ReasonNone {
		attrs = append(attrs, slog.String("reason", ev.Reason.String()))
	}
	if ev.Path != PathNone {
		attrs = append(attrs, slog.String("path", ev.Path.String()))
	}
	if ev.Duration != 0 {
		attrs = append(attrs, slog.Float64("duration_ms", float64(ev.Duration.Microseconds())/1000))
	}
	if ev.Value != 0 {
		attrs = append(attrs, slog.Float64("value", ev.Value))
	}
	if ev.Bootstrap != "" {
		attrs = append(attrs, slog.String("bootstrap", ev.Bootstrap))
	}
	if ev.Peer != "" {
		attrs = append(attrs, slog.String("peer", ev.Peer))
	}
	if ev.NAT != "" {
		attrs = append(attrs, slog.String("nat", ev.NAT))
	}
	if ev.PeerNAT != "" {
		attrs = append(attrs, slog.String("peer_nat", ev.PeerNAT))
	}
	if ev.Addr.IsValid() {
		attrs = append(attrs, slog.String("addr", m.san.AddrPort(ev.Addr)))
	}
	if ev.Detail != "" {
		attrs = append(attrs, slog.String("detail", ev.Detail))
	}
	if ev.To != "" {
		attrs = append(attrs, slog.String("to", ev.To))
	}
	if ev.Err != nil {
		attrs = append(attrs, slog.String("err", m.san.Text(ev.Err.Error())))
	}
	log.LogAttrs(ctx, level, msg, attrs...)
}

func levelOf(ev *Event) (slog.Level, string) {
	switch ev.Kind {
	case KindAttemptStart:
		return slog.LevelInfo, "attempt started"
	case KindAttemptEnd:
		if ev.Outcome == OutcomeOK {
			return slog.LevelInfo, "attempt succeeded"
		}
		return slog.LevelWarn, "attempt failed"
	case KindPhaseStart:
		return slog.LevelDebug, "phase started"
	case KindPhaseEnd:
		return slog.LevelInfo, "phase ended"
	case KindCandidate:
		return slog.LevelInfo, "candidate"
	case KindCheckSent:
		return slog.LevelDebug, "check sent"
	case KindCheckAnswered:
		return slog.LevelDebug, "check answered"
	case KindPathValidated:
		return slog.LevelInfo, "path validated"
	case KindFallback:
		return slog.LevelWarn, "fallback"
	case KindMigration:
		return slog.LevelInfo, "migration"
	case KindStateChange:
		return slog.LevelInfo, "state change"
	case KindStream:
		if ev.Outcome == OutcomeFail {
			// This node's stream: its caller has the error and reports it.
			return slog.LevelInfo, "service stream refused by the peer"
		}
		return slog.LevelWarn, "service stream refused"
	case KindBootstrapRequest:
		if ev.Outcome == OutcomeOK {
			return slog.LevelDebug, "bootstrap request"
		}
		return slog.LevelWarn, "bootstrap request failed"
	case KindBootstrapState:
		switch {
		case ev.Outcome == OutcomeOK:
			return slog.LevelInfo, "bootstrap up"
		case ev.Reason == ReasonCanceled:
			return slog.LevelInfo, "bootstrap closed"
		}
		return slog.LevelWarn, "bootstrap down"
	case KindRegistration:
		return slog.LevelInfo, "registration"
	case KindLatency:
		return slog.LevelDebug, "latency"
	case KindThroughput:
		return slog.LevelInfo, "throughput"
	case KindRecovery:
		return slog.LevelWarn, "recovery"
	case KindSecurity:
		return slog.LevelWarn, "security"
	case KindRelay:
		return slog.LevelInfo, "relay"
	case KindNATType:
		return slog.LevelInfo, "nat type"
	case KindBreaker:
		if ev.Detail == "closed" {
			return slog.LevelInfo, "bootstrap breaker"
		}
		return slog.LevelWarn, "bootstrap breaker"
	}
	return slog.LevelDebug, "event"
}

// Sanitizer renders addresses for logs: either as they are or with the IP
// replaced by a keyed hash that is stable within the process.
type Sanitizer struct {
	mode AddressMode
	key  [32]byte
}

// NewSanitizer returns a Sanitizer with a fresh random key.
func NewSanitizer(mode AddressMode) (*Sanitizer, error) {
	s := &Sanitizer{mode: mode}
	if _, err := rand.Read(s.key[:]); err != nil {
		return nil, fmt.Errorf("monitor: sanitizer key: %w", err)
	}
	return s, nil
}

// Full reports whether addresses are logged as they are.
func (s *Sanitizer) Full() bool { return s.mode == AddressesFull }

// Addr renders an IP address.
func (s *Sanitizer) Addr(a netip.Addr) string {
	if s.mode == AddressesFull || !a.IsValid() {
		return a.String()
	}
	mac := hmac.New(sha256.New, s.key[:])
	b, _ := a.Unmap().MarshalBinary()
	mac.Write(b)
	sum := mac.Sum(nil)
	fam := "ip4-"
	if a.Unmap().Is6() {
		fam = "ip6-"
	}
	return fam + hex.EncodeToString(sum[:5])
}

// AddrPort renders an address and port.
func (s *Sanitizer) AddrPort(ap netip.AddrPort) string {
	if s.mode == AddressesFull || !ap.IsValid() {
		return ap.String()
	}
	return s.Addr(ap.Addr()) + ":" + strconv.Itoa(int(ap.Port()))
}

// Text replaces every IP address (with or without a port) that appears in
// free text, such as an error message, by its sanitised form.
func (s *Sanitizer) Text(t string) string {
	if s.mode == AddressesFull {
		return t
	}
	return replaceAddrs(t, s)
}
