package migration

import (
	"errors"
	"slices"
	"sync"
	"testing"
	"testing/synctest"
	"time"
)

// fakeMover is a connection whose counters the test drives and whose
// moves it records, on virtual time.
type fakeMover struct {
	mu         sync.Mutex
	direct     bool
	sending    bool // each look finds more packets sent
	answering  bool // each look finds more packets received
	sent, recv uint64
	start      time.Time
	pings      []time.Duration // when, since start
	fallbacks  []time.Duration
	silent     []time.Duration
	upgrades   []time.Duration
	upgradeOK  func(attempt int) bool
	displaced  bool
	returns    []time.Duration
	returnOK   func(attempt int) bool
}

func (f *fakeMover) Stats() (uint64, uint64, time.Duration) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.sending {
		f.sent++
	}
	if f.answering {
		f.recv++
	}
	return f.sent, f.recv, 10 * time.Millisecond
}

func (f *fakeMover) Direct() bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.direct
}

func (f *fakeMover) Ping() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.pings = append(f.pings, time.Since(f.start))
	return nil
}

func (f *fakeMover) Fallback(silent time.Duration) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.fallbacks = append(f.fallbacks, time.Since(f.start))
	f.silent = append(f.silent, silent)
	f.direct = false
	return nil
}

func (f *fakeMover) Upgrade() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.attempt(&f.upgrades, f.upgradeOK, func() { f.direct = true }, "no direct path yet")
}

// attempt records a move's attempt in at and, when ok says so, makes it
// (done); else it fails with msg.
func (f *fakeMover) attempt(at *[]time.Duration, ok func(int) bool, done func(), msg string) error {
	*at = append(*at, time.Since(f.start))
	if ok != nil && ok(len(*at)) {
		done()
		return nil
	}
	return errors.New(msg)
}

func (f *fakeMover) Displaced() bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.displaced
}

func (f *fakeMover) Return() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.attempt(&f.returns, f.returnOK, func() { f.displaced = false }, "no IPv6 path yet")
}

func testConfig() PathConfig {
	return PathConfig{Check: 250 * time.Millisecond, DeadAfter: 1500 * time.Millisecond,
		UpgradeBase: time.Second, UpgradeMax: 4 * time.Second, Keepalive: func() time.Duration { return time.Second }}
}

// TestPathDeadThenUpgrade: a direct path that keeps sending and hears
// nothing is moved to the relay once silent for DeadAfter (counted from
// the first look that found packets owed), and the relayed connection
// then tries to upgrade 1 s, 2 s, 4 s, 4 s ... after the move until
// one attempt works; then the direct path is watched again.
func TestPathDeadThenUpgrade(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := &fakeMover{direct: true, sending: true, start: time.Now(), upgradeOK: func(n int) bool { return n == 3 }}
		done := make(chan struct{})
		p := NewPath(testConfig(), f, done)
		go p.Run()
		time.Sleep(20 * time.Second)
		close(done)
		synctest.Wait()
		f.mu.Lock()
		defer f.mu.Unlock()
		// Looks at 0.25 s (first), 0.5 s (owed from here), ... 2.0 s: dead.
		if len(f.fallbacks) < 1 || f.fallbacks[0] != 2*time.Second || f.silent[0] != 1500*time.Millisecond {
			t.Fatalf("fallbacks at %v (silent %v), want the first at 2s after 1.5s of silence", f.fallbacks, f.silent)
		}
		want := []time.Duration{3 * time.Second, 5 * time.Second, 9 * time.Second, 12 * time.Second}
		if len(f.upgrades) < 4 || f.upgrades[0] != want[0] || f.upgrades[1] != want[1] || f.upgrades[2] != want[2] || f.upgrades[3] != want[3] {
			t.Fatalf("upgrades at %v, want %v first", f.upgrades, want)
		}
		// Direct again at 9 s and still silent: watched again (the first
		// look at 9.25 s, owed from 9.5 s), moved again at 11 s, and the
		// upgrade schedule starts over (12 s).
		if len(f.fallbacks) != 2 || f.fallbacks[1] != 11*time.Second {
			t.Fatalf("fallbacks %v, want [2s 11s]", f.fallbacks)
		}
	})
}

