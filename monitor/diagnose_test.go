package monitor

import (
	"fmt"
	"strings"
	"testing"
	"time"
)

func failed(at time.Time, id AttemptID, reason Reason, events ...Event) AttemptRecord {
	return AttemptRecord{ID: id, Peer: "peerpeerpeerpeer", Role: "initiator", NAT: "eim-apdf", PeerNAT: "apdm",
		Start: at.Add(-time.Second), End: at, Outcome: OutcomeFail, Reason: reason, Events: events, Sampled: len(events) > 0}
}

func TestDiagnose(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	at := now.Add(-time.Minute)
	up := []BootstrapFact{{Label: "0", Registered: true, Transport: "quic"}, {Label: "1", Registered: true, Transport: "quic"}}
	tests := []struct {
		name      string
		in        DiagInput
		want      Cause
		scope     string
		severity  Severity
		minConf   float64
		maxConf   float64 // when set: at most this
		wantNoneC Cause   // must not be found
	}{
		{name: "unknown peer is explicit",
			in:   DiagInput{Attempts: []AttemptRecord{failed(at, 1, ReasonUnknownPeer)}, Facts: NodeFacts{Bootstraps: up}},
			want: CausePeerNotRegistered, scope: "peer peerpeerpe", severity: SeverityWarning, minConf: 0.9},
		{name: "punch timeout with unanswered checks is filtering",
			in: DiagInput{Attempts: []AttemptRecord{failed(at, 2, ReasonPunchTimeout,
				Event{Kind: KindCheckSent, Time: at}, Event{Kind: KindCheckSent, Time: at})}, Facts: NodeFacts{Bootstraps: up}},
			want: CausePunchFiltered, severity: SeverityWarning, minConf: 0.75},
		{name: "both symmetric on a relayed success is information",
			in: DiagInput{Attempts: []AttemptRecord{{ID: 3, Peer: "p", End: at, Outcome: OutcomeOK, Path: PathRelay, Detours: []Reason{ReasonBothSymmetric},
				Events: []Event{{Kind: KindFallback, Time: at, Reason: ReasonBothSymmetric, Detail: "direct->relay"}}}}, Facts: NodeFacts{Bootstraps: up}},
			want: CauseBothSymmetric, severity: SeverityInfo, minConf: 0.75},
		{name: "a detour of an unsampled success still counts",
			in: DiagInput{Attempts: []AttemptRecord{{ID: 5, Peer: "p", End: at, Outcome: OutcomeOK, Path: PathRelay, Detours: []Reason{ReasonBothSymmetric}}},
				Facts: NodeFacts{Bootstraps: up}},
			want: CauseBothSymmetric, severity: SeverityInfo, minConf: 0.75},
		{name: "a bootstrap down now",
			in: DiagInput{NodeEvents: []Event{{Kind: KindBootstrapState, Time: at, Bootstrap: "1", Outcome: OutcomeFail, Reason: ReasonBootstrapUnreachable}},
				Facts: NodeFacts{Bootstraps: []BootstrapFact{up[0], {Label: "1", LastError: "timeout"}}}},
			want: CauseBootstrapUnreachable, scope: "bootstrap 1", severity: SeverityError, minConf: 0.75},
		{name: "every bootstrap down is an error for the node",
			in:   DiagInput{Facts: NodeFacts{Bootstraps: []BootstrapFact{{Label: "0"}, {Label: "1"}}}},
			want: CauseBootstrapUnreachable, scope: "node", severity: SeverityError, minConf: 0.93},
		{name: "a key mismatch at registration",
			in: DiagInput{Facts: NodeFacts{Bootstraps: []BootstrapFact{up[0], {Label: "1", KeyMismatch: true}}},
				NodeEvents: []Event{{Kind: KindBootstrapRequest, Time: at, Bootstrap: "1", Outcome: OutcomeFail, Reason: ReasonKeyMismatch, Detail: "register"}}},
			want: CauseKeyMismatch, scope: "bootstrap 1", severity: SeverityError, minConf: 0.9},
		{name: "udp blocked from the NAT class",
			in: DiagInput{Facts: NodeFacts{NAT: "udp-blocked", Bootstraps: []BootstrapFact{{Label: "0", Registered: true, Transport: "tcp"}}},
				NodeEvents: []Event{{Kind: KindNATType, Time: at, NAT: "udp-blocked"}}},
			want: CauseUDPBlocked, severity: SeverityWarning, minConf: 0.75},
		{name: "udp blocked once, but the class now measured over UDP contradicts it",
			in: DiagInput{Facts: NodeFacts{NAT: "eim-eif", Bootstraps: []BootstrapFact{{Label: "0", Registered: true, Transport: "tcp"}}},
				NodeEvents: []Event{{Kind: KindNATType, Time: at, NAT: "udp-blocked"}}},
			want: CauseUDPBlocked, severity: SeverityWarning, maxConf: 0.2},
		{name: "udp blocked but registered over QUIC is contradicted",
			in:   DiagInput{Facts: NodeFacts{NAT: "udp-blocked", Bootstraps: up}, NodeEvents: []Event{{Kind: KindNATType, Time: at, NAT: "udp-blocked"}}},
			want: CauseUDPBlocked, severity: SeverityWarning, maxConf: 0.1},
		{name: "mapping expiry from a rebinding",
			in:   DiagInput{Facts: NodeFacts{Bootstraps: up}, NodeEvents: []Event{{Kind: KindMigration, Time: at, Reason: ReasonMappingExpired, Outcome: OutcomeOK}}},
			want: CauseMappingExpired, severity: SeverityInfo, minConf: 0.75},
		{name: "relay quota refused",
			in: DiagInput{Facts: NodeFacts{Bootstraps: up}, NodeEvents: []Event{{Kind: KindRelay, Time: at, Outcome: OutcomeFail, Reason: ReasonRelayQuota,
				Detail: "allocate", Peer: "quotapeerquotapeer"}}},
			want: CauseRelayQuota, scope: "peer quotapeerq", severity: SeverityWarning, minConf: 0.9},
		{name: "blackholed path moved to the relay",
			in: DiagInput{Facts: NodeFacts{Bootstraps: up}, NodeEvents: []Event{{Kind: KindFallback, Time: at, Reason: ReasonPathBlackholed,
				Detail: "direct->relay", Peer: "bhpeerbhpeerbh"}}},
			want: CausePathBlackholed, severity: SeverityInfo, minConf: 0.75},
		{name: "old evidence is ignored",
			in:        DiagInput{Attempts: []AttemptRecord{failed(now.Add(-2*time.Hour), 4, ReasonUnknownPeer)}, Facts: NodeFacts{Bootstraps: up}},
			wantNoneC: CausePeerNotRegistered},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tc.in.Now = now
			fs := Diagnose(tc.in)
			if tc.wantNoneC != "" {
				for _, f := range fs {
					if f.Cause == tc.wantNoneC {
						t.Fatalf("found %s from stale evidence", f.Cause)
					}
				}
				return
			}
			if len(fs) == 0 {
				t.Fatal("no finding")
			}
			f := fs[0]
			if f.Cause != tc.want || f.Severity != tc.severity || f.Confidence < tc.minConf || (tc.maxConf > 0 && f.Confidence > tc.maxConf) ||
				(tc.scope != "" && f.Scope != tc.scope) || len(f.Evidence) == 0 || f.NextStep == "" {
				t.Fatalf("top finding %+v", f)
			}
		})
	}
}

