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
// # Reconnecting
//
// A node remembers, for the peers it kept a connection with in the last
// Config.RememberFor (at most Config.RememberPeers of them), the address
// of the connection's last direct path and the peer's TLS session
// ticket. Connect to such a peer races a direct dial to that address,
// resuming the session, against the introduction through the bootstrap:
// the first authenticated connection wins and the other is cancelled (a
// moved peer or an expired NAT mapping costs the introduction nothing; a
// bootstrap that is down costs it nothing either). Only a peer that kept
// a connection with this node (or resumes a session it issued) may dial
// it without an introduction, and such a dial never reaches an attempt.
// 0-RTT is off: application data is sent only after the handshake
// completes, never in the first flight, where an on-path attacker could
// replay it (the streams of services are not idempotent).
//
// # Goroutines
//
// New starts: the bootstrap clients (see package bootstrap), one goroutine
// accepting peer connections, one classify loop, the warm relay's keeper
// (warm.go; Close waits for it before it releases the relays), one per connection
// serving its streams, one per incoming stream while its service handles
// it, one per incoming offer, and one per on-demand registration (see
// ConnectTicket) that ends it once idle; its migration.Manager starts the network
// watcher and, per connection, a notice reader and (for a dialled one) a
// path manager. Close stops all of them and returns after they exit; it
// does not close the endpoint, which the caller owns.
//
// Files by concern: config.go (Config and its defaults), node.go (the Node
// and its registrations), accept.go, conn.go, peers.go (state machines),
// attempt.go and connect.go (one connection attempt, both roles),
// remember.go and reconnect.go (remembered peers, the reconnect race),
// ticket.go (tickets and on-demand registrations),
// round.go (check rounds under a connection), relay.go, warm.go (the
// warm relay) and reroute.go, family.go (a move to the other address
// family), classify.go (the NAT, per family),
// paths.go (the node's side of migration.Node), services.go.
package traversal

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/failsafe-go/failsafe-go/circuitbreaker"
	"github.com/quic-go/quic-go"

	"github.com/antnode/antnode/bootstrap"
	"github.com/antnode/antnode/bootstrap/wire"
	"github.com/antnode/antnode/endpoint"
	"github.com/antnode/antnode/event"
	"github.com/antnode/antnode/holepunch"
	"github.com/antnode/antnode/identity"
	"github.com/antnode/antnode/migration"
	"github.com/antnode/antnode/nat64"
	"github.com/antnode/antnode/nattype"
	"github.com/antnode/antnode/service"
)

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
	warm  *warmRelay         // the warm relay's keeper (see warm.go)

	injMu sync.Mutex
	// injs hands rerouted answers to an endpoint's socket, one per
	// endpoint, made when a connection on it is first rerouted.
	injs map[*endpoint.Endpoint]*endpoint.Injector
	// owned are the connections on a socket of their own (the birthday
	// search's winning one), with their endpoint: a fallback reroutes
	// their packets there, not on the node's socket.
	owned map[*quic.Conn]*endpoint.Endpoint

	breakers map[string]circuitbreaker.CircuitBreaker[*bootstrap.Session] // by label; set in New
	degrade  degrader

	allow      map[State][]State // the transition table, shared (read-only) by the machines
	reclassify chan struct{}
	// clients is set in New, after the clients' goroutines started: the
	// configured ones, by slot, then the on-demand ones (replaced under
	// demandMu as they come and go, see SetBootstraps and ticket.go).
	clients  atomic.Pointer[[]*bootstrap.Client]
	demandMu sync.Mutex
	demand   [maxOnDemand]*onDemand // by slot; see ticket.go
	slots    []*bootstrap.Client    // the configured clients by slot (label); nil: free

	// One lock per concern; none is held while another is taken.
	peersMu  sync.Mutex
	machines map[identity.PeerID]*Machine
	natMu    sync.Mutex
	nat      nattype.Type
	// families are the last measurement's reports, the registrations'
	// family first (with nat), then a dual-stack socket's other one.
	families []FamilyReport
	// contradictedAt is when evidence last contradicted nat and asked
	// for a new measurement (see contradicted).
	contradictedAt time.Time
	announced      []wire.Candidate
	// announceMu orders announcements (the classify loop's and the warm
	// relay keeper's): each one's diff goes out before the next is made.
	announceMu sync.Mutex
	expectMu   sync.Mutex
	expected   map[identity.PeerID][]expectation
	early      earlyConns // under expectMu
	connsMu    sync.Mutex
	conns      map[*quic.Conn]*Conn
	// crossed are the connections whose packets go to another address
	// than QUIC's remote one, behind its back (family.go: moved to the
	// other address family, or upgraded to an address the peer has now),
	// with that address.
	crossed map[*quic.Conn]netip.AddrPort

	memory *peerMemory // peers connected to recently (remember.go)

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
	var n *Node // set below, before any check session can open
	agent, err := holepunch.NewAgent(holepunch.AgentConfig{Endpoint: cfg.Endpoint, Recorder: cfg.Recorder, Logger: cfg.Logger,
		OnUnsolicited: func(from netip.AddrPort, addressContacted bool) { n.contradicted(from, addressContacted) }})
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	n = &Node{cfg: cfg, rec: cfg.Recorder, log: cfg.Logger, agent: agent,
		expected: make(map[identity.PeerID][]expectation), conns: make(map[*quic.Conn]*Conn), crossed: make(map[*quic.Conn]netip.AddrPort),
		reclassify: make(chan struct{}, 1), relays: make(map[string]*sharedRelay), relayUses: make(map[*quic.Conn]*relayUse),
		injs: make(map[*endpoint.Endpoint]*endpoint.Injector), owned: make(map[*quic.Conn]*endpoint.Endpoint),
		machines: make(map[identity.PeerID]*Machine), allow: Transitions(), ctx: ctx, cancel: cancel,
		dialing: make(map[identity.PeerID]*connCall), memory: newPeerMemory(cfg.RememberFor, cfg.RememberPeers)}
	n.warm = newWarmRelay(n)
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
	nslots := max(len(cfg.Bootstraps), maxBootstrapSlots)
	n.slots = make([]*bootstrap.Client, nslots)
	n.breakers = make(map[string]circuitbreaker.CircuitBreaker[*bootstrap.Session], nslots+maxOnDemand)
	for i := range nslots {
		n.breakers[strconv.Itoa(i)] = n.newBreaker(strconv.Itoa(i))
	}
	for i := range maxOnDemand {
		n.breakers["t"+strconv.Itoa(i)] = n.newBreaker("t" + strconv.Itoa(i))
	}
	var clients []*bootstrap.Client
	for i, b := range cfg.Bootstraps {
		cl, err := n.newClient(i, b)
		if err != nil {
			for _, c := range clients {
				c.Close()
			}
			n.Close()
			return nil, err
		}
		clients = append(clients, cl)
		n.slots[i] = cl
	}
	// The clients' goroutines call back into the node (localIntro)
	// already; they see the list once it is complete.
	n.clients.Store(&clients)
	n.wg.Add(2)
	go n.acceptLoop()
	go n.classifyLoop()
	go n.warm.run() // Close waits for it (warm.done) before releasing the relays
	return n, nil
}

