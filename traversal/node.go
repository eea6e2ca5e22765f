// Package traversal owns the Node: a peer's QUIC endpoint, its bootstrap
// registrations, candidate discovery, and the per-peer connection attempt
// that takes two peers from "introduce me" to an authenticated QUIC
// connection (discover, coordinate, synchronise, punch, validate, dial).
//
// # Carrying traffic
//
// A Node carries its user's own streams to other peers, in net's shapes.
// One node serves a service by name; another opens streams to it by peer
// ID; the node finds or makes the connection underneath (direct, through
// the birthday search or a relay) and keeps it for the next stream:
//
//	ln, err := node.Listen("web", service.Allow{Peers: []identity.PeerID{friend}})
//	http.Serve(ln, handler) // each Accept: a net.Conn from a permitted peer
//
//	conn, err := node.Dial(ctx, serverID, "web") // a net.Conn
//	hc := &http.Client{Transport: &http.Transport{DialContext: node.HTTPDialer("web")}}
//	resp, err := hc.Get("http://" + serverID.String() + "/")
//
// Streams of every service share the one QUIC connection per peer pair
// and survive what the connection survives: a relay-to-direct upgrade, a
// network change, a NAT rebinding. A refused stream fails with a
// *service.StreamError naming the reason (unknown_service, not_allowed,
// target_unreachable, stream_limit). The built-in verified transfer
// (Conn.SendVerified) is the service TransferService. Limits and metrics
// of the streams are Config.Services; package service has the details.
//
// # Goroutines
//
// New starts: the bootstrap clients (see package bootstrap), one goroutine
// accepting peer connections, one per accepted connection serving its
// streams, one per incoming stream while its service handles it, and one
// per incoming offer. Close stops all of them and returns after they
// exit; it does not close the endpoint, which the caller owns.
package traversal

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/failsafe-go/failsafe-go/circuitbreaker"
	"github.com/quic-go/quic-go"
	"github.com/quic-go/quic-go/qlogwriter"

	"github.com/antnode/antnode/bootstrap"
	"github.com/antnode/antnode/bootstrap/wire"
	"github.com/antnode/antnode/endpoint"
	"github.com/antnode/antnode/event"
	"github.com/antnode/antnode/holepunch"
	"github.com/antnode/antnode/identity"
	"github.com/antnode/antnode/migration"
	"github.com/antnode/antnode/nattype"
	"github.com/antnode/antnode/service"
)

// PeerALPN is the TLS application protocol of peer-to-peer connections.
const PeerALPN = "antnode-peer/1"

// Bootstrap is a bootstrap node to register with.
type Bootstrap struct {
	Addr netip.AddrPort
	// ID is the bootstrap's expected key. Zero: pinned on first contact.
	ID identity.PeerID
}

func (b Bootstrap) String() string {
	if b.ID.IsZero() {
		return b.Addr.String()
	}
	return b.ID.String() + "@" + b.Addr.String()
}

// ParseBootstrap parses "[PEERID@]HOST:PORT"; HOST may be a name, which is
// resolved (preferring IPv4).
func ParseBootstrap(s string) (Bootstrap, error) {
	return parseBootstrap(s, resolveHost)
}

func resolveHost(host string) (netip.Addr, error) {
	addrs, err := net.DefaultResolver.LookupNetIP(context.Background(), "ip", host)
	if err != nil {
		return netip.Addr{}, err
	}
	for _, a := range addrs {
		if a.Unmap().Is4() {
			return a.Unmap(), nil
		}
	}
	if len(addrs) == 0 {
		return netip.Addr{}, fmt.Errorf("%s has no address", host)
	}
	return addrs[0], nil
}

func parseBootstrap(s string, resolve func(string) (netip.Addr, error)) (Bootstrap, error) {
	var b Bootstrap
	orig := s
	s = strings.TrimSpace(s)
	if id, addr, ok := strings.Cut(s, "@"); ok {
		pid, err := identity.ParsePeerID(id)
		if err != nil {
			return b, fmt.Errorf("bootstrap %q: %w", orig, err)
		}
		b.ID, s = pid, addr
	}
	host, portStr, err := net.SplitHostPort(s)
	if err != nil {
		return b, fmt.Errorf("bootstrap %q: %w", orig, err)
	}
	port, err := strconv.ParseUint(portStr, 10, 16)
	if err != nil || port == 0 {
		return b, fmt.Errorf("bootstrap %q: invalid port %q", orig, portStr)
	}
	a, err := netip.ParseAddr(host)
	if err != nil {
		if host == "" {
			return b, fmt.Errorf("bootstrap %q: missing host", orig)
		}
		if a, err = resolve(host); err != nil {
			return b, fmt.Errorf("bootstrap %q: %w", orig, err)
		}
	}
	if a.Zone() != "" || a.IsUnspecified() || a.IsMulticast() {
		return b, fmt.Errorf("bootstrap %q: not a unicast address", orig)
	}
	b.Addr = netip.AddrPortFrom(a.Unmap(), uint16(port))
	return b, nil
}

