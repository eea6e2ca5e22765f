package bootstrap

// A bootstrap restart at scale: a fleet registered with the child's
// bootstrap (see scale_test.go), the bootstrap closed and started again
// on the same address with the same identity, and the time until every
// peer is registered again, with the bootstrap's CPU time per
// registration for the fleet's first registrations (full TLS handshakes)
// and for its return (resumed sessions).

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/quic-go/quic-go"
)

// restart closes the child's bootstrap and starts it again on the same
// address with the same identity. It returns the child's CPU time once
// the old one had closed.
func (s *scaleServer) restart() (time.Duration, error) {
	if _, err := io.WriteString(s.in, "restart\n"); err != nil {
		return 0, err
	}
	l, err := s.next()
	if err != nil {
		return 0, err
	}
	ns, ok := strings.CutPrefix(l, "closed ")
	if !ok {
		return 0, fmt.Errorf("scale child said %q, want closed", l)
	}
	cpu, err := strconv.ParseInt(ns, 10, 64)
	if err != nil {
		return 0, err
	}
	if l, err = s.next(); err != nil {
		return 0, err
	}
	if l != "restarted" {
		return 0, fmt.Errorf("scale child said %q, want restarted", l)
	}
	return time.Duration(cpu), nil
}

// peers returns the number of peers the child's bootstrap holds.
func (s *scaleServer) peers() (int, error) {
	if _, err := io.WriteString(s.in, "peers\n"); err != nil {
		return 0, err
	}
	l, err := s.next()
	if err != nil {
		return 0, err
	}
	return strconv.Atoi(l)
}

// errNotBack: not every peer came back within the wait.
var errNotBack = errors.New("peers not registered again in time")

// restartOutcome is what a restart of the fleet's bootstrap measured.
type restartOutcome struct {
	closing  time.Duration   // closing the old bootstrap and starting the new one
	back     time.Duration   // from the new bootstrap's start until all are back
	returned []time.Duration // when each peer that came back registered, from the new start
	resumed  int             // of the re-registrations, those that resumed
	cpu      time.Duration   // the bootstrap's CPU time from its new start until all are back
}

// percentile returns the p-th percentile of the return times (sorted in
// place).
func (o restartOutcome) percentile(p float64) time.Duration {
	if len(o.returned) == 0 {
		return 0
	}
	slices.Sort(o.returned)
	return o.returned[min(len(o.returned)-1, int(float64(len(o.returned))*p/100))]
}

// restartFleet restarts the bootstrap of f and waits (at most wait) until
// every peer has registered again: a new registration (Status.Session
// past the one before), current. Peers not back by then make an error
// matching errNotBack, with the outcome until then (back is the wait).
func (f *fleet) restartFleet(ctx context.Context, wait time.Duration) (restartOutcome, error) {
	var out restartOutcome
	if err := f.waitTickets(ctx, 30*time.Second); err != nil {
		return out, err
	}
	before := make([]uint64, len(f.clients))
	for i, c := range f.clients {
		before[i] = c.Status().Session
	}
	if p := os.Getenv("ANTNODE_SCALE_CPU_PROFILE"); p != "" {
		// A CPU profile of the bootstrap from the restart until all are back.
		io.WriteString(f.srv.in, "cpu "+p+".restart\n")
		defer io.WriteString(f.srv.in, "cpu-stop\n")
	}
	t0 := time.Now()
	cpu0, err := f.srv.restart()
	if err != nil {
		return out, err
	}
	out.closing = time.Since(t0)
	t0 = time.Now()
	pending := make([]int, len(f.clients))
	for i := range pending {
		pending[i] = i
	}
	var trace func(string)
	if tb, ok := ctx.Value(traceKey{}).(testing.TB); ok {
		trace = func(s string) { tb.Log(s) }
		trace(fmt.Sprintf("closed and started again in %v", out.closing))
	}
	lastTrace := time.Now()
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	deadline := time.NewTimer(wait)
	defer deadline.Stop()
	for len(pending) > 0 {
		select {
		case <-ctx.Done():
			return out, ctx.Err()
		case <-deadline.C:
			out.back = wait
			cpu1, err := f.srv.cpuTime()
			out.cpu = cpu1 - cpu0
			return out, errors.Join(err, fmt.Errorf("%w: %d of %d after %v", errNotBack, len(pending), len(f.clients), wait))
		case <-tick.C:
		}
		left := pending[:0]
		for _, i := range pending {
			st := f.clients[i].Status()
			if !st.Registered || st.Session <= before[i] {
				left = append(left, i)
				continue
			}
			out.returned = append(out.returned, st.Since.Sub(t0))
			out.back = max(out.back, st.Since.Sub(t0))
			if st.Resumed {
				out.resumed++
			}
		}
		pending = left
		if trace != nil && time.Since(lastTrace) >= time.Second {
			lastTrace = time.Now()
			trace(f.pendingReasons(pending, time.Since(t0)))
		}
	}
	cpu1, err := f.srv.cpuTime()
	if err != nil {
		return out, err
	}
	out.cpu = cpu1 - cpu0
	return out, nil
}

