package monitor

import (
	"cmp"
	"fmt"
	"slices"
	"strings"
	"time"
)

// Diagnostics: root causes from evidence.
//
// Diagnose turns what the store holds (attempts with their events, the
// node's own events) and a few facts about the node into findings: a
// cause from a closed, documented set, the events that point to it, a
// confidence that grows with independent evidence, and the next step for
// the operator. It is a pure function; the API, `antnode diagnose` and
// the dashboard call it.

// Severity ranks findings.
type Severity string

// Severities.
const (
	SeverityInfo    Severity = "info"    // worked around (relay, migration)
	SeverityWarning Severity = "warning" // some connections fail
	SeverityError   Severity = "error"   // the node cannot do its job
)

// Evidence is one event behind a finding.
type Evidence struct {
	Time    time.Time `json:"time"`
	Kind    string    `json:"kind"`
	Attempt string    `json:"attempt,omitempty"`
	Phase   string    `json:"phase,omitempty"`
	Reason  string    `json:"reason,omitempty"`
	Detail  string    `json:"detail,omitempty"`
}

// Finding is a diagnosed cause.
type Finding struct {
	Cause    Cause    `json:"cause"`
	Title    string   `json:"title"`
	Severity Severity `json:"severity"`
	Scope    string   `json:"scope"` // "node", "bootstrap N", "peer ID"
	// Confidence is Confidence of the observations for and against it.
	Confidence float64   `json:"confidence"`
	Summary    string    `json:"summary"`
	NextStep   string    `json:"next_step"`
	Count      int       `json:"count"`
	First      time.Time `json:"first"`
	Last       time.Time `json:"last"`
	Attempts   []string  `json:"attempts,omitempty"`
	// Sources is the number of independent sources for it.
	Sources  int        `json:"sources"`
	Evidence []Evidence `json:"evidence"`
	// Against is the evidence that contradicts it.
	Against []Evidence `json:"against,omitempty"`
	// Unknown is what the evidence does not establish.
	Unknown string `json:"unknown,omitempty"`
}

// BootstrapFact is what the node knows about one bootstrap now.
type BootstrapFact struct {
	Label       string
	Registered  bool
	Transport   string
	LastError   string
	KeyMismatch bool // the last error was the bootstrap's key not matching its ID
}

// NodeFacts is the node's state that diagnosis takes into account.
type NodeFacts struct {
	Role       string // peer or bootstrap
	NAT        string // nattype class
	Bootstraps []BootstrapFact
}

// Probe is the result of a test made for a diagnosis (by `antnode
// diagnose`): an observation for a cause, which makes its finding, or
// against one, which counts only where the finding exists.
type Probe struct {
	Cause    Cause
	Scope    string
	Severity Severity
	Observation
	Evidence Evidence
}

// DiagInput is what Diagnose works from.
type DiagInput struct {
	Attempts   []AttemptRecord
	NodeEvents []Event
	Facts      NodeFacts
	Probes     []Probe
	Now        time.Time
	// Window limits the evidence to recent history. Zero: DefaultWindow.
	Window time.Duration
}

// DefaultWindow is how far back diagnosis looks by default.
const DefaultWindow = time.Hour

const (
	maxEvCount = 6 // evidence items kept per finding
	maxAttIDs  = 5 // attempt IDs kept per finding
)

type findingKey struct {
	cause Cause
	scope string
}

type contradiction struct {
	key findingKey
	obs Observation
	ev  Evidence
}

type builder struct {
	m       map[findingKey]*Finding
	obs     map[findingKey][]Observation
	order   []findingKey
	against []contradiction
}

func (b *builder) add(c Cause, scope string, sev Severity, o Observation, ev Evidence, attempt string) {
	k := findingKey{c, scope}
	f := b.m[k]
	if f == nil {
		ci := causeInfo(c)
		f = &Finding{Cause: c, Title: ci.Title, Severity: sev, Scope: scope, NextStep: ci.NextStep, Unknown: ci.Unknown,
			First: ev.Time, Last: ev.Time}
		b.m[k] = f
		b.order = append(b.order, k)
	}
	if sevRank(sev) > sevRank(f.Severity) {
		f.Severity = sev
	}
	f.Count++
	if ev.Time.Before(f.First) {
		f.First = ev.Time
	}
	if ev.Time.After(f.Last) {
		f.Last = ev.Time
	}
	if len(f.Evidence) < maxEvCount {
		f.Evidence = append(f.Evidence, ev)
	}
	if attempt != "" && len(f.Attempts) < maxAttIDs && !slices.Contains(f.Attempts, attempt) {
		f.Attempts = append(f.Attempts, attempt)
	}
	o.Against = false
	b.obs[k] = append(b.obs[k], o)
}

