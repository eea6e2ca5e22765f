package portmap

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

var (
	testGateway  = netip.MustParseAddr("192.0.2.1")
	testLocal    = netip.MustParseAddr("192.0.2.10")
	testExternal = netip.MustParseAddrPort("203.0.113.7:40000")
)

// scripted is a client whose answers the test scripts; it records when
// it was called (in the bubble's time, since start).
type scripted struct {
	start time.Time
	// onMap answers the n-th Map (from 0) at elapsed; nil: granted
	// (testExternal, the lease asked, a consistent epoch).
	onMap func(n int, elapsed time.Duration, lease time.Duration) (mapping, error)
	// onCheck answers the n-th Check; nil: a consistent epoch.
	onCheck func(n int, elapsed time.Duration) (checkResult, error)

	mu      sync.Mutex
	maps    []time.Duration
	prevs   []netip.AddrPort
	checks  []time.Duration
	deletes []mapping
}

// epochAt is the epoch of a server that started 1000 s before the test.
func epochAt(elapsed time.Duration) uint32 { return 1000 + uint32(elapsed/time.Second) }

func (s *scripted) Map(_ context.Context, lease time.Duration, prev netip.AddrPort) (mapping, error) {
	s.mu.Lock()
	n, el := len(s.maps), time.Since(s.start)
	s.maps = append(s.maps, el)
	s.prevs = append(s.prevs, prev)
	s.mu.Unlock()
	if s.onMap != nil {
		return s.onMap(n, el, lease)
	}
	return mapping{external: testExternal, lease: lease, epoch: epochAt(el), hasEpoch: true}, nil
}

func (s *scripted) Check(_ context.Context, _ mapping) (checkResult, error) {
	s.mu.Lock()
	n, el := len(s.checks), time.Since(s.start)
	s.checks = append(s.checks, el)
	s.mu.Unlock()
	if s.onCheck != nil {
		return s.onCheck(n, el)
	}
	return checkResult{epoch: epochAt(el), hasEpoch: true}, nil
}

func (s *scripted) Delete(_ context.Context, cur mapping) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.deletes = append(s.deletes, cur)
	return nil
}

func (s *scripted) mapTimes() []time.Duration {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]time.Duration(nil), s.maps...)
}

func (s *scripted) checkTimes() []time.Duration {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]time.Duration(nil), s.checks...)
}

// changes records the statuses OnChange was called with.
type changes struct {
	mu sync.Mutex
	ss []Status
}

func (c *changes) add(s Status) {
	c.mu.Lock()
	c.ss = append(c.ss, s)
	c.mu.Unlock()
}

func (c *changes) all() []Status {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]Status(nil), c.ss...)
}

// loopConfig is a Config of a forced protocol whose clients are s.
func loopConfig(s *scripted, ch *changes) Config {
	return Config{
		Protocol:     PCP,
		Gateway:      testGateway,
		LocalAddr:    testLocal,
		Port:         4242,
		Check:        -1,
		OnChange:     ch.add,
		announceAddr: "-",
		dial: func(context.Context, Protocol, target) (client, error) {
			return s, nil
		},
	}
}

// startLoop makes and starts a Mapper of cfg in the bubble; the test
// closes it.
func startLoop(t *testing.T, cfg Config) *Mapper {
	t.Helper()
	m, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := m.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	return m
}

func equalTimes(got, want []time.Duration) bool {
	if len(got) != len(want) {
		return false
	}
	for i := range got {
		if got[i] != want[i] {
			return false
		}
	}
	return true
}

