// Package holepunch owns coordinated hole punching and path validation:
// authenticated connectivity checks (STUN Binding requests with per-attempt
// short-term credentials, as in ICE) sent on the node's shared socket to
// every candidate of the other peer in priority order, answering the other
// peer's checks, learning peer-reflexive addresses, measuring RTT, and
// choosing the best validated path.
//
// The schedule of checks is data (Plan); a Session executes it. An Agent
// installs one request handler on the endpoint and starts no goroutines;
// Session.Punch runs on its caller's goroutine.
package holepunch

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pion/stun/v3"

	"github.com/antnode/antnode/bootstrap/wire"
	"github.com/antnode/antnode/endpoint"
	"github.com/antnode/antnode/event"
)

// AgentConfig configures an Agent.
type AgentConfig struct {
	// Endpoint is the node's socket. Required; the Agent installs its
	// request handler on it.
	Endpoint *endpoint.Endpoint
	// Recorder receives check events. Nil: discarded.
	Recorder event.Recorder
	// Logger receives records that are not events. Nil: discarded.
	Logger *slog.Logger
	// MaxSessions bounds concurrent sessions. Zero: 1024.
	MaxSessions int
	// OnUnsolicited, if set, is called (on the endpoint's reader; it must
	// not block) with the source of an authenticated check from the peer
	// that arrived although this side sent nothing to that endpoint within
	// ContactMemory: it passed this side's filter unsolicited.
	// addressContacted says whether this side sent to the source's
	// address (on another port). A filtering class that would have dropped
	// it is contradicted (nattype.Type.Drops).
	OnUnsolicited func(from netip.AddrPort, addressContacted bool)
}

// Errors.
var (
	// ErrNoPath: no candidate pair validated within the budget.
	ErrNoPath = errors.New("holepunch: no path validated")
	// ErrTooManySessions: MaxSessions sessions are open.
	ErrTooManySessions = errors.New("holepunch: too many sessions")
	// ErrNoCandidates: the other peer announced no usable candidate.
	ErrNoCandidates = errors.New("holepunch: no usable remote candidates")
)

// Agent answers and sends connectivity checks on one endpoint.
type Agent struct {
	ep  *endpoint.Endpoint
	rec event.Recorder
	log *slog.Logger
	max int

	onUnsolicited func(netip.AddrPort, bool)
	contacts      *contacts

	mu       sync.Mutex
	sessions map[string]*Session // by local ufrag

	stats struct{ unknownUfrag, badIntegrity, answered atomic.Uint64 }
}

// NewAgent installs the check handler on cfg.Endpoint.
func NewAgent(cfg AgentConfig) (*Agent, error) {
	if cfg.Endpoint == nil {
		return nil, errors.New("holepunch: AgentConfig.Endpoint is required")
	}
	if cfg.MaxSessions < 0 {
		return nil, errors.New("holepunch: negative MaxSessions")
	}
	if cfg.Recorder == nil {
		cfg.Recorder = event.Nop{}
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.MaxSessions == 0 {
		cfg.MaxSessions = 1024
	}
	a := &Agent{ep: cfg.Endpoint, rec: cfg.Recorder, log: cfg.Logger, max: cfg.MaxSessions,
		sessions: make(map[string]*Session), onUnsolicited: cfg.OnUnsolicited, contacts: newContacts()}
	cfg.Endpoint.HandleRequests(a.handle)
	return a, nil
}

// Close removes the handler from the endpoint. It is idempotent.
func (a *Agent) Close() error {
	a.ep.HandleRequests(nil)
	return nil
}

// Sessions returns how many sessions are open.
func (a *Agent) Sessions() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return len(a.sessions)
}

// NewCreds returns fresh random check credentials.
func NewCreds() wire.Creds { return wire.NewCreds() }