// observe adds one more observation for an existing finding.
func (b *builder) observe(k findingKey, o Observation) {
	o.Against = false
	b.obs[k] = append(b.obs[k], o)
}

// contradict records an observation against a finding, should it exist
// once all the evidence is in.
func (b *builder) contradict(c Cause, scope string, o Observation, ev Evidence) {
	o.Against = true
	b.against = append(b.against, contradiction{findingKey{c, scope}, o, ev})
}

// findings applies the contradictions and computes each confidence.
func (b *builder) findings() []Finding {
	for _, x := range b.against {
		f := b.m[x.key]
		if f == nil {
			continue
		}
		b.obs[x.key] = append(b.obs[x.key], x.obs)
		if len(f.Against) < maxEvCount {
			f.Against = append(f.Against, x.ev)
		}
	}
	out := make([]Finding, 0, len(b.order))
	for _, k := range b.order {
		f := b.m[k]
		f.Confidence = Confidence(b.obs[k])
		srcs := map[string]bool{}
		for _, o := range b.obs[k] {
			if !o.Against {
				srcs[o.Source] = true
			}
		}
		f.Sources = len(srcs)
		f.Summary = summary(f)
		out = append(out, *f)
	}
	return out
}

func sevRank(s Severity) int {
	switch s {
	case SeverityError:
		return 2
	case SeverityWarning:
		return 1
	}
	return 0
}

func evidenceOf(ev *Event) Evidence {
	e := Evidence{Time: ev.Time, Kind: ev.Kind.String(), Detail: ev.Detail}
	if ev.Attempt != 0 {
		e.Attempt = ev.Attempt.String()
	}
	if ev.Phase != PhaseNone {
		e.Phase = ev.Phase.String()
	}
	if ev.Reason != ReasonNone {
		e.Reason = ev.Reason.String()
	}
	return e
}

// Diagnose returns the findings, most severe and most confident first.
func Diagnose(in DiagInput) []Finding {
	if in.Window <= 0 {
		in.Window = DefaultWindow
	}
	since := in.Now.Add(-in.Window)
	b := &builder{m: map[findingKey]*Finding{}, obs: map[findingKey][]Observation{}}

	for i := range in.Attempts {
		a := &in.Attempts[i]
		if a.End.IsZero() || a.End.Before(since) {
			continue
		}
		diagnoseAttempt(b, a)
	}
	for i := range in.NodeEvents {
		ev := &in.NodeEvents[i]
		if ev.Time.Before(since) {
			continue
		}
		diagnoseNodeEvent(b, ev, in.Facts)
	}
	diagnoseFacts(b, in.Facts, in.Now)
	for _, p := range in.Probes {
		if p.Against {
			b.contradict(p.Cause, p.Scope, p.Observation, p.Evidence)
		} else {
			b.add(p.Cause, p.Scope, p.Severity, p.Observation, p.Evidence, "")
		}
	}

	out := b.findings()
	slices.SortStableFunc(out, func(x, y Finding) int {
		if c := cmp.Compare(sevRank(y.Severity), sevRank(x.Severity)); c != 0 {
			return c
		}
		if c := cmp.Compare(y.Confidence, x.Confidence); c != 0 {
			return c
		}
		return y.Last.Compare(x.Last)
	})
	return out
}

func diagnoseAttempt(b *builder, a *AttemptRecord) {
	id := a.ID.String()
	scope := "peer " + short(a.Peer)
	src := "attempts with peer " + a.Peer
	if a.Outcome == OutcomeOK {
		diagnoseSuccess(b, a, scope, src)
		return
	}
	at := Evidence{Time: a.End, Kind: "attempt_end", Attempt: id,
		Detail: fmt.Sprintf("%s %s → %s%s", a.Role, natPair(a.NAT, a.PeerNAT), a.Outcome, lastPhase(a))}
	if a.Reason != ReasonNone {
		at.Reason = a.Reason.String()
	}
	c, w, ok := causeOfReason(a.Reason)
	if !ok {
		c, w = CauseUnexplainedFailed, StrengthMeasured
	}
	sev := SeverityWarning
	switch {
	case c == CauseCanceled || c == CauseSelf:
		sev = SeverityInfo
	case c == CauseBootstrapUnreachable || c == CauseUDPBlocked && a.Path == PathNone:
		sev = SeverityError
	}
	if c == CauseBootstrapUnreachable {
		scope = "node"
	}
	b.add(c, scope, sev, Observation{Source: src, Strength: w}, at, id)
	// Corroboration from the attempt's own events: checks sent and none
	// answered is measured, not inferred.
	sent, answered := 0, 0
	for i := range a.Events {
		switch a.Events[i].Kind {
		case KindCheckSent:
			sent++
		case KindCheckAnswered:
			answered++
		}
	}
	if c == CausePunchFiltered && sent > 0 && answered == 0 {
		b.add(c, scope, sev, Observation{Source: src, Strength: StrengthMeasured}, Evidence{Time: a.End, Kind: "check_sent", Attempt: id,
			Detail: fmt.Sprintf("%d checks sent, none answered", sent)}, id)
	}
}

