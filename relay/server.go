// Package relay owns the relay path: a TURN server (pion/turn) that runs
// inside a bootstrap node, and the TURN client that peers use when no
// direct path exists.
//
// The Server accepts only ephemeral TURN REST credentials (see
// Credentials), which the bootstrap issues over authenticated control
// connections; it enforces allocations per peer, a lifetime and a
// bandwidth per allocation, and grants permissions only towards addresses
// its policy (the bootstrap's sessions) allows. pion's server starts its
// own goroutines per listener and allocation; Close stops them.
//
// The Client allocates on its own socket (UDP, or TCP when UDP is blocked),
// refreshes through pion, and hands out the relayed net.PacketConn that
// QUIC runs over. QUIC's TLS keeps the relay blind.
package relay

import (
	"crypto/rand"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pion/turn/v4"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/antnode/antnode/endpoint"
	"github.com/antnode/antnode/event"
	"github.com/antnode/antnode/identity"
	"github.com/antnode/antnode/internal/netguard"
)

// Realm is the TURN realm of the built-in relay.
const Realm = "antnode"

// ServerConfig configures a Server.
type ServerConfig struct {
	// UDP is the socket of TURN over UDP. Required. A *net.UDPConn is
	// read in batches, and the relayed sockets of allocations made over
	// it send in GSO runs (see batchListener).
	UDP net.PacketConn
	// TCP accepts TURN over TCP, for peers whose UDP is blocked. Nil: none.
	TCP net.Listener
	// RelayIP is the address allocations are made on. Required.
	RelayIP netip.Addr
	// Also are TURN sockets in further address families (one per
	// family, not UDP's): clients of that family allocate there, and
	// their allocations are made on RelayIP all the same, so a peer of
	// either family reaches them (RFC 6156: the relayed address's family
	// need not be the client's). Nil: UDP's family only.
	Also []Listeners
	// Secret signs the credentials. Nil: 32 random bytes (credentials die
	// with the process).
	Secret []byte
	// MaxAllocationsPerPeer bounds a peer's concurrent allocations.
	// Zero: 4.
	MaxAllocationsPerPeer int
	// MaxLifetime ends an allocation's data flow this long after it was
	// made, refreshes or not. Zero: 1 hour.
	MaxLifetime time.Duration
	// BytesPerSecond bounds each allocation's relayed traffic (each
	// direction). Zero: 12.5 MB/s (100 Mbit/s).
	BytesPerSecond int
	// ListenRelay opens the relayed sockets of allocations. Nil: real
	// sockets (net.ListenPacket). Only a *net.UDPConn sends in runs.
	ListenRelay func(network, addr string) (net.PacketConn, error)
	// Recorder receives relay events. Nil: discarded.
	Recorder event.Recorder
	// Logger receives pion's records (debug level and up). Nil: discarded.
	Logger *slog.Logger
	// MaxTCPConns and MaxTCPConnsPerIP cap the TURN-over-TCP connections
	// held at once, in total and from one source IP; one more is closed
	// at once. Zero: 4096 and 32.
	MaxTCPConns, MaxTCPConnsPerIP int
	// TCPAuthTimeout ends a TCP connection that has not made an
	// authenticated request this long after it was accepted. Zero: 10 s.
	TCPAuthTimeout time.Duration
	// TCPIdleTimeout ends an authenticated TCP connection that sends
	// nothing for this long (pion's clients refresh permissions every
	// 2 min and allocations before they expire). Zero: 10 min.
	TCPIdleTimeout time.Duration
	// TCPFrameTimeout ends a TCP connection whose frame has not been
	// completed this long after its first byte. Zero: 5 s.
	TCPFrameTimeout time.Duration
	// AuditInterval is the interval over which repeated security events
	// (one source, one reason) are aggregated into one record with a
	// count (event.Aggregator). Zero: 10 s.
	AuditInterval time.Duration
}

