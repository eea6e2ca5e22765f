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

func scenarioSoak(ctx context.Context, e *Env) (bool, string) {
	length := e.SoakFor
	if length <= 0 {
		length = 10 * time.Minute
	}
	var hosts []Host
	for _, h := range e.TB.Hosts {
		if h.Index == 0 && soakClasses[h.Class] && e.Daemons[h.NS] != nil {
			hosts = append(hosts, h)
		}
	}
	if len(hosts) < 2 {
		return false, "needs two sites of the classes that connect without the birthday search"
	}
	ctx, cancel := context.WithTimeout(ctx, length+2*time.Minute)
	defer cancel()
	rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 1))
	var (
		mu                      sync.Mutex
		connects, direct, relay int
		failed                  []string
		wg                      sync.WaitGroup
	)
	slots := make(chan struct{}, soakInflight)
	samples := map[string][]soakSample{}
	sample := func(at time.Duration) {
		for _, h := range hosts {
			rss, err1 := scrapeValue(ctx, h.NS, metricsPort, "process_resident_memory_bytes")
			g, err2 := scrapeValue(ctx, h.NS, metricsPort, "go_goroutines")
			if err1 == nil && err2 == nil {
				samples[h.NS] = append(samples[h.NS], soakSample{at, rss, g})
			}
		}
	}
	start := time.Now()
	sample(0)
	tick := time.NewTicker(soakEvery)
	defer tick.Stop()
	nextFault, nextSample := soakFaultEvery, soakSampleEach
	faults := 0
	for time.Since(start) < length && ctx.Err() == nil {
		<-tick.C
		el := time.Since(start)
		if el >= nextSample {
			sample(el)
			nextSample += soakSampleEach
		}
		if el >= nextFault {
			nextFault += soakFaultEvery
			var err error
			switch faults % 2 {
			case 0: // a NAT forgets every mapping
				err = e.TB.FlushConntrack(ctx, hosts[rng.IntN(len(hosts))].Site)
			case 1: // a bootstrap restarts; the other carries on
				i := (faults / 2) % len(e.Bootstraps)
				e.Bootstraps[i].Stop(2 * time.Second)
				var np *Proc
				if np, err = e.StartBootstrap(ctx, i); err == nil {
					e.Bootstraps[i] = np
				}
			}
			if err != nil {
				return false, fmt.Sprintf("fault %d: %v", faults, err)
			}
			faults++
		}
		select {
		case slots <- struct{}{}:
		default:
			continue // soakInflight connects already running: skip this tick
		}
		a := hosts[rng.IntN(len(hosts))]
		b := hosts[rng.IntN(len(hosts))]
		for b.NS == a.NS {
			b = hosts[rng.IntN(len(hosts))]
		}
		wg.Go(func() {
			defer func() { <-slots }()
			res := e.Connect(ctx, a, b, soakSend, 20*time.Second)
			mu.Lock()
			defer mu.Unlock()
			connects++
			switch {
			case !res.Connected || res.BytesVerified != soakSend || res.Error != "":
				failed = append(failed, fmt.Sprintf("%s->%s at +%.0fs: %s %s", a.Class, b.Class, time.Since(start).Seconds(), res.Reason, res.Error))
			case res.Path == "relay":
				relay++
			default:
				direct++
			}
		})
	}
	wg.Wait()
	sample(time.Since(start))
	took := time.Since(start)
	detail := fmt.Sprintf("%v: %d connects (%d direct, %d relay), %d failed, %d faults", took.Round(time.Second), connects, direct, relay, len(failed), faults)
	ok := connects > 0 && len(failed) == 0
	if len(failed) > 0 {
		detail += "; failures: " + strings.Join(failed[:min(len(failed), 5)], " | ")
	}
	worst, bounded := soakBounds(samples, took)
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
