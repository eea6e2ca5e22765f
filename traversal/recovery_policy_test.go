package traversal

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"reflect"
	"testing"
	"testing/synctest"
	"time"

	"github.com/failsafe-go/failsafe-go"
	"github.com/failsafe-go/failsafe-go/circuitbreaker"
	"github.com/failsafe-go/failsafe-go/timeout"

	"github.com/antnode/antnode/bootstrap"
	"github.com/antnode/antnode/bootstrap/wire"
	"github.com/antnode/antnode/event"
	"github.com/antnode/antnode/holepunch"
	"github.com/antnode/antnode/monitor"
)

// TestWithin: a phase run under its failsafe timeout policy ends at the
// bound (on the bubble's clock), keeps a result made just in time, and
// reports the caller's own cancellation as such.
func TestWithin(t *testing.T) {
	const bound = 2 * time.Second
	errPhase := errors.New("phase failed")
	tests := []struct {
		name     string
		fn       func(context.Context) (int, error)
		cancel   time.Duration // the caller cancels after this (zero: never)
		want     int
		wantErr  error
		notErr   error
		wantTook time.Duration
	}{
		{"done in time", func(ctx context.Context) (int, error) {
			time.Sleep(bound / 2)
			return 7, nil
		}, 0, 7, nil, nil, bound / 2},
		{"phase error", func(ctx context.Context) (int, error) { return 0, errPhase }, 0, 0, errPhase, timeout.ErrExceeded, 0},
		{"blocks past the bound", func(ctx context.Context) (int, error) {
			<-ctx.Done()
			return 0, fmt.Errorf("waiting: %w", context.Cause(ctx))
		}, 0, 0, timeout.ErrExceeded, context.Canceled, bound},
		{"done just as the time ran out", func(ctx context.Context) (int, error) {
			<-ctx.Done()
			return 9, nil
		}, 0, 9, nil, nil, bound},
		{"caller cancels first", func(ctx context.Context) (int, error) {
			<-ctx.Done()
			return 0, fmt.Errorf("waiting: %w", context.Cause(ctx))
		}, bound / 4, 0, context.Canceled, timeout.ErrExceeded, bound / 4},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				ctx, cancel := context.WithCancel(t.Context())
				defer cancel()
				if tc.cancel > 0 {
					time.AfterFunc(tc.cancel, cancel)
				}
				start := time.Now()
				got, err := within(ctx, bound, tc.fn)
				took := time.Since(start)
				if got != tc.want || !errors.Is(err, tc.wantErr) || (err == nil) != (tc.wantErr == nil) {
					t.Fatalf("got %d, %v; want %d, %v", got, err, tc.want, tc.wantErr)
				}
				if tc.notErr != nil && errors.Is(err, tc.notErr) {
					t.Fatalf("%v also reads as %v", err, tc.notErr)
				}
				if errors.Is(tc.wantErr, timeout.ErrExceeded) && Reason(err) != event.ReasonTimeout {
					t.Fatalf("reason %s, want %s", Reason(err), event.ReasonTimeout)
				}
				if took != tc.wantTook {
					t.Fatalf("took %v, want %v", took, tc.wantTook)
				}
			})
		})
	}
}

// TestPunchPlanSlowedUnderLoad: a degraded attempt's checks run at half
// the pace: the same budget, every probe twice as late, fewer probes.
func TestPunchPlanSlowedUnderLoad(t *testing.T) {
	cands := []wire.Candidate{
		{Kind: wire.KindHost, Priority: holepunch.Priority(wire.KindHost, 1), Addr: netip.MustParseAddrPort("127.0.0.1:4000")},
		{Kind: wire.KindServerReflexive, Priority: holepunch.Priority(wire.KindServerReflexive, 1), Addr: netip.MustParseAddrPort("127.0.0.2:4000")},
	}
	to := PhaseTimeouts{Punch: 2 * time.Second}
	tests := []struct {
		name  string
		strat Strategy
		want  holepunch.PlanConfig
	}{
		{"normal", Strategy{Direct: true}, holepunch.PlanConfig{Budget: 2 * time.Second}},
		{"under load", Strategy{Direct: true, Slow: true},
			holepunch.PlanConfig{Budget: 2 * time.Second, Pace: 4 * time.Millisecond, FirstRTO: 100 * time.Millisecond, MaxRTO: 800 * time.Millisecond}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := punchPlan(to, tc.strat); got != tc.want {
				t.Fatalf("got %+v, want %+v", got, tc.want)
			}
		})
	}
	normal := holepunch.Plan(cands, punchPlan(to, Strategy{Direct: true}))
	slow := holepunch.Plan(cands, punchPlan(to, Strategy{Direct: true, Slow: true}))
	if len(slow) == 0 || len(slow) >= len(normal) {
		t.Fatalf("%d probes slowed, %d normal: want fewer", len(slow), len(normal))
	}
	for i := range slow { // every gap and retransmission timeout doubled
		if slow[i].At != 2*normal[i].At || slow[i].Target != normal[i].Target {
			t.Fatalf("probe %d: slowed %v to %v, normal %v to %v", i, slow[i].At, slow[i].Target, normal[i].At, normal[i].Target)
		}
	}
	if last := slow[len(slow)-1].At; last >= to.Punch {
		t.Fatalf("slowed schedule overruns the budget: last probe at %v", last)
	}
}

