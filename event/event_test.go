package event

import (
	"encoding/json"
	"testing"
)

type sink struct{ events []Event }

func (s *sink) Record(ev Event) { s.events = append(s.events, ev) }

func TestAttemptLifecycle(t *testing.T) {
	var s sink
	a := StartAttempt(&s, "peer1", "initiator", "eim-apdf", "")
	a.Begin(PhaseCoordinate)
	a.End(PhaseCoordinate, OutcomeOK, ReasonNone)
	if d := a.End(PhaseCoordinate, OutcomeOK, ReasonNone); d != 0 {
		t.Fatal("a phase ended twice")
	}
	a.Begin(PhasePunch)
	a.SetNAT("", "apdm")
	a.Finish(OutcomeFail, ReasonPunchTimeout, PathNone)
	a.Finish(OutcomeOK, ReasonNone, PathDirect) // ignored
	var kinds []Kind
	for _, ev := range s.events {
		if ev.Attempt != a.ID() {
			t.Fatalf("event %v without the attempt ID", ev.Kind)
		}
		kinds = append(kinds, ev.Kind)
	}
	want := []Kind{KindAttemptStart, KindPhaseStart, KindPhaseEnd, KindPhaseStart, KindPhaseEnd, KindAttemptEnd}
	if len(kinds) != len(want) {
		t.Fatalf("kinds %v, want %v", kinds, want)
	}
	for i := range want {
		if kinds[i] != want[i] {
			t.Fatalf("kinds %v, want %v", kinds, want)
		}
	}
	punch := s.events[4]
	if punch.Phase != PhasePunch || punch.Outcome != OutcomeFail || punch.Reason != ReasonPunchTimeout {
		t.Fatalf("open phase closed as %+v", punch)
	}
	end := s.events[5]
	if end.NAT != "eim-apdf" || end.PeerNAT != "apdm" || end.Detail != "initiator" {
		t.Fatalf("attempt end %+v", end)
	}
	var nilAttempt *Attempt
	nilAttempt.Begin(PhasePunch) // must not panic
	nilAttempt.Finish(OutcomeOK, ReasonNone, PathDirect)
}

func TestReasonNames(t *testing.T) {
	for r := range Reason(NumReasons) {
		got, err := ParseReason(r.String())
		if err != nil || got != r {
			t.Fatalf("reason %d: %v %v", r, got, err)
		}
	}
	if _, err := ParseReason("nope"); err == nil {
		t.Fatal("unknown reason parsed")
	}
	// In JSON a reason is its name, both ways.
	b, err := json.Marshal(map[string]Reason{"r": ReasonDirectAvailable})
	if err != nil || string(b) != `{"r":"direct_available"}` {
		t.Fatalf("marshalled %s, %v", b, err)
	}
	var back map[string]Reason
	if err := json.Unmarshal(b, &back); err != nil || back["r"] != ReasonDirectAvailable {
		t.Fatalf("unmarshalled %v, %v", back, err)
	}
	if err := json.Unmarshal([]byte(`{"r":"nope"}`), &back); err == nil {
		t.Fatal("an unknown reason name unmarshalled")
	}
}

// TestNames: every value of every closed set has a distinct name, and an
// out-of-range value prints as such instead of borrowing one.
func TestNames(t *testing.T) {
	sets := []struct {
		name string
		n    int
		str  func(int) string
	}{
		{"kind", NumKinds, func(i int) string { return Kind(i).String() }},
		{"phase", NumPhases, func(i int) string { return Phase(i).String() }},
		{"outcome", NumOutcomes, func(i int) string { return Outcome(i).String() }},
		{"reason", NumReasons, func(i int) string { return Reason(i).String() }},
		{"path", NumPaths, func(i int) string { return Path(i).String() }},
	}
	for _, set := range sets {
		t.Run(set.name, func(t *testing.T) {
			seen := map[string]int{}
			for i := range set.n {
				s := set.str(i)
				if prev, ok := seen[s]; ok && i > 0 {
					t.Fatalf("%d and %d are both %q", prev, i, s)
				}
				seen[s] = i
			}
			if out := set.str(set.n); seen[out] != 0 || out == "" {
				t.Fatalf("out of range prints %q", out)
			}
		})
	}
}
