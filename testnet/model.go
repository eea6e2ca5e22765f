package testnet

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
	"os"
	"sync"
	"time"

	"github.com/antnode/antnode/nattype"
)

// Model is an in-process network of UDP sockets, some behind NATs with RFC
// 4787 mapping and filtering behaviour, for deterministic tests without
// root. Every socket is a net.PacketConn (*ModelConn), so an endpoint and
// quic-go run on it unchanged. A packet takes the access delay of its
// sender plus that of its receiver. Delivery uses timers only, so a Model
// runs under testing/synctest with virtual time.
//
// The classes of the namespace testbed map to NATConfig as follows:
// public is a socket on the public network (no NAT); eim-eif, eim-adf and
// eim-apdf are MappingEIM with FilteringEIF, ADF or APDF; apdm is
// MappingAPDM with FilteringAPDF (Sequential for a NAT that allocates its
// ports in order); cgnat is an eim-apdf home NAT whose Behind is an
// eim-apdf carrier NAT (Hairpin on the carrier for same-carrier pairs);
// udp-blocked is a NAT with BlockUDP.
type Model struct {
	// OnDrop, if set before use, is called (with the network locked) for
	// every dropped packet: for debugging tests.
	OnDrop func(from, to netip.AddrPort, why string)

	mu      sync.Mutex
	public  map[netip.AddrPort]*ModelConn // sockets on public addresses
	nats    map[netip.Addr]*ModelNAT      // NATs on the public network, by public address
	all     []*ModelNAT                   // every NAT, nested ones too
	blocked map[[2]netip.Addr]bool        // public address pairs that cannot reach each other
	dropped int
}

// Block makes the public addresses a and b unable to reach each other (a
// blackholed path) until Unblock.
func (m *Model) Block(a, b netip.Addr) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.blocked == nil {
		m.blocked = map[[2]netip.Addr]bool{}
	}
	m.blocked[[2]netip.Addr{a, b}] = true
	m.blocked[[2]netip.Addr{b, a}] = true
}

// Unblock undoes Block.
func (m *Model) Unblock(a, b netip.Addr) {
	m.mu.Lock()
	defer m.mu.Unlock()
	delete(m.blocked, [2]netip.Addr{a, b})
	delete(m.blocked, [2]netip.Addr{b, a})
}

// OpenSockets returns how many sockets are open in the network.
func (m *Model) OpenSockets() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	n := len(m.public)
	for _, nat := range m.all {
		n += len(nat.private)
	}
	return n
}

// NewModel returns an empty network.
func NewModel() *Model {
	return &Model{public: map[netip.AddrPort]*ModelConn{}, nats: map[netip.Addr]*ModelNAT{}}
}

// NATConfig configures a modelled NAT.
type NATConfig struct {
	// Public is the NAT's outside address: on the public network, or on
	// Behind's private network (for a home NAT behind a carrier NAT, an
	// address in 100.64.0.0/10). Required.
	Public netip.Addr
	// Mapping is the mapping behaviour: MappingEIM (keeps the source port
	// when it is free), MappingADM or MappingAPDM (a new port per
	// destination). Zero: endpoint-independent, with a random port.
	Mapping nattype.Mapping
	// Filtering is the filtering behaviour: FilteringEIF (or
	// FilteringNone), FilteringADF or FilteringAPDF. Zero: as
	// FilteringAPDF.
	Filtering nattype.Filtering
	// Hairpin lets a host reach a mapping of its own NAT (for a carrier
	// NAT: two homes behind it reach each other's carrier mappings). Zero:
	// off, such packets are dropped.
	Hairpin bool
	// Timeout forgets a mapping this long after its last outbound packet.
	// Zero: 2 minutes.
	Timeout time.Duration
	// Delay is the one-way delay of the link from the NAT to the network
	// its Public address is on: for a NAT on the public network, the
	// access delay of its hosts. Zero: none.
	Delay time.Duration
	// Behind, if set, is the carrier NAT this NAT sits behind (nested NAT,
	// the cgnat class): Public is then an address on Behind's private
	// network, and packets to the outside are translated twice, here and
	// at Behind. Behind must belong to the same Model. Zero (nil): the NAT
	// is on the public network.
	Behind *ModelNAT
	// BlockUDP drops every packet from the NAT's hosts to the outside,
	// their own NAT's public address included (the udp-blocked class: a
	// firewall that lets only TCP out, and the Model carries no TCP).
	// Packets between hosts behind the NAT still pass. Zero: false.
	BlockUDP bool
	// Sequential allocates the external port of every new mapping that
	// does not keep its source port (ADM and APDM: one per destination)
	// as the port after the last one allocated, NAT-wide (20000, 20001,
	// ...; skipping ports in use, wrapping from 65535 to 1024), as NATs
	// with sequential port allocation do: the next mapping's port is
	// predictable (apdm with Sequential is the "apdm-seq" NAT of
	// port-prediction tests). MappingEIM keeps the source port when it is
	// free either way. Zero: false, a random port per mapping, as Linux's
	// "masquerade random" does.
	Sequential bool
}

