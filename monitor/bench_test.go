package monitor

import (
	"log/slog"
	"net/netip"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// BenchmarkRecord measures the cost of recording one event through a
// Monitor with its metrics registered, an info-level logger (the event is
// below it, as checks are) and the store: the hot path of every phase.
// Attempts are started and finished every 64 events, so the per-attempt
// work (store record, sampler decision) is included, amortised.
// The sampler runs at its base rate (1% of successes kept in detail, as
// at the reference load); "all_kept" is the worst case, every attempt
// kept.
func BenchmarkRecord(b *testing.B) {
	newMon := func(b *testing.B, rate float64) *Monitor {
		sm, err := NewSampler(SamplerConfig{BaseRate: rate, Fixed: true})
		if err != nil {
			b.Fatal(err)
		}
		st, err := NewStore(StoreConfig{Sampler: sm})
		if err != nil {
			b.Fatal(err)
		}
		mon, err := New(Config{Registerer: prometheus.NewRegistry(), Store: st,
			Logger: slog.New(slog.NewTextHandler(discard{}, &slog.HandlerOptions{Level: slog.LevelInfo}))})
		if err != nil {
			b.Fatal(err)
		}
		return mon
	}
	addr := netip.MustParseAddrPort("203.0.113.9:4433")
	for _, bc := range []struct {
		name string
		rate float64
	}{{"attempt_event", 0.01}, {"attempt_event_all_kept", 1}} {
		mon := newMon(b, bc.rate)
		b.Run(bc.name, func(b *testing.B) {
			b.ReportAllocs()
			id := AttemptID(1)
			for i := 0; b.Loop(); i++ {
				if i%64 == 0 {
					mon.Record(Event{Kind: KindAttemptEnd, Attempt: id, Outcome: OutcomeOK, Path: PathDirect})
					id++
					mon.Record(Event{Kind: KindAttemptStart, Attempt: id, Detail: "initiator"})
					continue
				}
				mon.Record(Event{Kind: KindCheckSent, Attempt: id, Addr: addr, Value: 1})
			}
		})
	}
	mon := newMon(b, 0.01)
	b.Run("node_event", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			mon.Record(Event{Kind: KindLatency, Path: PathDirect, Duration: time.Millisecond})
		}
	})
}

type discard struct{}

func (discard) Write(p []byte) (int, error) { return len(p), nil }
