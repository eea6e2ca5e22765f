package endpoint

import (
	"maps"
	"net"
	"net/netip"
	"sync"
)

// Replaying QUIC's last packet through a new route.
//
// A path that died in silence leaves QUIC in probe-timeout backoff: the
// timeout doubles at every unanswered probe, and after ten seconds of
// silence the next probe may be more than ten seconds away. A route
// around the dead path (Reroute) carries only what QUIC sends next, so a
// fallback would wait for that probe. Instead the fallback asks the
// socket to Remember what QUIC sends to the dead address meanwhile and,
// once the route is set, Replays the last such packet through it. QUIC
// packets are protected and numbered: one the peer had already received
// is dropped there as a duplicate; one it had not (the probes lost on the
// dead path) is taken, answered, and ends the backoff.

// remembered is the last QUIC packet sent to one destination.
type remembered struct {
	mu sync.Mutex
	b  []byte
}

// Remember makes the socket keep a copy of the last QUIC packet it sends
// to dst directly (not through a route), until Forget. It reports
// whether dst was not remembered already (what was kept for it stays).
func (e *Endpoint) Remember(dst netip.AddrPort) bool {
	rc := e.routerOf()
	if rc == nil {
		return false
	}
	added := false
	rc.updateKept(func(m map[netip.AddrPort]*remembered) {
		if m[unmapped(dst)] == nil {
			m[unmapped(dst)] = &remembered{}
			added = true
		}
	})
	return added
}

// Forget stops Remember's copies for dst.
func (e *Endpoint) Forget(dst netip.AddrPort) {
	if rc := e.routerOf(); rc != nil {
		rc.updateKept(func(m map[netip.AddrPort]*remembered) { delete(m, unmapped(dst)) })
	}
}

// Replay sends the last QUIC packet remembered for dst through dst's
// route, and reports whether one went.
func (e *Endpoint) Replay(dst netip.AddrPort) bool {
	rc := e.routerOf()
	r := e.Route(dst)
	if rc == nil || r == nil {
		return false
	}
	m := rc.kept.Load()
	if m == nil {
		return false
	}
	k := (*m)[unmapped(dst)]
	if k == nil {
		return false
	}
	k.mu.Lock()
	b := append([]byte(nil), k.b...)
	k.mu.Unlock()
	return len(b) > 0 && r.send(b) == nil
}

func (c *router) updateKept(change func(map[netip.AddrPort]*remembered)) {
	c.mu.Lock()
	defer c.mu.Unlock()
	m := map[netip.AddrPort]*remembered{}
	if old := c.kept.Load(); old != nil {
		maps.Copy(m, *old)
	}
	change(m)
	if len(m) == 0 {
		c.kept.Store(nil)
		return
	}
	c.kept.Store(&m)
}

// keep copies b, a QUIC packet sent directly to addr, if addr is
// remembered; b is a GSO batch when oob says so, of which the last
// packet is kept. It costs one atomic load while nothing is remembered.
func (c *router) keep(addr net.Addr, b, oob []byte) {
	m := c.kept.Load()
	if m == nil || !isQUIC(b) {
		return
	}
	ua, ok := addr.(*net.UDPAddr)
	if !ok {
		return
	}
	k := (*m)[unmapped(ua.AddrPort())]
	if k == nil {
		return
	}
	if s := gsoSegment(oob); s > 0 && s < len(b) {
		b = b[(len(b)-1)/s*s:]
	}
	k.mu.Lock()
	k.b = append(k.b[:0], b...)
	k.mu.Unlock()
}