// ModelNAT is one NAT router.
type ModelNAT struct {
	m        *Model
	cfg      NATConfig
	private  map[netip.AddrPort]*ModelConn
	mappings map[mapKey]*mapping
	byPort   map[uint16]*mapping
	nextPort uint16
	rng      *rand.Rand               // random ports of destination-dependent mappings
	lastSeq  uint16                   // the last port a Sequential NAT allocated (0: none yet)
	parent   *ModelNAT                // cfg.Behind
	children map[netip.Addr]*ModelNAT // NATs on this NAT's private network
}

type mapKey struct {
	src netip.AddrPort
	dst netip.AddrPort // zeroed parts per mapping behaviour
}

type mapping struct {
	key      mapKey
	external uint16
	allowed  map[netip.AddrPort]bool // destinations sent to (filtering)
	lastOut  time.Time
}

// AddNAT adds a NAT to the network.
func (m *Model) AddNAT(cfg NATConfig) (*ModelNAT, error) {
	if !cfg.Public.IsValid() {
		return nil, errors.New("testnet: model NAT needs a public address")
	}
	if cfg.Timeout == 0 {
		cfg.Timeout = 2 * time.Minute
	}
	if cfg.Behind != nil && cfg.Behind.m != m {
		return nil, errors.New("testnet: model NAT behind a NAT of another model")
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	outside := m.nats
	if cfg.Behind != nil {
		outside = cfg.Behind.children
		for ap := range cfg.Behind.private {
			if ap.Addr() == cfg.Public {
				return nil, fmt.Errorf("testnet: model address %v in use behind %v", cfg.Public, cfg.Behind.cfg.Public)
			}
		}
	}
	if outside[cfg.Public] != nil {
		return nil, fmt.Errorf("testnet: model NAT %v exists", cfg.Public)
	}
	seed := binary.BigEndian.Uint32(cfg.Public.AsSlice()[len(cfg.Public.AsSlice())-4:])
	n := &ModelNAT{m: m, cfg: cfg, private: map[netip.AddrPort]*ModelConn{}, mappings: map[mapKey]*mapping{},
		byPort: map[uint16]*mapping{}, nextPort: 20000, rng: rand.New(rand.NewPCG(uint64(seed), 7)),
		parent: cfg.Behind, children: map[netip.Addr]*ModelNAT{}}
	outside[cfg.Public] = n
	m.all = append(m.all, n)
	return n, nil
}

// Listen opens a socket at addr (port 0: a free port): on the public
// network if nat is nil, else on nat's private network. delay is the
// socket's access delay on the public network (ignored behind a NAT, which
// has its own).
func (m *Model) Listen(addr netip.AddrPort, nat *ModelNAT, delay time.Duration) (*ModelConn, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if addr.Port() == 0 {
		inUse := func(ap netip.AddrPort) bool {
			if nat != nil {
				return nat.private[ap] != nil
			}
			return m.public[ap] != nil
		}
		for p := uint16(30000); ; p++ {
			if p == 0 {
				return nil, errors.New("testnet: model out of ports")
			}
			if cand := netip.AddrPortFrom(addr.Addr(), p); !inUse(cand) {
				addr = cand
				break
			}
		}
	}
	c := &ModelConn{m: m, nat: nat, local: addr, delay: delay, queue: make(chan modelPacket, 1024),
		closed: make(chan struct{}), changed: make(chan struct{})}
	if nat != nil {
		c.delay = nat.cfg.Delay
		if nat.private[addr] != nil || nat.children[addr.Addr()] != nil {
			return nil, fmt.Errorf("testnet: model address %v in use", addr)
		}
		nat.private[addr] = c
		return c, nil
	}
	if m.public[addr] != nil || m.nats[addr.Addr()] != nil {
		return nil, fmt.Errorf("testnet: model address %v in use", addr)
	}
	m.public[addr] = c
	return c, nil
}

// Dropped returns how many packets the network dropped (no route,
// filtered, expired).
func (m *Model) Dropped() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.dropped
}

