package portmap

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"time"

	"github.com/failsafe-go/failsafe-go"
	"github.com/failsafe-go/failsafe-go/retrypolicy"
)

// Pacing of the loop.
const (
	// retryJitter spreads the backoff between failed attempts by ±10 %.
	retryJitter = 0.1
	// minRenew is the shortest pause between renewals, whatever the lease
	// a gateway grants.
	minRenew = 10 * time.Second
	// noticeGap is the shortest pause between checks that announcements
	// cause: a storm of them costs the gateway one request in 5 s.
	noticeGap = 5 * time.Second
)

// holding is the mapping the loop holds, with the client that keeps it.
type holding struct {
	proto   Protocol
	c       client
	t       target
	m       mapping
	granted time.Time // created
	renewed time.Time // last renewed or created
	epochAt time.Time // when m.epoch was observed
	noticed time.Time // last check an announcement caused
	regrant bool      // the gateway lost the mapping: the next Map creates it anew
}

// run is the Mapper's loop: map, hold (renew and check) until the
// mapping is lost or Remap is called, map again; at the end, delete.
func (m *Mapper) run(ctx context.Context) {
	defer close(m.done)
	stop := m.listen(ctx)
	defer stop()
	var h *holding
	for ctx.Err() == nil {
		if h = m.acquire(ctx, h); ctx.Err() != nil {
			break
		}
		h = m.hold(ctx, h)
	}
	m.release(ctx, h)
}

// acquire maps the port, retrying with a bounded backoff until it has a
// mapping or ctx ends; Remap starts it over at once. It returns the new
// mapping, or when ctx ends whatever is still held (old, unless a failed
// round dropped it).
func (m *Mapper) acquire(ctx context.Context, old *holding) *holding {
	retry := retrypolicy.NewBuilder[*holding]().
		WithMaxRetries(-1).
		WithBackoff(m.cfg.retryBase, m.cfg.retryMax).
		WithJitterFactor(retryJitter).
		Build()
	for ctx.Err() == nil {
		drain(m.remap) // a Remap or notice before this round is this round
		drain(m.notice)
		wctx, cancel := context.WithCancel(ctx)
		m.setKick(cancel)
		var got *holding // a round's success stands even if a kick then ends the execution
		_, _ = failsafe.With(retry).WithContext(wctx).Get(func() (*holding, error) {
			h, err := m.round(wctx, &old)
			if err == nil {
				got = h
			}
			return h, err
		})
		m.setKick(nil)
		cancel()
		if got != nil {
			return got
		}
	}
	return old
}

// drain empties a signal channel.
func drain(c chan struct{}) {
	select {
	case <-c:
	default:
	}
}

// setKick sets what Remap calls to end the current wait.
func (m *Mapper) setKick(f context.CancelFunc) {
	m.mu.Lock()
	m.kick = f
	m.mu.Unlock()
}

// round is one attempt: find the gateway, then try the protocols in
// order. The first that maps replaces *oldp. When none does, *oldp is
// lost (and dropped); a round ended by ctx drops nothing.
func (m *Mapper) round(ctx context.Context, oldp **holding) (*holding, error) {
	t, err := m.target(ctx)
	var h *holding
	if err == nil {
		h, err = m.tryAll(ctx, t, *oldp)
	}
	if err == nil {
		m.replace(ctx, *oldp, h)
		*oldp = nil
		m.granted(h)
		return h, nil
	}
	if ctx.Err() != nil {
		return nil, err
	}
	if *oldp != nil {
		m.lost(*oldp)
		*oldp = nil
	}
	m.update(false, func(s *Status) { s.LastError = err.Error() })
	level := slog.LevelInfo
	if m.failing { // said once; the next ones while failing are details
		level = slog.LevelDebug
	}
	m.failing = true
	m.log.Log(ctx, level, "portmap: no mapping", "err", err)
	return nil, err
}