// checkAlso requires each of Also's listeners to have UDP, in a family
// of its own.
func (c *ServerConfig) checkAlso() error {
	seen := map[string]bool{endpoint.Family(addrPort(c.UDP.LocalAddr()).Addr()): true}
	for i, l := range c.Also {
		if l.UDP == nil {
			return fmt.Errorf("%w: Also[%d].UDP is required", ErrListeners, i)
		}
		fam := endpoint.Family(addrPort(l.UDP.LocalAddr()).Addr())
		if seen[fam] {
			return fmt.Errorf("%w: two UDP sockets of IPv%s", ErrListeners, fam)
		}
		seen[fam] = true
	}
	return nil
}

func (c *ServerConfig) defaults() {
	if c.MaxAllocationsPerPeer == 0 {
		c.MaxAllocationsPerPeer = 4
	}
	if c.MaxLifetime == 0 {
		c.MaxLifetime = time.Hour
	}
	if c.BytesPerSecond == 0 {
		c.BytesPerSecond = 12_500_000
	}
	if c.Recorder == nil {
		c.Recorder = event.Nop{}
	}
	if c.ListenRelay == nil {
		c.ListenRelay = net.ListenPacket
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.TCPAuthTimeout == 0 {
		c.TCPAuthTimeout = 10 * time.Second
	}
	if c.TCPIdleTimeout == 0 {
		c.TCPIdleTimeout = 10 * time.Minute
	}
	if c.TCPFrameTimeout == 0 {
		c.TCPFrameTimeout = 5 * time.Second
	}
}

// Listeners are a relay's TURN sockets in one address family.
type Listeners struct {
	UDP net.PacketConn // required
	TCP net.Listener   // nil: none
}

// Errors.
var (
	ErrQuota = errors.New("relay: allocation quota exceeded")
	// ErrListeners: ServerConfig.Also holds a socket without UDP, or a
	// second one of a family.
	ErrListeners = errors.New("relay: invalid ServerConfig.Also")
)

// Server is a TURN server.
type Server struct {
	cfg   ServerConfig
	turn  *turn.Server
	rec   event.Recorder // audit, for every event
	audit *event.Aggregator
	allow atomic.Pointer[func(identity.PeerID, netip.Addr) bool]

	mu       sync.Mutex
	byClient map[string]*client // 5-tuple source -> what it authenticated as (see client)
	prunedAt int                // len(byClient) after the last prune
	allocs   map[identity.PeerID]int
	total    int
	bytes    atomic.Uint64
	once     sync.Once
	tcp      []*turnListener // TCP's and Also's, those that are set
	batch    *batchListener  // the UDP listener read in batches; nil if cfg.UDP is not a *net.UDPConn
}

// NewServer starts the TURN server on cfg.UDP (and cfg.TCP).
func NewServer(cfg ServerConfig) (*Server, error) {
	switch {
	case cfg.UDP == nil:
		return nil, errors.New("relay: ServerConfig.UDP is required")
	case !cfg.RelayIP.IsValid():
		return nil, errors.New("relay: ServerConfig.RelayIP is required")
	case cfg.MaxAllocationsPerPeer < 0, cfg.MaxLifetime < 0, cfg.BytesPerSecond < 0, cfg.MaxTCPConns < 0, cfg.MaxTCPConnsPerIP < 0,
		cfg.TCPAuthTimeout < 0, cfg.TCPIdleTimeout < 0, cfg.TCPFrameTimeout < 0:
		return nil, errors.New("relay: negative limit")
	}
	if err := cfg.checkAlso(); err != nil {
		return nil, err
	}
	if cfg.Secret == nil {
		cfg.Secret = make([]byte, 32)
		if _, err := rand.Read(cfg.Secret); err != nil {
			return nil, err
		}
	}
	cfg.defaults()
	audit := event.NewAggregator(cfg.Recorder, cfg.AuditInterval)
	s := &Server{cfg: cfg, rec: audit, audit: audit, byClient: map[string]*client{}, allocs: map[identity.PeerID]int{}}
	tcfg := turn.ServerConfig{
		Realm:         Realm,
		AuthHandler:   s.auth,
		QuotaHandler:  s.quota,
		LoggerFactory: pionLogs{cfg.Logger},
		EventHandler: turn.EventHandler{
			OnAuth: s.onAuth,
			OnAllocationCreated: func(src, _ net.Addr, proto, user, _ string, relay net.Addr, _ int) {
				s.account(user, +1)
				s.clientAllocated(src, +1)
				s.rec.Record(event.Event{Kind: event.KindRelay, Detail: "allocate", Outcome: event.OutcomeOK,
					Peer: userPeer(user), Addr: addrPort(src)})
			},
			OnAllocationDeleted: func(src, _ net.Addr, proto, user, _ string) {
				s.account(user, -1)
				s.clientAllocated(src, -1)
				s.rec.Record(event.Event{Kind: event.KindRelay, Detail: "release", Outcome: event.OutcomeOK,
					Peer: userPeer(user), Addr: addrPort(src)})
			},
		},
	}
	for i, l := range s.listeners() {
		tcfg.PacketConnConfigs = append(tcfg.PacketConnConfigs, s.packetConfig(l.UDP, i == 0))
		if l.TCP != nil {
			tl := &turnListener{s: s, conns: map[string]*turnConn{}, Listener: netguard.New(l.TCP, netguard.Config{
				MaxConns: cfg.MaxTCPConns, MaxConnsPerIP: cfg.MaxTCPConnsPerIP, OnRefused: s.refusedTCP,
				Logger: cfg.Logger, Name: "relay TCP"})}
			s.tcp = append(s.tcp, tl)
			tcfg.ListenerConfigs = append(tcfg.ListenerConfigs,
				turn.ListenerConfig{Listener: tl, RelayAddressGenerator: &generator{s: s, ip: cfg.RelayIP}, PermissionHandler: s.permit})
		}
	}
	t, err := turn.NewServer(tcfg)
	if err != nil {
		return nil, fmt.Errorf("relay: %w", err)
	}
	s.turn = t
	return s, nil
}

// listeners are the server's TURN sockets: UDP's and TCP's, then Also's.
func (s *Server) listeners() []Listeners {
	return append([]Listeners{{UDP: s.cfg.UDP, TCP: s.cfg.TCP}}, s.cfg.Also...)
}

// packetConfig serves TURN over UDP on c: read in batches, and the
// relayed sockets of its allocations send in GSO runs, if c is a
// *net.UDPConn (the first one's batch listener is s.batch).
func (s *Server) packetConfig(c net.PacketConn, first bool) turn.PacketConnConfig {
	gen := &generator{s: s, ip: s.cfg.RelayIP}
	if uc, ok := c.(*net.UDPConn); ok {
		if err := setBuffers(uc); err != nil {
			s.cfg.Logger.Debug("relay: socket buffers", "err", err)
		}
		b := newBatchListener(uc)
		if first {
			s.batch = b
		}
		c, gen.batch = b, b
	}
	return turn.PacketConnConfig{PacketConn: c, RelayAddressGenerator: gen, PermissionHandler: s.permit}
}

// AddrsFor returns the relay's UDP and TCP addresses in the family of a
// client at a (its first family's when it has none there; TCP invalid
// without a TCP listener).
func (s *Server) AddrsFor(a netip.Addr) (udp, tcp netip.AddrPort) {
	ls := s.listeners()
	l := ls[0]
	for _, m := range ls {
		if endpoint.Family(addrPort(m.UDP.LocalAddr()).Addr()) == endpoint.Family(a) {
			l = m
			break
		}
	}
	udp = addrPort(l.UDP.LocalAddr())
	if l.TCP != nil {
		tcp = addrPort(l.TCP.Addr())
	}
	return udp, tcp
}

// SetPolicy sets which peer addresses a peer's allocations may be
// permitted to (the bootstrap's sessions decide). Until it is set, every
// permission is refused.
func (s *Server) SetPolicy(allow func(peer identity.PeerID, ip netip.Addr) bool) {
	s.allow.Store(&allow)
}

// Credentials issues credentials for peer, valid for ttl.
func (s *Server) Credentials(peer identity.PeerID, ttl time.Duration) Credentials {
	return NewCredentials(s.cfg.Secret, peer, time.Now(), ttl)
}

// UDPAddr and TCPAddr return where the server listens (TCP invalid if none).
func (s *Server) UDPAddr() netip.AddrPort { return addrPort(s.cfg.UDP.LocalAddr()) }

// RelayIP returns the address allocations are made on.
func (s *Server) RelayIP() netip.Addr { return s.cfg.RelayIP }

// TCPAddr returns the TCP listener's address, or an invalid one.
func (s *Server) TCPAddr() netip.AddrPort {
	if s.cfg.TCP == nil {
		return netip.AddrPort{}
	}
	return addrPort(s.cfg.TCP.Addr())
}

// Allocations returns the number of live allocations.
func (s *Server) Allocations() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.total
}