// Rebind makes nat forget every mapping, as a NAT reboot or conntrack
// flush does.
func (n *ModelNAT) Rebind() {
	n.m.mu.Lock()
	defer n.m.mu.Unlock()
	clear(n.mappings)
	clear(n.byPort)
}

func (n *ModelNAT) key(src, dst netip.AddrPort) mapKey {
	switch n.cfg.Mapping {
	case nattype.MappingAPDM:
		return mapKey{src: src, dst: dst}
	case nattype.MappingADM:
		return mapKey{src: src, dst: netip.AddrPortFrom(dst.Addr(), 0)}
	}
	return mapKey{src: src}
}

// outbound translates a packet from a private socket; it returns the
// public source. Called with m.mu held.
func (n *ModelNAT) outbound(src, dst netip.AddrPort, now time.Time) netip.AddrPort {
	k := n.key(src, dst)
	mp := n.mappings[k]
	if mp != nil && now.Sub(mp.lastOut) > n.cfg.Timeout {
		delete(n.byPort, mp.external)
		delete(n.mappings, k)
		mp = nil
	}
	if mp == nil {
		port := src.Port()
		switch {
		case n.cfg.Mapping != nattype.MappingEIM && n.cfg.Sequential:
			port = nextSeqPort(n.lastSeq, func(p uint16) bool { return n.byPort[p] != nil })
			n.lastSeq = port
		case n.cfg.Mapping != nattype.MappingEIM:
			// Destination-dependent mappings get a random port, like
			// Linux's "masquerade random" (seeded: deterministic).
			for port = uint16(1024 + n.rng.IntN(65536-1024)); n.byPort[port] != nil; {
				port = uint16(1024 + n.rng.IntN(65536-1024))
			}
		case n.byPort[port] != nil:
			// A taken port: the next free one, as Linux does.
			for n.byPort[n.nextPort] != nil {
				n.nextPort++
			}
			port = n.nextPort
			n.nextPort++
		}
		mp = &mapping{key: k, external: port, allowed: map[netip.AddrPort]bool{}}
		n.mappings[k] = mp
		n.byPort[port] = mp
	}
	mp.lastOut = now
	mp.allowed[dst] = true
	return netip.AddrPortFrom(n.cfg.Public, mp.external)
}

// Sequential port allocation: the first port, and where allocation wraps
// to after 65535.
const (
	seqFirstPort = 20000
	seqWrapPort  = 1024
)

// nextSeqPort returns the port a Sequential NAT allocates after last (0:
// none allocated yet: seqFirstPort): last+1, past the ports taken reports
// in use, wrapping from 65535 to seqWrapPort. The loop is bounded by the
// size of the port range; were every port taken, it would return one in
// use (a NAT never holds that many mappings in a test).
func nextSeqPort(last uint16, taken func(uint16) bool) uint16 {
	p := last
	if p == 0 {
		p = seqFirstPort - 1
	}
	for range 65536 - seqWrapPort {
		if p == 65535 {
			p = seqWrapPort
		} else {
			p++
		}
		if !taken(p) {
			return p
		}
	}
	return p
}

