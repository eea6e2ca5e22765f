package discovery

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"time"

	"github.com/antnode/antnode/traversal"
)

// The watch loop: resolve again at TTL expiry and when every bootstrap
// fails, and hand the changed set to Apply.

// Config configures a Watcher.
type Config struct {
	// Names are the names to resolve (without "dns:"). At least one.
	Names []string
	// Static are the bootstraps given as PEERID@HOST:PORT, kept first.
	Static []traversal.Bootstrap
	// Resolve resolves one name. Required (Resolver.Resolve).
	Resolve func(ctx context.Context, name string) (Result, error)
	// MinTTL is the floor of the wait before resolving again (a smaller
	// TTL, a failed resolution and a failure-driven re-resolution wait
	// this long). Zero: 30 s.
	MinTTL time.Duration
	// MaxTTL is the ceiling of that wait. Zero: 1 h.
	MaxTTL time.Duration
	// CheckEvery is how often Run's down callback is asked. Zero: 5 s.
	CheckEvery time.Duration
	// ResolveTimeout bounds the resolution of one name. Zero: 10 s.
	ResolveTimeout time.Duration
	// Logger receives the changes. Nil: discarded.
	Logger *slog.Logger
}

func (c *Config) validate() error {
	switch {
	case len(c.Names) == 0:
		return errors.New("discovery: Config.Names is empty")
	case slices.Contains(c.Names, ""):
		return errors.New("discovery: an empty name (dns: needs a NAME)")
	case c.Resolve == nil:
		return errors.New("discovery: Config.Resolve is required")
	case c.MinTTL < 0 || c.MaxTTL < 0 || c.CheckEvery < 0 || c.ResolveTimeout < 0:
		return errors.New("discovery: negative duration in Config")
	}
	orZero(&c.MinTTL, 30*time.Second)
	orZero(&c.MaxTTL, time.Hour)
	orZero(&c.CheckEvery, 5*time.Second)
	orZero(&c.ResolveTimeout, 10*time.Second)
	if c.MaxTTL < c.MinTTL {
		return fmt.Errorf("discovery: Config.MaxTTL %v is under MinTTL %v", c.MaxTTL, c.MinTTL)
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	return nil
}

func orZero(v *time.Duration, def time.Duration) {
	if *v == 0 {
		*v = def
	}
}

// Watcher keeps the bootstraps of some names current.
type Watcher struct {
	cfg     Config
	byName  map[string]Result // the last good result of each name
	current []traversal.Bootstrap
	ttl     time.Duration // of the last resolution
	cancel  context.CancelFunc
	done    chan struct{} // closed when the loop exits (or at Close before Run)
	ran     bool
}

// New resolves every name once (all must resolve: a mistyped name fails
// here) and returns the Watcher; Run starts it watching.
func New(ctx context.Context, cfg Config) (*Watcher, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	w := &Watcher{cfg: cfg, byName: make(map[string]Result, len(cfg.Names)), done: make(chan struct{})}
	var errs []error
	w.ttl = w.resolveAll(ctx, func(name string, err error) { errs = append(errs, fmt.Errorf("dns:%s: %w", name, err)) })
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	w.current = w.compose()
	return w, nil
}

// Bootstraps returns the bootstraps as last resolved, the static first.
func (w *Watcher) Bootstraps() []traversal.Bootstrap { return slices.Clone(w.current) }

// Run starts the watch loop: it resolves again when the TTL runs out
// (within MinTTL and MaxTTL) and, no sooner than MinTTL after the last
// resolution, when down reports that registration with every bootstrap
// fails (nil: never asked); each changed set goes to apply
// (Node.SetBootstraps), whose error is logged. Call it once; Close stops
// the loop, as does the end of ctx.
func (w *Watcher) Run(ctx context.Context, apply func([]traversal.Bootstrap) error, down func() bool) {
	ctx, w.cancel = context.WithCancel(ctx)
	w.ran = true
	go w.loop(ctx, apply, down)
}

// Close stops the watch loop and returns after it exits.
func (w *Watcher) Close() {
	if !w.ran {
		return
	}
	w.cancel()
	<-w.done
}

func (w *Watcher) loop(ctx context.Context, apply func([]traversal.Bootstrap) error, down func() bool) {
	defer close(w.done)
	timer := time.NewTimer(w.clamp(w.ttl))
	defer timer.Stop()
	check := time.NewTicker(w.cfg.CheckEvery)
	defer check.Stop()
	last := time.Now()
	for {
		select {
		case <-ctx.Done():
			return
		case <-timer.C:
		case <-check.C:
			if down == nil || time.Since(last) < w.cfg.MinTTL || !down() {
				continue
			}
			w.cfg.Logger.Info("discovery: registration with every bootstrap fails: resolving again")
		}
		w.refresh(ctx, apply)
		last = time.Now()
		timer.Reset(w.clamp(w.ttl))
	}
}

// refresh resolves every name and applies the set when it changed.
func (w *Watcher) refresh(ctx context.Context, apply func([]traversal.Bootstrap) error) {
	w.ttl = w.resolveAll(ctx, func(name string, err error) {
		w.cfg.Logger.Warn("discovery: resolving again failed; keeping the bootstraps resolved before", "name", name, "err", err)
	})
	next := w.compose()
	if slices.Equal(next, w.current) || ctx.Err() != nil {
		return
	}
	w.cfg.Logger.Info("discovery: bootstraps changed", "from", list(w.current), "to", list(next))
	w.current = next
	if err := apply(slices.Clone(next)); err != nil {
		w.cfg.Logger.Warn("discovery: applying the bootstraps", "err", err)
	}
}

// resolveAll resolves every name, keeping the results that succeeded,
// and returns the smallest TTL (MinTTL for a failed name).
func (w *Watcher) resolveAll(ctx context.Context, failed func(name string, err error)) time.Duration {
	ttl := w.cfg.MaxTTL
	for _, name := range w.cfg.Names {
		rctx, cancel := context.WithTimeout(ctx, w.cfg.ResolveTimeout)
		res, err := w.cfg.Resolve(rctx, name)
		cancel()
		if err != nil {
			failed(name, err)
			ttl = min(ttl, w.cfg.MinTTL)
			continue
		}
		for _, p := range res.Problems {
			w.cfg.Logger.Warn("discovery: SRV target left out", "name", name, "err", p)
		}
		w.byName[name] = res
		ttl = min(ttl, res.TTL)
	}
	return ttl
}

// compose returns the static bootstraps, then each name's in order, each
// address once.
func (w *Watcher) compose() []traversal.Bootstrap {
	out := slices.Clone(w.cfg.Static)
	for _, name := range w.cfg.Names {
		for _, b := range w.byName[name].Bootstraps {
			if !slices.ContainsFunc(out, func(o traversal.Bootstrap) bool { return o.Addr == b.Addr }) {
				out = append(out, b)
			}
		}
	}
	return out
}

// clamp bounds a TTL by MinTTL and MaxTTL.
func (w *Watcher) clamp(ttl time.Duration) time.Duration {
	return min(max(ttl, w.cfg.MinTTL), w.cfg.MaxTTL)
}

func list(bs []traversal.Bootstrap) string {
	s := make([]string, len(bs))
	for i, b := range bs {
		s[i] = b.String()
	}
	return strings.Join(s, ",")
}

// Failing reports whether registration with every configured bootstrap
// fails now: none registered and each has an error (on-demand
// registrations do not count). The down callback of Run for a node:
// func() bool { return Failing(node.Bootstraps()) }.
func Failing(st []traversal.BootstrapStatus) bool {
	some := false
	for _, s := range st {
		if s.OnDemand {
			continue
		}
		if s.Registered || s.LastError == nil {
			return false
		}
		some = true
	}
	return some
}

// Split separates a --bootstrap-nodes list into its "dns:NAME" names
// and the rest (comma-separated, as traversal.ParseBootstraps takes).
func Split(s string) (names []string, rest string) {
	var others []string
	for part := range strings.SplitSeq(s, ",") {
		part = strings.TrimSpace(part)
		if name, ok := strings.CutPrefix(part, Prefix); ok {
			names = append(names, strings.TrimSuffix(name, "."))
		} else if part != "" {
			others = append(others, part)
		}
	}
	return names, strings.Join(others, ",")
}