// Session answers the other peer's checks for one attempt and runs this
// side's checks. Open it as soon as the other peer's credentials are known,
// so that its checks are answered even before this side's round starts.
type Session struct {
	a      *Agent
	local  wire.Creds
	remote wire.Creds
	att    *event.Attempt

	// triggered receives the sources of valid checks from the peer, for
	// triggered checks back (peer-reflexive candidates).
	triggered chan netip.AddrPort

	mu        sync.Mutex
	validated map[netip.AddrPort]Pair
	seen      map[netip.AddrPort]bool // sources of the peer's checks
	sources   []netip.AddrPort        // the same, in order of arrival
	closed    bool

	answered atomic.Uint64 // the peer's checks this side answered
}

// Open starts answering checks authenticated with local (the peer sends
// them with remote's ufrag) and returns the Session.
func (a *Agent) Open(local, remote wire.Creds, att *event.Attempt) (*Session, error) {
	if local.Ufrag == "" || local.Pwd == "" || remote.Ufrag == "" || remote.Pwd == "" {
		return nil, errors.New("holepunch: empty credentials")
	}
	s := &Session{a: a, local: local, remote: remote, att: att,
		triggered: make(chan netip.AddrPort, 16),
		validated: make(map[netip.AddrPort]Pair), seen: make(map[netip.AddrPort]bool)}
	a.mu.Lock()
	defer a.mu.Unlock()
	if len(a.sessions) >= a.max {
		return nil, ErrTooManySessions
	}
	if _, dup := a.sessions[local.Ufrag]; dup {
		return nil, errors.New("holepunch: duplicate ufrag")
	}
	a.sessions[local.Ufrag] = s
	return s, nil
}

// Close stops answering the peer's checks. It is idempotent.
func (s *Session) Close() {
	s.a.mu.Lock()
	if s.a.sessions[s.local.Ufrag] == s {
		delete(s.a.sessions, s.local.Ufrag)
	}
	s.a.mu.Unlock()
	s.mu.Lock()
	s.closed = true
	s.mu.Unlock()
}

// Sources returns the addresses the peer's authenticated checks came
// from, in order of arrival (at most 64): where the peer is, as this
// socket sees it.
func (s *Session) Sources() []netip.AddrPort {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.sources)
}

// PeerChecksAnswered returns how many of the peer's checks this side
// answered.
func (s *Session) PeerChecksAnswered() uint64 { return s.answered.Load() }

// handle answers one STUN request; it runs on the endpoint's reader.
func (a *Agent) handle(m *stun.Message, from netip.AddrPort) {
	if m.Type != stun.BindingRequest {
		return
	}
	var user stun.Username
	if err := user.GetFrom(m); err != nil {
		a.stats.unknownUfrag.Add(1)
		return
	}
	localUfrag, _, ok := strings.Cut(string(user), ":")
	if !ok {
		a.stats.unknownUfrag.Add(1)
		return
	}
	a.mu.Lock()
	s := a.sessions[localUfrag]
	a.mu.Unlock()
	if s == nil {
		a.stats.unknownUfrag.Add(1)
		return
	}
	if err := stun.NewShortTermIntegrity(s.local.Pwd).Check(m); err != nil {
		a.stats.badIntegrity.Add(1)
		a.rec.Record(event.Event{Kind: event.KindSecurity, Reason: event.ReasonProtocolError, Addr: from, Detail: "check integrity"})
		return
	}
	resp, err := endpoint.BindingSuccess(m, from, stun.NewShortTermIntegrity(s.local.Pwd), stun.Fingerprint)
	if err != nil {
		return
	}
	report := a.unsolicited(from) // before the answer makes from contacted
	if err := a.sendTo(resp.Raw, from); err != nil {
		return
	}
	a.stats.answered.Add(1)
	s.answered.Add(1)
	s.mu.Lock()
	first := !s.seen[from] && len(s.seen) < 64
	if first {
		s.seen[from] = true
		s.sources = append(s.sources, from)
	}
	s.mu.Unlock()
	if first {
		report()
		select {
		case s.triggered <- from:
		default:
		}
	}
}

