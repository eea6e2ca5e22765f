package event

import (
	"net/netip"
	"sync"
	"testing"
	"testing/synctest"
	"time"
)

type collect struct {
	mu sync.Mutex
	ev []Event
}

func (c *collect) Record(ev Event) {
	c.mu.Lock()
	c.ev = append(c.ev, ev)
	c.mu.Unlock()
}

func (c *collect) snapshot() []Event {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]Event(nil), c.ev...)
}

// TestAggregator: of repeated security events (one source, one reason),
// the first is recorded at once and the rest as one record per interval
// with their count; other sources, reasons and kinds pass apart; the
// counts add up to every event; Close records what is pending.
func TestAggregator(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		out := &collect{}
		a := NewAggregator(out, 10*time.Second)
		src := netip.MustParseAddrPort("192.0.2.1:5000")
		bad := Event{Kind: KindSecurity, Reason: ReasonBadCredentials, Addr: src, Detail: "wrong password"}
		for range 1000 {
			a.Record(bad)
		}
		a.Record(Event{Kind: KindSecurity, Reason: ReasonBadCredentials, Addr: netip.MustParseAddrPort("192.0.2.2:1"), Detail: "wrong password"})
		a.Record(Event{Kind: KindRelay, Detail: "allocate"})
		a.Record(Event{Kind: KindRelay, Detail: "allocate"})
		if got := len(out.snapshot()); got != 4 {
			t.Fatalf("%d records before the interval ends, want 4 (first of each source, both relay events)", got)
		}
		time.Sleep(11 * time.Second)
		synctest.Wait()
		evs := out.snapshot()
		if len(evs) != 5 || evs[4].Value != 998 || evs[4].Addr != src {
			t.Fatalf("after the interval: %+v, want one more record counting 999 (Value 998) from %s", evs[len(evs)-1], src)
		}
		// A second interval with repeats: one more record; a quiet one: none.
		for range 10 {
			a.Record(bad)
		}
		time.Sleep(11 * time.Second)
		synctest.Wait()
		time.Sleep(11 * time.Second)
		synctest.Wait()
		if evs = out.snapshot(); len(evs) != 6 || evs[5].Value != 9 {
			t.Fatalf("second interval: %d records, last %+v", len(evs), evs[len(evs)-1])
		}
		total := 0
		for _, ev := range evs {
			if ev.Kind == KindSecurity && ev.Addr == src {
				total += 1 + int(ev.Value)
			}
		}
		if total != 1010 {
			t.Fatalf("records stand for %d events, want 1010", total)
		}
		// After a quiet interval the next one is recorded at once again.
		a.Record(bad)
		a.Record(bad)
		if evs = out.snapshot(); len(evs) != 7 {
			t.Fatalf("%d records, want the new first one at once", len(evs))
		}
		a.Close()
		if evs = out.snapshot(); len(evs) != 8 || evs[7].Value != 0 {
			t.Fatalf("Close recorded %+v, want the one pending repeat", evs[len(evs)-1])
		}
	})
}
