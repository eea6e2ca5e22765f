package monitor

import (
	"errors"
	"fmt"
	"math"
	"testing"
	"time"
)

func TestSampleRate(t *testing.T) {
	tests := []struct {
		name                  string
		base, reference, load float64
		fixed                 bool
		want                  float64
	}{
		{"idle keeps everything", 0.01, 10, 0, false, 1},
		{"light load keeps everything", 0.01, 10, 0.05, false, 1},
		{"reference load gives the base rate", 0.01, 10, 10, false, 0.01},
		{"twice the load, half the rate", 0.01, 10, 20, false, 0.005},
		{"heavy load stops at a tenth of base", 0.01, 10, 1e6, false, 0.001},
		{"fixed ignores load", 0.05, 10, 1e6, true, 0.05},
		{"fixed ignores idleness", 0.05, 10, 0, true, 0.05},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := SampleRate(tc.base, tc.reference, tc.load, tc.fixed); math.Abs(got-tc.want) > 1e-12 {
				t.Fatalf("got %v, want %v", got, tc.want)
			}
		})
	}
}

// clock is a manual clock for tests.
type clock struct{ t time.Time }

func (c *clock) now() time.Time          { return c.t }
func (c *clock) advance(d time.Duration) { c.t = c.t.Add(d) }

func TestSamplerAdapts(t *testing.T) {
	c := &clock{t: time.Unix(1e9, 0)}
	s, err := NewSampler(SamplerConfig{Now: c.now})
	if err != nil {
		t.Fatal(err)
	}
	if s.Rate() != 1 {
		t.Fatalf("initial rate %v, want 1 (no load yet)", s.Rate())
	}
	// 1000 attempts per second for a few windows: the rate falls to
	// base * 10 / 1000 = 0.0001, floored at base/10 = 0.001.
	id := AttemptID(1)
	for range 5 {
		for range 1000 {
			s.Keep(id, false)
			id++
		}
		c.advance(time.Second)
		for range 9000 {
			s.Keep(id, false)
			id++
		}
		c.advance(9 * time.Second)
	}
	s.Keep(id, false)
	if got := s.Rate(); got != 0.001 {
		t.Fatalf("rate under 1000/s: %v (load %v)", got, s.Load())
	}
	// Failures are kept whatever the rate.
	for i := range 100 {
		if !s.Keep(AttemptID(1e6+i), true) {
			t.Fatal("a failure was not kept")
		}
	}
	// Of successes, about the rate is kept.
	kept := 0
	for i := range 100_000 {
		if s.Keep(AttemptID(5e6+i), false) {
			kept++
		}
	}
	if kept < 50 || kept > 200 {
		t.Fatalf("kept %d of 100000 at rate 0.001", kept)
	}
	// Quiet again: one attempt a minute brings the rate back up to 1.
	for range 8 {
		c.advance(time.Minute)
		s.Keep(id, false)
		id++
	}
	if got := s.Rate(); got != 1 {
		t.Fatalf("rate after quiet: %v (load %v)", got, s.Load())
	}
}

func TestSamplerConfigErrors(t *testing.T) {
	for _, cfg := range []SamplerConfig{{BaseRate: -0.1}, {BaseRate: 1.5}, {BaseRate: math.NaN()}, {ReferenceLoad: -1}, {Window: -time.Second}} {
		if _, err := NewSampler(cfg); !errors.Is(err, ErrBadSampling) {
			t.Errorf("%+v: err %v", cfg, err)
		}
	}
}

// runAttempt records a whole attempt into st.
func runAttempt(st *Store, at time.Time, id AttemptID, ok bool, events int) {
	st.add(&Event{Time: at, Kind: KindAttemptStart, Attempt: id, Peer: "p", Detail: "initiator"})
	st.add(&Event{Time: at, Kind: KindPhaseStart, Attempt: id, Phase: PhasePunch})
	for i := range events {
		st.add(&Event{Time: at, Kind: KindCheckSent, Attempt: id, Value: float64(i)})
	}
	st.add(&Event{Time: at.Add(30 * time.Millisecond), Kind: KindPhaseEnd, Attempt: id, Phase: PhasePunch, Outcome: OutcomeOK, Duration: 20 * time.Millisecond})
	o, r := OutcomeOK, ReasonNone
	if !ok {
		o, r = OutcomeFail, ReasonPunchTimeout
	}
	st.add(&Event{Time: at.Add(40 * time.Millisecond), Kind: KindAttemptEnd, Attempt: id, Outcome: o, Reason: r, Duration: 40 * time.Millisecond, Path: PathDirect})
}

