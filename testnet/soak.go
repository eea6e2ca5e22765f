package testnet

import (
	"context"
	"fmt"
	"math/rand/v2"
	"strings"
	"sync"
	"time"
)

// The soak: for SoakFor (10 minutes unless told), a connect with a
// verified transfer every second between random sites that reach each
// other directly or through the relay, and a fault every 30 s (a NAT
// forgets its mappings; a bootstrap restarts). Every connect must succeed,
// and every daemon's memory and goroutines must stay bounded: the highest
// reading of the run's last third may exceed that of its first third by
// at most a quarter plus 16 MiB, and by at most 50 goroutines. Run on
// demand: testbed --scenarios soak [--soak 10m].

const (
	soakEvery      = time.Second
	soakFaultEvery = 30 * time.Second
	soakSampleEach = 15 * time.Second
	soakInflight   = 4
	soakSend       = 256 << 10
)

// soakClasses connect in every pairing without the birthday search.
var soakClasses = map[Class]bool{ClassPublic: true, ClassEIMEIF: true, ClassEIMADF: true, ClassEIMAPDF: true,
	ClassCGNAT: true, ClassUDPBlocked: true}

// soakSample is one reading of a daemon.
type soakSample struct {
	at         time.Duration
	rss        float64
	goroutines float64
}

// scenarioSoak runs the soak (see above) and judges it.
func scenarioSoak(ctx context.Context, e *Env) (bool, string) {
	length := e.SoakFor
	if length <= 0 {
		length = 10 * time.Minute
	}
	hosts := soakHosts(e)
	if len(hosts) < 2 {
		return false, "needs two sites of the classes that connect without the birthday search"
	}
	ctx, cancel := context.WithTimeout(ctx, length+2*time.Minute)
	defer cancel()
	s := &soakRun{e: e, hosts: hosts, rng: rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 1)),
		slots: make(chan struct{}, soakInflight), samples: map[string][]soakSample{}}
	s.start = time.Now()
	s.sample(ctx, 0)
	faults, err := s.loop(ctx, length)
	if err != nil {
		return false, fmt.Sprintf("fault %d: %v", faults, err)
	}
	s.wg.Wait()
	s.sample(ctx, time.Since(s.start))
	return s.verdict(time.Since(s.start), faults)
}

// soakHosts returns the first host of every site of soakClasses that has
// a daemon.
func soakHosts(e *Env) []Host {
	var hosts []Host
	for _, h := range e.TB.Hosts {
		if h.Index == 0 && soakClasses[h.Class] && e.Daemons[h.NS] != nil {
			hosts = append(hosts, h)
		}
	}
	return hosts
}

// soakRun is a soak in progress: its hosts, the daemons' readings, and
// the connects counted so far (under mu: the connects run concurrently).
type soakRun struct {
	e       *Env
	hosts   []Host
	rng     *rand.Rand
	start   time.Time
	slots   chan struct{} // one per connect in flight
	wg      sync.WaitGroup
	samples map[string][]soakSample // by namespace; the loop's alone

	mu                      sync.Mutex
	connects, direct, relay int
	failed                  []string
}

// sample reads every daemon's memory and goroutines, at elapsed time at.
func (s *soakRun) sample(ctx context.Context, at time.Duration) {
	for _, h := range s.hosts {
		rss, err1 := scrapeValue(ctx, h.NS, metricsPort, "process_resident_memory_bytes")
		g, err2 := scrapeValue(ctx, h.NS, metricsPort, "go_goroutines")
		if err1 == nil && err2 == nil {
			s.samples[h.NS] = append(s.samples[h.NS], soakSample{at, rss, g})
		}
	}
}

// loop ticks every soakEvery for length (or until ctx ends): it samples
// the daemons, injects a fault every soakFaultEvery and starts a connect
// when fewer than soakInflight run. It returns the faults injected and,
// if one could not be, why (the connects may still be running then).
func (s *soakRun) loop(ctx context.Context, length time.Duration) (int, error) {
	tick := time.NewTicker(soakEvery)
	defer tick.Stop()
	nextFault, nextSample := soakFaultEvery, soakSampleEach
	faults := 0
	for time.Since(s.start) < length && ctx.Err() == nil {
		<-tick.C
		el := time.Since(s.start)
		if el >= nextSample {
			s.sample(ctx, el)
			nextSample += soakSampleEach
		}
		if el >= nextFault {
			nextFault += soakFaultEvery
			if err := s.fault(ctx, faults); err != nil {
				return faults, err
			}
			faults++
		}
		select {
		case s.slots <- struct{}{}:
		default:
			continue // soakInflight connects already running: skip this tick
		}
		s.connect(ctx)
	}
	return faults, nil
}

