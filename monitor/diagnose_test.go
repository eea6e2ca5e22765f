package monitor

import (
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
		wantNoneC Cause // must not be found
	}{
		{name: "unknown peer is explicit",
			in:   DiagInput{Attempts: []AttemptRecord{failed(at, 1, ReasonUnknownPeer)}, Facts: NodeFacts{Bootstraps: up}},
			want: CausePeerNotRegistered, scope: "peer peerpeerpe", severity: SeverityWarning, minConf: 0.9},
		{name: "punch timeout with unanswered checks is filtering",
			in: DiagInput{Attempts: []AttemptRecord{failed(at, 2, ReasonPunchTimeout,
				Event{Kind: KindCheckSent, Time: at}, Event{Kind: KindCheckSent, Time: at})}, Facts: NodeFacts{Bootstraps: up}},
			want: CausePunchFiltered, severity: SeverityWarning, minConf: 0.79},
		{name: "both symmetric on a relayed success is information",
			in: DiagInput{Attempts: []AttemptRecord{{ID: 3, Peer: "p", End: at, Outcome: OutcomeOK, Path: PathRelay, Detours: []Reason{ReasonBothSymmetric},
				Events: []Event{{Kind: KindFallback, Time: at, Reason: ReasonBothSymmetric, Detail: "direct->relay"}}}}, Facts: NodeFacts{Bootstraps: up}},
			want: CauseBothSymmetric, severity: SeverityInfo, minConf: 0.9},
		{name: "a detour of an unsampled success still counts",
			in: DiagInput{Attempts: []AttemptRecord{{ID: 5, Peer: "p", End: at, Outcome: OutcomeOK, Path: PathRelay, Detours: []Reason{ReasonBothSymmetric}}},
				Facts: NodeFacts{Bootstraps: up}},
			want: CauseBothSymmetric, severity: SeverityInfo, minConf: 0.9},
		{name: "a bootstrap down now",
			in: DiagInput{NodeEvents: []Event{{Kind: KindBootstrapState, Time: at, Bootstrap: "1", Outcome: OutcomeFail, Reason: ReasonBootstrapUnreachable}},
				Facts: NodeFacts{Bootstraps: []BootstrapFact{up[0], {Label: "1", LastError: "timeout"}}}},
			want: CauseBootstrapUnreachable, scope: "bootstrap 1", severity: SeverityError, minConf: 0.79},
		{name: "every bootstrap down is an error for the node",
			in:   DiagInput{Facts: NodeFacts{Bootstraps: []BootstrapFact{{Label: "0"}, {Label: "1"}}}},
			want: CauseBootstrapUnreachable, scope: "node", severity: SeverityError, minConf: 0.89},
		{name: "a key mismatch at registration",
			in: DiagInput{Facts: NodeFacts{Bootstraps: []BootstrapFact{up[0], {Label: "1", KeyMismatch: true}}},
				NodeEvents: []Event{{Kind: KindBootstrapRequest, Time: at, Bootstrap: "1", Outcome: OutcomeFail, Reason: ReasonKeyMismatch, Detail: "register"}}},
			want: CauseKeyMismatch, scope: "bootstrap 1", severity: SeverityError, minConf: 0.9},
		{name: "udp blocked from the NAT class",
			in:   DiagInput{Facts: NodeFacts{NAT: "udp-blocked", Bootstraps: up}, NodeEvents: []Event{{Kind: KindNATType, Time: at, NAT: "udp-blocked"}}},
			want: CauseUDPBlocked, severity: SeverityWarning, minConf: 0.9},
		{name: "mapping expiry from a rebinding",
			in:   DiagInput{Facts: NodeFacts{Bootstraps: up}, NodeEvents: []Event{{Kind: KindMigration, Time: at, Reason: ReasonMappingExpired, Outcome: OutcomeOK}}},
			want: CauseMappingExpired, severity: SeverityInfo, minConf: 0.9},
		{name: "relay quota refused",
			in: DiagInput{Facts: NodeFacts{Bootstraps: up}, NodeEvents: []Event{{Kind: KindRelay, Time: at, Outcome: OutcomeFail, Reason: ReasonRelayQuota,
				Detail: "allocate", Peer: "quotapeerquotapeer"}}},
			want: CauseRelayQuota, scope: "peer quotapeerq", severity: SeverityWarning, minConf: 0.9},
		{name: "blackholed path moved to the relay",
			in: DiagInput{Facts: NodeFacts{Bootstraps: up}, NodeEvents: []Event{{Kind: KindFallback, Time: at, Reason: ReasonPathBlackholed,
				Detail: "direct->relay", Peer: "bhpeerbhpeerbh"}}},
			want: CausePathBlackholed, severity: SeverityInfo, minConf: 0.9},
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
			if f.Cause != tc.want || f.Severity != tc.severity || f.Confidence < tc.minConf ||
				(tc.scope != "" && f.Scope != tc.scope) || len(f.Evidence) == 0 || f.NextStep == "" {
				t.Fatalf("top finding %+v", f)
			}
		})
	}
}

func TestConfidenceGrowsWithEvidence(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	up := NodeFacts{Bootstraps: []BootstrapFact{{Label: "0", Registered: true}}}
	one := Diagnose(DiagInput{Attempts: []AttemptRecord{failed(now.Add(-time.Minute), 1, ReasonPunchTimeout)}, Facts: up, Now: now})
	var many []AttemptRecord
	for i := range 4 {
		many = append(many, failed(now.Add(-time.Duration(i+1)*time.Minute), AttemptID(i+1), ReasonPunchTimeout))
	}
	four := Diagnose(DiagInput{Attempts: many, Facts: up, Now: now})
	if one[0].Confidence >= four[0].Confidence || four[0].Count != 4 || len(four[0].Attempts) != 4 {
		t.Fatalf("one %+v, four %+v", one[0], four[0])
	}
	if four[0].Confidence > 0.99 {
		t.Fatal("certain")
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
	g := MakeGuide(facts, fs, nil)
	if len(g.Steps) < 2 || g.Steps[0].Cause != CausePeerNotRegistered {
		t.Fatalf("steps %+v", g.Steps)
	}
	for _, want := range []string{"# antnode diagnosis", "NAT: apdm", "Peer not registered", "## What to do", "maps per destination"} {
		if !strings.Contains(g.Markdown, want) {
			t.Errorf("markdown lacks %q:\n%s", want, g.Markdown)
		}
	}
	if g := MakeGuide(NodeFacts{NAT: "eim-eif"}, nil, nil); g.Steps[0].Title != "No problems found" {
		t.Fatalf("%+v", g.Steps)
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