// diagnoseSuccess: a success may have taken a detour (the record keeps
// why; the events, if the sampler kept them, add the detail), and a
// direct one contradicts filtering and blocked UDP.
func diagnoseSuccess(b *builder, a *AttemptRecord, scope, src string) {
	id := a.ID.String()
	for _, r := range a.Detours {
		if c, w, ok := causeOfReason(r); ok {
			ev := Evidence{Time: a.End, Kind: "fallback", Attempt: id, Reason: r.String(), Detail: "direct->relay, " + a.Path.String() + " path used"}
			for i := range a.Events {
				if a.Events[i].Kind == KindFallback && a.Events[i].Reason == r {
					ev = evidenceOf(&a.Events[i])
				}
			}
			b.add(c, scope, SeverityInfo, Observation{Source: src, Strength: w}, ev, id)
		}
	}
	if a.Path != PathDirect {
		return
	}
	o := Observation{Source: "direct connection with peer " + a.Peer, Strength: StrengthMeasured}
	ev := Evidence{Time: a.End, Kind: "attempt_end", Attempt: id, Detail: "connected on a direct path"}
	b.contradict(CausePunchFiltered, scope, o, ev)
	b.contradict(CauseBothSymmetric, scope, o, ev)
	b.contradict(CauseUDPBlocked, "node", o, ev)
}

// lastPhase names the last phase an attempt began, when its events or
// phases were kept.
func lastPhase(a *AttemptRecord) string {
	if n := len(a.Phases); n > 0 {
		return ", in phase " + a.Phases[n-1].Phase.String()
	}
	for i := len(a.Events) - 1; i >= 0; i-- {
		if k := a.Events[i].Kind; k == KindPhaseStart || k == KindPhaseEnd {
			return ", in phase " + a.Events[i].Phase.String()
		}
	}
	return ""
}

func diagnoseNodeEvent(b *builder, ev *Event, facts NodeFacts) {
	e := evidenceOf(ev)
	stated := func(src string) Observation { return Observation{Source: src, Strength: StrengthStated} }
	measured := func(src string) Observation { return Observation{Source: src, Strength: StrengthMeasured} }
	switch ev.Kind {
	case KindBootstrapState:
		if ev.Outcome == OutcomeFail && ev.Reason != ReasonCanceled {
			diagnoseBootstrapDown(b, ev, e, facts)
		}
	case KindBootstrapRequest:
		if ev.Outcome == OutcomeFail && ev.Reason == ReasonKeyMismatch {
			b.add(CauseKeyMismatch, "bootstrap "+ev.Bootstrap, SeverityError, stated("bootstrap "+ev.Bootstrap+" registration"), e, "")
		}
	case KindMigration, KindFallback:
		switch ev.Reason {
		case ReasonMappingExpired:
			b.add(CauseMappingExpired, "node", SeverityInfo, measured("migrations"), e, "")
		case ReasonPathBlackholed:
			b.add(CausePathBlackholed, scopeOfPeer(ev), SeverityInfo, measured("paths to "+scopeOfPeer(ev)), e, "")
		case ReasonNetworkChanged:
			b.add(CauseNetworkChanged, "node", SeverityInfo, stated("host addresses"), e, "")
		}
	case KindSecurity:
		switch ev.Reason {
		case ReasonRateLimited:
			b.add(CauseRateLimited, "node", SeverityWarning, stated("guard"), e, "")
		case ReasonOverloaded, ReasonRegistryFull:
			b.add(CauseOverloaded, "node", SeverityWarning, stated("guard"), e, "")
		case ReasonNotAllowed:
			b.add(CauseNotAllowed, scopeOfPeer(ev), SeverityWarning, stated("streams of "+scopeOfPeer(ev)), e, "")
		}
	case KindStream:
		if c, ok := streamCause(ev.Reason); ok {
			b.add(c, scopeOfPeer(ev), SeverityWarning, stated("streams of "+scopeOfPeer(ev)), e, "")
		}
	case KindRelay:
		if ev.Outcome == OutcomeFail {
			switch ev.Reason {
			case ReasonRelayQuota:
				b.add(CauseRelayQuota, scopeOfPeer(ev), SeverityWarning, stated("relay"), e, "")
			case ReasonRelayUnavailable:
				b.add(CauseRelayUnavailable, "node", SeverityWarning, Observation{Source: "relay", Strength: StrengthInferred}, e, "")
			}
		}
	case KindNATType:
		if ev.NAT == "udp-blocked" {
			b.add(CauseUDPBlocked, "node", SeverityWarning, measured("NAT classification"), e, "")
		}
	}
}