// BytesRelayed returns the bytes relayed so far, both directions.
func (s *Server) BytesRelayed() uint64 { return s.bytes.Load() }

// Close stops the server and every allocation. It is idempotent.
func (s *Server) Close() error {
	var err error
	s.once.Do(func() {
		err = s.turn.Close()
		for _, tl := range s.tcp {
			tl.CloseConns() // clients over TCP learn at once that their allocations are gone
		}
		s.audit.Close()
	})
	return err
}

func addrPort(a net.Addr) netip.AddrPort {
	ap, err := netip.ParseAddrPort(a.String())
	if err != nil {
		return netip.AddrPort{}
	}
	return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
}

// Ready is nil while the relay's TCP listener accepts (or there is
// none), and an error matching netguard.ErrNotAccepting while it does not.
func (s *Server) Ready() error {
	for _, tl := range s.tcp {
		if err := tl.Err(); err != nil {
			return err
		}
	}
	return nil
}

// onAuth hears pion's verdict on each authenticated request: a failure
// (a well-formed, unexpired username with the wrong password) is audited;
// a success marks a TCP connection authenticated.
func (s *Server) onAuth(src, _ net.Addr, _, user, _, method string, ok bool) {
	if ok {
		for _, tl := range s.tcp {
			tl.authenticated(src) // the listener that holds src marks it
		}
		return
	}
	s.rec.Record(event.Event{Kind: event.KindSecurity, Reason: event.ReasonBadCredentials, Addr: addrPort(src),
		Peer: userPeer(user), Detail: "relay credentials: wrong password"})
}