func TestRenewAtHalfLease(t *testing.T) {
	tests := []struct {
		name    string
		lease   time.Duration // asked
		granted time.Duration // by the gateway
		wait    time.Duration
		want    []time.Duration
	}{
		{
			name: "2 h granted: renewed every hour", lease: MaxLease, granted: MaxLease,
			wait: 3*time.Hour + time.Minute,
			want: []time.Duration{0, time.Hour, 2 * time.Hour, 3 * time.Hour},
		},
		{
			name: "10 min granted of 2 h: renewed every 5 min", lease: MaxLease, granted: 10 * time.Minute,
			wait: 16 * time.Minute,
			want: []time.Duration{0, 5 * time.Minute, 10 * time.Minute, 15 * time.Minute},
		},
		{
			name: "a day granted of 1 h: renewed at half the hour asked", lease: time.Hour, granted: 24 * time.Hour,
			wait: 61 * time.Minute,
			want: []time.Duration{0, 30 * time.Minute, time.Hour},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				s := &scripted{start: time.Now()}
				s.onMap = func(_ int, el, lease time.Duration) (mapping, error) {
					if lease != tt.lease {
						t.Errorf("asked for %v, want %v", lease, tt.lease)
					}
					return mapping{external: testExternal, lease: grantedLease(uint32(tt.granted/time.Second), lease),
						epoch: epochAt(el), hasEpoch: true}, nil
				}
				var ch changes
				cfg := loopConfig(s, &ch)
				cfg.Lease = tt.lease
				m := startLoop(t, cfg)
				time.Sleep(tt.wait)
				synctest.Wait()
				if got := s.mapTimes(); !equalTimes(got, tt.want) {
					t.Errorf("Map at %v, want %v", got, tt.want)
				}
				st := m.Status()
				if !st.Active || st.External != testExternal || st.RenewedAt != s.start.Add(tt.want[len(tt.want)-1]) || !st.GrantedAt.Equal(s.start) {
					t.Errorf("status %+v", st)
				}
				if n := len(ch.all()); n != 1 {
					t.Errorf("OnChange called %d times for one mapping renewed, want 1", n)
				}
				if err := m.Close(); err != nil {
					t.Fatal(err)
				}
			})
		})
	}
}

func TestRemapAfterEpochReset(t *testing.T) {
	t.Run("found by a check", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			s := &scripted{start: time.Now()}
			s.onCheck = func(n int, el time.Duration) (checkResult, error) {
				if n >= 1 { // the router restarted 3 s before the second check
					return checkResult{epoch: 3 + uint32((el-2*time.Minute)/time.Second), hasEpoch: true}, nil
				}
				return checkResult{epoch: epochAt(el), hasEpoch: true}, nil
			}
			s.onMap = func(n int, el, lease time.Duration) (mapping, error) {
				e := epochAt(el)
				if n > 0 {
					e = 3 + uint32((el-2*time.Minute)/time.Second)
				}
				return mapping{external: testExternal, lease: lease, epoch: e, hasEpoch: true}, nil
			}
			var ch changes
			cfg := loopConfig(s, &ch)
			cfg.Check = time.Minute
			m := startLoop(t, cfg)
			time.Sleep(3*time.Minute + time.Second)
			synctest.Wait()
			if got, want := s.mapTimes(), []time.Duration{0, 2 * time.Minute}; !equalTimes(got, want) {
				t.Errorf("Map at %v, want %v (mapped again after the check that found the epoch reset)", got, want)
			}
			if got, want := s.checkTimes(), []time.Duration{time.Minute, 2 * time.Minute, 3 * time.Minute}; !equalTimes(got, want) {
				t.Errorf("Check at %v, want %v", got, want)
			}
			cs := ch.all()
			if len(cs) != 2 || !cs[1].Active || !cs[1].GrantedAt.Equal(s.start.Add(2*time.Minute)) {
				t.Errorf("OnChange: %+v; want the grant, then the grant anew at 2 min", cs)
			}
			if err := m.Close(); err != nil {
				t.Fatal(err)
			}
		})
	})
	t.Run("found by a renewal", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			s := &scripted{start: time.Now()}
			s.onMap = func(n int, el, lease time.Duration) (mapping, error) {
				e := epochAt(el)
				if n == 1 { // the router restarted 10 s before the renewal
					e = 10
				}
				return mapping{external: testExternal, lease: lease, epoch: e, hasEpoch: true}, nil
			}
			var ch changes
			m := startLoop(t, loopConfig(s, &ch))
			time.Sleep(time.Hour + time.Second)
			synctest.Wait()
			cs := ch.all()
			if len(cs) != 2 || !cs[1].GrantedAt.Equal(s.start.Add(time.Hour)) {
				t.Errorf("OnChange: %+v; want the grant, then the grant anew at 1 h", cs)
			}
			if err := m.Close(); err != nil {
				t.Fatal(err)
			}
		})
	})
}