// ParseBootstraps parses a comma-separated list of bootstraps.
func ParseBootstraps(s string) ([]Bootstrap, error) {
	return parseBootstraps(s, resolveHost)
}

func parseBootstraps(s string, resolve func(string) (netip.Addr, error)) ([]Bootstrap, error) {
	var out []Bootstrap
	for part := range strings.SplitSeq(s, ",") {
		if strings.TrimSpace(part) == "" {
			continue
		}
		b, err := parseBootstrap(part, resolve)
		if err != nil {
			return nil, err
		}
		out = append(out, b)
	}
	return out, nil
}

// Config configures a Node.
type Config struct {
	// Identity is the node's key. Required.
	Identity *identity.Identity
	// Endpoint is the node's socket. Required; not closed by the Node.
	Endpoint *endpoint.Endpoint
	// Bootstraps to register with. May be empty (the node then only
	// accepts direct connections).
	Bootstraps []Bootstrap
	// Recorder receives every phase's events. Nil: discarded.
	Recorder event.Recorder
	// Logger receives records that are not events. Nil: discarded.
	Logger *slog.Logger
	// ConnectTimeout bounds one connection attempt, both as initiator and
	// responder. Zero: 15 s.
	ConnectTimeout time.Duration
	// PunchBudget bounds one punch round. Zero: 3 s.
	PunchBudget time.Duration
	// HandshakeTimeout bounds a QUIC handshake to a peer. Zero: 5 s.
	HandshakeTimeout time.Duration
	// KeepAlive is the QUIC keepalive period on peer connections, which
	// also keeps their NAT mappings. Zero: 10 s.
	KeepAlive time.Duration
	// IdleTimeout closes a peer connection that hears nothing. Zero: 30 s.
	IdleTimeout time.Duration
	// MaxTransfer bounds the size of a verified transfer this node
	// accepts. Zero: 1 GiB.
	MaxTransfer int64
	// Relay says when connections use the relay. Zero: RelayAuto.
	Relay RelayMode
	// TURN is a third-party TURN server to allocate on instead of the
	// bootstraps' relay. Nil: the bootstraps' relay.
	TURN *TURNServer
	// RelayTTL is the lifetime of credentials derived for TURN. Zero: 1 h.
	RelayTTL time.Duration
	// Tracer, if set, traces every peer QUIC connection (qlog; see
	// monitor.QLogTracer). Nil: no tracing.
	Tracer func(context.Context, bool, quic.ConnectionID) qlogwriter.Trace
	// UpgradeBase and UpgradeMax pace the attempts of a relayed
	// connection (that this node dialled through its allocation) to move
	// to a direct path: the first after UpgradeBase, doubling up to
	// UpgradeMax between attempts, for as long as the connection lives.
	// Zero: 1 s and 60 s; negative UpgradeBase: never upgrade.
	UpgradeBase, UpgradeMax time.Duration
	// DeadAfter is how long a direct path of a connection this node
	// dialled may carry nothing back, while this side sends, before the
	// connection moves to the relay (at least 4 RTT). DeadPathCheck is
	// how often that is checked. Zero: 1.5 s and 250 ms; negative
	// DeadPathCheck: never.
	DeadAfter, DeadPathCheck time.Duration
	// NetworkPoll is how often the host's addresses are checked for a
	// change (which triggers re-discovery and moving the connections this
	// node dialled). Zero: 1 s; negative: never.
	NetworkPoll time.Duration
	// Addrs reads the host's addresses for the network watcher. Nil:
	// migration.Addrs.
	Addrs func() ([]netip.Addr, error)
	// RelayIdle is how long an unused shared allocation is kept for the
	// next relayed connection before it is released. Zero: 30 s.
	RelayIdle time.Duration
	// RelayListen opens a TURN client's UDP socket; RelayDialTCP its TCP
	// connection. Nil: real sockets.
	RelayListen  func() (net.PacketConn, error)
	RelayDialTCP func(ctx context.Context, addr netip.AddrPort) (net.Conn, error)
	// DisableTCPFallback stops the node from registering with bootstraps
	// over TLS on TCP when QUIC does not get through (UDP blocked). Zero:
	// the fallback is on.
	DisableTCPFallback bool
	// PrimeTTL is the TTL of the priming packets sent as soon as the
	// peer's candidates are known: enough to leave this side's NAT, too
	// little to reach the far one. Zero: 2; negative: no priming.
	PrimeTTL int
	// BreakerThreshold is how many consecutive failures open a
	// bootstrap's circuit breaker; BreakerDelay how long it stays open
	// before a trial request. Zero: 5 and 60 s.
	BreakerThreshold int
	BreakerDelay     time.Duration
	// MaxInflight is the number of concurrent attempts above which new
	// attempts are degraded (no speculative dials, no birthday search,
	// slower checks). Zero: 64.
	MaxInflight int
	// MaxPeerStates bounds the per-peer state machines kept for peers
	// without a connection (failed, closed or never reached); beyond it
	// the one whose state changed longest ago is forgotten. Connected
	// peers always keep theirs. Zero: 1024.
	MaxPeerStates int
	// MaxRounds bounds the punch rounds of one attempt. Zero: 2.
	MaxRounds int
	// SpeculativeDials bounds the QUIC dials started to the peer's
	// candidates before any check validates. Zero: 4; negative: none.
	SpeculativeDials int
	// Birthday bounds the birthday search (zero value: its defaults).
	Birthday holepunch.BirthdayConfig
	// Listen opens the extra sockets of the birthday search. Nil: real
	// UDP sockets.
	Listen holepunch.Listener
	// ReclassifyEvery is how often the NAT is measured again even when no
	// observed address changed. Zero: 10 minutes.
	ReclassifyEvery time.Duration
	// AllowLoopback makes loopback addresses host candidates. Zero: only
	// when the socket is bound to loopback or every bootstrap is on
	// loopback.
	AllowLoopback bool
	// Services configures the application streams peers open to this
	// node (limits, metrics; see package service). Its Local is set to
	// the node's ID; nil Recorder and Logger default to the node's. The
	// zero value: service's defaults, metrics not registered.
	Services service.Config
}

