package monitor

import (
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"
)

// StoreConfig configures the store of recent attempts.
type StoreConfig struct {
	// MaxAttempts is how many ended attempts are kept (about 1.1 KB each,
	// 3.3 KB with their full events; see BENCHMARKS.md). Zero: 10 000.
	MaxAttempts int
	// MaxAge drops ended attempts older than this. Zero: 1 h.
	MaxAge time.Duration
	// MaxOpen bounds attempts tracked before they end (an attempt that
	// never ends cannot grow the store without bound). Zero: 10 000.
	MaxOpen int
	// MaxEvents bounds the events buffered per attempt. Zero: 128.
	MaxEvents int
	// MaxDetailed is how many ended attempts keep their full event list;
	// older ones keep their summary and phase timeline. Zero: 1000.
	MaxDetailed int
	// MaxNodeEvents is how many events outside attempts (security,
	// bootstrap state, relay, NAT type, breaker) are kept. Zero: 1000.
	MaxNodeEvents int
	// Sampler decides which successful attempts keep their detail. Nil:
	// an adaptive sampler with the defaults.
	Sampler *Sampler
	// Now is the clock. Nil: time.Now.
	Now func() time.Time
}

// ErrBadStore is returned for a store configuration out of range.
var ErrBadStore = errors.New("monitor: bad store configuration")