// networkChanged runs on the network watcher's goroutine: the host's
// addresses changed.
func (n *Node) networkChanged() {
	if n.cfg.OnNetworkChange != nil {
		n.cfg.OnNetworkChange()
	}
	n.poke()
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
	n.announceMu.Lock()
	defer n.announceMu.Unlock()
	cands := n.candidates()
	n.natMu.Lock()
	prev := n.announced
	n.announced = cands
	n.natMu.Unlock()
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
	if l := n.clients.Load(); l != nil {
		return *l
	}
	return nil
}

// LocalAddr is the address of the node's socket (its family is the
// node's: a node runs in one).
func (n *Node) LocalAddr() netip.AddrPort { return n.cfg.Endpoint.LocalAddr() }

// NAT64 is the NAT64 prefix the node reaches IPv4 addresses through
// (Config.NAT64; zero: none).
func (n *Node) NAT64() nat64.Prefix { return n.cfg.NAT64 }

// NAT returns the node's NAT type as measured so far.
func (n *Node) NAT() nattype.Type {
	n.natMu.Lock()
	defer n.natMu.Unlock()
	return n.nat
}

// NATFamilies returns the node's NAT type in each family its socket
// serves, keyed "ipv4" and "ipv6" (one entry for a socket in one
// family); a family not measured yet has the zero Type (unknown).
func (n *Node) NATFamilies() map[string]nattype.Type {
	out := make(map[string]nattype.Type, 2)
	for _, r := range n.Families() {
		out[r.Family.String()] = r.NAT
	}
	return out
}