// TestPathKeepalive: an idle direct path is pinged at the keepalive pace
// (within a look), and a busy one is not.
func TestPathKeepalive(t *testing.T) {
	tests := []struct {
		name    string
		sending bool
		pings   int
	}{
		{"idle", false, 5}, // at 1, 2, 3, 4, 5 s: a second after the last packet sent, checked every 250 ms
		{"sending", true, 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				f := &fakeMover{direct: true, sending: tc.sending, answering: true, start: time.Now()}
				done := make(chan struct{})
				go NewPath(testConfig(), f, done).Run()
				time.Sleep(5*time.Second + time.Millisecond)
				close(done)
				synctest.Wait()
				f.mu.Lock()
				defer f.mu.Unlock()
				if len(f.pings) != tc.pings || len(f.fallbacks) != 0 {
					t.Fatalf("pings at %v, fallbacks %v; want %d pings, no fallback", f.pings, f.fallbacks, tc.pings)
				}
			})
		})
	}
}

// TestPathWaits: no fallback while another move holds the path, no
// upgrade while the node is busy or upgrades are off; done ends Run.
func TestPathWaits(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := &fakeMover{direct: true, sending: true, start: time.Now()}
		done := make(chan struct{})
		p := NewPath(testConfig(), f, done)
		if !p.Begin() {
			t.Fatal("Begin on a free path")
		}
		ended := make(chan struct{})
		go func() { p.Run(); close(ended) }()
		time.Sleep(10 * time.Second)
		synctest.Wait()
		f.mu.Lock()
		n := len(f.fallbacks)
		f.mu.Unlock()
		if n != 0 {
			t.Fatalf("%d fallbacks while another move held the path", n)
		}
		close(done)
		synctest.Wait()
		select {
		case <-ended:
		default:
			t.Fatal("Run did not end with done")
		}
	})
	synctest.Test(t, func(t *testing.T) {
		busy := true
		cfg := testConfig()
		cfg.Busy = func() bool { return busy }
		f := &fakeMover{start: time.Now(), upgradeOK: func(int) bool { return true }}
		done := make(chan struct{})
		go NewPath(cfg, f, done).Run()
		time.Sleep(10 * time.Second)
		synctest.Wait()
		f.mu.Lock()
		if len(f.upgrades) != 0 {
			t.Fatalf("upgrades %v while busy", f.upgrades)
		}
		f.mu.Unlock()
		close(done)
		synctest.Wait()
	})
	synctest.Test(t, func(t *testing.T) {
		cfg := testConfig()
		cfg.UpgradeBase = -1
		f := &fakeMover{start: time.Now()}
		ended := make(chan struct{})
		go func() { NewPath(cfg, f, make(chan struct{})).Run(); close(ended) }()
		synctest.Wait()
		select {
		case <-ended: // nothing to do on the relay
		default:
			t.Fatal("Run kept going with upgrades off")
		}
	})
}

// TestPathReturns: a direct connection displaced from its preferred
// family tries to go back 1 s, 2 s, 4 s, 4 s ... apart (a look's period
// late at most) until one attempt works, and then no more; one that is
// not displaced never tries.
func TestPathReturns(t *testing.T) {
	for _, tc := range []struct {
		name      string
		displaced bool
		want      []time.Duration
	}{
		{"displaced", true, []time.Duration{1250 * time.Millisecond, 3250 * time.Millisecond, 7250 * time.Millisecond}},
		{"in its family", false, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				f := &fakeMover{direct: true, sending: true, answering: true, displaced: tc.displaced, start: time.Now(),
					returnOK: func(n int) bool { return n == 3 }}
				done := make(chan struct{})
				p := NewPath(testConfig(), f, done)
				go p.Run()
				time.Sleep(20 * time.Second)
				close(done)
				synctest.Wait()
				f.mu.Lock()
				defer f.mu.Unlock()
				if !slices.Equal(f.returns, tc.want) || f.displaced || len(f.fallbacks) != 0 {
					t.Fatalf("returns at %v (want %v), displaced %v, fallbacks %v", f.returns, tc.want, f.displaced, f.fallbacks)
				}
			})
		})
	}
}