// TestConfidenceFromIndependentEvidence: a finding's confidence grows
// with independent sources (attempts with different peers), not with
// repeats from one source (attempts with one peer), and falls with
// contradicting evidence (a direct connection with that peer).
func TestConfidenceFromIndependentEvidence(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	up := NodeFacts{Bootstraps: []BootstrapFact{{Label: "0", Registered: true}}}
	attempt := func(i int, peer string, r Reason) AttemptRecord {
		a := failed(now.Add(-time.Duration(i+1)*time.Minute), AttemptID(i+1), r)
		a.Peer = peer
		return a
	}
	var onePeer, fourPeers []AttemptRecord
	for i := range 4 {
		onePeer = append(onePeer, attempt(i, "samepeersamepeer", ReasonNoBootstrap))
		fourPeers = append(fourPeers, attempt(i, fmt.Sprintf("peer%d", i), ReasonNoBootstrap))
	}
	direct := AttemptRecord{ID: 99, Peer: "samepeersamepeer", End: now.Add(-10 * time.Second), Outcome: OutcomeOK, Path: PathDirect}
	tests := []struct {
		name     string
		attempts []AttemptRecord
		cause    Cause
		conf     float64
		sources  int
		against  int
	}{
		{"one attempt", onePeer[:1], CauseBootstrapUnreachable, 0.5, 1, 0},
		{"four attempts with one peer are one source", onePeer, CauseBootstrapUnreachable, 0.5, 1, 0},
		{"attempts with four peers are four sources", fourPeers, CauseBootstrapUnreachable, 0.94, 4, 0},
		{"a direct success with the peer contradicts filtering",
			[]AttemptRecord{attempt(0, "samepeersamepeer", ReasonPunchTimeout), direct}, CausePunchFiltered, 0.13, 1, 1},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			fs := Diagnose(DiagInput{Attempts: tc.attempts, Facts: up, Now: now})
			if len(fs) != 1 {
				t.Fatalf("findings %+v", fs)
			}
			f := fs[0]
			if f.Cause != tc.cause || f.Confidence != tc.conf || f.Sources != tc.sources || len(f.Against) != tc.against {
				t.Fatalf("finding %+v, want %s at %v from %d sources, %d against", f, tc.cause, tc.conf, tc.sources, tc.against)
			}
		})
	}
}