// fault injects fault number n: even ones make a random site's NAT forget
// every mapping, odd ones restart a bootstrap (in turn; the other carries
// on).
func (s *soakRun) fault(ctx context.Context, n int) error {
	var err error
	switch n % 2 {
	case 0: // a NAT forgets every mapping
		err = s.e.TB.FlushConntrack(ctx, s.hosts[s.rng.IntN(len(s.hosts))].Site)
	case 1: // a bootstrap restarts; the other carries on
		i := (n / 2) % len(s.e.Bootstraps)
		s.e.Bootstraps[i].Stop(2 * time.Second)
		var np *Proc
		if np, err = s.e.StartBootstrap(ctx, i); err == nil {
			s.e.Bootstraps[i] = np
		}
	}
	return err
}

// connect starts a connect with a verified transfer between two random
// hosts, holding a slot until it ends, and counts its outcome.
func (s *soakRun) connect(ctx context.Context) {
	a := s.hosts[s.rng.IntN(len(s.hosts))]
	b := s.hosts[s.rng.IntN(len(s.hosts))]
	for b.NS == a.NS {
		b = s.hosts[s.rng.IntN(len(s.hosts))]
	}
	s.wg.Go(func() {
		defer func() { <-s.slots }()
		res := s.e.Connect(ctx, a, b, soakSend, 20*time.Second)
		s.mu.Lock()
		defer s.mu.Unlock()
		s.connects++
		switch {
		case !res.Connected || res.BytesVerified != soakSend || res.Error != "":
			s.failed = append(s.failed, fmt.Sprintf("%s->%s at +%.0fs: %s %s", a.Class, b.Class, time.Since(s.start).Seconds(), res.Reason, res.Error))
		case res.Path == "relay":
			s.relay++
		default:
			s.direct++
		}
	})
}

// verdict judges a soak that took took and injected faults faults: every
// connect succeeded and the daemons stayed bounded (see soakBounds).
func (s *soakRun) verdict(took time.Duration, faults int) (bool, string) {
	detail := fmt.Sprintf("%v: %d connects (%d direct, %d relay), %d failed, %d faults", took.Round(time.Second), s.connects, s.direct, s.relay, len(s.failed), faults)
	ok := s.connects > 0 && len(s.failed) == 0
	if len(s.failed) > 0 {
		detail += "; failures: " + strings.Join(s.failed[:min(len(s.failed), 5)], " | ")
	}
	worst, bounded := soakBounds(s.samples, took)
	if !bounded {
		ok = false
	}
	return ok, detail + "; " + worst
}

// soakBounds checks each daemon's readings: the highest of the last third
// of the run against the highest of the first third. It describes the
// daemon that grew most.
func soakBounds(samples map[string][]soakSample, took time.Duration) (string, bool) {
	bounded := true
	worstNS, worstGrowth := "", -1.0
	var worstFirst, worstLast, worstG0, worstG1 float64
	for ns, ss := range samples {
		var first, last, g0, g1 float64
		for _, s := range ss {
			switch {
			case s.at <= took/3:
				first, g0 = max(first, s.rss), max(g0, s.goroutines)
			case s.at >= 2*took/3:
				last, g1 = max(last, s.rss), max(g1, s.goroutines)
			}
		}
		if first == 0 || last == 0 {
			continue // too short a run to compare
		}
		if last > first*1.25+16<<20 || g1 > g0+50 {
			bounded = false
		}
		if growth := last - first; growth > worstGrowth {
			worstNS, worstGrowth, worstFirst, worstLast, worstG0, worstG1 = ns, growth, first, last, g0, g1
		}
	}
	if worstNS == "" {
		return "no memory readings to compare", false
	}
	verdict := "bounded"
	if !bounded {
		verdict = "NOT bounded"
	}
	return fmt.Sprintf("memory %s: the daemon that grew most (%s) went from %.1f to %.1f MiB RSS and %.0f to %.0f goroutines (first third vs last third)",
		verdict, worstNS, worstFirst/(1<<20), worstLast/(1<<20), worstG0, worstG1), bounded
}