func (c *StoreConfig) validate() error {
	if c.MaxAttempts < 0 || c.MaxAge < 0 || c.MaxOpen < 0 || c.MaxEvents < 0 || c.MaxDetailed < 0 || c.MaxNodeEvents < 0 {
		return fmt.Errorf("%w: negative limit", ErrBadStore)
	}
	if c.MaxAttempts == 0 {
		c.MaxAttempts = 10_000
	}
	if c.MaxAge == 0 {
		c.MaxAge = time.Hour
	}
	if c.MaxOpen == 0 {
		c.MaxOpen = 10_000
	}
	if c.MaxEvents == 0 {
		c.MaxEvents = 128
	}
	if c.MaxDetailed == 0 {
		c.MaxDetailed = 1000
	}
	if c.MaxNodeEvents == 0 {
		c.MaxNodeEvents = 1000
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	if c.Sampler == nil {
		s, err := NewSampler(SamplerConfig{Now: c.Now})
		if err != nil {
			return err
		}
		c.Sampler = s
	}
	return nil
}

// PhaseRecord is one phase of an attempt's timeline.
type PhaseRecord struct {
	Phase    Phase
	Start    time.Duration // since the attempt started
	Duration time.Duration
	Outcome  Outcome
	Reason   Reason
}

// AttemptRecord is a stored attempt: its summary and phase timeline
// always, its events when the sampler kept them.
type AttemptRecord struct {
	ID       AttemptID
	Peer     string
	Role     string
	NAT      string
	PeerNAT  string
	Start    time.Time
	End      time.Time // zero while open
	Duration time.Duration
	Outcome  Outcome
	Reason   Reason
	Path     Path
	Family   string // the path's address family (event.Event.Family at the end)
	Phases   []PhaseRecord
	// Detours are the reasons of the attempt's fallbacks (direct to
	// relay), kept whether or not the sampler keeps the events.
	Detours []Reason
	Events  []Event // nil unless Sampled
	Sampled bool
	Dropped int // events beyond MaxEvents
}

// shards spread the open attempts over locks so that concurrent attempts
// rarely contend.
const shards = 16

type shard struct {
	mu   sync.Mutex
	open map[AttemptID]*AttemptRecord
}

// Store keeps recent attempts and node events in memory, bounded by count
// and age. It is safe for concurrent use and starts no goroutines: expiry
// happens as records are added and read.
type Store struct {
	cfg     StoreConfig
	shards  [shards]shard
	nopen   atomic.Int64
	dropped atomic.Uint64 // events not kept: buffer or open-attempt limits
	pool    sync.Pool     // event buffers of attempts that were not kept

	mu       sync.Mutex
	ended    []*AttemptRecord // ring, oldest at head
	head, n  int
	detailed int              // ended records with Events
	detailQ  []*AttemptRecord // records given Events, oldest first (some since stripped)
	nodeEv   []Event
	nodeHead int
}

// NewStore returns an empty store.
func NewStore(cfg StoreConfig) (*Store, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	s := &Store{cfg: cfg, ended: make([]*AttemptRecord, min(cfg.MaxAttempts, 1024)),
		nodeEv: make([]Event, 0, min(cfg.MaxNodeEvents, 64))}
	for i := range s.shards {
		s.shards[i].open = make(map[AttemptID]*AttemptRecord)
	}
	s.pool.New = func() any {
		b := make([]Event, 0, min(cfg.MaxEvents, 32))
		return &b
	}
	return s, nil
}

// Sampler returns the store's sampler.
func (s *Store) Sampler() *Sampler { return s.cfg.Sampler }

// Dropped returns how many events were not kept because of limits.
func (s *Store) Dropped() uint64 { return s.dropped.Load() }

// add files an event. It is called for every event; events outside
// attempts go to the node ring if they are of a kind worth keeping.
func (s *Store) add(ev *Event) {
	if ev.Attempt == 0 {
		if keepNodeEvent(ev) {
			s.addNode(ev)
		}
		return
	}
	sh := &s.shards[uint64(ev.Attempt)%shards]
	sh.mu.Lock()
	r := sh.open[ev.Attempt]
	if r == nil {
		if ev.Kind != KindAttemptStart || s.nopen.Load() >= int64(s.cfg.MaxOpen) {
			sh.mu.Unlock()
			s.dropped.Add(1)
			return
		}
		s.nopen.Add(1)
		r = &AttemptRecord{ID: ev.Attempt, Peer: ev.Peer, Role: ev.Detail, NAT: ev.NAT, Start: ev.Time}
		bp := s.pool.Get().(*[]Event)
		r.Events = (*bp)[:0]
		sh.open[ev.Attempt] = r
	}
	switch ev.Kind {
	case KindPhaseEnd:
		r.Phases = append(r.Phases, PhaseRecord{Phase: ev.Phase, Start: ev.Time.Sub(r.Start) - ev.Duration,
			Duration: ev.Duration, Outcome: ev.Outcome, Reason: ev.Reason})
	case KindFallback:
		if len(r.Detours) < 4 && ev.Reason != ReasonNone {
			r.Detours = append(r.Detours, ev.Reason)
		}
	case KindAttemptEnd:
		delete(sh.open, ev.Attempt)
		sh.mu.Unlock()
		s.nopen.Add(-1)
		s.end(r, ev)
		return
	}
	if len(r.Events) < s.cfg.MaxEvents {
		r.Events = append(r.Events, *ev)
		r.Events[len(r.Events)-1].Err = errText(ev.Err)
	} else {
		r.Dropped++
		s.dropped.Add(1)
	}
	sh.mu.Unlock()
}

// errText detaches an error from whatever it wraps: stored events must
// not keep an attempt's objects alive.
func errText(err error) error {
	if err == nil {
		return nil
	}
	return storedError(err.Error())
}

type storedError string

func (e storedError) Error() string { return string(e) }

func (s *Store) end(r *AttemptRecord, ev *Event) {
	r.End, r.Duration, r.Outcome, r.Reason, r.Path = ev.Time, ev.Duration, ev.Outcome, ev.Reason, ev.Path
	r.NAT, r.PeerNAT, r.Family = ev.NAT, ev.PeerNAT, ev.Family
	if r.Peer == "" {
		r.Peer = ev.Peer
	}
	r.Sampled = s.cfg.Sampler.Keep(r.ID, ev.Outcome != OutcomeOK)
	if r.Sampled {
		if len(r.Events) < s.cfg.MaxEvents {
			r.Events = append(r.Events, *ev)
			r.Events[len(r.Events)-1].Err = errText(ev.Err)
		}
		// A kept buffer leaves the pool for good; copy it to its size.
		r.Events = append([]Event(nil), r.Events...)
	} else {
		s.recycle(r.Events)
		r.Events = nil
	}
	s.mu.Lock()
	s.expire(ev.Time)
	s.push(r)
	s.mu.Unlock()
}

func (s *Store) recycle(b []Event) {
	clear(b) // drop references (errors, strings) before reuse
	b = b[:0]
	s.pool.Put(&b)
}

// push appends r to the ring, evicting the oldest when full; s.mu held.
func (s *Store) push(r *AttemptRecord) {
	if s.n == len(s.ended) && s.n < s.cfg.MaxAttempts {
		grown := make([]*AttemptRecord, min(2*len(s.ended), s.cfg.MaxAttempts))
		for i := range s.n {
			grown[i] = s.ended[(s.head+i)%len(s.ended)]
		}
		s.ended, s.head = grown, 0
	}
	if s.n == len(s.ended) {
		s.evict()
	}
	s.ended[(s.head+s.n)%len(s.ended)] = r
	s.n++
	if r.Events == nil {
		return
	}
	s.detailed++
	s.detailQ = append(s.detailQ, r)
	for s.detailed > s.cfg.MaxDetailed && len(s.detailQ) > 0 {
		// Strip the oldest detailed record's events.
		o := s.detailQ[0]
		s.detailQ[0] = nil
		s.detailQ = s.detailQ[1:]
		if o.Events != nil {
			o.Events = nil
			s.detailed--
		}
	}
	if len(s.detailQ) > 2*s.cfg.MaxDetailed+16 {
		// Forget records evicted since they were queued.
		q := make([]*AttemptRecord, 0, s.detailed+16)
		for _, o := range s.detailQ {
			if o.Events != nil {
				q = append(q, o)
			}
		}
		s.detailQ = q
	}
}

func (s *Store) evict() {
	o := s.ended[s.head]
	if o.Events != nil {
		o.Events = nil
		s.detailed--
	}
	s.ended[s.head] = nil
	s.head = (s.head + 1) % len(s.ended)
	s.n--
}

// expire drops records older than MaxAge; s.mu held.
func (s *Store) expire(now time.Time) {
	for s.n > 0 && now.Sub(s.ended[s.head].End) > s.cfg.MaxAge {
		s.evict()
	}
}

func keepNodeEvent(ev *Event) bool {
	switch ev.Kind {
	case KindSecurity, KindBootstrapState, KindRelay, KindNATType, KindBreaker, KindRegistration,
		KindRecovery, KindMigration, KindFallback, KindStateChange, KindStream:
		return true
	case KindBootstrapRequest:
		return ev.Outcome != OutcomeOK // failures only: successes are heartbeats
	}
	return false
}

func (s *Store) addNode(ev *Event) {
	e := *ev
	e.Err = errText(ev.Err)
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.nodeEv) < s.cfg.MaxNodeEvents {
		s.nodeEv = append(s.nodeEv, e)
		return
	}
	s.nodeEv[s.nodeHead] = e
	s.nodeHead = (s.nodeHead + 1) % len(s.nodeEv)
}