// TestConfidence is the formula: independent sources for, discounted by
// sources against; repeats from one source count once, at their
// strongest.
func TestConfidence(t *testing.T) {
	obs := func(src string, w float64, against bool) Observation {
		return Observation{Source: src, Strength: w, Against: against}
	}
	tests := []struct {
		name string
		obs  []Observation
		want float64
	}{
		{"nothing observed", nil, 0},
		{"only contradictions", []Observation{obs("a", StrengthMeasured, true)}, 0},
		{"one inferred", []Observation{obs("a", StrengthInferred, false)}, 0.5},
		{"one measured", []Observation{obs("a", StrengthMeasured, false)}, 0.75},
		{"one stated", []Observation{obs("a", StrengthStated, false)}, 0.9},
		{"repeats of one source count once",
			[]Observation{obs("a", StrengthInferred, false), obs("a", StrengthInferred, false), obs("a", StrengthInferred, false)}, 0.5},
		{"a source counts at its strongest",
			[]Observation{obs("a", StrengthInferred, false), obs("a", StrengthMeasured, false)}, 0.75},
		{"two independent sources", []Observation{obs("a", StrengthInferred, false), obs("b", StrengthInferred, false)}, 0.75},
		{"three independent measurements", []Observation{obs("a", StrengthMeasured, false), obs("b", StrengthMeasured, false),
			obs("c", StrengthMeasured, false)}, 0.98},
		{"never certain", []Observation{obs("a", StrengthStated, false), obs("b", StrengthStated, false),
			obs("c", StrengthStated, false)}, 0.99},
		{"a contradiction discounts", []Observation{obs("a", StrengthMeasured, false), obs("b", StrengthInferred, true)}, 0.38},
		{"repeated contradictions from one source count once", []Observation{obs("a", StrengthMeasured, false),
			obs("b", StrengthInferred, true), obs("b", StrengthInferred, true)}, 0.38},
		{"a source for and against", []Observation{obs("a", StrengthStated, false), obs("a", StrengthStated, true)}, 0.09},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := Confidence(tc.obs); got != tc.want {
				t.Fatalf("Confidence = %v, want %v", got, tc.want)
			}
		})
	}
}

// TestEveryFailureReasonHasACause: every reason a failed attempt can end
// with names a documented cause, so a new reason without one fails here.
// The reasons left out cannot end a failed attempt.
func TestEveryFailureReasonHasACause(t *testing.T) {
	notAFailure := map[Reason]string{
		ReasonNone:            "success",
		ReasonDirectAvailable: "the reason of an upgrade to a direct path",
	}
	for r := Reason(0); r < Reason(NumReasons); r++ {
		t.Run(r.String(), func(t *testing.T) {
			c, w, ok := causeOfReason(r)
			if _, skip := notAFailure[r]; skip {
				if ok {
					t.Fatalf("%s is not a failure but maps to %s", r, c)
				}
				return
			}
			if !ok {
				t.Fatalf("no cause for %s", r)
			}
			ci := causeInfo(c)
			if ci.Explanation == "" || ci.NextStep == "" || w <= 0 || w >= 1 {
				t.Fatalf("%s → %s: undocumented or weightless (%+v, %v)", r, c, ci, w)
			}
			now := time.Unix(1_800_000_000, 0)
			fs := Diagnose(DiagInput{Attempts: []AttemptRecord{failed(now.Add(-time.Minute), 1, r)}, Now: now})
			if len(fs) != 1 || fs[0].Cause != c || len(fs[0].Evidence) == 0 || (r != ReasonNone && fs[0].Evidence[0].Reason != r.String()) ||
				fs[0].Confidence <= 0 || len(fs[0].Attempts) != 1 {
				t.Fatalf("one attempt failed with %s: findings %+v", r, fs)
			}
		})
	}
}