// auth accepts only unexpired REST credentials signed with the secret.
func (s *Server) auth(user, realm string, src net.Addr) ([]byte, bool) {
	peer, err := ParseUsername(user, time.Now())
	if err != nil {
		s.rec.Record(event.Event{Kind: event.KindSecurity, Reason: event.ReasonBadCredentials, Addr: addrPort(src), Detail: "relay credentials: " + errText(err)})
		return nil, false
	}
	s.authenticated(src, peer, time.Now())
	return turn.GenerateAuthKey(user, realm, Password(s.cfg.Secret, user)), true
}

// client is what the relay keeps of one client 5-tuple: the peer it
// authenticated as (its allocation's permissions are that peer's), its
// live allocations and when it last authenticated. An entry lives while
// the client has an allocation; without one (an authenticated request
// that allocated nothing), until clientGrace has passed.
type client struct {
	peer   identity.PeerID
	allocs int
	seen   time.Time
}

// clientGrace is how long an entry without an allocation is kept: past
// the authenticated requests that precede an allocation.
const clientGrace = time.Minute

// authenticated records that src authenticated as peer at now, and prunes
// the entries without an allocation whose grace is over once the map has
// grown by half since the last prune (so the cost is amortised).
func (s *Server) authenticated(src net.Addr, peer identity.PeerID, now time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	k := src.String()
	c := s.byClient[k]
	if c == nil {
		c = &client{}
		s.byClient[k] = c
	}
	c.peer, c.seen = peer, now
	if len(s.byClient) > max(64, s.prunedAt+s.prunedAt/2) {
		for k, c := range s.byClient {
			if c.allocs == 0 && now.Sub(c.seen) > clientGrace {
				delete(s.byClient, k)
			}
		}
		s.prunedAt = len(s.byClient)
	}
}

// clientAllocated counts src's allocations; the entry goes with the last.
func (s *Server) clientAllocated(src net.Addr, d int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	k := src.String()
	c := s.byClient[k]
	if c == nil {
		return
	}
	c.allocs = max(0, c.allocs+d)
	if c.allocs == 0 && d < 0 {
		delete(s.byClient, k)
	}
}

