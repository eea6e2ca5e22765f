// Package event is the vocabulary every phase of antnode reports in: the
// Event, its kinds, phases, outcomes, reasons and paths (closed sets with
// stable names, which metric labels, logs, diagnosis and the API share),
// the Recorder that receives events, and the Attempt that ties one
// connection attempt's events together.
//
// It is a leaf: it imports nothing but the standard library, so that the
// phase packages (holepunch, relay, bootstrap, traversal, service) report
// without depending on the monitor that consumes the events. It starts no
// goroutines.
package event

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"strconv"
	"sync"
	"time"
)

// Recorder receives the events of every phase. Implementations are safe for
// concurrent use, never block and do not retain ev beyond the call. Callers
// report inline, where the thing happens.
type Recorder interface {
	Record(ev Event)
}

// AddrSanitizer is implemented by Recorders that hide addresses in what
// they log: producers render an address for an error text through it, so
// that the text says what the logs say.
type AddrSanitizer interface {
	SanitizeAddrPort(netip.AddrPort) string
}

// ReasonOf returns the Reason of the first error in err's chain that
// knows its own (a method Reason() Reason: a refused bootstrap request, a
// refused service stream, ...), and false when none does.
func ReasonOf(err error) (Reason, bool) {
	var r interface{ Reason() Reason }
	if errors.As(err, &r) {
		return r.Reason(), true
	}
	return ReasonNone, false
}

// Nop is a Recorder that discards everything.
type Nop struct{}

// Record implements Recorder.
func (Nop) Record(Event) {}

// Kind says what an Event reports.
type Kind uint8

// Event kinds. The comment lists the fields each one uses.
const (
	KindAttemptStart     Kind = iota + 1 // Peer, NAT, Detail=role
	KindAttemptEnd                       // Outcome, Reason, Path, Duration, NAT, PeerNAT, Detail=role
	KindPhaseStart                       // Phase
	KindPhaseEnd                         // Phase, Outcome, Reason, Duration
	KindCandidate                        // Addr, Detail=candidate kind, Value=priority
	KindCheckSent                        // Addr, Value=round
	KindCheckAnswered                    // Addr, Duration=RTT
	KindPathValidated                    // Addr, Path, Duration=RTT
	KindFallback                         // Reason, Detail=from->to
	KindMigration                        // Outcome, Reason (why it happened; if it failed, why it failed), Duration, Path
	KindStateChange                      // Detail=from, To=to, Reason, Peer
	KindBootstrapRequest                 // Bootstrap, Detail=request type, Outcome, Reason, Duration
	KindBootstrapState                   // Bootstrap, Outcome (OK=up, Fail=down), Reason, Addr
	KindRegistration                     // (bootstrap side) Peer, Addr, Outcome (OK=joined, Fail=left), Reason
	KindLatency                          // Path, Duration=RTT (QUIC's estimate)
	KindThroughput                       // Path, Value=Mbit/s, Duration, Detail
	KindRecovery                         // Detail=strategy, Reason, Outcome
	KindSecurity                         // Reason, Addr, Detail, Value=repeats it stands for (aggregated, see Aggregator)
	KindRelay                            // Outcome, Reason, Detail=operation, Value=bytes
	KindNATType                          // NAT
	KindBreaker                          // Bootstrap, Detail=state (closed, half-open, open)
	KindStream                           // Reason (why a service stream was refused), Peer, Detail=service, Outcome=fail when the peer refused this node's stream (else this node refused the peer's), Value=similar events suppressed before it
	kindEnd
)

var kindNames = [kindEnd]string{"", "attempt_start", "attempt_end", "phase_start", "phase_end",
	"candidate", "check_sent", "check_answered", "path_validated", "fallback", "migration",
	"state_change", "bootstrap_request", "bootstrap_state", "registration", "latency",
	"throughput", "recovery", "security", "relay", "nat_type", "breaker", "stream"}

func (k Kind) String() string {
	if k < kindEnd {
		return kindNames[k]
	}
	return "kind(" + strconv.Itoa(int(k)) + ")"
}

// Phase is a step of establishing or keeping a connection.
type Phase uint8

// Phases.
const (
	PhaseNone Phase = iota
	PhaseRegister
	PhaseDiscover
	PhaseClassify
	PhaseCoordinate
	PhaseSync
	PhasePunch
	PhaseValidate
	PhaseHandshake
	PhaseRelay
	PhaseTransfer
	PhaseMigrate
	phaseEnd
)

// NumKinds is one more than the largest Kind value.
const NumKinds = int(kindEnd)

// NumPhases is one more than the largest Phase value.
const NumPhases = int(phaseEnd)

var phaseNames = [phaseEnd]string{"none", "register", "discover", "classify", "coordinate", "sync",
	"punch", "validate", "handshake", "relay", "transfer", "migrate"}

func (p Phase) String() string {
	if p < phaseEnd {
		return phaseNames[p]
	}
	return "phase(" + strconv.Itoa(int(p)) + ")"
}

// Outcome is how something ended.
type Outcome uint8

