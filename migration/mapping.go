package migration

import (
	"fmt"
	"net/netip"
	"sync"
	"time"

	"github.com/antnode/antnode/event"
)

// Keepalive returns the pace at which the node keeps its NAT mappings
// alive (bootstrap heartbeats, new connections' QUIC keepalive, pings of
// older connections): under the learned mapping lifetime, at most
// Config.KeepAlive.
func (m *Manager) Keepalive() time.Duration {
	return KeepaliveFor(time.Duration(m.mapLife.Load()), time.Second, m.cfg.KeepAlive)
}

// MappingLifetime returns the learned upper bound of the NAT mapping
// lifetime (zero: none learned).
func (m *Manager) MappingLifetime() time.Duration { return time.Duration(m.mapLife.Load()) }

// LearnMappingLifetime records that a NAT mapping of this node expired
// within upper: new connections and the bootstrap heartbeats
// (Config.OnKeepalive) then keep their mappings alive faster than that. A
// bound no shorter than the one known teaches nothing.
func (m *Manager) LearnMappingLifetime(upper time.Duration) {
	if upper <= 0 {
		return
	}
	for {
		cur := m.mapLife.Load()
		if cur != 0 && time.Duration(cur) <= upper {
			return // already knew as much
		}
		if m.mapLife.CompareAndSwap(cur, int64(upper)) {
			break
		}
	}
	ka := m.Keepalive()
	if m.cfg.OnKeepalive != nil {
		m.cfg.OnKeepalive(ka)
	}
	m.rec.Record(event.Event{Kind: event.KindMigration, Reason: event.ReasonMappingExpired, Outcome: event.OutcomeOK,
		Detail: fmt.Sprintf("NAT mapping lifetime under %v: keepalives every %v", upper, ka), Duration: upper})
}

// Observer follows one bootstrap's observations of this node's address
// (its UDP mapping). When the NAT mapped the socket anew under the same
// local addresses (a mapping expired, or conntrack was flushed) it learns
// a bound of the mapping lifetime and rebinds the connections this node
// dialled. A mapping that changed because the local addresses did (a
// network change, which rebinds by itself) teaches nothing about the NAT.
//
// The bound is the longest gap between packets on the control connection
// since the last observation: the larger of the heartbeat then and now (a
// heartbeat is only ever shortened). The heartbeat now alone is not the
// bound: another bootstrap that saw the same rebinding a moment earlier
// may have just shortened it, and the lifetime would be learned twice
// over.
type Observer struct {
	m       *Manager
	mu      sync.Mutex
	prev    netip.AddrPort
	prevGen uint64        // local address changes seen at prev
	prevHB  time.Duration // the heartbeat at prev
}

// NewObserver returns an observer for one bootstrap's observations.
func (m *Manager) NewObserver() *Observer { return &Observer{m: m} }

// Observe takes an observed address and the heartbeat of the control
// connection now; it reports whether the NAT rebound the socket.
func (o *Observer) Observe(addr netip.AddrPort, heartbeat time.Duration) bool {
	rebound, lifetime := o.observe(addr, o.m.netGen.Load(), heartbeat)
	if !rebound {
		return false
	}
	o.m.rec.Record(event.Event{Kind: event.KindMigration, Reason: event.ReasonMappingExpired, Outcome: event.OutcomeOK,
		Detail: "the NAT mapped this node anew", Addr: addr})
	o.m.LearnMappingLifetime(lifetime)
	o.m.RebindAll(event.ReasonMappingExpired)
	return true
}

// observe takes an observed address, the count of local address changes
// and the heartbeat now. It is the Observer's pure part.
func (o *Observer) observe(addr netip.AddrPort, gen uint64, hb time.Duration) (rebound bool, lifetime time.Duration) {
	o.mu.Lock()
	defer o.mu.Unlock()
	rebound = o.prev.IsValid() && addr != o.prev && gen == o.prevGen
	lifetime = max(o.prevHB, hb)
	o.prev, o.prevGen, o.prevHB = addr, gen, hb
	return rebound, lifetime
}