func TestEveryCauseIsDocumented(t *testing.T) {
	for r := Reason(0); r < Reason(NumReasons); r++ {
		if c, _, ok := causeOfReason(r); ok {
			ci := causeInfo(c)
			if ci.Explanation == "" || ci.NextStep == "" {
				t.Errorf("cause %s (from %s) is undocumented", c, r)
			}
		}
	}
}

func TestPatterns(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	var as []AttemptRecord
	for i := range 5 { // a spike of punch timeouts between eim-apdf and apdm
		as = append(as, failed(now.Add(-time.Duration(i+1)*10*time.Second), AttemptID(i+1), ReasonPunchTimeout))
	}
	as = append(as, AttemptRecord{ID: 99, End: now.Add(-time.Minute), Outcome: OutcomeOK, NAT: "eim-apdf", PeerNAT: "apdm"})
	boots := []BootstrapStats{{Label: "0", Requests: 50, MeanRTT: 20 * time.Millisecond},
		{Label: "1", Requests: 50, MeanRTT: 300 * time.Millisecond}, {Label: "2", Requests: 10, Failures: 6, MeanRTT: 20 * time.Millisecond}}
	ps := Patterns(as, boots, now, PatternConfig{})
	kinds := map[string]string{}
	for _, p := range ps {
		kinds[p.Kind+":"+p.Key] = p.Summary
	}
	for _, want := range []string{"failure_spike:punch_timeout", "nat_pair:eim-apdf/apdm", "bootstrap_outlier:1", "bootstrap_outlier:2"} {
		if _, ok := kinds[want]; !ok {
			t.Errorf("missing %s in %v", want, kinds)
		}
	}
	if _, ok := kinds["bootstrap_outlier:0"]; ok {
		t.Error("the fast healthy bootstrap is an outlier")
	}
}

func TestGuide(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	facts := NodeFacts{Role: "peer", NAT: "apdm", Bootstraps: []BootstrapFact{{Label: "0", Registered: true, Transport: "quic"}}}
	fs := Diagnose(DiagInput{Attempts: []AttemptRecord{failed(now.Add(-time.Minute), 1, ReasonUnknownPeer)}, Facts: facts, Now: now})
	g := MakeGuide(facts, fs, nil, Failures{})
	if len(g.Steps) < 2 || g.Steps[0].Cause != CausePeerNotRegistered {
		t.Fatalf("steps %+v", g.Steps)
	}
	for _, want := range []string{"# antnode diagnosis", "NAT: apdm", "Peer not registered", "## What to do", "maps per destination"} {
		if !strings.Contains(g.Markdown, want) {
			t.Errorf("markdown lacks %q:\n%s", want, g.Markdown)
		}
	}
	if g := MakeGuide(NodeFacts{NAT: "eim-eif"}, nil, nil, Failures{}); g.Steps[0].Title != "No problems found" {
		t.Fatalf("%+v", g.Steps)
	}
}

