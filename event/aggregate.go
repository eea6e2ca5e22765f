package event

import (
	"net/netip"
	"sync"
	"time"
)

// Aggregator is a Recorder that passes every event on, except repeated
// security events: of the KindSecurity events with one source (address
// and peer), reason and detail, the first is recorded at once and the
// repeats within the interval that follows are counted and recorded as one
// event at its end, whose Value is the number of repeats it stands for
// beyond itself (events suppressed before it). While repeats go on, one
// such event is recorded per interval; so a flood writes one audit record
// per source and reason per interval, and the counts add up exactly.
//
// It holds at most maxAggregated sources; further ones share one entry per
// reason and detail (without an address). Close records what is pending.
type Aggregator struct {
	rec      Recorder
	interval time.Duration

	mu     sync.Mutex
	keys   map[aggKey]*aggEntry
	closed bool
}

// maxAggregated bounds the sources an Aggregator tracks at once.
const maxAggregated = 4096

type aggKey struct {
	ip     netip.Addr
	peer   string
	reason Reason
	detail string
}

type aggEntry struct {
	n     int   // repeats since the last recorded event
	last  Event // the latest repeat
	timer *time.Timer
}

// NewAggregator aggregates the security events it passes to rec over
// interval (zero or negative: 10 s).
func NewAggregator(rec Recorder, interval time.Duration) *Aggregator {
	if interval <= 0 {
		interval = 10 * time.Second
	}
	return &Aggregator{rec: rec, interval: interval, keys: map[aggKey]*aggEntry{}}
}

// Record passes ev on, or counts it as a repeat.
func (a *Aggregator) Record(ev Event) {
	if ev.Kind != KindSecurity {
		a.rec.Record(ev)
		return
	}
	k := aggKey{ip: ev.Addr.Addr(), peer: ev.Peer, reason: ev.Reason, detail: ev.Detail}
	a.mu.Lock()
	if a.closed {
		a.mu.Unlock()
		a.rec.Record(ev)
		return
	}
	if _, ok := a.keys[k]; !ok && len(a.keys) >= maxAggregated {
		k = aggKey{reason: ev.Reason, detail: ev.Detail} // the overflow entry
	}
	if e, ok := a.keys[k]; ok {
		e.n++
		e.last = ev
		a.mu.Unlock()
		return
	}
	e := &aggEntry{}
	a.keys[k] = e
	e.timer = time.AfterFunc(a.interval, func() { a.flush(k, e) })
	a.mu.Unlock()
	a.rec.Record(ev)
}

// flush ends e's interval: the repeats, if any, are recorded as one event
// and another interval begins; else the entry goes.
func (a *Aggregator) flush(k aggKey, e *aggEntry) {
	a.mu.Lock()
	if a.keys[k] != e {
		a.mu.Unlock()
		return // closed meanwhile
	}
	n, ev := e.n, e.last
	e.n = 0
	if n == 0 {
		delete(a.keys, k)
	} else {
		e.timer.Reset(a.interval)
	}
	a.mu.Unlock()
	if n > 0 {
		a.rec.Record(summary(ev, n))
	}
}

// summary is the one event that stands for n repeats, the latest ev.
func summary(ev Event, n int) Event {
	ev.Time = time.Time{}
	ev.Value = float64(n - 1)
	return ev
}

// Close records the pending repeats and stops the timers; later events
// pass through unaggregated.
func (a *Aggregator) Close() {
	a.mu.Lock()
	pending := make([]Event, 0, len(a.keys))
	for k, e := range a.keys {
		e.timer.Stop()
		if e.n > 0 {
			pending = append(pending, summary(e.last, e.n))
		}
		delete(a.keys, k)
	}
	a.closed = true
	a.mu.Unlock()
	for _, ev := range pending {
		a.rec.Record(ev)
	}
}