func TestRemapAfterFailedRenewal(t *testing.T) {
	moved := netip.MustParseAddrPort("203.0.113.7:40001")
	tests := []struct {
		name      string
		fail      map[int]bool // the Map calls that fail
		want      []time.Duration
		wantLost  bool // OnChange saw the mapping inactive
		wantFinal netip.AddrPort
	}{
		{
			name: "the renewal fails, mapping again at once works",
			fail: map[int]bool{1: true},
			want: []time.Duration{0, time.Hour, time.Hour},
		},
		{
			name:     "the renewal and the round after fail: lost, then mapped after the backoff",
			fail:     map[int]bool{1: true, 2: true},
			want:     []time.Duration{0, time.Hour, time.Hour, time.Hour + 2*time.Second},
			wantLost: true,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				s := &scripted{start: time.Now()}
				s.onMap = func(n int, el, lease time.Duration) (mapping, error) {
					if tt.fail[n] {
						return mapping{}, fmt.Errorf("%w (scripted)", ErrNoAnswer)
					}
					ext := testExternal
					if n > 0 {
						ext = moved
					}
					return mapping{external: ext, lease: lease, epoch: epochAt(el), hasEpoch: true}, nil
				}
				var ch changes
				cfg := loopConfig(s, &ch)
				cfg.retryBase, cfg.retryMax = 2*time.Second, time.Minute
				m := startLoop(t, cfg)
				time.Sleep(time.Hour + 10*time.Second)
				synctest.Wait()
				got := s.mapTimes()
				if len(got) != len(tt.want) {
					t.Fatalf("Map at %v, want %v", got, tt.want)
				}
				for i := range got { // the backoff is jittered by 10 %
					if d := got[i] - tt.want[i]; d < -200*time.Millisecond || d > 200*time.Millisecond {
						t.Errorf("Map %d at %v, want about %v", i, got[i], tt.want[i])
					}
				}
				lost := false
				for _, c := range ch.all() {
					lost = lost || !c.Active
				}
				if lost != tt.wantLost {
					t.Errorf("OnChange saw the loss: %v, want %v (%+v)", lost, tt.wantLost, ch.all())
				}
				if st := m.Status(); !st.Active || st.External != moved {
					t.Errorf("status %+v, want active on %v", st, moved)
				}
				if err := m.Close(); err != nil {
					t.Fatal(err)
				}
			})
		})
	}
}

func TestBackoffBounded(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		s := &scripted{start: time.Now()}
		s.onMap = func(int, time.Duration, time.Duration) (mapping, error) {
			return mapping{}, &ResultError{Protocol: PCP, Code: pcpNotAuthorized}
		}
		var ch changes
		cfg := loopConfig(s, &ch)
		cfg.retryBase, cfg.retryMax = 2*time.Second, time.Minute
		m := startLoop(t, cfg)
		time.Sleep(30 * time.Minute)
		synctest.Wait()
		got := s.mapTimes()
		// 2, 4, 8, 16, 32 s, then a minute: 6 retries in the first 2 min,
		// then one a minute.
		if len(got) < 30 || len(got) > 38 {
			t.Fatalf("%d attempts in 30 min: %v", len(got), got)
		}
		want := 2 * time.Second
		for i := 1; i < len(got); i++ {
			gap := got[i] - got[i-1]
			if gap < want*9/10 || gap > want*11/10 {
				t.Errorf("attempt %d after %v, want %v ±10 %%", i, gap, want)
			}
			want = min(2*want, time.Minute)
		}
		st := m.Status()
		if st.Active || st.Probes[0].Result != Refused || st.Probes[0].Code != pcpNotAuthorized || st.LastError == "" {
			t.Errorf("status %+v", st)
		}
		if st.Probes[1].Result != NotTried || st.Probes[2].Result != NotTried {
			t.Errorf("forced PCP, but probes %+v", st.Probes)
		}
		if len(ch.all()) != 0 {
			t.Errorf("OnChange called without a mapping: %+v", ch.all())
		}
		if err := m.Close(); err != nil {
			t.Fatal(err)
		}
		if len(s.deletes) != 0 {
			t.Errorf("deleted %v without a mapping", s.deletes)
		}
	})
}