// unsolicited returns what reports the check from `from` to
// OnUnsolicited, if this side had sent nothing to that endpoint recently
// (else a no-op): the state is taken now, the report made by the caller
// for the first check from that source only.
func (a *Agent) unsolicited(from netip.AddrPort) func() {
	if a.onUnsolicited == nil {
		return func() {}
	}
	ep, addr, known := a.contacts.contacted(from, time.Now())
	if !known || ep {
		return func() {}
	}
	return func() { a.onUnsolicited(from, addr) }
}

// sendTo sends b to dst from the endpoint and remembers dst as contacted.
func (a *Agent) sendTo(b []byte, dst netip.AddrPort) error {
	a.contacts.sent(dst, time.Now())
	return a.ep.WriteTo(b, dst)
}

// Prime sends one TTL-limited packet to each of the peer's reflexive
// candidates: it opens this side's NAT mapping (and filter) towards them
// but expires before the far NAT, so that NAT never sees a packet from this
// side before its own host has sent (an early packet there can leave a
// conntrack entry that later makes it remap the port). It returns how many
// priming packets left; sockets that cannot set a TTL send none.
func (s *Session) Prime(remote []wire.Candidate, ttl int) int {
	if ttl <= 0 {
		return 0
	}
	m, err := stun.Build(stun.TransactionID, stun.NewType(stun.MethodBinding, stun.ClassIndication), stun.Fingerprint)
	if err != nil {
		return 0
	}
	n := 0
	for _, c := range Targets(remote, TargetFamily(s.a.ep)) {
		if c.Kind != wire.KindServerReflexive && c.Kind != wire.KindPeerReflexive {
			continue
		}
		s.a.contacts.sent(c.Addr, time.Now())
		if err := s.a.ep.WriteTTL(m.Raw, c.Addr, ttl); err != nil {
			return n
		}
		n++
	}
	return n
}

// Pair is a validated path to the other peer.
type Pair struct {
	Remote   netip.AddrPort
	Priority uint32
	Kind     wire.CandidateKind
	RTT      time.Duration
	// Mapped is this side's address as the peer saw it (from the check
	// response): a peer-reflexive candidate of this side.
	Mapped netip.AddrPort
	At     time.Time
}

// Result is the outcome of a punch round.
type Result struct {
	Best      Pair
	Validated []Pair
	Sent      int // checks sent
	Answered  int // of them answered
}

// PunchConfig configures one round.
type PunchConfig struct {
	Plan PlanConfig
	// Round is reported in events. Zero: 1.
	Round uint64
	// Grace bounds the wait, after the first validated pair, for a pair
	// of higher priority; the wait is also at most that pair's RTT and is
	// skipped when the pair has the best priority of all. Zero: 10 ms.
	Grace time.Duration
	// Start is when the round starts (the synchronised punch time). Zero:
	// now.
	Start time.Time
	// OnValidated, if set, is called (on Punch's goroutine) for every
	// pair as soon as it validates, so a caller can dial it at once.
	OnValidated func(Pair)
	// OnPeerCheck, if set, is called (on Punch's goroutine) with the
	// source of the first authenticated check from each address of the
	// peer: its packets come from there, and the peer's NAT lets this
	// side's answers back in, so a dial there need not wait for this
	// side's own check to that address to be answered.
	OnPeerCheck func(netip.AddrPort)
	// Passive sends none of the plan's checks, only triggered ones back
	// to where the peer's checks came from; the round still lasts the
	// plan's budget. For a side whose router maps its port: the peer
	// checks it, and the answers leave through the mapping.
	Passive bool
}

type sent struct {
	at      time.Time
	probe   Probe
	release func()
}