// inbound finds the private destination of a packet to the NAT's public
// address, or false if the NAT drops it. Called with m.mu held.
func (n *ModelNAT) inbound(src, dst netip.AddrPort, now time.Time) (netip.AddrPort, bool) {
	mp := n.byPort[dst.Port()]
	if mp == nil || now.Sub(mp.lastOut) > n.cfg.Timeout {
		return netip.AddrPort{}, false
	}
	switch n.cfg.Filtering {
	case nattype.FilteringEIF, nattype.FilteringNone:
	case nattype.FilteringADF:
		ok := false
		for a := range mp.allowed {
			ok = ok || a.Addr() == src.Addr()
		}
		if !ok {
			return netip.AddrPort{}, false
		}
	default:
		if !mp.allowed[src] {
			return netip.AddrPort{}, false
		}
	}
	return mp.key.src, true
}

type modelPacket struct {
	data []byte
	from netip.AddrPort
}

// route delivers b from socket c to dst after the path's delay. A packet
// from behind a NAT climbs the NATs it is behind, translated at each,
// until it reaches a network where dst is (the NAT's LAN, a hairpin at the
// NAT, or the public network); every NAT it crosses adds its Delay, and a
// public sender adds its own.
func (m *Model) route(c *ModelConn, b []byte, dst netip.AddrPort) {
	now := time.Now()
	m.mu.Lock()
	defer m.mu.Unlock()
	src := c.local
	var delay time.Duration
	for n := c.nat; n != nil; n = n.parent {
		// The packet is on n's private network, from src.
		if n.private[dst] != nil || n.children[dst.Addr()] != nil { // same LAN
			m.deliverOn(n, dst, b, src, delay)
			return
		}
		if n.cfg.BlockUDP {
			m.drop(src, dst, "udp blocked")
			return
		}
		if dst.Addr() == n.cfg.Public { // hairpin
			if !n.cfg.Hairpin {
				m.drop(src, dst, "hairpin off")
				return
			}
			pub := n.outbound(src, dst, now)
			if to, ok := n.inbound(pub, dst, now); ok {
				m.deliverOn(n, to, b, pub, delay)
				return
			}
			m.drop(src, dst, "hairpin filtered")
			return
		}
		src = n.outbound(src, dst, now)
		delay += n.cfg.Delay
	}
	if c.nat == nil {
		delay += c.delay
	}
	if m.blocked[[2]netip.Addr{src.Addr(), dst.Addr()}] {
		m.drop(src, dst, "blocked")
		return
	}
	m.deliverOn(nil, dst, b, src, delay)
}

// deliverOn delivers b, after delay, to dst on the private network of nat
// (nil: the public network): to a socket there (on the public network
// after the receiver's access delay too), or through a NAT whose outside
// address dst is, which filters and translates it and passes it on to its
// own private network. Called with m.mu held.
func (m *Model) deliverOn(nat *ModelNAT, dst netip.AddrPort, b []byte, src netip.AddrPort, delay time.Duration) {
	sockets, nats := m.public, m.nats
	if nat != nil {
		sockets, nats = nat.private, nat.children
	}
	if peer := sockets[dst]; peer != nil {
		if nat == nil {
			delay += peer.delay
		}
		m.deliverLocked(peer, b, src, delay)
		return
	}
	if n := nats[dst.Addr()]; n != nil {
		// The NAT sits at the far end of the receiver's access link: it
		// filters when the packet arrives there, not when it was sent.
		b := append([]byte(nil), b...)
		time.AfterFunc(delay+n.cfg.Delay, func() {
			m.mu.Lock()
			defer m.mu.Unlock()
			if to, ok := n.inbound(src, dst, time.Now()); ok {
				m.deliverOn(n, to, b, src, 0)
				return
			}
			m.drop(src, dst, "filtered")
		})
		return
	}
	if nat == nil {
		m.drop(src, dst, "no route")
		return
	}
	m.drop(src, dst, "no socket")
}