// Outcomes.
const (
	OutcomeNone Outcome = iota
	OutcomeOK
	OutcomeFail
	OutcomeCanceled
	OutcomeSkipped
	outcomeEnd
)

// NumOutcomes is one more than the largest Outcome value.
const NumOutcomes = int(outcomeEnd)

var outcomeNames = [outcomeEnd]string{"none", "ok", "fail", "canceled", "skipped"}

func (o Outcome) String() string {
	if o < outcomeEnd {
		return outcomeNames[o]
	}
	return "outcome(" + strconv.Itoa(int(o)) + ")"
}

// Reason is why something failed or took a detour: a closed set that
// diagnostics, metrics labels and the API share.
type Reason uint8

// Reasons.
const (
	ReasonNone Reason = iota
	ReasonTimeout
	ReasonCanceled
	ReasonBootstrapUnreachable
	ReasonNoBootstrap
	ReasonUnknownPeer
	ReasonRateLimited
	ReasonRefused
	ReasonExpired
	ReasonOverloaded
	ReasonKeyMismatch
	ReasonHandshakeFailed
	ReasonProtocolError
	ReasonNoCandidates
	ReasonUDPBlocked
	ReasonBothSymmetric
	ReasonPunchTimeout
	ReasonRelayUnavailable
	ReasonRelayQuota
	ReasonPathBlackholed
	ReasonMappingExpired
	ReasonNetworkChanged
	ReasonTransferMismatch
	ReasonConnectionLost
	ReasonSelf
	ReasonInternal
	// ReasonDirectAvailable: a relayed connection moved to a direct path
	// that validated (the reason of an upgrade).
	ReasonDirectAvailable
	// Refusals of application streams (package service): no such
	// service, a peer not on its allow list, a local target that did not
	// answer, a peer at its stream limit.
	ReasonUnknownService
	ReasonNotAllowed
	ReasonTargetUnreachable
	ReasonStreamLimit
	// ReasonBadCredentials: credentials (a TURN username and password)
	// that did not verify or had expired. Not a key mismatch: no peer
	// presented another key.
	ReasonBadCredentials
	// ReasonRegistryFull: a bootstrap refused a registration because its
	// registry holds its maximum of peers.
	ReasonRegistryFull
	// ReasonNoCommonFamily: the peers' candidates share no address
	// family (an IPv6-only node and an IPv4-only one): only a relay
	// carries one family to the other.
	ReasonNoCommonFamily
	reasonEnd
)

// NumReasons is one more than the largest Reason value.
const NumReasons = int(reasonEnd)

var reasonNames = [reasonEnd]string{"none", "timeout", "canceled", "bootstrap_unreachable",
	"no_bootstrap", "unknown_peer", "rate_limited", "refused", "expired", "overloaded",
	"key_mismatch", "handshake_failed", "protocol_error", "no_candidates", "udp_blocked",
	"both_symmetric", "punch_timeout", "relay_unavailable", "relay_quota", "path_blackholed",
	"mapping_expired", "network_changed", "transfer_mismatch", "connection_lost", "self",
	"internal", "direct_available", "unknown_service", "not_allowed", "target_unreachable",
	"stream_limit", "bad_credentials", "registry_full", "no_common_family"}

func (r Reason) String() string {
	if r < reasonEnd {
		return reasonNames[r]
	}
	return "reason(" + strconv.Itoa(int(r)) + ")"
}

// MarshalText renders a Reason by its name (in JSON, for one).
func (r Reason) MarshalText() ([]byte, error) { return []byte(r.String()), nil }

// UnmarshalText parses a Reason's name.
func (r *Reason) UnmarshalText(b []byte) error {
	v, err := ParseReason(string(b))
	if err != nil {
		return err
	}
	*r = v
	return nil
}

// ParseReason is the inverse of Reason.String.
func ParseReason(s string) (Reason, error) {
	for i, n := range reasonNames {
		if n == s {
			return Reason(i), nil
		}
	}
	return 0, fmt.Errorf("monitor: unknown reason %q", s)
}

// Path is the kind of path a connection runs on.
type Path uint8

// Paths.
const (
	PathNone Path = iota
	PathDirect
	PathRelay
	pathEnd
)

// NumPaths is one more than the largest Path value.
const NumPaths = int(pathEnd)

var pathNames = [pathEnd]string{"none", "direct", "relay"}

func (p Path) String() string {
	if p < pathEnd {
		return pathNames[p]
	}
	return "path(" + strconv.Itoa(int(p)) + ")"
}

// AttemptID ties together every event and log record of one attempt.
type AttemptID uint64

func (id AttemptID) String() string {
	var b [16]byte
	const hex = "0123456789abcdef"
	for i := 15; i >= 0; i-- {
		b[i] = hex[id&0xf]
		id >>= 4
	}
	return string(b[:])
}

// NewAttemptID returns a random, non-zero attempt ID.
func NewAttemptID() AttemptID {
	for {
		if id := AttemptID(rand.Uint64()); id != 0 {
			return id
		}
	}
}