// waitTickets waits (at most wait) until every peer has received a TLS
// session ticket (one each: the peers of a fleet that has not restarted
// yet have each had one connection).
func (f *fleet) waitTickets(ctx context.Context, wait time.Duration) error {
	deadline := time.Now().Add(wait)
	for f.tickets.Load() < int64(len(f.clients)) {
		if time.Now().After(deadline) {
			return fmt.Errorf("%d of %d peers hold a session ticket after %v", f.tickets.Load(), len(f.clients), wait)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
	}
	return nil
}

// traceKey, in a context, holds a testing.TB that restartFleet logs its
// progress to every second (ANTNODE_RESTART_TRACE).
type traceKey struct{}

// pendingReasons says how many of the peers are not back yet, and why by
// the reasons of their last errors.
func (f *fleet) pendingReasons(pending []int, after time.Duration) string {
	reasons := map[string]int{}
	sample := map[string]string{}
	for _, i := range pending {
		st := f.clients[i].Status()
		r := "none"
		if st.LastError != nil {
			r = string(classify(st.LastError))
			var te *quic.TransportError
			if errors.As(st.LastError, &te) {
				r += "/" + te.ErrorCode.String()
			}
		}
		reasons[r]++
		if st.LastError != nil {
			sample[r] = st.LastError.Error()
		}
	}
	return fmt.Sprintf("%v: %d not back: %v (e.g. %q)", after.Round(time.Millisecond), len(pending), reasons, sample)
}

// registerFleet grows f to n peers and returns the bootstrap's CPU time
// for it and how long it took.
func registerFleet(ctx context.Context, f *fleet, n int) (cpu, took time.Duration, err error) {
	cpu0, err := f.srv.cpuTime()
	if err != nil {
		return 0, 0, err
	}
	if p := os.Getenv("ANTNODE_SCALE_CPU_PROFILE"); p != "" {
		io.WriteString(f.srv.in, "cpu "+p+".full\n")
		defer io.WriteString(f.srv.in, "cpu-stop\n")
	}
	t0 := time.Now()
	if err := f.grow(ctx, n); err != nil {
		return 0, 0, err
	}
	took = time.Since(t0)
	cpu1, err := f.srv.cpuTime()
	return cpu1 - cpu0, took, err
}

// TestRestartHarness runs the restart benchmark small, so that what it
// relies on holds in CI: every peer comes back after the restart, every
// one by resuming its TLS session, and the bootstrap holds them all.
func TestRestartHarness(t *testing.T) {
	const n = 200
	srv := startScaleServer(t, "bootstrap")
	f := &fleet{srv: srv}
	defer f.close()
	if _, _, err := registerFleet(t.Context(), f, n); err != nil {
		t.Fatal(err)
	}
	out, err := f.restartFleet(t.Context(), 60*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if out.resumed != n {
		t.Fatalf("%d of %d peers resumed their session", out.resumed, n)
	}
	if got, err := srv.peers(); err != nil || got != n {
		t.Fatalf("the restarted bootstrap holds %d peers (%v), want %d", got, err, n)
	}
	t.Logf("%d peers back in %v, bootstrap CPU %v, %d session tickets received", n, out.back, out.cpu, f.tickets.Load())
}

// restartPeers is the fleet size of BenchmarkBootstrapRestart:
// ANTNODE_RESTART_PEERS, or 10 000.
func restartPeers(tb testing.TB) int {
	v := os.Getenv("ANTNODE_RESTART_PEERS")
	if v == "" {
		return 10000
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 2 {
		tb.Fatalf("ANTNODE_RESTART_PEERS=%q: want a number of at least 2", v)
	}
	return n
}

// BenchmarkBootstrapRestart registers a fleet (10 000 peers, or
// ANTNODE_RESTART_PEERS) with one bootstrap in its own process, then, in
// each iteration, closes the bootstrap and starts it again on the same
// address with the same identity, and waits until every peer is
// registered again. Reported:
//
//   - restart-s: from the new bootstrap's start until the last peer is
//     back. Each peer first waits a random time over the registry size
//     it was told last (in a heartbeat's answer: the restart comes 11 s
//     after the fleet registered) at ClientConfig.ReturnRate, at most
//     MaxReturnSpread (2 000/s and 5 s; ANTNODE_RESTART_RATE sets the
//     rate, and a spread that fits the fleet at it);
//   - p50-back-s, p90-back-s: when half, and nine in ten, were back;
//   - back-%: the peers back within a minute (restart-s is then the
//     minute);
//   - close-s: closing the old bootstrap (telling its peers), collecting
//     its garbage and starting the new one;
//   - return-reg/s: the fleet over that time;
//   - resumed-%: the returns that resumed their TLS session;
//   - full-CPU-µs/reg: the bootstrap's CPU time (user and system) per
//     registration of the fleet's first registration (full handshakes,
//     256 at a time);
//   - resumed-CPU-µs/reg: the same for the return after the restart
//     (resumed sessions), over the peers back;
//   - resumed/full: their ratio;
//   - first-reg/s: the rate of the fleet's first registration.
//
// Both ends of every registration run on this machine's cores; the
// load generator (the peers) takes about as much CPU as the bootstrap.
func BenchmarkBootstrapRestart(b *testing.B) {
	n := restartPeers(b)
	ctx := b.Context()
	srv := startScaleServer(b, "bootstrap")
	f := &fleet{srv: srv}
	defer f.close()
	if v := os.Getenv("ANTNODE_RESTART_RATE"); v != "" {
		// The peers' ReturnRate, and a MaxReturnSpread that lets the
		// whole fleet spread at it.
		r, err := strconv.ParseFloat(v, 64)
		if err != nil || r <= 0 {
			b.Fatalf("ANTNODE_RESTART_RATE=%q: want registrations per second", v)
		}
		f.returnRate, f.returnSpread = r, time.Duration(float64(n)/r*float64(time.Second))+time.Second
	}
	fullCPU, took, err := registerFleet(ctx, f, n)
	if err != nil {
		b.Fatal(err)
	}
	// A fleet at rest: every peer has heard the registry's size in a
	// heartbeat's answer (the default heartbeat is 10 s).
	time.Sleep(11 * time.Second)
	b.Run(fmt.Sprintf("peers=%d", n), func(b *testing.B) {
		rctx := ctx
		if os.Getenv("ANTNODE_RESTART_TRACE") != "" {
			rctx = context.WithValue(ctx, traceKey{}, testing.TB(b))
		}
		var all restartOutcome
		for range b.N {
			out, err := f.restartFleet(rctx, time.Minute)
			if errors.Is(err, errNotBack) {
				b.Log(err) // reported: back-% under 100, restart-s the wait
			} else if err != nil {
				b.Fatal(err)
			}
			all.back += out.back
			all.closing += out.closing
			all.cpu += out.cpu
			all.resumed += out.resumed
			all.returned = append(all.returned, out.returned...)
		}
		reportRestart(b, all, n, fullCPU, took)
	})
}

// reportRestart reports the metrics of BenchmarkBootstrapRestart over
// b.N restarts of a fleet of n peers that first registered in took,
// costing the bootstrap fullCPU.
func reportRestart(b *testing.B, all restartOutcome, n int, fullCPU, took time.Duration) {
	runs := float64(b.N)
	regs := float64(len(all.returned))
	full := fullCPU.Seconds() / float64(n)
	res := all.cpu.Seconds() / max(regs, 1)
	b.ReportMetric(all.back.Seconds()/runs, "restart-s")
	b.ReportMetric(all.percentile(50).Seconds(), "p50-back-s")
	b.ReportMetric(all.percentile(90).Seconds(), "p90-back-s")
	b.ReportMetric(100*regs/(float64(n)*runs), "back-%")
	b.ReportMetric(all.closing.Seconds()/runs, "close-s")
	b.ReportMetric(regs/all.back.Seconds(), "return-reg/s")
	b.ReportMetric(100*float64(all.resumed)/max(regs, 1), "resumed-%")
	b.ReportMetric(full*1e6, "full-CPU-µs/reg")
	b.ReportMetric(res*1e6, "resumed-CPU-µs/reg")
	b.ReportMetric(res/full, "resumed/full")
	b.ReportMetric(float64(n)/took.Seconds(), "first-reg/s")
}