func TestCloseDeletes(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		s := &scripted{start: time.Now()}
		var ch changes
		reg := prometheus.NewRegistry()
		cfg := loopConfig(s, &ch)
		cfg.Registerer = reg
		m := startLoop(t, cfg)
		synctest.Wait()
		if !m.Status().Active {
			t.Fatal("not mapped")
		}
		if v := testutil.ToFloat64(m.met.active.WithLabelValues("pcp")); v != 1 {
			t.Errorf("active gauge %v while mapped", v)
		}
		if err := m.Close(); err != nil {
			t.Fatal(err)
		}
		if len(s.deletes) != 1 || s.deletes[0].external != testExternal {
			t.Fatalf("deleted %+v, want the mapping of %v once", s.deletes, testExternal)
		}
		if m.Status().Active {
			t.Error("active after Close")
		}
		if v := testutil.ToFloat64(m.met.active.WithLabelValues("pcp")); v != 0 {
			t.Errorf("active gauge %v after Close", v)
		}
		if err := m.Close(); err != nil || len(s.deletes) != 1 {
			t.Errorf("second Close: %v, %d deletions", err, len(s.deletes))
		}
		if err := m.Start(context.Background()); !errors.Is(err, ErrClosed) {
			t.Errorf("Start after Close: %v", err)
		}
	})
}

func TestCloseEndsTheLoopWhenStartsContextEnds(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		s := &scripted{start: time.Now()}
		var ch changes
		m, err := New(loopConfig(s, &ch))
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		if err := m.Start(ctx); err != nil {
			t.Fatal(err)
		}
		if err := m.Start(ctx); !errors.Is(err, ErrStarted) {
			t.Errorf("second Start: %v", err)
		}
		synctest.Wait()
		cancel()
		synctest.Wait() // the loop ended and deleted the mapping
		if len(s.deletes) != 1 {
			t.Errorf("%d deletions after the context ended", len(s.deletes))
		}
		if err := m.Close(); err != nil {
			t.Fatal(err)
		}
	})
}

func TestRemap(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		s := &scripted{start: time.Now()}
		var ch changes
		m := startLoop(t, loopConfig(s, &ch))
		time.Sleep(10 * time.Minute)
		m.Remap()
		synctest.Wait()
		if got, want := s.mapTimes(), []time.Duration{0, 10 * time.Minute}; !equalTimes(got, want) {
			t.Errorf("Map at %v, want %v", got, want)
		}
		if s.prevs[1] != testExternal {
			t.Errorf("mapping again on the same gateway suggested %v, want %v", s.prevs[1], testExternal)
		}
		if n := len(ch.all()); n != 2 {
			t.Errorf("OnChange called %d times, want 2 (granted, granted anew)", n)
		}
		if err := m.Close(); err != nil {
			t.Fatal(err)
		}
	})
}

func TestRemapCutsTheBackoff(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		s := &scripted{start: time.Now()}
		s.onMap = func(n int, el, lease time.Duration) (mapping, error) {
			if n < 8 {
				return mapping{}, ErrNoAnswer
			}
			return mapping{external: testExternal, lease: lease}, nil
		}
		var ch changes
		m := startLoop(t, loopConfig(s, &ch))
		time.Sleep(10 * time.Minute) // waiting about 5 min between attempts by now
		synctest.Wait()
		n := len(s.mapTimes())
		m.Remap()
		synctest.Wait()
		got := s.mapTimes()
		if len(got) != n+1 || got[n] != 10*time.Minute {
			t.Errorf("Map at %v; want one more at 10 min, at once after Remap", got)
		}
		if err := m.Close(); err != nil {
			t.Fatal(err)
		}
	})
}

func TestAnnouncementTriggersCheck(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		s := &scripted{start: time.Now()}
		var ch changes
		reg := prometheus.NewRegistry()
		cfg := loopConfig(s, &ch)
		cfg.Registerer = reg
		m := startLoop(t, cfg)
		time.Sleep(time.Minute)
		announce := unhex(t, `02 80 00 00  00000000  00000003  00000000 00000000 00000000`)
		gw := netip.AddrPortFrom(testGateway, defaultServerPort)
		m.announced(announce, netip.AddrPortFrom(testGateway, 5352)) // not the server port
		m.announced(announce, netip.AddrPortFrom(testExternal.Addr(), defaultServerPort))
		m.announced([]byte{2, 0x80, 0}, gw)
		synctest.Wait()
		if got := s.checkTimes(); len(got) != 0 {
			t.Fatalf("checked at %v after foreign or malformed announcements", got)
		}
		if v := testutil.ToFloat64(m.met.ignored.WithLabelValues("pcp", ignoredForeign)); v != 2 {
			t.Errorf("%v foreign announcements counted, want 2", v)
		}
		if v := testutil.ToFloat64(m.met.ignored.WithLabelValues("pcp", ignoredMalformed)); v != 1 {
			t.Errorf("%v malformed announcements counted, want 1", v)
		}
		m.announced(announce, gw)
		synctest.Wait()
		if got, want := s.checkTimes(), []time.Duration{time.Minute}; !equalTimes(got, want) {
			t.Errorf("checked at %v, want %v", got, want)
		}
		if err := m.Close(); err != nil {
			t.Fatal(err)
		}
	})
}

