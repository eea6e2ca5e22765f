package monitor

import (
	"errors"
	"fmt"
	"math"
	"sync"
	"sync/atomic"
	"time"
)

// SamplerConfig configures the adaptive sampler.
type SamplerConfig struct {
	// BaseRate is the fraction of successful attempts whose full event
	// detail is kept, at the reference load. Failed attempts are always
	// kept. Zero: 0.01.
	BaseRate float64
	// Fixed turns adaptation off: the rate stays BaseRate. Zero: adaptive.
	Fixed bool
	// ReferenceLoad is the load, in ended attempts per second, at which
	// the adaptive rate equals BaseRate; it scales inversely with load
	// from there (more attempts, fewer kept each), between BaseRate/10
	// and 1. Zero: 10 per second.
	ReferenceLoad float64
	// Window is how often the load is measured. Zero: 10 s.
	Window time.Duration
	// Now is the clock. Nil: time.Now.
	Now func() time.Time
}

// ErrBadSampling is returned for a sampler configuration out of range.
var ErrBadSampling = errors.New("monitor: bad sampling configuration")

func (c *SamplerConfig) validate() error {
	switch {
	case c.BaseRate < 0 || c.BaseRate > 1 || math.IsNaN(c.BaseRate):
		return fmt.Errorf("%w: base rate %v not in [0, 1]", ErrBadSampling, c.BaseRate)
	case c.ReferenceLoad < 0 || math.IsNaN(c.ReferenceLoad) || math.IsInf(c.ReferenceLoad, 0):
		return fmt.Errorf("%w: reference load %v", ErrBadSampling, c.ReferenceLoad)
	case c.Window < 0:
		return fmt.Errorf("%w: window %v", ErrBadSampling, c.Window)
	}
	if c.BaseRate == 0 {
		c.BaseRate = 0.01
	}
	if c.ReferenceLoad == 0 {
		c.ReferenceLoad = 10
	}
	if c.Window == 0 {
		c.Window = 10 * time.Second
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	return nil
}

// Sampler decides which attempts keep their full event detail in the
// store. It only ever thins detail: counters and histograms are updated
// for every event whatever it decides. Safe for concurrent use.
type Sampler struct {
	cfg   SamplerConfig
	ended atomic.Int64 // attempts ended in the current window

	mu          sync.Mutex
	windowStart time.Time
	load        float64 // attempts per second, smoothed
	rate        atomic.Uint64
}

// NewSampler returns a sampler; it starts no goroutines.
func NewSampler(cfg SamplerConfig) (*Sampler, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	s := &Sampler{cfg: cfg, windowStart: cfg.Now(), load: -1}
	s.rate.Store(math.Float64bits(SampleRate(cfg.BaseRate, cfg.ReferenceLoad, 0, cfg.Fixed)))
	return s, nil
}

// SampleRate is the fraction of successful attempts kept in detail at a
// load of load attempts per second: base at the reference load, inversely
// proportional to the load around it, within [base/10, 1]; always base
// when fixed.
func SampleRate(base, reference, load float64, fixed bool) float64 {
	if fixed {
		return base
	}
	if load <= 0 {
		return 1
	}
	r := base * reference / load
	return min(1, max(base/10, r))
}

// Rate returns the current rate for successful attempts.
func (s *Sampler) Rate() float64 { return math.Float64frombits(s.rate.Load()) }

// Load returns the measured load in attempts per second (-1 before the
// first window ends).
func (s *Sampler) Load() float64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.load
}

// Keep reports whether the attempt id, which ended failed or not, keeps
// its detail. The decision for a given id and rate is deterministic
// (attempt IDs are random), so a retried decision agrees with itself.
func (s *Sampler) Keep(id AttemptID, failed bool) bool {
	s.ended.Add(1)
	s.tick()
	if failed {
		return true
	}
	return fraction(id) < s.Rate()
}

// fraction maps an attempt ID to [0, 1) uniformly.
func fraction(id AttemptID) float64 {
	x := uint64(id) * 0x9e3779b97f4a7c15 // spread low-entropy IDs (tests)
	return float64(x>>11) / (1 << 53)
}

// tick closes the load window when it is over.
func (s *Sampler) tick() {
	now := s.cfg.Now()
	s.mu.Lock()
	defer s.mu.Unlock()
	el := now.Sub(s.windowStart)
	if el < s.cfg.Window {
		return
	}
	cur := float64(s.ended.Swap(0)) / el.Seconds()
	if s.load < 0 {
		s.load = cur
	} else {
		// Weigh the new window by its length: a long quiet gap replaces
		// the old load rather than halving it.
		a := 1 - math.Exp(-el.Seconds()/s.cfg.Window.Seconds())
		s.load = (1-a)*s.load + a*cur
	}
	s.windowStart = now
	s.rate.Store(math.Float64bits(SampleRate(s.cfg.BaseRate, s.cfg.ReferenceLoad, s.load, s.cfg.Fixed)))
}