func TestDegradationApply(t *testing.T) {
	easy := Strategy{Direct: true, Dial: true, Speculative: true}
	spray := Strategy{Direct: true, Birthday: BirthdaySpray, Dial: true}
	tests := []struct {
		name string
		g    degradation
		s    Strategy
		mode RelayMode
		want Strategy
	}{
		{"not degraded", degradation{}, easy, RelayAuto, easy},
		{"light: no speculation, slow checks", degradation{Light: true, Reason: event.ReasonOverloaded}, easy, RelayAuto,
			Strategy{Direct: true, Dial: true, Slow: true}},
		{"light: the birthday search gives way to the relay", degradation{Light: true, Reason: event.ReasonOverloaded}, spray, RelayAuto,
			Strategy{Reason: event.ReasonOverloaded}},
		{"light without a relay: the search stays, slower", degradation{Light: true, Reason: event.ReasonOverloaded}, spray, RelayNever,
			Strategy{Direct: true, Birthday: BirthdaySpray, Dial: true, Slow: true}},
		{"relay only", degradation{RelayOnly: true, Reason: event.ReasonPunchTimeout}, easy, RelayAuto,
			Strategy{Reason: event.ReasonPunchTimeout}},
		{"relay only without a relay: direct", degradation{RelayOnly: true, Reason: event.ReasonPunchTimeout}, easy, RelayNever, easy},
		{"both", degradation{RelayOnly: true, Light: true, Reason: event.ReasonPunchTimeout}, easy, RelayAuto,
			Strategy{Reason: event.ReasonPunchTimeout}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := tc.g.apply(tc.s, tc.mode); got != tc.want {
				t.Fatalf("got %+v, want %+v", got, tc.want)
			}
		})
	}
}

// TestBreakerHalfOpen drives a bootstrap's circuit breaker, as the node
// builds it, on the bubble's clock: BreakerThreshold bootstrap faults open
// it (other errors do not count); while open, requests are refused without
// reaching the bootstrap; after BreakerDelay one trial request (and only
// one) goes through, and its outcome closes or re-opens the breaker. Every
// state change is a breaker event.
func TestBreakerHalfOpen(t *testing.T) {
	const delay = 30 * time.Second
	fault := fmt.Errorf("connect: %w", bootstrap.ErrUnavailable)
	tests := []struct {
		name     string
		trial    error
		want     string
		wantEvts []string
	}{
		{"trial succeeds: closed", nil, "closed", []string{"open", "half-open", "closed"}},
		{"trial fails: open again", fmt.Errorf("connect: %w", bootstrap.ErrOverloaded), "open", []string{"open", "half-open", "open"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				rec := &recorder{}
				n := &Node{cfg: Config{BreakerThreshold: 2, BreakerDelay: delay}, rec: rec}
				cb := n.newBreaker("0")
				calls := 0
				run := func(err error) error {
					_, gerr := failsafe.With[*bootstrap.Session](cb).Get(func() (*bootstrap.Session, error) {
						calls++
						return nil, err
					})
					return gerr
				}
				state := func() string { return monitor.BreakerStateName(cb.State()) }
				// Not the bootstrap's fault: does not count.
				for range 3 {
					run(fmt.Errorf("connect: %w", bootstrap.ErrUnknownPeer))
				}
				if state() != "closed" {
					t.Fatalf("peer errors moved the breaker to %s", state())
				}
				run(fault)
				run(fault)
				if state() != "open" {
					t.Fatalf("after %d faults: %s", 2, state())
				}
				before := calls
				if err := run(nil); !errors.Is(err, circuitbreaker.ErrOpen) || calls != before {
					t.Fatalf("open breaker: %v, %d calls through", err, calls-before)
				}
				time.Sleep(delay - time.Millisecond)
				if err := run(nil); !errors.Is(err, circuitbreaker.ErrOpen) || calls != before {
					t.Fatalf("before the delay: %v", err)
				}
				time.Sleep(time.Millisecond)
				// The trial request; a second one while it runs is refused.
				release := make(chan struct{})
				trialErr := make(chan error, 1)
				go func() {
					_, err := failsafe.With[*bootstrap.Session](cb).Get(func() (*bootstrap.Session, error) {
						calls++
						<-release
						return nil, tc.trial
					})
					trialErr <- err
				}()
				synctest.Wait()
				if state() != "half-open" {
					t.Fatalf("during the trial: %s", state())
				}
				if err := run(nil); !errors.Is(err, circuitbreaker.ErrOpen) {
					t.Fatalf("a second request during the trial: %v, want refused", err)
				}
				close(release)
				if err := <-trialErr; !errors.Is(err, tc.trial) || (err == nil) != (tc.trial == nil) {
					t.Fatalf("trial: %v", err)
				}
				if calls != before+1 {
					t.Fatalf("%d requests reached the bootstrap after it opened, want the one trial", calls-before)
				}
				if state() != tc.want {
					t.Fatalf("after the trial: %s, want %s", state(), tc.want)
				}
				var evts []string
				for _, ev := range rec.Kind(event.KindBreaker) {
					if ev.Bootstrap != "0" {
						t.Fatalf("breaker event for bootstrap %q", ev.Bootstrap)
					}
					evts = append(evts, ev.Detail)
				}
				if !reflect.DeepEqual(evts, tc.wantEvts) {
					t.Fatalf("breaker events %v, want %v", evts, tc.wantEvts)
				}
			})
		})
	}
}