// Event is one thing that happened. Which fields are set depends on Kind.
// Peer, Addr and Err go to logs and the store only, never to metric labels.
type Event struct {
	Time      time.Time // zero: the recorder stamps it
	Kind      Kind
	Phase     Phase
	Outcome   Outcome
	Reason    Reason
	Path      Path
	Attempt   AttemptID
	Duration  time.Duration
	Value     float64
	Bootstrap string // a bounded bootstrap label ("0", "1", ...)
	Peer      string // printable peer ID
	NAT       string // local NAT class (nattype.Type.Class)
	PeerNAT   string // the peer's NAT class
	Addr      netip.AddrPort
	Detail    string // short, from a small set per kind
	To        string // KindStateChange: the new state (Detail is the old one)
	// Family is an address family: "ipv4" or "ipv6" (KindAttemptEnd of a
	// success, KindLatency: the path's), or "dual-stack" (KindAttemptStart:
	// the families the attempt may use); empty: unknown.
	Family string
	Err    error
}

// Attempt reports the events of one connection attempt under one ID and
// times its phases. It is safe for concurrent use. Every method may be
// called on a nil *Attempt and then does nothing.
type Attempt struct {
	rec   Recorder
	id    AttemptID
	role  string
	start time.Time

	mu         sync.Mutex
	nat        string
	peerNAT    string
	family     string // the winning path's (SetFamily)
	phaseStart [phaseEnd]time.Time
	finished   bool
}

// StartAttempt reports the start of an attempt and returns its handle.
// role is "initiator" or "responder"; families the address families the
// attempt may use ("ipv4", "ipv6", "dual-stack"; empty: unknown).
func StartAttempt(rec Recorder, peer, role, nat, families string) *Attempt {
	if rec == nil {
		rec = Nop{}
	}
	a := &Attempt{rec: rec, id: NewAttemptID(), role: role, start: time.Now(), nat: nat}
	rec.Record(Event{Time: a.start, Kind: KindAttemptStart, Attempt: a.id, Peer: peer, NAT: nat, Detail: role, Family: families})
	return a
}

// SetFamily records the address family ("ipv4", "ipv6") of the path the
// attempt ends on, for its end event.
func (a *Attempt) SetFamily(f string) {
	if a == nil {
		return
	}
	a.mu.Lock()
	a.family = f
	a.mu.Unlock()
}

// ID returns the attempt's ID.
func (a *Attempt) ID() AttemptID {
	if a == nil {
		return 0
	}
	return a.id
}

// Started returns when the attempt started.
func (a *Attempt) Started() time.Time {
	if a == nil {
		return time.Time{}
	}
	return a.start
}

// SetNAT records the NAT classes of both sides once they are known.
func (a *Attempt) SetNAT(local, peer string) {
	if a == nil {
		return
	}
	a.mu.Lock()
	if local != "" {
		a.nat = local
	}
	if peer != "" {
		a.peerNAT = peer
	}
	a.mu.Unlock()
}

// Begin reports the start of phase p.
func (a *Attempt) Begin(p Phase) {
	if a == nil {
		return
	}
	now := time.Now()
	a.mu.Lock()
	a.phaseStart[p] = now
	a.mu.Unlock()
	a.rec.Record(Event{Time: now, Kind: KindPhaseStart, Attempt: a.id, Phase: p})
}

// End reports the end of phase p and returns its duration. It does nothing
// (and returns zero) if p is not open, so a phase ends exactly once.
func (a *Attempt) End(p Phase, o Outcome, r Reason) time.Duration {
	if a == nil {
		return 0
	}
	now := time.Now()
	a.mu.Lock()
	s := a.phaseStart[p]
	a.phaseStart[p] = time.Time{}
	a.mu.Unlock()
	if s.IsZero() {
		return 0
	}
	d := now.Sub(s)
	a.rec.Record(Event{Time: now, Kind: KindPhaseEnd, Attempt: a.id, Phase: p, Outcome: o, Reason: r, Duration: d})
	return d
}

// Record reports ev as part of this attempt.
func (a *Attempt) Record(ev Event) {
	if a == nil {
		return
	}
	ev.Attempt = a.id
	a.rec.Record(ev)
}

// Finish reports the end of the attempt once; later calls do nothing. It
// ends every phase still open with the same outcome.
func (a *Attempt) Finish(o Outcome, r Reason, path Path) time.Duration {
	if a == nil {
		return 0
	}
	now := time.Now()
	a.mu.Lock()
	if a.finished {
		a.mu.Unlock()
		return now.Sub(a.start)
	}
	a.finished = true
	var open []Phase
	for p, s := range a.phaseStart {
		if !s.IsZero() {
			open = append(open, Phase(p))
		}
	}
	nat, peerNAT, family := a.nat, a.peerNAT, a.family
	a.mu.Unlock()
	for _, p := range open {
		po, pr := o, r
		if o == OutcomeOK {
			po, pr = OutcomeCanceled, ReasonNone // superseded by a faster path
		}
		a.End(p, po, pr)
	}
	d := now.Sub(a.start)
	a.rec.Record(Event{Time: now, Kind: KindAttemptEnd, Attempt: a.id, Outcome: o, Reason: r, Path: path,
		Duration: d, NAT: nat, PeerNAT: peerNAT, Detail: a.role, Family: family})
	return d
}