// drop counts a dropped packet. Called with m.mu held.
func (m *Model) drop(from, to netip.AddrPort, why string) {
	m.dropped++
	if m.OnDrop != nil {
		m.OnDrop(from, to, why)
	}
}

func (m *Model) deliverLocked(to *ModelConn, b []byte, from netip.AddrPort, d time.Duration) {
	if to == nil {
		m.drop(from, netip.AddrPort{}, "no socket")
		return
	}
	p := modelPacket{data: append([]byte(nil), b...), from: from}
	if d <= 0 {
		to.enqueue(p)
		return
	}
	time.AfterFunc(d, func() { to.enqueue(p) })
}

// ModelConn is a socket of the Model. It implements net.PacketConn.
type ModelConn struct {
	m     *Model
	nat   *ModelNAT
	local netip.AddrPort
	delay time.Duration
	queue chan modelPacket

	mu       sync.Mutex
	deadline time.Time
	changed  chan struct{} // closed and replaced when the deadline changes
	closed   chan struct{}
	once     sync.Once
}

func (c *ModelConn) enqueue(p modelPacket) {
	select {
	case <-c.closed:
	case c.queue <- p:
	default: // receive buffer full: drop, as a kernel would
		c.m.mu.Lock()
		c.m.dropped++
		c.m.mu.Unlock()
	}
}

// ReadFrom implements net.PacketConn. A SetReadDeadline during a blocked
// read applies at once (quic-go unblocks its reader that way).
func (c *ModelConn) ReadFrom(b []byte) (int, net.Addr, error) {
	for {
		c.mu.Lock()
		dl, changed := c.deadline, c.changed
		c.mu.Unlock()
		var timeout <-chan time.Time
		var t *time.Timer
		if !dl.IsZero() {
			d := time.Until(dl)
			if d <= 0 {
				return 0, nil, os.ErrDeadlineExceeded
			}
			t = time.NewTimer(d)
			timeout = t.C
		}
		select {
		case p := <-c.queue:
			if t != nil {
				t.Stop()
			}
			n := copy(b, p.data)
			return n, net.UDPAddrFromAddrPort(p.from), nil
		case <-c.closed:
			if t != nil {
				t.Stop()
			}
			return 0, nil, net.ErrClosed
		case <-timeout:
			return 0, nil, os.ErrDeadlineExceeded
		case <-changed:
			if t != nil {
				t.Stop()
			}
		}
	}
}

// WriteTo implements net.PacketConn.
func (c *ModelConn) WriteTo(b []byte, addr net.Addr) (int, error) {
	select {
	case <-c.closed:
		return 0, net.ErrClosed
	default:
	}
	ua, ok := addr.(*net.UDPAddr)
	if !ok {
		return 0, fmt.Errorf("testnet: model write to %T", addr)
	}
	ap := ua.AddrPort()
	c.m.route(c, b, netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port()))
	return len(b), nil
}

// Close implements net.PacketConn.
func (c *ModelConn) Close() error {
	c.once.Do(func() {
		close(c.closed)
		c.m.mu.Lock()
		if c.nat != nil {
			delete(c.nat.private, c.local)
		} else {
			delete(c.m.public, c.local)
		}
		c.m.mu.Unlock()
	})
	return nil
}

// LocalAddr implements net.PacketConn.
func (c *ModelConn) LocalAddr() net.Addr { return net.UDPAddrFromAddrPort(c.local) }

// SetDeadline implements net.PacketConn (reads only: writes never block).
func (c *ModelConn) SetDeadline(t time.Time) error { return c.SetReadDeadline(t) }

// SetReadDeadline implements net.PacketConn.
func (c *ModelConn) SetReadDeadline(t time.Time) error {
	c.mu.Lock()
	c.deadline = t
	close(c.changed)
	c.changed = make(chan struct{})
	c.mu.Unlock()
	return nil
}

// SetWriteDeadline implements net.PacketConn; writes never block.
func (c *ModelConn) SetWriteDeadline(time.Time) error { return nil }