// AttemptFilter selects attempts.
type AttemptFilter struct {
	Limit   int     // most recent first; zero: 100
	Outcome Outcome // OutcomeNone: any
	Peer    string  // empty: any
	Open    bool    // include attempts still running
}

// Attempts returns the most recent attempts matching f, newest first.
// Records are copies: callers may keep them.
func (s *Store) Attempts(f AttemptFilter) []AttemptRecord {
	if f.Limit <= 0 {
		f.Limit = 100
	}
	out := make([]AttemptRecord, 0, min(f.Limit, 64))
	if f.Open {
		for i := range s.shards {
			sh := &s.shards[i]
			sh.mu.Lock()
			for _, r := range sh.open {
				if len(out) < f.Limit && (f.Peer == "" || r.Peer == f.Peer) && f.Outcome == OutcomeNone {
					out = append(out, copyRecord(r))
				}
			}
			sh.mu.Unlock()
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.expire(s.cfg.Now())
	for i := s.n - 1; i >= 0 && len(out) < f.Limit; i-- {
		r := s.ended[(s.head+i)%len(s.ended)]
		if f.Outcome != OutcomeNone && r.Outcome != f.Outcome || f.Peer != "" && r.Peer != f.Peer {
			continue
		}
		out = append(out, copyRecord(r))
	}
	return out
}

// Attempt returns one attempt by ID, open or ended.
func (s *Store) Attempt(id AttemptID) (AttemptRecord, bool) {
	sh := &s.shards[uint64(id)%shards]
	sh.mu.Lock()
	if r := sh.open[id]; r != nil {
		c := copyRecord(r)
		sh.mu.Unlock()
		return c, true
	}
	sh.mu.Unlock()
	s.mu.Lock()
	defer s.mu.Unlock()
	for i := s.n - 1; i >= 0; i-- {
		if r := s.ended[(s.head+i)%len(s.ended)]; r.ID == id {
			return copyRecord(r), true
		}
	}
	return AttemptRecord{}, false
}

func copyRecord(r *AttemptRecord) AttemptRecord {
	c := *r
	c.Phases = append([]PhaseRecord(nil), r.Phases...)
	c.Detours = append([]Reason(nil), r.Detours...)
	c.Events = append([]Event(nil), r.Events...)
	return c
}

// NodeEvents returns up to limit recent events outside attempts, newest
// first.
func (s *Store) NodeEvents(limit int) []Event {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := len(s.nodeEv)
	if limit <= 0 || limit > n {
		limit = n
	}
	out := make([]Event, 0, limit)
	for i := range limit {
		// newest is just before nodeHead once the ring has wrapped
		j := (s.nodeHead - 1 - i + 2*n) % n
		out = append(out, s.nodeEv[j])
	}
	return out
}

// StoreStats is the store's size.
type StoreStats struct {
	Attempts int // ended, kept
	Open     int
	Detailed int
	Events   int // node events
	Dropped  uint64
}

// Stats returns the store's size.
func (s *Store) Stats() StoreStats {
	s.mu.Lock()
	defer s.mu.Unlock()
	return StoreStats{Attempts: s.n, Open: int(s.nopen.Load()), Detailed: s.detailed, Events: len(s.nodeEv), Dropped: s.dropped.Load()}
}