// Punch runs one round of checks against remote and returns the best
// validated pair. It returns ErrNoPath if none validates within the plan's
// budget, or the context's error.
func (s *Session) Punch(ctx context.Context, remote []wire.Candidate, cfg PunchConfig) (Result, error) {
	if cfg.Round == 0 {
		cfg.Round = 1
	}
	if cfg.Grace <= 0 {
		cfg.Grace = 10 * time.Millisecond
	}
	probes := Schedule(remote, SocketFamilies(s.a.ep), cfg.Plan)
	if len(probes) == 0 {
		return Result{}, ErrNoCandidates
	}
	if !cfg.Start.IsZero() {
		if d := time.Until(cfg.Start); d > 0 {
			t := time.NewTimer(d)
			select {
			case <-t.C:
			case <-ctx.Done():
				t.Stop()
				return Result{}, context.Cause(ctx)
			}
		}
	}
	e := &executor{s: s, round: cfg.Round, race: raceOf(probes), inflight: make(map[[stun.TransactionIDSize]byte]sent),
		resp: make(chan endpoint.Response, len(probes)+64)}
	defer e.releaseAll()
	s.att.Begin(event.PhasePunch)
	res, err := e.run(ctx, probes, cfg)
	switch {
	case err == nil:
		s.att.End(event.PhaseValidate, event.OutcomeOK, event.ReasonNone)
		s.att.Record(event.Event{Kind: event.KindPathValidated, Addr: res.Best.Remote, Duration: res.Best.RTT,
			Path: event.PathDirect, Value: float64(len(res.Validated))})
	case errors.Is(err, ErrNoPath):
		s.att.End(event.PhasePunch, event.OutcomeFail, event.ReasonPunchTimeout)
	default:
		s.att.End(event.PhasePunch, event.OutcomeCanceled, event.ReasonCanceled)
		s.att.End(event.PhaseValidate, event.OutcomeCanceled, event.ReasonCanceled)
	}
	return res, err
}

type executor struct {
	s        *Session
	round    uint64
	race     bool // checks in both families: IPv6 preferred (see better)
	inflight map[[stun.TransactionIDSize]byte]sent
	resp     chan endpoint.Response
	res      Result
	extra    int // triggered checks sent
}

func (e *executor) releaseAll() {
	for _, sn := range e.inflight {
		sn.release()
	}
}

func (e *executor) send(p Probe) {
	s := e.s
	var pri [4]byte
	binary.BigEndian.PutUint32(pri[:], p.Priority)
	m, err := stun.Build(stun.TransactionID, stun.BindingRequest,
		stun.NewUsername(s.remote.Ufrag+":"+s.local.Ufrag),
		rawAttr{stun.AttrPriority, pri[:]},
		stun.NewShortTermIntegrity(s.remote.Pwd), stun.Fingerprint)
	if err != nil {
		return
	}
	release, err := s.a.ep.ExpectInto(m.TransactionID, e.resp)
	if err != nil {
		return
	}
	at := time.Now() // before the write: the answer can be read before WriteTo returns
	if err := s.a.sendTo(m.Raw, p.Target); err != nil {
		release()
		return
	}
	e.inflight[m.TransactionID] = sent{at: at, probe: p, release: release}
	e.res.Sent++
	s.att.Record(event.Event{Kind: event.KindCheckSent, Addr: p.Target, Value: float64(e.round)})
}

type rawAttr struct {
	t stun.AttrType
	v []byte
}

func (r rawAttr) AddTo(m *stun.Message) error {
	m.Add(r.t, r.v)
	return nil
}

