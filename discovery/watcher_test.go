package discovery

import (
	"context"
	"errors"
	"net/netip"
	"slices"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/antnode/antnode/traversal"
)

// fakeDNS answers Resolve from a set the test changes, counting queries.
type fakeDNS struct {
	mu      sync.Mutex
	res     Result
	err     error
	queries int
}

func (f *fakeDNS) resolve(context.Context, string) (Result, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.queries++
	return f.res, f.err
}

func (f *fakeDNS) set(res Result, err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.res, f.err = res, err
}

func (f *fakeDNS) count() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.queries
}

func boot(s string) traversal.Bootstrap { return traversal.Bootstrap{Addr: netip.MustParseAddrPort(s)} }

func TestWatcherTTL(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := &fakeDNS{res: Result{Bootstraps: []traversal.Bootstrap{boot("192.0.2.1:1")}, TTL: time.Second}}
		static := boot("192.0.2.9:9")
		w, err := New(t.Context(), Config{Names: []string{"f.test"}, Static: []traversal.Bootstrap{static}, Resolve: f.resolve})
		if err != nil {
			t.Fatal(err)
		}
		if got := w.Bootstraps(); !slices.Equal(got, []traversal.Bootstrap{static, boot("192.0.2.1:1")}) {
			t.Fatalf("initial %v", got)
		}
		applied := make(chan []traversal.Bootstrap, 4)
		w.Run(t.Context(), func(bs []traversal.Bootstrap) error { applied <- bs; return nil }, nil)
		defer w.Close()

		// A 1 s TTL waits for the 30 s floor.
		f.set(Result{Bootstraps: []traversal.Bootstrap{boot("192.0.2.2:2")}, TTL: 2 * time.Hour}, nil)
		time.Sleep(29 * time.Second)
		synctest.Wait()
		if f.count() != 1 {
			t.Fatalf("%d queries before the floor", f.count())
		}
		time.Sleep(time.Second)
		synctest.Wait()
		if got := <-applied; !slices.Equal(got, []traversal.Bootstrap{static, boot("192.0.2.2:2")}) {
			t.Fatalf("applied %v", got)
		}
		// A 2 h TTL is capped at 1 h; a failure then keeps the set and
		// retries at the floor.
		f.set(Result{}, errors.New("SERVFAIL"))
		time.Sleep(time.Hour - time.Second)
		synctest.Wait()
		if f.count() != 2 {
			t.Fatalf("%d queries before the ceiling", f.count())
		}
		time.Sleep(time.Second)
		synctest.Wait()
		time.Sleep(30 * time.Second)
		synctest.Wait()
		if f.count() != 4 || len(applied) != 0 {
			t.Fatalf("%d queries, %d applied after a failure", f.count(), len(applied))
		}
	})
}

func TestWatcherDown(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := &fakeDNS{res: Result{Bootstraps: []traversal.Bootstrap{boot("192.0.2.1:1")}, TTL: time.Hour}}
		w, err := New(t.Context(), Config{Names: []string{"f.test"}, Resolve: f.resolve})
		if err != nil {
			t.Fatal(err)
		}
		var mu sync.Mutex
		down := false
		w.Run(t.Context(), func([]traversal.Bootstrap) error { return nil }, func() bool { mu.Lock(); defer mu.Unlock(); return down })
		defer w.Close()
		mu.Lock()
		down = true
		mu.Unlock()
		time.Sleep(25 * time.Second) // failing, but within the floor
		synctest.Wait()
		if f.count() != 1 {
			t.Fatalf("%d queries within the floor", f.count())
		}
		time.Sleep(5 * time.Second) // the check at 30 s
		synctest.Wait()
		if f.count() != 2 {
			t.Fatalf("%d queries once every bootstrap fails past the floor", f.count())
		}
	})
}

func TestWatcherConfig(t *testing.T) {
	f := &fakeDNS{err: errors.New("NXDOMAIN")}
	for name, cfg := range map[string]Config{
		"no names":   {Resolve: f.resolve},
		"empty name": {Names: []string{""}, Resolve: f.resolve},
		"no resolve": {Names: []string{"a"}},
		"max < min":  {Names: []string{"a"}, Resolve: f.resolve, MinTTL: time.Hour, MaxTTL: time.Minute},
		"fails":      {Names: []string{"a"}, Resolve: f.resolve},
	} {
		if _, err := New(context.Background(), cfg); err == nil {
			t.Errorf("%s: no error", name)
		}
	}
	w, err := New(context.Background(), Config{Names: []string{"a"}, Resolve: (&fakeDNS{}).resolve})
	if err != nil {
		t.Fatal(err)
	}
	w.Close() // before Run: nothing to stop
}

func TestFailing(t *testing.T) {
	e := errors.New("timeout")
	st := func(reg bool, err error, od bool) traversal.BootstrapStatus {
		s := traversal.BootstrapStatus{OnDemand: od}
		s.Registered, s.LastError = reg, err
		return s
	}
	for _, tc := range []struct {
		name string
		st   []traversal.BootstrapStatus
		want bool
	}{
		{"none", nil, false},
		{"all failing", []traversal.BootstrapStatus{st(false, e, false), st(false, e, false)}, true},
		{"one registered", []traversal.BootstrapStatus{st(false, e, false), st(true, nil, false)}, false},
		{"one not tried yet", []traversal.BootstrapStatus{st(false, e, false), st(false, nil, false)}, false},
		{"on-demand ignored", []traversal.BootstrapStatus{st(false, e, false), st(true, nil, true)}, true},
	} {
		if got := Failing(tc.st); got != tc.want {
			t.Errorf("%s: %v", tc.name, got)
		}
	}
}
