package migration

import (
	"errors"
	"net/netip"
	"slices"
	"sync"
	"testing"
	"time"
)

func addrs(ss ...string) []netip.Addr {
	var out []netip.Addr
	for _, s := range ss {
		out = append(out, netip.MustParseAddr(s))
	}
	slices.SortFunc(out, func(a, b netip.Addr) int { return a.Compare(b) })
	return out
}

func TestDiff(t *testing.T) {
	tests := []struct {
		name                string
		prev, cur           []netip.Addr
		wantAdded, wantGone []netip.Addr
	}{
		{"same", addrs("10.0.0.2"), addrs("10.0.0.2"), nil, nil},
		{"new lease", addrs("10.0.0.2"), addrs("10.0.0.3"), addrs("10.0.0.3"), addrs("10.0.0.2")},
		{"second interface up", addrs("10.0.0.2"), addrs("10.0.0.2", "192.168.1.5"), addrs("192.168.1.5"), nil},
		{"interface down", addrs("10.0.0.2", "192.168.1.5"), addrs("192.168.1.5"), nil, addrs("10.0.0.2")},
		{"from nothing", nil, addrs("10.0.0.2", "2001:db8::1"), addrs("10.0.0.2", "2001:db8::1"), nil},
		{"to nothing", addrs("10.0.0.2"), nil, nil, addrs("10.0.0.2")},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			a, r := Diff(tc.prev, tc.cur)
			if !slices.Equal(a, tc.wantAdded) || !slices.Equal(r, tc.wantGone) {
				t.Fatalf("added %v removed %v", a, r)
			}
		})
	}
}

func TestUpgradeDelay(t *testing.T) {
	tests := []struct {
		n    int
		want time.Duration
	}{{0, time.Second}, {1, 2 * time.Second}, {3, 8 * time.Second}, {5, 30 * time.Second}, {60, 30 * time.Second}}
	for _, tc := range tests {
		if got := UpgradeDelay(tc.n, time.Second, 30*time.Second); got != tc.want {
			t.Errorf("UpgradeDelay(%d) = %v, want %v", tc.n, got, tc.want)
		}
	}
}

func TestKeepaliveFor(t *testing.T) {
	tests := []struct {
		name     string
		lifetime time.Duration
		want     time.Duration
	}{
		{"not learned", 0, 15 * time.Second},
		{"5 s NAT", 5 * time.Second, 2 * time.Second},
		{"30 s NAT", 30 * time.Second, 12 * time.Second},
		{"long-lived mapping capped", 10 * time.Minute, 15 * time.Second},
		{"absurdly short floored", 100 * time.Millisecond, time.Second},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := KeepaliveFor(tc.lifetime, time.Second, 15*time.Second); got != tc.want {
				t.Fatalf("got %v, want %v", got, tc.want)
			}
		})
	}
}

func TestDeadAfter(t *testing.T) {
	if got := DeadAfter(500*time.Millisecond, 20*time.Millisecond, 3); got != 1500*time.Millisecond {
		t.Fatal(got)
	}
	if got := DeadAfter(500*time.Millisecond, time.Second, 3); got != 4*time.Second {
		t.Fatal(got)
	}
}