func (e *executor) run(ctx context.Context, probes []Probe, cfg PunchConfig) (Result, error) {
	start := time.Now()
	next := 0
	timer := time.NewTimer(0)
	defer timer.Stop()
	var graceC <-chan time.Time
	var top uint32 // the best priority any target (of the preferred family, in a race) has
	for _, p := range probes {
		if !e.race || FamilyOf(p.Target.Addr()) == IPv6 {
			top = max(top, p.Priority)
		}
	}
	// After the last probe, wait for answers for one more MaxRTO.
	tail := cfg.Plan.withDefaults().MaxRTO
	end := start.Add(probes[len(probes)-1].At + tail)
	endTimer := time.NewTimer(time.Until(end))
	defer endTimer.Stop()
	for {
		select {
		case <-ctx.Done():
			return e.res, context.Cause(ctx)
		case <-timer.C:
			now := time.Since(start)
			for next < len(probes) && probes[next].At <= now {
				if !cfg.Passive && !e.isValidated(probes[next].Target) {
					e.send(probes[next])
				}
				next++
			}
			if next < len(probes) {
				timer.Reset(probes[next].At - time.Since(start))
			}
		case from := <-e.s.triggered:
			if cfg.OnPeerCheck != nil {
				cfg.OnPeerCheck(from)
			}
			// The peer reached us from `from`: check back at once (a
			// triggered check), it may be a peer-reflexive address.
			if e.extra < 64 && !e.isValidated(from) {
				e.extra++
				e.send(Probe{Target: from, Priority: Priority(wire.KindPeerReflexive, 0xffff), Kind: wire.KindPeerReflexive})
			}
		case r := <-e.resp:
			p, ok := e.verify(r)
			if !ok {
				continue
			}
			if cfg.OnValidated != nil {
				cfg.OnValidated(p)
			}
			if graceC == nil {
				e.s.att.End(event.PhasePunch, event.OutcomeOK, event.ReasonNone)
				e.s.att.Begin(event.PhaseValidate)
			}
			if p.Priority >= top && (!e.race || FamilyOf(p.Remote.Addr()) == IPv6) {
				return e.res, nil // nothing better can come
			}
			if graceC == nil {
				// Wait a little for a better pair (see graceFor).
				graceC = time.After(graceFor(p, e.race, cfg.Grace))
			}
		case <-graceC:
			return e.res, nil
		case <-endTimer.C:
			if len(e.res.Validated) > 0 {
				return e.res, nil
			}
			return e.res, fmt.Errorf("%w: %d checks sent, %d answered by us for the peer, budget %v",
				ErrNoPath, e.res.Sent, e.s.answered.Load(), cfg.Plan.withDefaults().Budget)
		}
	}
}

func (e *executor) isValidated(a netip.AddrPort) bool {
	e.s.mu.Lock()
	defer e.s.mu.Unlock()
	_, ok := e.s.validated[a]
	return ok
}

// verify checks a response and records the pair it validates.
func (e *executor) verify(r endpoint.Response) (Pair, bool) {
	sn, ok := e.inflight[r.Msg.TransactionID]
	if !ok {
		return Pair{}, false
	}
	delete(e.inflight, r.Msg.TransactionID)
	sn.release()
	if r.Msg.Type != stun.BindingSuccess {
		return Pair{}, false
	}
	if err := stun.NewShortTermIntegrity(e.s.remote.Pwd).Check(r.Msg); err != nil {
		e.s.a.rec.Record(event.Event{Kind: event.KindSecurity, Reason: event.ReasonProtocolError, Addr: r.From, Detail: "check response integrity"})
		return Pair{}, false
	}
	mappedAP, _ := endpoint.MappedAddress(r.Msg) // none: the zero value
	p := Pair{Remote: r.From, Priority: sn.probe.Priority, Kind: sn.probe.Kind, RTT: r.At.Sub(sn.at), Mapped: mappedAP, At: r.At}
	if r.From != sn.probe.Target {
		// Answered from another address than probed: that address is a
		// peer-reflexive candidate of the peer.
		p.Kind = wire.KindPeerReflexive
	}
	e.res.Answered++
	e.s.mu.Lock()
	if _, dup := e.s.validated[p.Remote]; dup {
		e.s.mu.Unlock()
		return Pair{}, false
	}
	e.s.validated[p.Remote] = p
	e.s.mu.Unlock()
	e.res.Validated = append(e.res.Validated, p)
	if better(p, e.res.Best, e.race) {
		e.res.Best = p
	}
	e.s.att.Record(event.Event{Kind: event.KindCheckAnswered, Addr: p.Remote, Duration: p.RTT})
	return p, true
}