// TestGuideNeverSaysNoProblemsWhileAttemptsFail: a monitor whose store
// holds a failed attempt (whatever its reason, none included) gives a
// guide that says what failed and what is unknown, never "No problems
// found".
func TestGuideNeverSaysNoProblemsWhileAttemptsFail(t *testing.T) {
	facts := NodeFacts{Role: "peer", NAT: "eim-eif", Bootstraps: []BootstrapFact{{Label: "0", Registered: true, Transport: "quic"}}}
	tests := []struct {
		name    string
		reason  Reason
		cause   Cause
		unknown bool // the cause's evidence leaves something unknown, and the guide says what
	}{
		{"timeout", ReasonTimeout, CauseAttemptTimeout, true},
		{"handshake failed", ReasonHandshakeFailed, CauseHandshakeFailed, true},
		{"no candidates", ReasonNoCandidates, CauseNoCandidates, false},
		{"protocol error", ReasonProtocolError, CauseProtocolError, false},
		{"connection lost", ReasonConnectionLost, CauseConnectionLost, true},
		{"expired", ReasonExpired, CausePeerDidNotAnswer, true},
		{"refused", ReasonRefused, CauseRefused, true},
		{"canceled", ReasonCanceled, CauseCanceled, false},
		{"no reason recorded", ReasonNone, CauseUnexplainedFailed, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			m, err := New(Config{})
			if err != nil {
				t.Fatal(err)
			}
			a := StartAttempt(m, "failingpeerfailingpeer", "initiator", "eim-eif", "")
			a.Begin(PhasePunch)
			a.Finish(OutcomeFail, tc.reason, PathNone)
			rep := m.Diagnostics(facts, time.Now())
			if len(rep.Findings) == 0 || rep.Findings[0].Cause != tc.cause {
				t.Fatalf("findings %+v, want %s first", rep.Findings, tc.cause)
			}
			g := rep.Guide
			for _, s := range g.Steps {
				if s.Title == "No problems found" {
					t.Fatalf("the guide says no problems with a failed attempt: %+v", g.Steps)
				}
			}
			name := tc.reason.String()
			if tc.reason == ReasonNone {
				name = "no reason recorded"
			}
			if g.Steps[0].Title != "1 attempt failed in the last 1h" || !strings.Contains(g.Steps[0].Action, "Failed: "+name+" ×1.") {
				t.Fatalf("first step does not say what failed: %+v", g.Steps[0])
			}
			if tc.unknown != strings.Contains(g.Steps[0].Action, "Unknown: ") {
				t.Fatalf("unknown %v, step %+v", tc.unknown, g.Steps[0])
			}
			if !strings.Contains(g.Markdown, "Failed attempts in the last 1h: 1.") {
				t.Fatalf("markdown:\n%s", g.Markdown)
			}
			for _, line := range strings.Split(g.Markdown, "\n") {
				if strings.Contains(strings.TrimLeft(line, " "), "  ") {
					t.Fatalf("an empty field printed: %q", line)
				}
			}
		})
	}
	// Outside the window, the failure is history: the guide may say so.
	old := FailuresIn([]AttemptRecord{failed(time.Unix(1_000, 0), 1, ReasonTimeout)}, time.Unix(1_000_000, 0), 0)
	if g := MakeGuide(facts, nil, nil, old); old.Count != 0 || g.Steps[0].Title != "No problems found" {
		t.Fatalf("an attempt failed long ago: %+v, %+v", old, g.Steps)
	}
}

func TestNextStep(t *testing.T) {
	tests := []struct {
		name   string
		reason Reason
		cause  Cause
	}{
		{"key mismatch", ReasonKeyMismatch, CauseKeyMismatch},
		{"unknown peer", ReasonUnknownPeer, CausePeerNotRegistered},
		{"bootstrap unreachable", ReasonBootstrapUnreachable, CauseBootstrapUnreachable},
		{"none", ReasonNone, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			step, ok := NextStep(tc.reason)
			if ok != (tc.cause != "") || (ok && step != causeInfo(tc.cause).NextStep) || (ok && step == "") {
				t.Fatalf("NextStep(%v) = %q, %v", tc.reason, step, ok)
			}
		})
	}
}

// TestPortMapRefusedFinding: antnode diagnose's refusals by the router
// make one documented finding whose confidence grows with the protocols
// that refused (each stated by the router), and no finding without one.
func TestPortMapRefusedFinding(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	refusal := func(proto string) Probe {
		return Probe{Cause: CausePortMapRefused, Scope: "node", Severity: SeverityInfo,
			Observation: Observation{Source: proto + " to the gateway", Strength: StrengthStated},
			Evidence:    Evidence{Time: now, Kind: "probe", Detail: proto + ": result code 2"}}
	}
	tests := []struct {
		name       string
		probes     []Probe
		sources    int
		confidence float64
	}{
		{"no refusal", nil, 0, 0},
		{"PCP refused", []Probe{refusal("pcp")}, 1, 0.9},
		{"PCP and NAT-PMP refused", []Probe{refusal("pcp"), refusal("natpmp")}, 2, 0.99},
		{"PCP refused twice: one source", []Probe{refusal("pcp"), refusal("pcp")}, 1, 0.9},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			fs := Diagnose(DiagInput{Probes: tc.probes, Now: now})
			if tc.sources == 0 {
				if len(fs) != 0 {
					t.Fatalf("findings %+v", fs)
				}
				return
			}
			if len(fs) != 1 {
				t.Fatalf("findings %+v", fs)
			}
			f := fs[0]
			ci := causeInfo(CausePortMapRefused)
			if f.Cause != CausePortMapRefused || f.Title != ci.Title || f.Title == string(CausePortMapRefused) ||
				ci.Explanation == "" || f.NextStep == "" || f.Unknown == "" || f.Severity != SeverityInfo {
				t.Fatalf("finding %+v", f)
			}
			if f.Sources != tc.sources || f.Confidence != tc.confidence {
				t.Fatalf("%d sources, confidence %v; want %d, %v", f.Sources, f.Confidence, tc.sources, tc.confidence)
			}
		})
	}
}
