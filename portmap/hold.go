package portmap

import (
	"context"
	"time"
)

// hold keeps h: it renews it at half its lease and checks the gateway
// every Check (and when the gateway announces something). It returns h
// when it must be mapped again (a failed renewal, Remap) or ctx ends.
func (m *Mapper) hold(ctx context.Context, h *holding) *holding {
	nextCheck := time.Now().Add(m.cfg.Check)
	for {
		renewAt := h.renewed.Add(max(h.m.lease/2, minRenew))
		if h.regrant {
			renewAt = time.Now()
		}
		next := renewAt
		if m.cfg.Check > 0 && nextCheck.Before(next) {
			next = nextCheck
		}
		timer := time.NewTimer(time.Until(next))
		checkNow := false
		select {
		case <-ctx.Done():
			timer.Stop()
			return h
		case <-m.remap:
			timer.Stop()
			m.log.Debug("portmap: remap asked")
			return h
		case <-m.notice:
			timer.Stop()
			if checkNow = time.Since(h.noticed) >= noticeGap; checkNow {
				h.noticed = time.Now()
			}
		case <-timer.C:
			checkNow = time.Now().Before(renewAt)
		}
		if checkNow {
			nextCheck = time.Now().Add(m.cfg.Check)
			m.check(ctx, h)
			continue
		}
		if time.Now().Before(renewAt) {
			continue // a notice too soon after the last one
		}
		if err := m.renew(ctx, h); err != nil {
			if ctx.Err() == nil {
				m.log.Info("portmap: renewal failed", "protocol", h.proto, "err", err)
				m.update(false, func(s *Status) { s.LastError = err.Error() })
			}
			return h
		}
		nextCheck = time.Now().Add(m.cfg.Check)
	}
}

// renew asks for h's mapping again. A mapping the gateway had lost (an
// epoch that went back, or a check that found it gone) is published as
// granted anew, a changed external address or port as changed.
func (m *Mapper) renew(ctx context.Context, h *holding) error {
	mp, err := h.c.Map(ctx, m.cfg.Lease, h.m.external)
	if err != nil {
		return err
	}
	now := time.Now()
	lost := h.regrant || h.epochLost(mp, now)
	changed := mp.external != h.m.external
	h.m, h.renewed, h.regrant = mp, now, false
	if lost {
		h.granted = now
		m.log.Info("portmap: the gateway had lost the mapping; mapped again", "protocol", h.proto, "external", m.addrString(mp.external))
	} else if changed {
		m.log.Info("portmap: the mapping changed", "protocol", h.proto, "external", m.addrString(mp.external))
	}
	m.met.setActive(h.proto)
	m.update(lost || changed, func(s *Status) {
		s.Active = true
		s.External = mp.external
		s.Lease = mp.lease
		s.GrantedAt = h.granted
		s.RenewedAt = now
		s.LastError = ""
	})
	return nil
}

// check asks the gateway for its state, and marks h for a renewal now
// (regrant) when the gateway lost the mapping, and for a plain renewal
// now when the check failed or the external address changed.
func (m *Mapper) check(ctx context.Context, h *holding) {
	cr, err := h.c.Check(ctx, h.m)
	if ctx.Err() != nil {
		return
	}
	now := time.Now()
	switch {
	case err != nil:
		m.log.Debug("portmap: check failed; renewing", "protocol", h.proto, "err", err)
		h.renewed = time.Time{} // renew now
		return
	case cr.gone:
		h.regrant = true
	case cr.hasEpoch && h.epochLost(mapping{epoch: cr.epoch, hasEpoch: true}, now):
		h.regrant = true
	case cr.external.IsValid() && cr.external != h.m.external.Addr():
		h.renewed = time.Time{}
	}
	if h.regrant {
		m.log.Info("portmap: the gateway lost the mapping", "protocol", h.proto)
	}
}

// epochLost records the epoch of an answer received at now, and reports
// whether it shows that the gateway lost its state since the last one.
func (h *holding) epochLost(mp mapping, now time.Time) bool {
	if !mp.hasEpoch || !h.m.hasEpoch {
		return false
	}
	lost := !epochConsistent(h.m.epoch, h.epochAt, mp.epoch, now)
	h.m.epoch, h.epochAt = mp.epoch, now
	return lost
}

// epochConsistent is RFC 6887's check of a server's epoch (section 8.5;
// NAT-PMP's, RFC 6886 section 3.6, is its coarser form): prev was
// received at prevAt, cur at now. The server lost its state if its epoch
// went back by more than a second, or if its clock and ours advanced by
// amounts that differ by more than 2 s plus a sixteenth.
func epochConsistent(prev uint32, prevAt time.Time, cur uint32, now time.Time) bool {
	if uint64(cur)+1 < uint64(prev) {
		return false
	}
	client := int64(now.Sub(prevAt) / time.Second)
	server := int64(cur) - int64(prev)
	if client+2 < server-server/16 || server+2 < client-client/16 {
		return false
	}
	return true
}
