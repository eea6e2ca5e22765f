package holepunch

import (
	"net/netip"
	"sync"
	"time"
)

// Contact memory: the Agent remembers where it sent checks, priming
// packets and scan probes recently, so that a check from the peer that
// arrives from an endpoint this side never sent to can be told apart. Such
// a check passed this side's filter unsolicited: evidence about the
// filtering behaviour (see AgentConfig.OnUnsolicited).
const (
	// ContactMemory is how long a destination counts as contacted: longer
	// than the UDP filter timeouts of common NATs (30 s to 180 s).
	ContactMemory = 5 * time.Minute
	// maxContacts bounds the memory (a birthday scan sends to 4096 ports).
	maxContacts = 16384
)

// contacts is the Agent's bounded memory of recent destinations.
type contacts struct {
	mu    sync.Mutex
	ep    map[netip.AddrPort]time.Time
	addr  map[netip.Addr]time.Time
	full  bool // entries were dropped: every source counts as contacted
	prune time.Time
}

func newContacts() *contacts {
	return &contacts{ep: make(map[netip.AddrPort]time.Time), addr: make(map[netip.Addr]time.Time)}
}

// sent records a packet to dst at now.
func (c *contacts) sent(dst netip.AddrPort, now time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.ep) >= maxContacts {
		c.expire(now)
		if len(c.ep) >= maxContacts {
			c.full, c.prune = true, now
			return
		}
	}
	c.ep[dst] = now
	c.addr[dst.Addr()] = now
}

// expire drops the entries older than ContactMemory; once the memory has
// not been full for ContactMemory it is trusted again. Called with mu held.
func (c *contacts) expire(now time.Time) {
	for k, t := range c.ep {
		if now.Sub(t) > ContactMemory {
			delete(c.ep, k)
		}
	}
	for k, t := range c.addr {
		if now.Sub(t) > ContactMemory {
			delete(c.addr, k)
		}
	}
	if c.full && now.Sub(c.prune) > ContactMemory {
		c.full = false
	}
}

// contacted reports whether src's endpoint, and its address, were sent to
// within ContactMemory of now; known is false when the memory dropped
// entries (nothing can be concluded).
func (c *contacts) contacted(src netip.AddrPort, now time.Time) (endpoint, address, known bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.full {
		c.expire(now)
		if c.full {
			return true, true, false
		}
	}
	recent := func(t time.Time, ok bool) bool { return ok && now.Sub(t) <= ContactMemory }
	te, oke := c.ep[src]
	ta, oka := c.addr[src.Addr()]
	return recent(te, oke), recent(ta, oka), true
}