// Clients returns how many client 5-tuples the relay keeps state for.
func (s *Server) Clients() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.byClient)
}

func errText(err error) string {
	if errors.Is(err, ErrExpired) {
		return "expired"
	}
	return "malformed"
}

// quota admits an allocation while the peer has fewer than the maximum.
func (s *Server) quota(user, _ string, src net.Addr) bool {
	peer, err := ParseUsername(user, time.Now())
	if err != nil {
		return false
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.allocs[peer] >= s.cfg.MaxAllocationsPerPeer {
		s.rec.Record(event.Event{Kind: event.KindRelay, Detail: "allocate", Outcome: event.OutcomeFail,
			Reason: event.ReasonRelayQuota, Peer: peer.String()})
		s.rec.Record(event.Event{Kind: event.KindSecurity, Reason: event.ReasonRelayQuota, Addr: addrPort(src), Detail: "relay quota"})
		return false
	}
	return true
}

// account counts a peer's allocations as pion creates (+1) and deletes
// (-1) them.
func (s *Server) account(user string, d int) {
	_, id, ok := strings.Cut(user, ":")
	if !ok {
		return
	}
	peer, err := identity.ParsePeerID(id)
	if err != nil {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.allocs[peer] = max(0, s.allocs[peer]+d)
	s.total = max(0, s.total+d)
	if s.allocs[peer] == 0 {
		delete(s.allocs, peer)
	}
}

// permit grants a permission only towards an address the policy allows
// for the allocation's peer, or towards the relay's own address.
func (s *Server) permit(client net.Addr, peerIP net.IP) bool {
	s.mu.Lock()
	var peer identity.PeerID
	c, ok := s.byClient[client.String()]
	if ok {
		peer = c.peer
	}
	s.mu.Unlock()
	ip, ipok := netip.AddrFromSlice(peerIP)
	ip = ip.Unmap()
	allow := s.allow.Load()
	// The relay's own address is other allocations on this relay (relay
	// to relay, two peers that both keep a warm relay): authenticated
	// peers' allocations, whose packets the peer checks (credentials,
	// TLS) and whose rate is the relay's limits'.
	own := ip == s.cfg.RelayIP.Unmap()
	if !ok || !ipok || !own && (allow == nil || !(*allow)(peer, ip)) {
		s.rec.Record(event.Event{Kind: event.KindRelay, Detail: "permission", Outcome: event.OutcomeFail, Reason: event.ReasonRefused})
		s.rec.Record(event.Event{Kind: event.KindSecurity, Reason: event.ReasonRefused, Addr: addrPort(client), Detail: "relay permission refused"})
		return false
	}
	s.rec.Record(event.Event{Kind: event.KindRelay, Detail: "permission", Outcome: event.OutcomeOK})
	return true
}

// generator makes relayed sockets on the relay IP, wrapped in the
// lifetime and bandwidth limits. Those of allocations made over the
// batch listener (batch set) send in runs (see batchSocket).
type generator struct {
	s     *Server
	ip    netip.Addr
	batch *batchListener
}

func (g *generator) Validate() error { return nil }

// AllocatePacketConn makes the relayed socket in the relay IP's family,
// whatever family the client asked for (pion's client asks for IPv4, RFC
// 6156's default): the peers of an IPv6 relay are IPv6 nodes.
func (g *generator) AllocatePacketConn(_ string, port int) (net.PacketConn, net.Addr, error) {
	c, err := g.s.cfg.ListenRelay("udp"+endpoint.Family(g.ip), net.JoinHostPort(g.ip.String(), strconv.Itoa(port)))
	if err != nil {
		return nil, nil, err
	}
	inner := c
	if uc, ok := c.(*net.UDPConn); ok && g.batch != nil {
		if err := setBuffers(uc); err != nil {
			g.s.cfg.Logger.Debug("relay: socket buffers", "err", err)
		}
		inner = newBatchSocket(uc, g.batch)
	}
	lc := &limitedConn{PacketConn: inner, s: g.s, deadline: time.Now().Add(g.s.cfg.MaxLifetime),
		in: newRate(g.s.cfg.BytesPerSecond), out: newRate(g.s.cfg.BytesPerSecond)}
	// At the end of its lifetime the relayed socket's read fails, and
	// pion deletes the allocation: its quota slot frees, and the client's
	// next refresh is refused.
	if err := c.SetReadDeadline(lc.deadline); err != nil {
		c.Close()
		return nil, nil, fmt.Errorf("relay: allocation lifetime: %w", err)
	}
	return lc, c.LocalAddr(), nil
}

func (g *generator) AllocateConn(string, int) (net.Conn, net.Addr, error) {
	return nil, nil, errors.New("relay: TCP allocations are not offered")
}

// limitedConn is a relayed socket: it counts bytes, holds each direction
// to the allocation's bandwidth (by delaying, as a shaper does), and ends
// the allocation after its maximum lifetime.
type limitedConn struct {
	net.PacketConn
	s        *Server
	deadline time.Time
	in, out  *rate
}

var errLifetime = errors.New("relay: allocation lifetime exceeded")

func (c *limitedConn) ReadFrom(b []byte) (int, net.Addr, error) {
	for {
		n, a, err := c.PacketConn.ReadFrom(b)
		if !time.Now().Before(c.deadline) {
			return 0, nil, errLifetime // pion deletes the allocation
		}
		if err != nil {
			return n, a, err
		}
		c.in.wait(n)
		c.s.bytes.Add(uint64(n))
		return n, a, nil
	}
}

func (c *limitedConn) WriteTo(b []byte, a net.Addr) (int, error) {
	if time.Now().After(c.deadline) {
		return 0, errLifetime
	}
	c.out.wait(len(b))
	c.s.bytes.Add(uint64(len(b)))
	return c.PacketConn.WriteTo(b, a)
}

// rate is a token bucket in bytes with a 100 ms burst.
type rate struct {
	mu     sync.Mutex
	perSec float64
	tokens float64
	at     time.Time
}

func newRate(bps int) *rate {
	return &rate{perSec: float64(bps), tokens: float64(bps) / 10, at: time.Now()}
}

// wait blocks until n bytes may pass.
func (r *rate) wait(n int) {
	r.mu.Lock()
	now := time.Now()
	r.tokens = min(r.perSec/10, r.tokens+now.Sub(r.at).Seconds()*r.perSec)
	r.at = now
	r.tokens -= float64(n)
	short := -r.tokens
	r.mu.Unlock()
	if short > 0 {
		time.Sleep(time.Duration(short / r.perSec * float64(time.Second)))
	}
}

// userPeer returns the printable peer ID of a REST username ("" if it
// does not carry one).
func userPeer(user string) string {
	_, id, ok := strings.Cut(user, ":")
	if !ok {
		return ""
	}
	if _, err := identity.ParsePeerID(id); err != nil {
		return ""
	}
	return id
}

// Collector returns the relay's gauges for a Prometheus registry:
// allocations now and bytes relayed so far, read at scrape time.
func (s *Server) Collector() prometheus.Collector { return relayCollector{s} }

var (
	relayAllocDesc = prometheus.NewDesc("antnode_relay_allocations",
		"TURN allocations currently held on this node's relay.", nil, nil)
	relayBytesDesc = prometheus.NewDesc("antnode_relay_bytes_total",
		"Bytes this node's relay has forwarded between peers, both directions.", nil, nil)
)

type relayCollector struct{ s *Server }

func (c relayCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- relayAllocDesc
	ch <- relayBytesDesc
}

func (c relayCollector) Collect(ch chan<- prometheus.Metric) {
	ch <- constMetric(relayAllocDesc, prometheus.GaugeValue, float64(c.s.Allocations()))
	ch <- constMetric(relayBytesDesc, prometheus.CounterValue, float64(c.s.BytesRelayed()))
}

func constMetric(d *prometheus.Desc, t prometheus.ValueType, v float64) prometheus.Metric {
	m, err := prometheus.NewConstMetric(d, t, v)
	if err != nil {
		return prometheus.NewInvalidMetric(d, err)
	}
	return m
}