func TestWatcher(t *testing.T) {
	var mu sync.Mutex
	cur := addrs("10.0.0.2")
	changes := make(chan Change, 4)
	w, err := NewWatcher(WatcherConfig{Interval: 5 * time.Millisecond,
		Addrs: func() ([]netip.Addr, error) {
			mu.Lock()
			defer mu.Unlock()
			return slices.Clone(cur), nil
		},
		OnChange: func(c Change) { changes <- c }})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	select {
	case c := <-changes:
		t.Fatalf("a change without one: %+v", c)
	case <-time.After(50 * time.Millisecond):
	}
	mu.Lock()
	cur = addrs("10.0.0.3")
	mu.Unlock()
	select {
	case c := <-changes:
		if !slices.Equal(c.Added, addrs("10.0.0.3")) || !slices.Equal(c.Removed, addrs("10.0.0.2")) {
			t.Fatalf("change %+v", c)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no change reported")
	}
	w.Close()
	w.Close()
	if _, err := NewWatcher(WatcherConfig{}); !errors.Is(err, ErrNoOnChange) {
		t.Fatal(err)
	}
}

func TestSilence(t *testing.T) {
	t0 := time.Unix(1000, 0)
	type obs struct {
		at         time.Duration
		sent, recv uint64
		dead       bool
	}
	tests := []struct {
		name string
		seq  []obs
	}{
		{"busy and answered", []obs{{0, 10, 10, false}, {time.Second, 50, 40, false}, {3 * time.Second, 90, 80, false}}},
		{"idle is not dead", []obs{{0, 10, 10, false}, {5 * time.Second, 10, 10, false}, {60 * time.Second, 10, 10, false}}},
		{"sending into silence", []obs{{0, 10, 10, false}, {250 * time.Millisecond, 20, 10, false},
			{time.Second, 40, 10, false}, {1750 * time.Millisecond, 60, 10, true}}},
		{"an answer in time resets", []obs{{0, 10, 10, false}, {250 * time.Millisecond, 20, 10, false},
			{time.Second, 40, 11, false}, {2 * time.Second, 60, 11, false}, {3500 * time.Millisecond, 70, 11, true}}},
		{"a keepalive into a dead path", []obs{{0, 10, 10, false}, {10 * time.Second, 11, 10, false}, {11600 * time.Millisecond, 13, 10, true}}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var s Silence
			for i, o := range tc.seq {
				if got := s.Observe(t0.Add(o.at), o.sent, o.recv, 1500*time.Millisecond); got != o.dead {
					t.Fatalf("observation %d (%+v): dead=%v", i, o, got)
				}
			}
		})
	}
}

func TestStall(t *testing.T) {
	t0 := time.Unix(1000, 0)
	after := 500 * time.Millisecond
	type obs struct {
		at   time.Duration
		recv uint64
		ping bool
	}
	tests := []struct {
		name string
		seq  []obs
	}{
		{"a flow that keeps coming", []obs{{0, 10, false}, {250 * time.Millisecond, 200, false}, {time.Second, 900, false}}},
		{"a flow that stops: one ping", []obs{{0, 10, false}, {250 * time.Millisecond, 200, false},
			{500 * time.Millisecond, 200, false}, {750 * time.Millisecond, 200, true}, {time.Second, 200, false}, {5 * time.Second, 200, false}}},
		{"the ping's answer is no flow", []obs{{0, 10, false}, {250 * time.Millisecond, 200, false},
			{750 * time.Millisecond, 200, true}, {time.Second, 201, false}, {2 * time.Second, 201, false}, {9 * time.Second, 202, false}}},
		{"a new flow after the ping stops again", []obs{{0, 10, false}, {250 * time.Millisecond, 200, false},
			{750 * time.Millisecond, 200, true}, {time.Second, 400, false}, {1500 * time.Millisecond, 400, true}}},
		{"a connection that never had a flow", []obs{{0, 2, false}, {time.Second, 3, false}, {5 * time.Second, 3, false}}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var s Stall
			for i, o := range tc.seq {
				if got := s.Observe(t0.Add(o.at), o.recv, after); got != o.ping {
					t.Fatalf("observation %d (%+v): ping=%v", i, o, got)
				}
			}
		})
	}
}

func TestStallAfter(t *testing.T) {
	for _, tc := range []struct {
		name       string
		check, rtt time.Duration
		want       time.Duration
	}{
		{"two looks", 250 * time.Millisecond, 80 * time.Millisecond, 500 * time.Millisecond},
		{"two round trips", 250 * time.Millisecond, 400 * time.Millisecond, 800 * time.Millisecond},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := StallAfter(tc.check, tc.rtt); got != tc.want {
				t.Errorf("StallAfter(%v, %v) = %v, want %v", tc.check, tc.rtt, got, tc.want)
			}
		})
	}
}