func TestAutoOrder(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		upnp := &scripted{start: time.Now()}
		var dialled []Protocol
		var ch changes
		cfg := loopConfig(upnp, &ch)
		cfg.Protocol = Auto
		cfg.dial = func(_ context.Context, p Protocol, _ target) (client, error) {
			dialled = append(dialled, p)
			switch p {
			case PCP:
				return &scripted{onMap: func(int, time.Duration, time.Duration) (mapping, error) {
					return mapping{}, &ResultError{Protocol: PCP, Code: pcpNotAuthorized}
				}}, nil
			case NATPMP:
				return &scripted{onMap: func(int, time.Duration, time.Duration) (mapping, error) {
					return mapping{}, ErrNoAnswer
				}}, nil
			}
			return upnp, nil
		}
		m := startLoop(t, cfg)
		synctest.Wait()
		if want := []Protocol{PCP, NATPMP, UPnP}; fmt.Sprint(dialled) != fmt.Sprint(want) {
			t.Errorf("tried %v, want %v", dialled, want)
		}
		st := m.Status()
		wantProbes := [3]ProbeResult{Refused, NoAnswer, Answered}
		for i, p := range st.Probes {
			if p.Protocol != mappingProtocols[i] || p.Result != wantProbes[i] || p.At.IsZero() {
				t.Errorf("probe %d: %+v, want %v", i, p, wantProbes[i])
			}
		}
		if st.Probes[0].Code != pcpNotAuthorized {
			t.Errorf("PCP refused with %d, want %d", st.Probes[0].Code, pcpNotAuthorized)
		}
		if !st.Active || st.Protocol != UPnP || st.Mode != Auto {
			t.Errorf("status %+v", st)
		}
		if err := m.Close(); err != nil {
			t.Fatal(err)
		}
	})
}

func TestOffSendsNothing(t *testing.T) {
	m, err := New(Config{Protocol: Off, dial: func(context.Context, Protocol, target) (client, error) {
		t.Error("dialled with Protocol Off")
		return nil, ErrConfig
	}})
	if err != nil {
		t.Fatal(err)
	}
	if err := m.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	m.Remap()
	if st := m.Status(); st.Mode != Off || st.Active || st.Probes[0].Result != NotTried {
		t.Errorf("status %+v", st)
	}
	if err := m.Close(); err != nil {
		t.Fatal(err)
	}
}

func TestEpochConsistent(t *testing.T) {
	at := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	tests := []struct {
		name      string
		prev, cur uint32
		elapsed   time.Duration
		want      bool
	}{
		{"in step", 1000, 1060, time.Minute, true},
		{"one second back (rounding)", 1000, 999, 0, true},
		{"two seconds back", 1000, 998, 0, false},
		{"reset to 0", 1000, 0, time.Minute, false},
		{"the server 2 s ahead", 1000, 1062, time.Minute, true},
		{"the server slow by a sixteenth and 2 s", 1000, 1000 + 3600 - 225 - 2, time.Hour, true},
		{"the server far behind", 1000, 1000 + 1800, time.Hour, false},
		{"the server far ahead", 1000, 1000 + 7200, time.Hour, false},
		{"at the top of the range", 1<<32 - 61, 1<<32 - 1, time.Minute, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := epochConsistent(tt.prev, at, tt.cur, at.Add(tt.elapsed)); got != tt.want {
				t.Errorf("epochConsistent(%d, %d after %v) = %v, want %v", tt.prev, tt.cur, tt.elapsed, got, tt.want)
			}
		})
	}
}