func TestStore(t *testing.T) {
	newStore := func(t *testing.T, c *clock, base float64, cfg StoreConfig) *Store {
		t.Helper()
		sm, err := NewSampler(SamplerConfig{BaseRate: base, Fixed: true, Now: c.now})
		if err != nil {
			t.Fatal(err)
		}
		cfg.Sampler, cfg.Now = sm, c.now
		st, err := NewStore(cfg)
		if err != nil {
			t.Fatal(err)
		}
		return st
	}
	t.Run("retention by count keeps the newest", func(t *testing.T) {
		c := &clock{t: time.Unix(1e9, 0)}
		st := newStore(t, c, 1, StoreConfig{MaxAttempts: 50})
		for i := range 200 {
			runAttempt(st, c.t, AttemptID(i+1), true, 2)
		}
		got := st.Attempts(AttemptFilter{Limit: 1000})
		if len(got) != 50 || got[0].ID != 200 || got[49].ID != 151 {
			t.Fatalf("%d attempts, newest %v oldest %v", len(got), got[0].ID, got[len(got)-1].ID)
		}
	})
	t.Run("retention by age", func(t *testing.T) {
		c := &clock{t: time.Unix(1e9, 0)}
		st := newStore(t, c, 1, StoreConfig{MaxAge: time.Minute})
		runAttempt(st, c.t, 1, true, 0)
		c.advance(30 * time.Second)
		runAttempt(st, c.t, 2, true, 0)
		c.advance(45 * time.Second)
		got := st.Attempts(AttemptFilter{})
		if len(got) != 1 || got[0].ID != 2 {
			t.Fatalf("after 75 s: %+v", got)
		}
		if _, ok := st.Attempt(1); ok {
			t.Fatal("an expired attempt is still found")
		}
	})
	t.Run("timeline and sampled detail", func(t *testing.T) {
		c := &clock{t: time.Unix(1e9, 0)}
		st := newStore(t, c, 0.0000001, StoreConfig{})
		runAttempt(st, c.t, 7, true, 3)
		runAttempt(st, c.t, 8, false, 3)
		ok, _ := st.Attempt(7)
		bad, _ := st.Attempt(8)
		if ok.Sampled || ok.Events != nil {
			t.Fatalf("a success at rate ~0 kept its events: %+v", ok)
		}
		if !bad.Sampled || len(bad.Events) != 7 || bad.Reason != ReasonPunchTimeout {
			t.Fatalf("a failure must keep all 7 events: %d %+v", len(bad.Events), bad)
		}
		for _, r := range []AttemptRecord{ok, bad} {
			if len(r.Phases) != 1 || r.Phases[0].Phase != PhasePunch || r.Phases[0].Start != 10*time.Millisecond ||
				r.Phases[0].Duration != 20*time.Millisecond || r.Duration != 40*time.Millisecond {
				t.Fatalf("timeline %+v", r)
			}
		}
	})
	t.Run("detours survive sampling", func(t *testing.T) {
		c := &clock{t: time.Unix(1e9, 0)}
		st := newStore(t, c, 0.0000001, StoreConfig{})
		st.add(&Event{Time: c.t, Kind: KindAttemptStart, Attempt: 9})
		st.add(&Event{Time: c.t, Kind: KindFallback, Attempt: 9, Reason: ReasonBothSymmetric})
		st.add(&Event{Time: c.t, Kind: KindAttemptEnd, Attempt: 9, Outcome: OutcomeOK, Path: PathRelay})
		r, _ := st.Attempt(9)
		if r.Sampled || len(r.Detours) != 1 || r.Detours[0] != ReasonBothSymmetric {
			t.Fatalf("%+v", r)
		}
	})
	t.Run("per attempt event bound", func(t *testing.T) {
		c := &clock{t: time.Unix(1e9, 0)}
		st := newStore(t, c, 1, StoreConfig{MaxEvents: 10})
		runAttempt(st, c.t, 1, false, 50)
		r, _ := st.Attempt(1)
		if len(r.Events) != 10 || r.Dropped != 43 || st.Dropped() != 43 {
			t.Fatalf("events %d dropped %d/%d", len(r.Events), r.Dropped, st.Dropped())
		}
	})
	t.Run("detail is kept for the newest MaxDetailed only", func(t *testing.T) {
		c := &clock{t: time.Unix(1e9, 0)}
		st := newStore(t, c, 1, StoreConfig{MaxDetailed: 5})
		for i := range 100 {
			runAttempt(st, c.t, AttemptID(i+1), false, 1)
		}
		if s := st.Stats(); s.Detailed != 5 || s.Attempts != 100 {
			t.Fatalf("stats %+v", s)
		}
		for i, r := range st.Attempts(AttemptFilter{Limit: 100}) {
			if (i < 5) != (r.Events != nil) {
				t.Fatalf("record %d (id %v) events %d", i, r.ID, len(r.Events))
			}
		}
		if len(st.detailQ) > 2*5+16 {
			t.Fatalf("detail queue grew to %d", len(st.detailQ))
		}
	})
	t.Run("open attempts are bounded", func(t *testing.T) {
		c := &clock{t: time.Unix(1e9, 0)}
		st := newStore(t, c, 1, StoreConfig{MaxOpen: 3})
		for i := range 10 {
			st.add(&Event{Time: c.t, Kind: KindAttemptStart, Attempt: AttemptID(i + 1)})
			st.add(&Event{Time: c.t, Kind: KindCheckSent, Attempt: AttemptID(i + 1)})
		}
		s := st.Stats()
		if s.Open != 3 || s.Dropped != 14 {
			t.Fatalf("stats %+v", s)
		}
		if got := st.Attempts(AttemptFilter{Open: true}); len(got) != 3 {
			t.Fatalf("%d open attempts listed", len(got))
		}
	})
	t.Run("filters", func(t *testing.T) {
		c := &clock{t: time.Unix(1e9, 0)}
		st := newStore(t, c, 1, StoreConfig{})
		for i := range 10 {
			runAttempt(st, c.t, AttemptID(i+1), i%2 == 0, 0)
		}
		if got := st.Attempts(AttemptFilter{Outcome: OutcomeFail}); len(got) != 5 {
			t.Fatalf("%d failures", len(got))
		}
		if got := st.Attempts(AttemptFilter{Limit: 3}); len(got) != 3 || got[0].ID != 10 {
			t.Fatalf("limit: %d", len(got))
		}
		if got := st.Attempts(AttemptFilter{Peer: "nobody"}); len(got) != 0 {
			t.Fatal("peer filter")
		}
	})
	t.Run("node events ring", func(t *testing.T) {
		c := &clock{t: time.Unix(1e9, 0)}
		st := newStore(t, c, 1, StoreConfig{MaxNodeEvents: 4})
		for i := range 10 {
			st.add(&Event{Kind: KindSecurity, Detail: fmt.Sprint(i)})
			st.add(&Event{Kind: KindLatency}) // not kept outside attempts
		}
		got := st.NodeEvents(10)
		if len(got) != 4 || got[0].Detail != "9" || got[3].Detail != "6" {
			t.Fatalf("%+v", got)
		}
	})
	t.Run("errors are detached", func(t *testing.T) {
		c := &clock{t: time.Unix(1e9, 0)}
		st := newStore(t, c, 1, StoreConfig{})
		inner := errors.New("inner")
		st.add(&Event{Kind: KindSecurity, Err: fmt.Errorf("wrapped: %w", inner)})
		got := st.NodeEvents(1)[0].Err
		if got.Error() != "wrapped: inner" || errors.Is(got, inner) {
			t.Fatalf("stored error %v keeps its chain", got)
		}
	})
}

func TestStoreConfigErrors(t *testing.T) {
	if _, err := NewStore(StoreConfig{MaxAttempts: -1}); !errors.Is(err, ErrBadStore) {
		t.Fatal(err)
	}
}