func (c *Config) validate() error {
	switch {
	case c.Identity == nil:
		return errors.New("traversal: Config.Identity is required")
	case c.Endpoint == nil:
		return errors.New("traversal: Config.Endpoint is required")
	case c.ConnectTimeout < 0, c.PunchBudget < 0, c.HandshakeTimeout < 0, c.KeepAlive < 0, c.IdleTimeout < 0, c.MaxTransfer < 0:
		return errors.New("traversal: Config has a negative duration or limit")
	}
	if c.Recorder == nil {
		c.Recorder = event.Nop{}
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.Listen == nil {
		c.Listen = holepunch.ListenUDP
	}
	c.defaultTimes()
	c.defaultLimits()
	if !c.AllowLoopback {
		local := c.Endpoint.LocalAddr().Addr()
		all := len(c.Bootstraps) > 0
		for _, b := range c.Bootstraps {
			all = all && b.Addr.Addr().IsLoopback()
		}
		c.AllowLoopback = local.IsLoopback() || all
	}
	return nil
}

// orZero sets *v to def when it is zero; orPositive when it is zero or
// negative. Which one a field takes is its documented zero value: a
// field whose negative value means "never" or "none" takes orZero.
func orZero[T int | int64 | time.Duration](v *T, def T) {
	if *v == 0 {
		*v = def
	}
}

func orPositive[T int | int64 | time.Duration](v *T, def T) {
	if *v <= 0 {
		*v = def
	}
}

// defaultTimes fills in the durations' defaults.
func (c *Config) defaultTimes() {
	orZero(&c.ConnectTimeout, 15*time.Second)
	orZero(&c.PunchBudget, 3*time.Second)
	orZero(&c.HandshakeTimeout, 5*time.Second)
	orZero(&c.KeepAlive, 10*time.Second)
	orZero(&c.IdleTimeout, 30*time.Second)
	orPositive(&c.RelayTTL, time.Hour)
	orPositive(&c.DeadAfter, 1500*time.Millisecond)
	orZero(&c.DeadPathCheck, 250*time.Millisecond) // negative: never
	orZero(&c.UpgradeBase, time.Second)            // negative: never upgrade
	orPositive(&c.UpgradeMax, time.Minute)
	orPositive(&c.RelayIdle, 30*time.Second)
	orPositive(&c.ReclassifyEvery, 10*time.Minute)
	orPositive(&c.BreakerDelay, 60*time.Second)
}

// defaultLimits fills in the counts' defaults.
func (c *Config) defaultLimits() {
	orZero(&c.Services.MaxStreamsPerPeer, 1024) // service's default, also sizes QUIC's stream limit
	orZero(&c.MaxTransfer, 1<<30)
	orPositive(&c.MaxRounds, 2)
	orPositive(&c.BreakerThreshold, 5)
	orPositive(&c.MaxInflight, 64)
	orPositive(&c.MaxPeerStates, 1024)
	orZero(&c.PrimeTTL, 2) // negative: no priming
	c.PrimeTTL = max(c.PrimeTTL, 0)
	orZero(&c.SpeculativeDials, 4) // negative: none
	c.SpeculativeDials = max(c.SpeculativeDials, 0)
}

// Node is a peer: it stays registered with its bootstraps, connects to
// other peers through them and accepts their connections.
type Node struct {
	cfg   Config
	rec   event.Recorder
	log   *slog.Logger
	agent *holepunch.Agent
	ln    *quic.Listener

	relayMu sync.Mutex
	relays  map[string]*sharedRelay
	// relayUses maps the connections made through a shared relay to it.
	relayUses map[*quic.Conn]*relayUse

	paths *migration.Manager // every connection's path: watch, keepalive, moves

	injMu sync.Mutex
	inj   *endpoint.Injector // nil until a connection is rerouted

	breakers map[string]circuitbreaker.CircuitBreaker[*bootstrap.Session] // by label; set in New
	degrade  degrader

	mu         sync.Mutex
	machines   map[identity.PeerID]*Machine
	allow      map[State][]State   // the transition table, shared (read-only) by the machines
	clients    []*bootstrap.Client // set once in New
	nat        nattype.Type
	announced  []wire.Candidate
	reclassify chan struct{}
	expected   map[identity.PeerID][]expectation
	conns      map[*quic.Conn]*Conn

	services *service.Mux
	dialMu   sync.Mutex
	dialing  map[identity.PeerID]*connCall // PeerConn's attempts in flight

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
	once   sync.Once
}

// New starts a Node.
func New(cfg Config) (*Node, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	agent, err := holepunch.NewAgent(holepunch.AgentConfig{Endpoint: cfg.Endpoint, Recorder: cfg.Recorder, Logger: cfg.Logger})
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	n := &Node{cfg: cfg, rec: cfg.Recorder, log: cfg.Logger, agent: agent,
		expected: make(map[identity.PeerID][]expectation), conns: make(map[*quic.Conn]*Conn),
		reclassify: make(chan struct{}, 1), relays: make(map[string]*sharedRelay), relayUses: make(map[*quic.Conn]*relayUse),
		machines: make(map[identity.PeerID]*Machine), allow: Transitions(), ctx: ctx, cancel: cancel,
		dialing: make(map[identity.PeerID]*connCall)}
	if n.services, err = n.newServices(); err != nil {
		cancel()
		agent.Close()
		return nil, err
	}
	if n.paths, err = n.newPaths(); err != nil {
		cancel()
		agent.Close()
		return nil, err
	}
	ln, err := cfg.Endpoint.Transport().Listen(cfg.Identity.ServerTLS(PeerALPN), n.listenQUIC())
	if err != nil {
		cancel()
		n.paths.Close()
		agent.Close()
		return nil, fmt.Errorf("traversal: listen: %w", err)
	}
	n.ln = ln
	n.breakers = make(map[string]circuitbreaker.CircuitBreaker[*bootstrap.Session], len(cfg.Bootstraps))
	for i := range cfg.Bootstraps {
		n.breakers[strconv.Itoa(i)] = n.newBreaker(strconv.Itoa(i))
	}
	var clients []*bootstrap.Client
	for i, b := range cfg.Bootstraps {
		cl, err := bootstrap.NewClient(bootstrap.ClientConfig{
			Identity: cfg.Identity, Endpoint: cfg.Endpoint, Addr: b.Addr, ID: b.ID,
			Label: strconv.Itoa(i), Recorder: cfg.Recorder, Logger: cfg.Logger,
			Local:       n.localIntro,
			OnOffer:     n.handleOffer,
			TCPFallback: !cfg.DisableTCPFallback,
			OnObserved:  n.observedFunc(i),
		})
		if err != nil {
			for _, c := range clients {
				c.Close()
			}
			n.Close()
			return nil, err
		}
		clients = append(clients, cl)
	}
	// The clients' goroutines call back into the node (localIntro)
	// already; they see the list once it is complete.
	n.mu.Lock()
	n.clients = clients
	n.mu.Unlock()
	n.wg.Add(2)
	go n.acceptLoop()
	go n.classifyLoop()
	return n, nil
}

// poke asks the classify loop to measure the NAT again (an observed address
// changed, or a bootstrap registered).
func (n *Node) poke() {
	select {
	case n.reclassify <- struct{}{}:
	default:
	}
}

// classifyLoop classifies the NAT when a bootstrap reports an observed
// address (at registration and when it changes) and every ReclassifyEvery,
// and announces candidate changes to the bootstraps.
func (n *Node) classifyLoop() {
	defer n.wg.Done()
	t := time.NewTicker(n.cfg.ReclassifyEvery)
	defer t.Stop()
	for {
		select {
		case <-n.ctx.Done():
			return
		case <-n.reclassify:
		case <-t.C:
			if n.degrade.busy(n.cfg.MaxInflight) {
				continue // optional work waits while attempts are shed
			}
		}
		// Let the other bootstraps register too before measuring.
		select {
		case <-n.ctx.Done():
			return
		case <-time.After(100 * time.Millisecond):
		}
		ctx, cancel := context.WithTimeout(n.ctx, 10*time.Second)
		if _, err := n.Classify(ctx); err != nil && n.ctx.Err() == nil {
			n.log.Debug("traversal: classify", "err", err)
		}
		cancel()
		n.announce()
	}
}

// CandidateDiff returns the candidates of cur whose address is not in prev
// (to add) and the addresses of prev not in cur (to remove).
func CandidateDiff(prev, cur []wire.Candidate) (add []wire.Candidate, remove []netip.AddrPort) {
	for _, c := range cur {
		if !slices.ContainsFunc(prev, func(p wire.Candidate) bool { return p.Addr == c.Addr }) {
			add = append(add, c)
		}
	}
	for _, p := range prev {
		if !slices.ContainsFunc(cur, func(c wire.Candidate) bool { return c.Addr == p.Addr }) {
			remove = append(remove, p.Addr)
		}
	}
	return add, remove
}

// announce sends candidate additions and removals to every registered
// bootstrap (ADD_ADDRESS / REMOVE_ADDRESS).
func (n *Node) announce() {
	cands := n.candidates()
	n.mu.Lock()
	prev := n.announced
	n.announced = cands
	n.mu.Unlock()
	add, remove := CandidateDiff(prev, cands)
	if prev == nil || (len(add) == 0 && len(remove) == 0) {
		return // the registration carried the first set
	}
	for _, c := range n.registered() {
		if err := c.Announce(add, remove); err != nil {
			n.log.Debug("traversal: announce", "bootstrap", c.Label(), "err", err)
		}
	}
	for _, a := range add {
		n.rec.Record(event.Event{Kind: event.KindCandidate, Addr: a.Addr, Detail: a.Kind.String(), Value: float64(a.Priority)})
	}
}

func (c *Config) peerQUIC(keepalive time.Duration) *quic.Config {
	return &quic.Config{
		HandshakeIdleTimeout:  c.HandshakeTimeout,
		MaxIdleTimeout:        c.IdleTimeout,
		KeepAlivePeriod:       keepalive,
		MaxIncomingStreams:    int64(c.Services.MaxStreamsPerPeer) + 16, // past the service limit: refusals, not stalls
		MaxIncomingUniStreams: 4,                                        // notices: the nomination, path moves
		Tracer:                c.Tracer,
	}
}

// peerQUIC is the QUIC configuration of peer connections made now: the
// keepalive follows the learned NAT mapping lifetime.
func (n *Node) peerQUIC() *quic.Config { return n.cfg.peerQUIC(n.Keepalive()) }

// listenQUIC is the configuration of a listener: each accepted connection
// gets the configuration of the moment it arrives.
func (n *Node) listenQUIC() *quic.Config {
	conf := n.cfg.peerQUIC(n.cfg.KeepAlive)
	conf.GetConfigForClient = func(*quic.ClientInfo) (*quic.Config, error) { return n.peerQUIC(), nil }
	return conf
}

// ID returns the node's peer ID.
func (n *Node) ID() identity.PeerID { return n.cfg.Identity.ID() }

// bootstrapClients returns the bootstrap clients (all of them once New
// has returned).
func (n *Node) bootstrapClients() []*bootstrap.Client {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.clients
}

// NAT returns the node's NAT type as measured so far.
func (n *Node) NAT() nattype.Type {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.nat
}

// Close stops the node: bootstrap registrations, peer connections and
// their goroutines. It is idempotent.
func (n *Node) Close() error {
	n.once.Do(func() {
		n.cancel()
		n.paths.Close()
		for _, c := range n.bootstrapClients() {
			c.Close()
		}
		n.ln.Close()
		n.mu.Lock()
		conns := make([]*quic.Conn, 0, len(n.conns))
		for c := range n.conns {
			conns = append(conns, c)
		}
		n.mu.Unlock()
		for _, c := range conns {
			c.CloseWithError(0, "node closing")
		}
		n.closeRelays()
		n.services.Close()
		n.wg.Wait()
		n.injMu.Lock()
		if n.inj != nil {
			n.inj.Close()
		}
		n.injMu.Unlock()
		n.agent.Close()
	})
	return nil
}

// BootstrapStatus is one bootstrap registration's state.
type BootstrapStatus struct {
	Label   string
	Addr    netip.AddrPort
	ID      identity.PeerID
	Breaker string // circuit breaker: closed, half-open or open
	bootstrap.Status
}

// Bootstraps returns the state of every bootstrap registration.
func (n *Node) Bootstraps() []BootstrapStatus {
	clients := n.bootstrapClients()
	out := make([]BootstrapStatus, 0, len(clients))
	for _, c := range clients {
		out = append(out, BootstrapStatus{Label: c.Label(), Addr: c.Addr(), ID: c.ServerID(),
			Breaker: n.breakers[c.Label()].State().String(), Status: c.Status()})
	}
	return out
}

// WaitReady blocks until the node is registered with at least one bootstrap.
func (n *Node) WaitReady(ctx context.Context) error {
	clients := n.bootstrapClients()
	if len(clients) == 0 {
		return errors.New("traversal: no bootstraps configured")
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	errs := make(chan error, len(clients))
	for _, c := range clients {
		go func() { errs <- c.WaitReady(ctx) }()
	}
	var all []error
	for range clients {
		err := <-errs
		if err == nil {
			return nil
		}
		all = append(all, err)
	}
	return fmt.Errorf("traversal: no bootstrap reachable: %w", errors.Join(all...))
}

// localIntro returns what this node announces: its NAT type and candidates.
func (n *Node) localIntro() (nattype.Type, []wire.Candidate) {
	return n.NAT(), n.candidates()
}

// candidates gathers host and server-reflexive candidates.
func (n *Node) candidates() []wire.Candidate {
	local := n.cfg.Endpoint.LocalAddr()
	var ifAddrs []netip.Addr
	if local.Addr().IsUnspecified() {
		ifAddrs = interfaceAddrs()
	}
	cands := HostCandidates(local, ifAddrs, HostPolicy{Loopback: n.cfg.AllowLoopback})
	var observed []netip.AddrPort
	for _, c := range n.bootstrapClients() {
		if st := c.Status(); st.Registered {
			observed = append(observed, st.Observed)
		}
	}
	return append(cands, ServerReflexive(observed, cands)...)
}

// registered returns the clients that are registered now, in order.
func (n *Node) registered() []*bootstrap.Client {
	var out []*bootstrap.Client
	for _, c := range n.bootstrapClients() {
		if c.Status().Registered {
			out = append(out, c)
		}
	}
	return out
}

// expectation is an attempt waiting for connections from a peer: the
// ufrag of this side's credentials for the attempt, which the dialler
// sends as its TLS server name (attemptName), and where they go.
type expectation struct {
	ufrag string
	ch    chan *quic.Conn
}

// expect registers interest in incoming connections from peer for the
// attempt whose local credentials have ufrag.
func (n *Node) expect(peer identity.PeerID, ufrag string) (<-chan *quic.Conn, func()) {
	// Several connections from the peer may arrive (the dialler may have
	// several dials succeed); the attempt takes the nominated one.
	ch := make(chan *quic.Conn, 8)
	n.mu.Lock()
	n.expected[peer] = append(n.expected[peer], expectation{ufrag: ufrag, ch: ch})
	n.mu.Unlock()
	return ch, func() {
		n.mu.Lock()
		defer n.mu.Unlock()
		l := n.expected[peer]
		if i := slices.IndexFunc(l, func(e expectation) bool { return e.ch == ch }); i >= 0 {
			l = slices.Delete(l, i, i+1)
		}
		if len(l) == 0 {
			delete(n.expected, peer)
		} else {
			n.expected[peer] = l
		}
	}
}

func (n *Node) acceptLoop() {
	defer n.wg.Done()
	n.acceptOn(n.ln)
}

// acceptOn accepts peer connections on ln (the node's listener, or one on
// a relay allocation) until it closes: each is tracked and handed to an
// attempt waiting for that peer.
func (n *Node) acceptOn(ln *quic.Listener) {
	for {
		qc, err := ln.Accept(n.ctx)
		if err != nil {
			return
		}
		peer, err := identity.PeerFromState(qc.ConnectionState().TLS)
		if err != nil {
			qc.CloseWithError(1, "unauthenticated")
			continue
		}
		n.track(qc, peer, event.PathDirect, false)
		n.mu.Lock()
		waiter := pickExpectation(n.expected[peer], qc.ConnectionState().TLS.ServerName)
		n.mu.Unlock()
		if waiter != nil {
			select {
			case waiter <- qc:
			default:
			}
		}
	}
}

// attemptName is the TLS server name a dialler sends: the ufrag of the
// accepting side's credentials for the attempt, so that the accepting
// side hands the connection to that attempt when a peer has several under
// way (it connected, closed and connects again, say).
func attemptName(ufrag string) string { return ufrag + attemptSuffix }

const attemptSuffix = ".attempt.antnode"

// pickExpectation returns where a connection whose dialler sent
// serverName goes: the attempt it names, or (a dialler that names none)
// the peer's oldest one. It is a pure function.
func pickExpectation(l []expectation, serverName string) chan *quic.Conn {
	if ufrag, ok := strings.CutSuffix(serverName, attemptSuffix); ok {
		if i := slices.IndexFunc(l, func(e expectation) bool { return e.ufrag == ufrag }); i >= 0 {
			return l[i].ch
		}
		return nil // an attempt that is over
	}
	if len(l) > 0 {
		return l[0].ch
	}
	return nil
}

// closedIfGone moves peer's machine to closed when no live connection to
// it is left (and the machine stands for one: see ConnectionClosed).
func (n *Node) closedIfGone(peer identity.PeerID) {
	n.mu.Lock()
	for _, c := range n.conns {
		if c.peer == peer && c.qc.Context().Err() == nil {
			n.mu.Unlock()
			return
		}
	}
	n.mu.Unlock()
	if err := n.machine(peer).ConnectionClosed(event.ReasonNone); err != nil {
		n.log.Debug("traversal: state", "peer", peer.Short(), "err", err)
	}
}

// track records a peer connection and serves its incoming streams until it
// closes.
func (n *Node) track(qc *quic.Conn, peer identity.PeerID, path event.Path, outgoing bool) *Conn {
	c := &Conn{node: n, qc: qc, peer: peer, outgoing: outgoing, since: time.Now(), nominated: make(chan struct{})}
	c.mc = n.paths.Track(qc, migration.Track{Peer: peer, Path: path,
		Manage:     outgoing && (path == event.PathDirect || n.relayOf(qc) != nil),
		NoUpgrade:  n.cfg.Relay == RelayForce, // relayed on purpose: never upgrade
		OnNominate: func() { close(c.nominated) }})
	n.mu.Lock()
	n.conns[qc] = c
	n.mu.Unlock()
	n.wg.Add(1)
	go func() {
		defer n.wg.Done()
		defer func() {
			n.mu.Lock()
			delete(n.conns, qc)
			n.mu.Unlock()
			n.closedIfGone(peer)
		}()
		c.serveStreams()
	}()
	return c
}

// ownEndpoint closes ep (a socket of its own, from the birthday search)
// when qc ends, or when the node closes.
func (n *Node) ownEndpoint(qc *quic.Conn, ep *endpoint.Endpoint) {
	n.wg.Add(1)
	go func() {
		defer n.wg.Done()
		select {
		case <-qc.Context().Done():
		case <-n.ctx.Done():
		}
		ep.Close()
	}()
}

// machine returns peer's state machine, creating it.
func (n *Node) machine(peer identity.PeerID) *Machine {
	n.mu.Lock()
	defer n.mu.Unlock()
	m := n.machines[peer]
	if m == nil {
		if len(n.machines) >= n.cfg.MaxPeerStates {
			n.evictMachinesLocked()
		}
		m = &Machine{peer: peer, rec: n.rec, allow: n.allow, state: StateIdle, since: time.Now()}
		n.machines[peer] = m
	}
	return m
}

// evictMachinesLocked forgets peers without a connection, those whose
// state changed longest ago, until fewer than MaxPeerStates of them
// remain. One scan frees a sixteenth of the limit at once, so that a
// stream of new peers costs a scan per many of them, not per peer.
func (n *Node) evictMachinesLocked() {
	type idleState struct {
		id    identity.PeerID
		since time.Time
	}
	var idle []idleState
	for id, m := range n.machines {
		if st, since := m.State(); !st.Connected() {
			idle = append(idle, idleState{id, since})
		}
	}
	excess := len(idle) - n.cfg.MaxPeerStates + max(1, n.cfg.MaxPeerStates/16)
	if excess <= 0 {
		return
	}
	slices.SortFunc(idle, func(a, b idleState) int { return a.since.Compare(b.since) })
	for _, s := range idle[:min(excess, len(idle))] {
		delete(n.machines, s.id)
	}
}

// move drives peer's machine; a refused move (concurrent attempts to the
// same peer) is logged, not fatal.
func (n *Node) move(peer identity.PeerID, s State, reason event.Reason, att *event.Attempt) {
	m := n.machine(peer)
	if err := m.To(s, reason, att.ID()); err != nil {
		// A move the table does not allow is a fault of this code, not
		// of the network: the state the API shows is now stale. It is
		// reported as a failed state change, which tests look for.
		from, _ := m.State()
		n.rec.Record(event.Event{Kind: event.KindStateChange, Outcome: event.OutcomeFail, Peer: peer.String(),
			Detail: from.String(), To: s.String(), Reason: reason, Attempt: att.ID()})
		n.log.Warn("traversal: state change refused", "peer", peer.Short(), "err", err)
	}
}

// PeerStatus is one peer's state for the API and the dashboard.
type PeerStatus struct {
	ID          identity.PeerID `json:"id"`
	State       State           `json:"state"`
	Since       time.Time       `json:"since"`
	Path        string          `json:"path"`
	RTT         time.Duration   `json:"rtt_ns"`
	Connections int             `json:"connections"`
	Transitions []Transition    `json:"transitions,omitempty"`
}

// Peers returns the state of every peer the node knows.
func (n *Node) Peers() []PeerStatus {
	n.mu.Lock()
	machines := make(map[identity.PeerID]*Machine, len(n.machines))
	for id, m := range n.machines {
		machines[id] = m
	}
	conns := make([]*Conn, 0, len(n.conns))
	for _, c := range n.conns {
		conns = append(conns, c)
	}
	n.mu.Unlock()
	out := make([]PeerStatus, 0, len(machines))
	for id, m := range machines {
		st, since := m.State()
		ps := PeerStatus{ID: id, State: st, Since: since, Path: event.PathNone.String(), Transitions: m.History()}
		for _, c := range conns {
			if c.peer == id {
				ps.Connections++
				ps.Path, ps.RTT = c.Path().String(), c.RTT()
			}
		}
		out = append(out, ps)
	}
	return out
}

// Conns returns the node's peer connections.
func (n *Node) Conns() []*Conn {
	n.mu.Lock()
	defer n.mu.Unlock()
	out := make([]*Conn, 0, len(n.conns))
	for _, c := range n.conns {
		out = append(out, c)
	}
	return out
}

// Migration is one move of a connection: a rebind after a network
// change, an upgrade from the relay, a fallback to it, the peer's move.
type Migration = migration.Move

// Migrations returns the connection's recent migrations, oldest first.
func (c *Conn) Migrations() []Migration { return c.mc.Moves() }

// Conn is an authenticated QUIC connection to a peer.
type Conn struct {
	node     *Node
	qc       *quic.Conn
	peer     identity.PeerID
	outgoing bool
	since    time.Time
	// mc is the connection's path, which its path manager owns: the path
	// it runs on, its moves, the peer's notices.
	mc *migration.Conn
	// nominated is closed when the dialler nominates the connection (once:
	// the notice reader calls OnNominate once).
	nominated chan struct{}

	attempt       event.AttemptID
	timeToConnect time.Duration
}

// Attempt returns the ID of the attempt that created the connection (zero
// for accepted connections).
func (c *Conn) Attempt() event.AttemptID { return c.attempt }

// TimeToConnect returns how long the attempt that created the connection
// took, from the connect call to the completed handshake.
func (c *Conn) TimeToConnect() time.Duration { return c.timeToConnect }

// Peer returns the peer's ID.
func (c *Conn) Peer() identity.PeerID { return c.peer }

// Path returns whether the connection runs direct or over a relay.
func (c *Conn) Path() event.Path { return c.mc.Path() }

// setPath records the path of a tracked connection.
func (n *Node) setPath(qc *quic.Conn, p event.Path) *Conn {
	n.mu.Lock()
	c := n.conns[qc]
	n.mu.Unlock()
	if c != nil {
		c.mc.SetPath(p)
	}
	return c
}

// RTT returns QUIC's smoothed RTT estimate.
func (c *Conn) RTT() time.Duration { return c.qc.ConnectionStats().SmoothedRTT }

// RemoteAddr returns the peer's address on the current path.
func (c *Conn) RemoteAddr() net.Addr { return c.qc.RemoteAddr() }

// QUIC returns the underlying QUIC connection.
func (c *Conn) QUIC() *quic.Conn { return c.qc }

// Close closes the connection.
func (c *Conn) Close() error { return c.qc.CloseWithError(0, "closed") }

// SendVerified sends size pseudo-random bytes to the peer's transfer
// service, which verifies them by SHA-256; it fails unless the peer
// confirms exactly what was sent.
func (c *Conn) SendVerified(ctx context.Context, size int64) (TransferResult, error) {
	str, err := c.node.services.Open(ctx, c.qc, c.peer, TransferService)
	if err != nil {
		return TransferResult{}, fmt.Errorf("traversal: transfer: %w", err)
	}
	res, err := sendVerified(ctx, str, size)
	if err == nil {
		c.node.rec.Record(event.Event{Kind: event.KindThroughput, Path: c.Path(), Value: res.Mbps,
			Duration: res.Duration, Peer: c.peer.String(), Detail: "sent"})
	}
	return res, err
}

// serveStreams hands every stream the peer opens to the node's services,
// each on a goroutine of its own, until the connection closes.
func (c *Conn) serveStreams() {
	ctx := context.WithValue(c.qc.Context(), connKey{}, c)
	for {
		str, err := c.qc.AcceptStream(c.node.ctx)
		if err != nil {
			return
		}
		c.node.wg.Add(1)
		go func() {
			defer c.node.wg.Done()
			c.node.services.Serve(ctx, c.peer, str)
		}()
	}
}
