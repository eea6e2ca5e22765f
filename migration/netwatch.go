package migration

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"slices"
	"sync"
	"time"
)

// Addrs returns the host's usable unicast addresses, sorted: no loopback,
// no link-local.
func Addrs() ([]netip.Addr, error) {
	ifs, err := net.InterfaceAddrs()
	if err != nil {
		return nil, err
	}
	var out []netip.Addr
	for _, a := range ifs {
		p, err := netip.ParsePrefix(a.String())
		if err != nil {
			continue
		}
		ip := p.Addr().Unmap()
		if ip.IsLoopback() || ip.IsLinkLocalUnicast() || ip.IsMulticast() || ip.IsUnspecified() {
			continue
		}
		out = append(out, ip)
	}
	slices.SortFunc(out, func(a, b netip.Addr) int { return a.Compare(b) })
	return slices.Compact(out), nil
}

// Diff returns the addresses in cur but not in prev, and those in prev but
// not in cur. Both inputs must be sorted (Addrs sorts).
func Diff(prev, cur []netip.Addr) (added, removed []netip.Addr) {
	i, j := 0, 0
	for i < len(prev) || j < len(cur) {
		switch {
		case j == len(cur) || (i < len(prev) && prev[i].Less(cur[j])):
			removed = append(removed, prev[i])
			i++
		case i == len(prev) || cur[j].Less(prev[i]):
			added = append(added, cur[j])
			j++
		default:
			i++
			j++
		}
	}
	return added, removed
}

// Change is a change of the host's addresses.
type Change struct {
	Added, Removed []netip.Addr
	At             time.Time
}

// WatcherConfig configures a Watcher.
type WatcherConfig struct {
	// Interval is how often the addresses are read. Zero: 1 s.
	Interval time.Duration
	// Addrs reads the addresses. Nil: Addrs.
	Addrs func() ([]netip.Addr, error)
	// OnChange is called, on the watcher's goroutine, for every change.
	// Required.
	OnChange func(Change)
}

// Watcher polls the host's addresses and reports changes. Polling a few
// system calls a second is cheaper to keep correct than a netlink
// subscription and fast enough for a connection that must survive.
type Watcher struct {
	cfg    WatcherConfig
	cancel context.CancelFunc
	done   chan struct{}
	once   sync.Once
}

// ErrNoOnChange is returned by NewWatcher without a callback.
var ErrNoOnChange = errors.New("migration: WatcherConfig.OnChange is required")

// NewWatcher reads the addresses once and starts watching.
func NewWatcher(cfg WatcherConfig) (*Watcher, error) {
	if cfg.OnChange == nil {
		return nil, ErrNoOnChange
	}
	if cfg.Interval <= 0 {
		cfg.Interval = time.Second
	}
	if cfg.Addrs == nil {
		cfg.Addrs = Addrs
	}
	prev, err := cfg.Addrs()
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	w := &Watcher{cfg: cfg, cancel: cancel, done: make(chan struct{})}
	go w.run(ctx, prev)
	return w, nil
}

func (w *Watcher) run(ctx context.Context, prev []netip.Addr) {
	defer close(w.done)
	t := time.NewTicker(w.cfg.Interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		cur, err := w.cfg.Addrs()
		if err != nil {
			continue // transient (an interface going away mid-read): next tick
		}
		if added, removed := Diff(prev, cur); len(added)+len(removed) > 0 {
			w.cfg.OnChange(Change{Added: added, Removed: removed, At: time.Now()})
		}
		prev = cur
	}
}

// Close stops the watcher and returns once its goroutine has exited. It
// is idempotent.
func (w *Watcher) Close() error {
	w.once.Do(func() {
		w.cancel()
		<-w.done
	})
	return nil
}