// Families returns what the last measurement found in each family the
// node's socket serves, the registrations' family first; a family not
// measured yet is reported with nothing answered.
func (n *Node) Families() []FamilyReport {
	n.natMu.Lock()
	out := slices.Clone(n.families)
	n.natMu.Unlock()
	for _, f := range holepunch.SocketFamilies(n.cfg.Endpoint) {
		if !slices.ContainsFunc(out, func(r FamilyReport) bool { return r.Family == f }) {
			out = append(out, FamilyReport{Family: f})
		}
	}
	return out
}

// Close stops the node: bootstrap registrations, peer connections and
// their goroutines. It is idempotent.
func (n *Node) Close() error {
	n.once.Do(func() {
		n.cancel()
		// No on-demand registration starts after this (addDemand checks
		// the context under the lock): the list read below is complete.
		n.demandMu.Lock()
		n.demandMu.Unlock() //nolint:staticcheck // a barrier, see above
		n.paths.Close()
		for _, c := range n.bootstrapClients() {
			c.Close()
		}
		n.ln.Close()
		for _, c := range n.Conns() {
			c.qc.CloseWithError(0, "node closing")
		}
		if n.clients.Load() != nil { // the keeper runs (New got that far)
			<-n.warm.done // it released its allocation (the relay saw the release)
		}
		n.closeRelays()
		n.services.Close()
		n.wg.Wait()
		n.injMu.Lock()
		for ep, inj := range n.injs {
			inj.Close()
			delete(n.injs, ep)
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
	// OnDemand: a registration made for a ticket (label "t0" to "t3"),
	// not one of the configured bootstraps.
	OnDemand bool
	bootstrap.Status
}

// Bootstraps returns the state of every bootstrap registration.
func (n *Node) Bootstraps() []BootstrapStatus {
	clients := n.bootstrapClients()
	out := make([]BootstrapStatus, 0, len(clients))
	for _, c := range clients {
		out = append(out, BootstrapStatus{Label: c.Label(), Addr: c.Addr(), ID: c.ServerID(),
			Breaker: n.breakers[c.Label()].State().String(), OnDemand: onDemandLabel(c.Label()), Status: c.Status()})
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
	cands := HostCandidates(local, ifAddrs, HostPolicy{Loopback: n.cfg.AllowLoopback, DualStack: n.cfg.Endpoint.DualStack()})
	var observed []netip.AddrPort
	for _, c := range n.bootstrapClients() {
		if st := c.Status(); st.Registered {
			observed = append(observed, st.Observed)
		}
	}
	var mapped netip.AddrPort
	if n.cfg.PortMapped != nil {
		mapped = n.cfg.PortMapped()
	}
	// The warm relay's address goes first after a mapping: an
	// introduction carries only the first wire.MaxCandidates.
	cands = append(append(Mapped(mapped, observed), n.warmCandidate()...), cands...)
	return append(cands, ServerReflexive(observed, cands)...)
}

// PortMapped reports whether the node announces a port mapping now.
func (n *Node) PortMapped() bool {
	n.natMu.Lock()
	defer n.natMu.Unlock()
	return slices.ContainsFunc(n.announced, func(c wire.Candidate) bool { return c.Kind == wire.KindMapped })
}

// PortMapChanged tells the node that its port mapping (Config.PortMapped)
// appeared, changed or went away: it announces its candidates anew.
func (n *Node) PortMapChanged() {
	n.announce()
	n.warm.poke()
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
