package monitor

import (
	"cmp"
	"fmt"
	"slices"
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

// Cause is a root cause. The set is closed; Causes documents it.
type Cause string

// Causes.
const (
	CauseBootstrapUnreachable Cause = "bootstrap_unreachable"
	CauseUDPBlocked           Cause = "udp_blocked"
	CauseBothSymmetric        Cause = "both_symmetric"
	CausePeerNotRegistered    Cause = "peer_not_registered"
	CauseKeyMismatch          Cause = "key_mismatch"
	CausePunchFiltered        Cause = "punch_filtered"
	CauseMappingExpired       Cause = "mapping_expired"
	CauseRelayUnavailable     Cause = "relay_unavailable"
	CauseRelayQuota           Cause = "relay_quota"
	CauseRateLimited          Cause = "rate_limited"
	CausePathBlackholed       Cause = "path_blackholed"
	CauseNetworkChanged       Cause = "network_changed"
	CauseOverloaded           Cause = "overloaded"
	// Refused service streams (package service).
	CauseUnknownService    Cause = "unknown_service"
	CauseNotAllowed        Cause = "not_allowed"
	CauseTargetUnreachable Cause = "target_unreachable"
	CauseStreamLimit       Cause = "stream_limit"
)

// CauseInfo documents a cause.
type CauseInfo struct {
	Cause       Cause  `json:"cause"`
	Title       string `json:"title"`
	Explanation string `json:"explanation"`
	NextStep    string `json:"next_step"`
}

// Causes returns the documented set of causes.
func Causes() []CauseInfo {
	return []CauseInfo{
		{CauseBootstrapUnreachable, "Bootstrap unreachable",
			"The node cannot keep a registration with a bootstrap node: no answer to the QUIC handshake or to the heartbeat.",
			"Check that the bootstrap runs and listens on its UDP port (and TCP, same port, for the fallback); check firewalls between this node and it; `antnode diagnose` shows the RTT to each bootstrap."},
		{CauseUDPBlocked, "UDP blocked",
			"This network lets no UDP out (or nothing back): the node registered over TCP and can only be reached through the relay over TCP.",
			"Allow outgoing UDP (any port) and its answers if direct connections are wanted; meanwhile connections work through the relay's TCP port."},
		{CauseBothSymmetric, "Both sides map per destination",
			"Both NATs give every destination a new port (address-and-port-dependent mapping): no direct path can exist between them, so the connection uses the relay.",
			"Nothing is broken. For direct connections, put one side behind an endpoint-independent NAT (enable UPnP/NAT-PMP, or a port forward for the node's UDP port)."},
		{CausePeerNotRegistered, "Peer not registered",
			"The bootstrap does not know the requested peer ID: the peer is offline, registered with other bootstraps, or the ID is wrong.",
			"Check the peer ID (`antnode id --key` on the peer) and that the peer runs with at least one of the same --bootstrap-nodes."},
		{CauseKeyMismatch, "Key mismatch",
			"The node at the address presented another key than the peer ID expected: a wrong ID in the configuration, a re-keyed node, or someone else at that address.",
			"Compare the expected ID with `antnode id --key` on the remote node and fix --bootstrap-nodes (PEERID@HOST:PORT) or the peer ID you connect to."},
		{CausePunchFiltered, "Hole punch timed out on filtering",
			"Connectivity checks were sent but none came back within the punch budget: a NAT or firewall on the path drops unsolicited packets.",
			"Check for a firewall that drops UDP from unknown sources on either side; the relay carries the connection meanwhile. A port forward for the node's UDP port on either side makes direct connections possible."},
		{CauseMappingExpired, "NAT mapping expired",
			"The NAT forgot the node's UDP mapping while it was idle and mapped it anew: its UDP timeout is shorter than the keepalive interval was.",
			"The node now sends keepalives faster (see the event's learned lifetime); raising the NAT's UDP timeout saves traffic."},
		{CauseRelayUnavailable, "Relay unavailable",
			"A connection needed the relay (no direct path) but no relay could be allocated: none configured, unreachable, or refusing.",
			"Run the bootstraps with their built-in relay (default; not --no-relay) or give --turn-server; check that the relay port (listen port + 2, UDP and TCP) is reachable."},
		{CauseRelayQuota, "Relay quota exceeded",
			"The relay refused an allocation because this peer holds as many as its quota allows.",
			"Close idle relayed connections, or raise --relay-max-allocations on the bootstrap."},
		{CauseRateLimited, "Rate limited",
			"A bootstrap (or the monitoring surface) refused requests because they came too fast.",
			"Slow down repeated connects; the limits protect the bootstrap. If legitimate load needs more, run more bootstraps."},
		{CausePathBlackholed, "Direct path blackholed",
			"A working direct path stopped carrying anything back (a firewall change, a NAT dropping the mapping's traffic); the connection moved to the relay.",
			"Look for a firewall or NAT change on the path at the time of the event; the node tries the direct path again with backoff."},
		{CauseNetworkChanged, "Local network changed",
			"The host's addresses changed (new network, new DHCP lease); the node re-registered and moved its connections.",
			"Nothing to do if the connections carried on; frequent changes point at an unstable link."},
		{CauseOverloaded, "Overloaded",
			"The node or a bootstrap shed work because too many attempts ran at once.",
			"Reduce concurrent attempts or spread peers over more bootstraps."},
		{CauseUnknownService, "Stream to an unknown service",
			"A stream named a service that the node at the other end does not serve.",
			"Check the service name against the serving node's --expose NAME=HOST:PORT (or its Listen); names are case-sensitive."},
		{CauseNotAllowed, "Peer not allowed to use a service",
			"A peer opened a stream to a service whose allow list does not name it; the stream was refused (and audited).",
			"If that peer should use the service, add its ID to --allow (or the service's allow=... in --expose); if not, nothing is wrong: the audit log names it."},
		{CauseTargetUnreachable, "Service target unreachable",
			"An exposed service's local TCP target refused the connection or did not answer, so the stream was refused.",
			"Start the local service, or fix the HOST:PORT in --expose; `curl` or `nc` to it from the serving host shows the same error."},
		{CauseStreamLimit, "Per-peer stream limit reached",
			"A peer had as many streams open to this node's services as --max-streams allows; further streams were refused while the others kept flowing.",
			"If the load is legitimate, raise --max-streams (each open stream costs memory); otherwise find what opens so many streams on that peer."},
	}
}

func causeInfo(c Cause) CauseInfo {
	for _, ci := range Causes() {
		if ci.Cause == c {
			return ci
		}
	}
	return CauseInfo{Cause: c, Title: string(c)}
}

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
	Cause      Cause      `json:"cause"`
	Title      string     `json:"title"`
	Severity   Severity   `json:"severity"`
	Scope      string     `json:"scope"` // "node", "bootstrap N", "peer ID"
	Confidence float64    `json:"confidence"`
	Summary    string     `json:"summary"`
	NextStep   string     `json:"next_step"`
	Count      int        `json:"count"`
	First      time.Time  `json:"first"`
	Last       time.Time  `json:"last"`
	Attempts   []string   `json:"attempts,omitempty"`
	Evidence   []Evidence `json:"evidence"`
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

// DiagInput is what Diagnose works from.
type DiagInput struct {
	Attempts   []AttemptRecord
	NodeEvents []Event
	Facts      NodeFacts
	Now        time.Time
	// Window limits the evidence to recent history. Zero: 1 h.
	Window time.Duration
}

// Evidence weights: how much one event of a kind supports its cause.
// Confidence combines independent evidence: 1 - Π(1 - w).
const (
	wExplicit  = 0.9  // a peer or bootstrap said so (unknown peer, key mismatch, quota)
	wInferred  = 0.6  // a timeout whose likely cause is this
	wSupport   = 0.5  // a corroborating observation
	maxEvCount = 6    // evidence items kept per finding
	maxAttIDs  = 5    // attempt IDs kept per finding
	maxConf    = 0.99 // never certain
)

type findingKey struct {
	cause Cause
	scope string
}

type builder struct {
	m     map[findingKey]*Finding
	miss  map[findingKey]float64 // Π(1 - w)
	order []findingKey
}

func (b *builder) add(c Cause, scope string, sev Severity, w float64, ev Evidence, attempt string) {
	k := findingKey{c, scope}
	f := b.m[k]
	if f == nil {
		ci := causeInfo(c)
		f = &Finding{Cause: c, Title: ci.Title, Severity: sev, Scope: scope, NextStep: ci.NextStep, First: ev.Time, Last: ev.Time}
		b.m[k] = f
		b.miss[k] = 1
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
	b.miss[k] *= 1 - w
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

// NextStep returns the next step of the cause a failure's reason points
// to, and false when the reason names none of the documented causes.
func NextStep(r Reason) (string, bool) {
	c, _, ok := causeOfReason(r)
	if !ok {
		return "", false
	}
	return causeInfo(c).NextStep, true
}

// causeOfReason maps the reason an attempt failed or detoured with to a
// cause and the weight of that evidence.
func causeOfReason(r Reason) (Cause, float64, bool) {
	switch r {
	case ReasonUnknownPeer:
		return CausePeerNotRegistered, wExplicit, true
	case ReasonKeyMismatch:
		return CauseKeyMismatch, wExplicit, true
	case ReasonBootstrapUnreachable, ReasonNoBootstrap:
		return CauseBootstrapUnreachable, wInferred, true
	case ReasonUDPBlocked:
		return CauseUDPBlocked, wExplicit, true
	case ReasonBothSymmetric:
		return CauseBothSymmetric, wExplicit, true
	case ReasonPunchTimeout:
		return CausePunchFiltered, wInferred, true
	case ReasonRelayUnavailable:
		return CauseRelayUnavailable, wInferred, true
	case ReasonRelayQuota:
		return CauseRelayQuota, wExplicit, true
	case ReasonRateLimited:
		return CauseRateLimited, wExplicit, true
	case ReasonPathBlackholed:
		return CausePathBlackholed, wInferred, true
	case ReasonMappingExpired:
		return CauseMappingExpired, wInferred, true
	case ReasonNetworkChanged:
		return CauseNetworkChanged, wExplicit, true
	case ReasonOverloaded, ReasonRegistryFull:
		return CauseOverloaded, wExplicit, true
	}
	return "", 0, false
}

// Diagnose returns the findings, most severe and most confident first.
func Diagnose(in DiagInput) []Finding {
	if in.Window <= 0 {
		in.Window = time.Hour
	}
	since := in.Now.Add(-in.Window)
	b := &builder{m: map[findingKey]*Finding{}, miss: map[findingKey]float64{}}

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

	out := make([]Finding, 0, len(b.order))
	for _, k := range b.order {
		f := b.m[k]
		f.Confidence = min(maxConf, 1-b.miss[k])
		f.Confidence = float64(int(f.Confidence*100+0.5)) / 100
		f.Summary = summary(f)
		out = append(out, *f)
	}
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
	at := Evidence{Time: a.End, Kind: "attempt_end", Attempt: id, Reason: a.Reason.String(),
		Detail: fmt.Sprintf("%s %s → %s", a.Role, natPair(a.NAT, a.PeerNAT), a.Outcome)}
	if a.Outcome != OutcomeOK {
		if c, w, ok := causeOfReason(a.Reason); ok {
			sev := SeverityWarning
			if c == CauseBootstrapUnreachable || c == CauseUDPBlocked && a.Path == PathNone {
				sev = SeverityError
			}
			if c == CauseBootstrapUnreachable {
				scope = "node"
			}
			b.add(c, scope, sev, w, at, id)
			// Corroboration from the attempt's own events.
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
				b.add(c, scope, sev, wSupport, Evidence{Time: a.End, Kind: "check_sent", Attempt: id,
					Detail: fmt.Sprintf("%d checks sent, none answered", sent)}, id)
			}
		}
		return
	}
	// Succeeded, but maybe on a detour: the record keeps why (the events,
	// if the sampler kept them, add the detail).
	for _, r := range a.Detours {
		if c, w, ok := causeOfReason(r); ok {
			ev := Evidence{Time: a.End, Kind: "fallback", Attempt: id, Reason: r.String(), Detail: "direct->relay, " + a.Path.String() + " path used"}
			for i := range a.Events {
				if a.Events[i].Kind == KindFallback && a.Events[i].Reason == r {
					ev = evidenceOf(&a.Events[i])
				}
			}
			b.add(c, scope, SeverityInfo, w, ev, id)
		}
	}
}

func diagnoseNodeEvent(b *builder, ev *Event, facts NodeFacts) {
	e := evidenceOf(ev)
	switch ev.Kind {
	case KindBootstrapState:
		if ev.Outcome == OutcomeFail && ev.Reason != ReasonCanceled {
			scope := "bootstrap " + ev.Bootstrap
			sev := SeverityWarning
			for _, bf := range facts.Bootstraps {
				if bf.Label == ev.Bootstrap && !bf.Registered {
					sev = SeverityError // still down now
				}
			}
			c := CauseBootstrapUnreachable
			if ev.Reason == ReasonKeyMismatch {
				c = CauseKeyMismatch
			}
			b.add(c, scope, sev, wInferred, e, "")
		}
	case KindBootstrapRequest:
		if ev.Outcome == OutcomeFail && ev.Reason == ReasonKeyMismatch {
			b.add(CauseKeyMismatch, "bootstrap "+ev.Bootstrap, SeverityError, wExplicit, e, "")
		}
	case KindMigration, KindFallback:
		switch ev.Reason {
		case ReasonMappingExpired:
			b.add(CauseMappingExpired, "node", SeverityInfo, wExplicit, e, "")
		case ReasonPathBlackholed:
			b.add(CausePathBlackholed, scopeOfPeer(ev), SeverityInfo, wExplicit, e, "")
		case ReasonNetworkChanged:
			b.add(CauseNetworkChanged, "node", SeverityInfo, wExplicit, e, "")
		}
	case KindSecurity:
		switch ev.Reason {
		case ReasonRateLimited:
			b.add(CauseRateLimited, "node", SeverityWarning, wExplicit, e, "")
		case ReasonOverloaded, ReasonRegistryFull:
			b.add(CauseOverloaded, "node", SeverityWarning, wExplicit, e, "")
		case ReasonNotAllowed:
			b.add(CauseNotAllowed, scopeOfPeer(ev), SeverityWarning, wExplicit, e, "")
		}
	case KindStream:
		if c, ok := streamCause(ev.Reason); ok {
			b.add(c, scopeOfPeer(ev), SeverityWarning, wExplicit, e, "")
		}
	case KindRelay:
		if ev.Outcome == OutcomeFail {
			switch ev.Reason {
			case ReasonRelayQuota:
				b.add(CauseRelayQuota, scopeOfPeer(ev), SeverityWarning, wExplicit, e, "")
			case ReasonRelayUnavailable:
				b.add(CauseRelayUnavailable, "node", SeverityWarning, wInferred, e, "")
			}
		}
	case KindNATType:
		if ev.NAT == "udp-blocked" {
			b.add(CauseUDPBlocked, "node", SeverityWarning, wExplicit, e, "")
		}
	}
}

func diagnoseFacts(b *builder, f NodeFacts, now time.Time) {
	if f.NAT == "udp-blocked" {
		b.add(CauseUDPBlocked, "node", SeverityWarning, wSupport, Evidence{Time: now, Kind: "state", Detail: "NAT class udp-blocked: registered over TCP only"}, "")
	}
	down := 0
	for _, bf := range f.Bootstraps {
		if !bf.Registered {
			down++
			c := CauseBootstrapUnreachable
			if bf.KeyMismatch {
				c = CauseKeyMismatch
			}
			b.add(c, "bootstrap "+bf.Label, SeverityWarning, wSupport,
				Evidence{Time: now, Kind: "state", Detail: "not registered: " + bf.LastError}, "")
		}
	}
	if len(f.Bootstraps) > 0 && down == len(f.Bootstraps) {
		b.add(CauseBootstrapUnreachable, "node", SeverityError, wExplicit,
			Evidence{Time: now, Kind: "state", Detail: "registered with no bootstrap"}, "")
	}
}

// streamCause is the cause of a refused service stream, by its reason.
func streamCause(r Reason) (Cause, bool) {
	switch r {
	case ReasonUnknownService:
		return CauseUnknownService, true
	case ReasonNotAllowed:
		return CauseNotAllowed, true
	case ReasonTargetUnreachable:
		return CauseTargetUnreachable, true
	case ReasonStreamLimit:
		return CauseStreamLimit, true
	}
	return "", false
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