// target finds the gateway and the local address, unless configured.
func (m *Mapper) target(ctx context.Context) (target, error) {
	t := target{gateway: m.cfg.Gateway, local: m.cfg.LocalAddr}
	var err error
	if !t.gateway.IsValid() {
		if t.gateway, err = defaultGateway(); err != nil {
			return t, err
		}
	}
	if !t.local.IsValid() {
		if t.local, err = localAddrFor(ctx, t.gateway); err != nil {
			return t, err
		}
	}
	m.update(false, func(s *Status) {
		s.Gateway = t.gateway
		s.Internal = netip.AddrPortFrom(t.local, m.cfg.Port)
	})
	return t, nil
}

// tryAll tries the protocols in order and holds the first mapping one
// grants. It suggests the external port held before on the same target.
func (m *Mapper) tryAll(ctx context.Context, t target, old *holding) (*holding, error) {
	var prev netip.AddrPort
	if old != nil && old.t == t {
		prev = old.m.external
	}
	order := mappingProtocols[:]
	if m.cfg.Protocol != Auto {
		order = []Protocol{m.cfg.Protocol}
	}
	var errs []error
	for _, p := range order {
		c, err := m.dial(ctx, p, t)
		var mp mapping
		if err == nil {
			mp, err = c.Map(ctx, m.cfg.Lease, prev)
		}
		if ctx.Err() != nil {
			return nil, fmt.Errorf("portmap: %w", ctx.Err())
		}
		m.probed(p, err)
		if err == nil {
			now := time.Now()
			return &holding{proto: p, c: c, t: t, m: mp, granted: now, renewed: now, epochAt: now}, nil
		}
		errs = append(errs, err)
	}
	return nil, errors.Join(errs...)
}

// replace gives back the mapping old when h does not supersede it: one
// made on another gateway or from another address, or a UPnP mapping of
// another external port (PCP and NAT-PMP servers key a mapping by its
// internal address and port, and UPnP ones by the external port: deleting
// old on the same gateway otherwise could delete h).
func (m *Mapper) replace(ctx context.Context, old, h *holding) {
	if old == nil {
		return
	}
	if old.t == h.t && !(old.proto == UPnP && h.proto == UPnP && old.m.external.Port() != h.m.external.Port()) {
		return
	}
	dctx, cancel := context.WithTimeout(ctx, DeleteTimeout)
	defer cancel()
	if err := old.c.Delete(dctx, old.m); err != nil {
		m.log.Debug("portmap: the superseded mapping was not deleted", "protocol", old.proto, "err", err)
	}
}

// granted publishes a new mapping.
func (m *Mapper) granted(h *holding) {
	m.failing = false
	m.met.setActive(h.proto)
	m.update(true, func(s *Status) {
		s.Active = true
		s.Protocol = h.proto
		s.External = h.m.external
		s.Lease = h.m.lease
		s.GrantedAt = h.granted
		s.RenewedAt = time.Time{}
		s.LastError = ""
	})
	m.log.Info("portmap: mapped", "protocol", h.proto, "external", m.addrString(h.m.external), "lease", h.m.lease)
}

// lost publishes the loss of h.
func (m *Mapper) lost(h *holding) {
	m.met.setActive(Auto)
	m.update(true, func(s *Status) { s.Active = false })
	m.log.Info("portmap: mapping lost", "protocol", h.proto, "external", m.addrString(h.m.external))
}

// release deletes the mapping h at the end of the loop, within
// DeleteTimeout of a context that ctx's end does not cancel.
func (m *Mapper) release(ctx context.Context, h *holding) {
	if h == nil {
		return
	}
	dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), DeleteTimeout)
	defer cancel()
	err := h.c.Delete(dctx, h.m)
	m.met.setActive(Auto)
	m.mu.Lock()
	m.status.Active = false
	if err != nil {
		m.relErr = fmt.Errorf("portmap: deleting the %s mapping: %w", h.proto, err)
	}
	m.mu.Unlock()
	m.log.Debug("portmap: mapping deleted", "protocol", h.proto, "ok", err == nil)
}

// addrString renders an address for the logs.
func (m *Mapper) addrString(a netip.AddrPort) string {
	if m.cfg.AddrString != nil {
		return m.cfg.AddrString(a)
	}
	return a.String()
}
