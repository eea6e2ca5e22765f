package traversal

import (
	"crypto/tls"
	"net/netip"
	"sync"
	"time"

	"github.com/antnode/antnode/identity"
)

// What a node remembers of the peers it connected to recently: the
// validated address of a direct path and a TLS session ticket, for a
// bounded time and count (Config.RememberFor, Config.RememberPeers). A
// new connect to such a peer races a direct dial there against the
// introduction (see reconnect.go).

// memo is one remembered peer.
type memo struct {
	// addr is the peer's address on the last direct path of a connection
	// this node kept (invalid: none known, or the last one was relayed).
	addr netip.AddrPort
	// ticket resumes a TLS session with the peer (nil: none).
	ticket *tls.ClientSessionState
	// kept: this node kept a connection with the peer (it dialled it, or
	// the peer nominated it). An entry made only for a ticket is not.
	kept bool
	at   time.Time // when the entry was last refreshed
}

// peerMemory is the bounded set of remembered peers. It is safe for
// concurrent use.
type peerMemory struct {
	ttl time.Duration // zero or less: nothing is remembered
	max int           // zero or less: nothing is remembered

	mu  sync.Mutex
	now func() time.Time
	m   map[identity.PeerID]*memo
}

func newPeerMemory(ttl time.Duration, maxPeers int) *peerMemory {
	return &peerMemory{ttl: ttl, max: maxPeers, now: time.Now, m: make(map[identity.PeerID]*memo)}
}

// setClock replaces the memory's clock (tests).
func (pm *peerMemory) setClock(now func() time.Time) {
	pm.mu.Lock()
	defer pm.mu.Unlock()
	pm.now = now
}

func (pm *peerMemory) off() bool { return pm.ttl <= 0 || pm.max <= 0 }

// getLocked returns peer's entry if it is fresh, forgetting a stale one.
func (pm *peerMemory) getLocked(peer identity.PeerID, now time.Time) *memo {
	e := pm.m[peer]
	if e != nil && now.Sub(e.at) >= pm.ttl {
		delete(pm.m, peer)
		return nil
	}
	return e
}

// entryLocked returns peer's entry, refreshed, making it (and making room
// for it) if need be.
func (pm *peerMemory) entryLocked(peer identity.PeerID, now time.Time) *memo {
	e := pm.getLocked(peer, now)
	if e == nil {
		pm.makeRoomLocked(now)
		e = &memo{}
		pm.m[peer] = e
	}
	e.at = now
	return e
}

// makeRoomLocked forgets stale entries and, while the memory is full, the
// least recently refreshed one: one scan of at most max entries.
func (pm *peerMemory) makeRoomLocked(now time.Time) {
	if len(pm.m) < pm.max {
		return
	}
	var oldest identity.PeerID
	var oldestAt time.Time
	for id, e := range pm.m {
		switch {
		case now.Sub(e.at) >= pm.ttl:
			delete(pm.m, id)
		case oldestAt.IsZero() || e.at.Before(oldestAt):
			oldest, oldestAt = id, e.at
		}
	}
	if len(pm.m) >= pm.max {
		delete(pm.m, oldest)
	}
}

// keep records that the node kept a connection with peer, whose path is
// not known yet.
func (pm *peerMemory) keep(peer identity.PeerID) {
	if pm.off() {
		return
	}
	pm.mu.Lock()
	defer pm.mu.Unlock()
	e := pm.entryLocked(peer, pm.now())
	e.kept = true
}

// remember records a kept connection with peer and its direct path's
// address (invalid: the path was not direct, and none is known).
func (pm *peerMemory) remember(peer identity.PeerID, addr netip.AddrPort) {
	if pm.off() {
		return
	}
	pm.mu.Lock()
	defer pm.mu.Unlock()
	e := pm.entryLocked(peer, pm.now())
	e.kept, e.addr = true, addr
}

// lookup returns the address to dial peer at, and its ticket, if peer is
// remembered with a direct path's address.
func (pm *peerMemory) lookup(peer identity.PeerID) (netip.AddrPort, bool) {
	if pm.off() {
		return netip.AddrPort{}, false
	}
	pm.mu.Lock()
	defer pm.mu.Unlock()
	e := pm.getLocked(peer, pm.now())
	if e == nil || !e.addr.IsValid() {
		return netip.AddrPort{}, false
	}
	return e.addr, true
}

// expects reports whether peer may dial this node without an
// introduction: it kept a connection with it recently.
func (pm *peerMemory) expects(peer identity.PeerID) bool {
	if pm.off() {
		return false
	}
	pm.mu.Lock()
	defer pm.mu.Unlock()
	e := pm.getLocked(peer, pm.now())
	return e != nil && e.kept
}

// forgetAddr forgets addr as peer's address (a dial there failed); the
// entry and its ticket stay.
func (pm *peerMemory) forgetAddr(peer identity.PeerID, addr netip.AddrPort) {
	pm.mu.Lock()
	defer pm.mu.Unlock()
	if e := pm.m[peer]; e != nil && e.addr == addr {
		e.addr = netip.AddrPort{}
	}
}

// forget forgets peer (it answered as someone else, or refused).
func (pm *peerMemory) forget(peer identity.PeerID) {
	pm.mu.Lock()
	defer pm.mu.Unlock()
	delete(pm.m, peer)
}

// len returns the number of entries, stale ones included (tests).
func (pm *peerMemory) len() int {
	pm.mu.Lock()
	defer pm.mu.Unlock()
	return len(pm.m)
}

// sessions returns the TLS client session cache of dials to peer: it
// keeps the last ticket peer issued, under peer's entry whatever the
// dial's server name.
func (pm *peerMemory) sessions(peer identity.PeerID) tls.ClientSessionCache {
	if pm.off() {
		return nil
	}
	return peerSessions{pm: pm, peer: peer}
}

// peerSessions is the tls.ClientSessionCache of dials to one peer. The
// session key (the dial's server name) is ignored: the key is the peer,
// whose identity the dial verified before the ticket could arrive.
type peerSessions struct {
	pm   *peerMemory
	peer identity.PeerID
}

// Get implements tls.ClientSessionCache.
func (s peerSessions) Get(string) (*tls.ClientSessionState, bool) {
	s.pm.mu.Lock()
	defer s.pm.mu.Unlock()
	e := s.pm.getLocked(s.peer, s.pm.now())
	if e == nil || e.ticket == nil {
		return nil, false
	}
	return e.ticket, true
}

// Put implements tls.ClientSessionCache: a nil state forgets the ticket.
func (s peerSessions) Put(_ string, cs *tls.ClientSessionState) {
	s.pm.mu.Lock()
	defer s.pm.mu.Unlock()
	now := s.pm.now()
	if cs == nil {
		if e := s.pm.getLocked(s.peer, now); e != nil {
			e.ticket = nil
		}
		return
	}
	e := s.pm.getLocked(s.peer, now)
	if e == nil {
		e = s.pm.entryLocked(s.peer, now)
	}
	e.ticket = cs
}