// diagnoseBootstrapDown: a bootstrap's registration failed (or its key
// did not match); an error while it is still down now.
func diagnoseBootstrapDown(b *builder, ev *Event, e Evidence, facts NodeFacts) {
	scope := "bootstrap " + ev.Bootstrap
	sev := SeverityWarning
	for _, bf := range facts.Bootstraps {
		if bf.Label == ev.Bootstrap && !bf.Registered {
			sev = SeverityError // still down now
		}
	}
	c, w := CauseBootstrapUnreachable, StrengthMeasured
	if ev.Reason == ReasonKeyMismatch {
		c, w = CauseKeyMismatch, StrengthStated
	}
	b.add(c, scope, sev, Observation{Source: scope + " registration", Strength: w}, e, "")
}

func diagnoseFacts(b *builder, f NodeFacts, now time.Time) {
	classified := Observation{Source: "NAT classification", Strength: StrengthMeasured}
	switch f.NAT {
	case "udp-blocked":
		b.add(CauseUDPBlocked, "node", SeverityWarning, classified,
			Evidence{Time: now, Kind: "state", Detail: "NAT class udp-blocked: registered over TCP only"}, "")
	case "", "unknown":
	default: // classified from answers over UDP
		b.contradict(CauseUDPBlocked, "node", classified, Evidence{Time: now, Kind: "state", Detail: "NAT class " + f.NAT + ": measured over UDP"})
	}
	var down []Observation
	for _, bf := range f.Bootstraps {
		src := "bootstrap " + bf.Label + " registration"
		if bf.Registered {
			if bf.Transport == "quic" {
				b.contradict(CauseUDPBlocked, "node", Observation{Source: src, Strength: StrengthMeasured},
					Evidence{Time: now, Kind: "state", Detail: "registered with bootstrap " + bf.Label + " over QUIC (UDP)"})
			}
			continue
		}
		o := Observation{Source: src, Strength: StrengthMeasured}
		c := CauseBootstrapUnreachable
		if bf.KeyMismatch {
			c, o.Strength = CauseKeyMismatch, StrengthStated
		}
		down = append(down, o)
		b.add(c, "bootstrap "+bf.Label, SeverityWarning, o,
			Evidence{Time: now, Kind: "state", Detail: "not registered: " + orText(strings.ReplaceAll(bf.LastError, "\n", "; "), "no registration has completed yet")}, "")
	}
	if len(f.Bootstraps) > 0 && len(down) == len(f.Bootstraps) {
		ev := Evidence{Time: now, Kind: "state", Detail: "registered with no bootstrap"}
		b.add(CauseBootstrapUnreachable, "node", SeverityError, down[0], ev, "")
		for _, o := range down[1:] { // one fact, each bootstrap a source
			b.observe(findingKey{CauseBootstrapUnreachable, "node"}, o)
		}
	}
}

// orText is s, or alt where s is empty: a printed field is never empty.
func orText(s, alt string) string {
	if s == "" {
		return alt
	}
	return s
}

func scopeOfPeer(ev *Event) string {
	if ev.Peer != "" {
		return "peer " + short(ev.Peer)
	}
	return "node"
}

func short(peer string) string {
	if len(peer) > 10 {
		return peer[:10]
	}
	if peer == "" {
		return "?"
	}
	return peer
}

func natPair(a, b string) string {
	if a == "" {
		a = "unknown"
	}
	if b == "" {
		b = "unknown"
	}
	return a + "/" + b
}

func summary(f *Finding) string {
	when := f.Last.UTC().Format(time.RFC3339)
	if f.Count == 1 {
		return fmt.Sprintf("%s (%s), at %s.", f.Title, f.Scope, when)
	}
	return fmt.Sprintf("%s (%s): %d observations, last at %s.", f.Title, f.Scope, f.Count, when)
}
