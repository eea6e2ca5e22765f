// Package bootstrap is the bootstrap service that introduces peers to each
// other, and the client that peers use to talk to it.
//
// A Server listens for authenticated QUIC control connections on a node's
// endpoint, keeps a bounded registry of peers (peer ID, connection, observed
// address, announced candidates, last seen), tells each peer its observed
// address, answers STUN Binding requests on the same UDP port, and relays
// coordination (connect offers and answers, punch rounds) between two
// registered peers. It only forwards candidates that a peer announced or was
// observed at, so it cannot be used to make a peer send to a third party.
//
// NewServer starts an accept goroutine, one goroutine per connected peer
// and one sweeper. Close stops all of them and returns after they exit.
//
// A Client (see client.go) keeps one peer registered with one bootstrap.
package bootstrap

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pion/stun/v3"
	"github.com/quic-go/quic-go"
	"golang.org/x/time/rate"

	"github.com/antnode/antnode/bootstrap/wire"
	"github.com/antnode/antnode/endpoint"
	"github.com/antnode/antnode/event"
	"github.com/antnode/antnode/identity"
	"github.com/antnode/antnode/internal/netguard"
	"github.com/antnode/antnode/nattype"
	"github.com/antnode/antnode/relay"
)

// ServerConfig configures a Server.
type ServerConfig struct {
	// Identity is the bootstrap's key. Required.
	Identity *identity.Identity
	// Endpoint is the socket the server listens on and answers STUN on.
	// Required. The server does not close it.
	Endpoint *endpoint.Endpoint
	// Recorder receives the server's events. Nil: discarded.
	Recorder event.Recorder
	// Logger receives records that are not events. Nil: discarded.
	Logger *slog.Logger
	// MaxPeers bounds the registry. Zero: 100 000.
	MaxPeers int
	// MaxPeersPerIP bounds the registrations from one source IP address;
	// one more is refused with CodeRateLimited (a full registry with
	// CodeRegistryFull). Zero: no bound but MaxPeers.
	MaxPeersPerIP int
	// MaxTCPConns and MaxTCPConnsPerIP cap the control connections over
	// TCP held at once, in total and from one source IP; one more is
	// closed at once. Zero: 4096 and 32.
	MaxTCPConns, MaxTCPConnsPerIP int
	// FrameTimeout bounds the reading of one control frame from its first
	// byte: a peer that leaves a frame incomplete is disconnected. Zero:
	// 5 s.
	FrameTimeout time.Duration
	// AuditInterval is the interval over which repeated security events
	// (one source, one reason) are aggregated into one record with a
	// count (event.Aggregator). Zero: 10 s.
	AuditInterval time.Duration
	// IdleTimeout is how long a registration lives without a control
	// message from the peer, over QUIC or TCP (peers send heartbeats).
	// Zero: 60 s.
	IdleTimeout time.Duration
	// RequestRate and RequestBurst bound connect and punch requests per
	// peer (token bucket). Zero: 20 per second, burst 40.
	RequestRate  float64
	RequestBurst int
	// MessageRate and MessageBurst bound every control message of a peer;
	// a peer above them is disconnected. Zero: 100 per second, burst 400.
	MessageRate  float64
	MessageBurst int
	// MaxPendingPerPeer bounds a peer's unanswered connect requests.
	// Zero: 16.
	MaxPendingPerPeer int
	// OfferTimeout is how long the target of an offer has to answer.
	// Zero: 5 s.
	OfferTimeout time.Duration
	// SessionTTL is how long after an answer either side may ask for new
	// punch rounds. Zero: 60 s.
	SessionTTL time.Duration
	// AltSTUN is a second socket, on the same address and another port,
	// on which the server answers STUN too: two observations from one
	// address tell address-dependent from address-and-port-dependent
	// mapping. It is advertised in Registered and closed by Close.
	// Nil: none.
	AltSTUN net.PacketConn
	// ProbeAddr is a further local address of the bootstrap that peers
	// never contact; unsolicited filtering probes "from another address"
	// leave from it. Invalid: that probe kind is not offered.
	ProbeAddr netip.Addr
	// Relay issues relay credentials to registered peers. Nil: peers are
	// told there is no relay.
	Relay RelayIssuer
	// RelayTTL is the lifetime of issued relay credentials. Zero: 10 min.
	RelayTTL time.Duration
	// TCP accepts control connections over TLS on TCP, for peers whose
	// UDP is blocked; temporary accept errors (descriptors exhausted) are
	// retried (internal/netguard). Nil: none. Closed by Close.
	TCP net.Listener
	// ListenProbe opens the fresh socket an unsolicited probe leaves from.
	// Nil: a real UDP socket.
	ListenProbe func(netip.AddrPort) (net.PacketConn, error)
	// HandshakeTimeout bounds the wait for a new connection's control
	// stream and Register message. Zero: 10 s.
	HandshakeTimeout time.Duration
	// Also are the sockets of further address families (one each, none
	// of Endpoint's): the server listens and answers STUN on them too,
	// and a peer registered over one is observed, probed and pointed to
	// an alternate STUN socket in its family. Peers of every family share
	// the one registry. Nil: Endpoint's family only.
	Also []Sockets
}

func (c *ServerConfig) validate() error {
	switch {
	case c.Identity == nil:
		return errors.New("bootstrap: ServerConfig.Identity is required")
	case c.Endpoint == nil:
		return errors.New("bootstrap: ServerConfig.Endpoint is required")
	case c.MaxPeers < 0, c.MaxPeersPerIP < 0, c.MaxTCPConns < 0, c.MaxTCPConnsPerIP < 0, c.FrameTimeout < 0, c.RequestRate < 0, c.RequestBurst < 0, c.MessageRate < 0, c.MessageBurst < 0, c.MaxPendingPerPeer < 0,
		c.IdleTimeout < 0, c.OfferTimeout < 0, c.SessionTTL < 0, c.HandshakeTimeout < 0:
		return errors.New("bootstrap: ServerConfig has a negative limit")
	}
	if c.Recorder == nil {
		c.Recorder = event.Nop{}
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.MaxPeers == 0 {
		c.MaxPeers = 100_000
	}
	if c.IdleTimeout == 0 {
		c.IdleTimeout = 60 * time.Second
	}
	if c.RequestRate == 0 {
		c.RequestRate = 20
	}
	if c.RequestBurst == 0 {
		c.RequestBurst = 40
	}
	if c.MessageRate == 0 {
		c.MessageRate = 100
	}
	if c.MessageBurst == 0 {
		c.MessageBurst = 400
	}
	if c.MaxPendingPerPeer == 0 {
		c.MaxPendingPerPeer = 16
	}
	if c.OfferTimeout == 0 {
		c.OfferTimeout = 5 * time.Second
	}
	if c.SessionTTL == 0 {
		c.SessionTTL = 60 * time.Second
	}
	if c.HandshakeTimeout == 0 {
		c.HandshakeTimeout = 10 * time.Second
	}
	if c.FrameTimeout == 0 {
		c.FrameTimeout = 5 * time.Second
	}
	if c.MaxPeersPerIP == 0 {
		c.MaxPeersPerIP = c.MaxPeers
	}
	if c.RelayTTL <= 0 {
		c.RelayTTL = 10 * time.Minute
	}
	if c.ProbeAddr.IsValid() && !c.ProbeAddr.Is4() && !c.ProbeAddr.Is6() {
		return errors.New("bootstrap: invalid ProbeAddr")
	}
	if c.ListenProbe == nil {
		c.ListenProbe = func(ap netip.AddrPort) (net.PacketConn, error) { return endpoint.ListenUDP(ap) }
	}
	return c.validateAlso()
}

// RelayIssuer is the relay a bootstrap hands out (relay.Server).
type RelayIssuer interface {
	Credentials(peer identity.PeerID, ttl time.Duration) relay.Credentials
	// AddrsFor returns the relay's UDP and TCP addresses for a client at
	// a: in a's family where the relay listens in it.
	AddrsFor(a netip.Addr) (udp, tcp netip.AddrPort)
}

// PeerInfo is a snapshot of one registration.
type PeerInfo struct {
	ID         identity.PeerID
	Observed   netip.AddrPort
	NAT        nattype.Type
	Candidates []wire.Candidate
	Registered time.Time
	LastSeen   time.Time
	RTT        time.Duration
	Transport  string // TransportQUIC or TransportTCP
}

// peer is one registered peer.
type peer struct {
	id    identity.PeerID
	ip    netip.Addr // the source address it registered from
	conn  ctlConn
	ctl   *ctlStream
	since time.Time
	// features are the wire.Feature bits the peer registered with.
	features uint64

	// token is the registration's secret of ObserveUsername (zero: the
	// bootstrap has one family).
	token [16]byte

	mu       sync.Mutex
	observed netip.AddrPort
	// also is the peer's address in the bootstrap's other family, as a
	// Binding request carrying token showed it (invalid: none).
	also       netip.AddrPort
	obsSeq     uint64
	nat        nattype.Type
	candidates []wire.Candidate
	lastSeen   time.Time
	requests   *rate.Limiter     // connect and punch requests
	messages   *rate.Limiter     // every message
	pending    int               // offers this peer requested that are unanswered
	reqs       map[uint64]uint64 // requester's request ID -> session (offer) ID
}

// session is one introduction between a requester and a target.
type session struct {
	id        uint64 // the offer ID
	reqID     uint64 // the requester's ID
	requester *peer
	target    *peer
	created   time.Time
	answered  time.Time // zero while the offer is pending
	round     uint64
	relayed   int // relayed addresses announced in this session
	// early: the requester got the target's candidates with the request's
	// acknowledgement (wire.ConnectEarly) and may announce a relayed
	// address before the target has answered.
	early bool
}

// Server is a bootstrap service.
type Server struct {
	cfg   ServerConfig
	fams  []*family          // the primary family first, then Also's
	tcp   *netguard.Listener // nil without TCP
	rec   event.Recorder     // audit, for every event
	audit *event.Aggregator
	log   *slog.Logger

	mu       sync.Mutex
	peers    map[identity.PeerID]*peer
	tokens   map[[16]byte]*peer // by peer.token (see ObserveUsername)
	perIP    map[netip.Addr]int // registrations per source address
	sessions map[uint64]*session
	allowed  map[allowKey]time.Time
	nextID   uint64
	closed   bool

	connected atomic.Int64 // connections being served, registered or not

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
	once   sync.Once
}

// NewServer starts a bootstrap service on cfg.Endpoint.
func NewServer(cfg ServerConfig) (*Server, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	qconf := &quic.Config{
		MaxIdleTimeout:        cfg.IdleTimeout,
		HandshakeIdleTimeout:  cfg.HandshakeTimeout,
		MaxIncomingStreams:    1, // the control stream
		MaxIncomingUniStreams: -1,
		// Keep-alives come from the clients; the server only follows.
	}
	ctx, cancel := context.WithCancel(context.Background())
	audit := event.NewAggregator(cfg.Recorder, cfg.AuditInterval)
	s := &Server{
		cfg:      cfg,
		rec:      audit,
		audit:    audit,
		log:      cfg.Logger,
		peers:    make(map[identity.PeerID]*peer),
		tokens:   make(map[[16]byte]*peer),
		perIP:    make(map[netip.Addr]int),
		sessions: make(map[uint64]*session),
		allowed:  make(map[allowKey]time.Time),
		ctx:      ctx,
		cancel:   cancel,
	}
	if err := s.listen(qconf); err != nil {
		cancel()
		audit.Close()
		return nil, err
	}
	s.wg.Add(1)
	go s.sweepLoop()
	for _, f := range s.fams {
		s.wg.Add(acceptors)
		for range acceptors {
			go s.acceptLoop(f.ln)
		}
		if f.AltSTUN != nil {
			s.wg.Add(1)
			go s.altSTUNLoop(f.AltSTUN)
		}
	}
	if cfg.TCP != nil {
		s.tcp = netguard.New(cfg.TCP, netguard.Config{MaxConns: cfg.MaxTCPConns, MaxConnsPerIP: cfg.MaxTCPConnsPerIP,
			OnRefused: s.refusedTCP, Logger: cfg.Logger, Name: "bootstrap TCP"})
		s.wg.Add(1)
		go s.tcpAcceptLoop()
	}
	return s, nil
}

// altSTUNLoop answers Binding requests on an alternate STUN socket.
func (s *Server) altSTUNLoop(alt net.PacketConn) {
	defer s.wg.Done()
	buf := make([]byte, 1500)
	for {
		n, from, err := alt.ReadFrom(buf)
		if err != nil {
			if s.ctx.Err() != nil || errors.Is(err, net.ErrClosed) {
				return
			}
			continue
		}
		ua, ok := from.(*net.UDPAddr)
		if !ok || !stun.IsMessage(buf[:n]) {
			continue
		}
		req := &stun.Message{Raw: append([]byte(nil), buf[:n]...)}
		if req.Decode() != nil || req.Type != stun.BindingRequest {
			continue
		}
		ap := ua.AddrPort()
		ap = netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
		if resp, err := BindingResponse(req, ap); err == nil {
			alt.WriteTo(resp.Raw, from)
		}
	}
}

// probe sends an unsolicited Binding indication with txID to `to`, from a
// fresh port of the server's address (never contacted by anybody) or from
// ProbeAddr.
func (s *Server) probe(kind uint64, txID [12]byte, to netip.AddrPort) error {
	src, err := s.familyOf(to.Addr()).probeSource(kind)
	if err != nil {
		return err
	}
	c, err := s.cfg.ListenProbe(netip.AddrPortFrom(src, 0))
	if err != nil {
		return err
	}
	defer c.Close()
	m, err := stun.Build(stun.NewTransactionIDSetter(txID), stun.NewType(stun.MethodBinding, stun.ClassIndication), stun.Fingerprint)
	if err != nil {
		return err
	}
	_, err = c.WriteTo(m.Raw, net.UDPAddrFromAddrPort(to))
	return err
}

// ID returns the bootstrap's peer ID.
func (s *Server) ID() identity.PeerID { return s.cfg.Identity.ID() }

// Addr returns the address the server listens on.
func (s *Server) Addr() netip.AddrPort { return s.cfg.Endpoint.LocalAddr() }

// Close stops the server: it closes every control connection, stops
// answering STUN and waits for its goroutines. It is idempotent.
func (s *Server) Close() error {
	s.once.Do(func() {
		s.mu.Lock()
		s.closed = true
		peers := make([]*peer, 0, len(s.peers))
		for _, p := range s.peers {
			peers = append(peers, p)
		}
		s.mu.Unlock()
		s.cancel()
		s.closeFamilies()
		if s.tcp != nil {
			s.tcp.Close()
			s.tcp.CloseConns()
		}
		for _, p := range peers {
			p.conn.Close(closeShutdown, "bootstrap shutting down")
		}
		s.wg.Wait()
		s.audit.Close()
	})
	return nil
}

// Peers returns a snapshot of the registry.
func (s *Server) Peers() []PeerInfo {
	s.mu.Lock()
	ps := make([]*peer, 0, len(s.peers))
	for _, p := range s.peers {
		ps = append(ps, p)
	}
	s.mu.Unlock()
	out := make([]PeerInfo, 0, len(ps))
	for _, p := range ps {
		p.mu.Lock()
		out = append(out, PeerInfo{ID: p.id, Observed: p.observed, NAT: p.nat,
			Candidates: append([]wire.Candidate(nil), p.candidates...), Registered: p.since,
			LastSeen: p.lastSeen, RTT: p.conn.RTT(), Transport: p.conn.Transport()})
		p.mu.Unlock()
	}
	return out
}

// NumPeers returns the number of registered peers.
func (s *Server) NumPeers() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.peers)
}

// acceptors is the number of goroutines that accept QUIC control
// connections. quic-go queues at most 32 connections whose handshake has
// completed and refuses the next one (CONNECTION_REFUSED, after the
// handshake's CPU is spent); when a fleet comes back after a restart,
// thousands of connection goroutines are runnable at once and a single
// acceptor is scheduled too seldom to keep that queue from filling. A
// handshake that completes while an acceptor waits is handed to it
// directly.
const acceptors = 8

func (s *Server) acceptLoop(ln *quic.Listener) {
	defer s.wg.Done()
	for {
		conn, err := ln.Accept(s.ctx)
		if err != nil {
			if s.ctx.Err() == nil {
				s.log.Error("bootstrap: accept", "err", err)
			}
			return
		}
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			s.connected.Add(1)
			defer s.connected.Add(-1)
			c := quicCtl{conn}
			id, err := identity.PeerFromState(conn.ConnectionState().TLS)
			if err != nil { // cannot happen: the TLS config requires a valid certificate
				s.rec.Record(event.Event{Kind: event.KindSecurity, Reason: event.ReasonHandshakeFailed,
					Addr: c.RemoteAddr(), Detail: "no peer identity"})
				c.Close(closeProtocol, "unauthenticated")
				return
			}
			hctx, cancel := context.WithTimeout(s.ctx, s.cfg.HandshakeTimeout)
			str, err := conn.AcceptStream(hctx)
			cancel()
			if err != nil {
				c.Close(closeProtocol, "no control stream")
				return
			}
			s.serveFrom(c, str, id, time.Now().Add(s.cfg.HandshakeTimeout))
		}()
	}
}

// tcpAcceptLoop serves control connections over TLS on TCP. Its
// listener retries temporary errors, so the loop ends only with the
// listener.
func (s *Server) tcpAcceptLoop() {
	defer s.wg.Done()
	tlsConf := s.cfg.Identity.ServerTLS(wire.ALPN)
	for {
		raw, err := s.tcp.Accept()
		if err != nil {
			if s.ctx.Err() == nil && !errors.Is(err, net.ErrClosed) {
				s.log.Error("bootstrap: TCP control listener stopped", "err", err)
			}
			return
		}
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			defer raw.Close()
			s.connected.Add(1)
			defer s.connected.Add(-1)
			// One deadline covers the TLS handshake and the Register
			// message: nothing unauthenticated holds the connection longer.
			handshake := time.Now().Add(s.cfg.HandshakeTimeout)
			if raw.SetDeadline(handshake) != nil {
				return
			}
			tc := tls.Server(raw, tlsConf)
			hctx, cancel := context.WithDeadline(s.ctx, handshake)
			err := tc.HandshakeContext(hctx)
			cancel()
			if err != nil {
				return
			}
			id, err := identity.PeerFromState(tc.ConnectionState())
			if err != nil {
				return
			}
			c := newTCPCtl(tc, raw)
			stop := context.AfterFunc(s.ctx, func() { c.Close(closeShutdown, "bootstrap shutting down") })
			defer stop()
			s.serveFrom(c, failingRW{c}, id, handshake)
			c.Close(closeNormal, "")
		}()
	}
}

// refusedTCP records a TCP control connection the caps closed at once.
func (s *Server) refusedTCP(src netip.AddrPort, perIP bool) {
	detail := "bootstrap TCP: connection cap"
	if perIP {
		detail = "bootstrap TCP: per-IP connection cap"
	}
	s.rec.Record(event.Event{Kind: event.KindSecurity, Reason: event.ReasonOverloaded, Addr: src, Detail: detail})
}

// Ready is nil while the server accepts control connections on every
// listener, and an error matching netguard.ErrNotAccepting while its TCP
// listener does not (descriptors exhausted, or stopped).
func (s *Server) Ready() error {
	if s.tcp == nil {
		return nil
	}
	return s.tcp.Err()
}

// serveFrom runs one authenticated control connection to its end. Its
// Register message must come before handshake.
func (s *Server) serveFrom(conn ctlConn, str streamRW, id identity.PeerID, handshake time.Time) {
	ctl := newCtlStream(str)
	str.SetReadDeadline(handshake)
	m, err := ctl.r.Read()
	str.SetReadDeadline(time.Time{})
	if err != nil {
		s.protocolFailure(conn, ctl, id, fmt.Errorf("reading register: %w", err))
		return
	}
	reg, ok := m.(*wire.Register)
	if !ok {
		s.protocolFailure(conn, ctl, id, &ProtocolError{Code: wire.CodeBadRequest, Msg: "first message must be register, got " + m.Type().String()})
		return
	}
	if reg.Version != wire.Version {
		ctl.sendError(wire.CodeVersion, fmt.Sprintf("protocol version %d not supported (want %d)", reg.Version, wire.Version))
		conn.Close(closeVersion, "unsupported version")
		return
	}
	now := time.Now()
	p := &peer{id: id, ip: conn.RemoteAddr().Addr(), conn: conn, ctl: ctl, since: now, observed: conn.RemoteAddr(), nat: reg.NAT,
		candidates: reg.Candidates, features: reg.Features, lastSeen: now, reqs: make(map[uint64]uint64),
		requests: rate.NewLimiter(rate.Limit(s.cfg.RequestRate), s.cfg.RequestBurst),
		messages: rate.NewLimiter(rate.Limit(s.cfg.MessageRate), s.cfg.MessageBurst)}
	fam := s.familyOf(p.observed.Addr())
	other := s.otherSTUN(fam)
	if len(other) > 0 {
		rand.Read(p.token[:])
	}
	old, err := s.register(p)
	if err != nil {
		s.refuse(p, err)
		return
	}
	if old != nil {
		old.conn.Close(closeReplaced, "replaced by a newer registration")
	}
	s.rec.Record(event.Event{Kind: event.KindRegistration, Outcome: event.OutcomeOK, Peer: id.String(), Addr: p.observed,
		NAT: reg.NAT.Class(), Detail: conn.Transport()})
	left := event.ReasonConnectionLost
	defer func() {
		if s.unregister(p) {
			left = event.ReasonNone // replaced
		}
		s.rec.Record(event.Event{Kind: event.KindRegistration, Outcome: event.OutcomeFail, Reason: left, Peer: id.String(), Addr: p.observed})
	}()
	err = ctl.send(&wire.Registered{Version: wire.Version, Observed: p.observed, AltSTUN: fam.altSTUNAddrs(),
		TTLSeconds: uint64(s.cfg.IdleTimeout / time.Second), Probes: fam.probeCaps(), Peers: uint64(s.NumPeers()),
		Other: other, Token: p.token, OtherProbes: s.otherProbeCaps(fam)})
	if err != nil {
		conn.Close(closeSlowConsumer, "control stream write failed")
		return
	}
	left = s.readLoop(p)
}

// refuse answers a registration the registry has no room for: the
// registry is full, or the peer's address is at its cap.
func (s *Server) refuse(p *peer, err error) {
	code, closeCode, reason := wire.CodeRegistryFull, closeRegistryFull, event.ReasonRegistryFull
	if errors.Is(err, errAddrFull) {
		code, closeCode, reason = wire.CodeRateLimited, closeRateLimited, event.ReasonRateLimited
	}
	p.ctl.sendError(code, err.Error())
	p.conn.Close(closeCode, code.String())
	s.rec.Record(event.Event{Kind: event.KindSecurity, Reason: reason, Peer: p.id.String(), Addr: p.conn.RemoteAddr(),
		Detail: "registration refused: " + code.String()})
}

// readLoop reads a registered peer's control messages until the
// connection ends, and returns why it ended. A peer silent for IdleTimeout
// (over QUIC or TCP) is expired; one that leaves a frame incomplete for
// FrameTimeout is disconnected. Every message counts against the peer's
// message rate, those of unknown types too.
func (s *Server) readLoop(p *peer) event.Reason {
	ctl, conn := p.ctl, p.conn
	inFrame := false
	ctl.r.OnFrameStart(func() {
		inFrame = true
		ctl.str.SetReadDeadline(time.Now().Add(s.cfg.FrameTimeout))
	})
	for {
		inFrame = false
		ctl.str.SetReadDeadline(time.Now().Add(s.cfg.IdleTimeout))
		m, err := ctl.r.Read()
		var ut *wire.UnknownTypeError
		if err != nil && !errors.As(err, &ut) {
			return s.readFailed(p, err, inFrame)
		}
		if !p.touch() {
			s.rec.Record(event.Event{Kind: event.KindSecurity, Reason: event.ReasonRateLimited, Peer: p.id.String(),
				Addr: conn.RemoteAddr(), Detail: "messages"})
			s.protocolFailure(conn, ctl, p.id, &ProtocolError{Code: wire.CodeRateLimited, Msg: "message rate exceeded"})
			return event.ReasonRateLimited
		}
		if ut != nil {
			continue // a newer peer's message: ignored (but counted)
		}
		if err := s.handle(p, m); err != nil {
			s.protocolFailure(conn, ctl, p.id, err)
			return event.ReasonProtocolError
		}
	}
}

// readFailed ends a connection whose read failed and says why.
func (s *Server) readFailed(p *peer, err error, inFrame bool) event.Reason {
	select {
	case <-p.conn.Done():
		return event.ReasonConnectionLost
	default:
	}
	if s.ctx.Err() != nil {
		return event.ReasonConnectionLost
	}
	if errors.Is(err, os.ErrDeadlineExceeded) {
		if inFrame {
			s.rec.Record(event.Event{Kind: event.KindSecurity, Reason: event.ReasonTimeout, Peer: p.id.String(),
				Addr: p.conn.RemoteAddr(), Detail: "frame deadline"})
			p.conn.Close(closeProtocol, "frame incomplete")
			return event.ReasonProtocolError
		}
		p.conn.Close(closeNormal, "registration expired: silent")
		return event.ReasonExpired
	}
	s.protocolFailure(p.conn, p.ctl, p.id, err)
	return event.ReasonConnectionLost
}

// protocolFailure reports err and closes the connection with a code that
// says whether it was the peer's fault.
func (s *Server) protocolFailure(conn ctlConn, ctl *ctlStream, id identity.PeerID, err error) {
	var pe *ProtocolError
	switch {
	case errors.As(err, &pe):
		ctl.sendError(pe.Code, pe.Msg)
	case errors.Is(err, wire.ErrMalformed), errors.Is(err, wire.ErrTooLarge):
		ctl.sendError(wire.CodeBadRequest, err.Error())
	default: // a transport error: the connection is gone or going
		conn.Close(closeNormal, "")
		return
	}
	s.rec.Record(event.Event{Kind: event.KindSecurity, Reason: event.ReasonProtocolError, Peer: id.String(),
		Addr: conn.RemoteAddr(), Err: err})
	conn.Close(closeProtocol, "protocol error")
}

// touch records traffic from the peer and takes a token from its message
// bucket; false means the peer exceeds its message rate.
func (p *peer) touch() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.lastSeen = time.Now()
	return p.messages.AllowN(p.lastSeen, 1)
}

// allow takes one token from the peer's request bucket.
func (p *peer) allow() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.requests.Allow()
}

// Refusals of registrations.
var (
	errRegistryFull = errors.New("bootstrap: registry full")
	errAddrFull     = errors.New("bootstrap: too many registrations from this address")
)

func (s *Server) register(p *peer) (old *peer, err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil, errors.New("bootstrap: shutting down")
	}
	old = s.peers[p.id]
	if old == nil && len(s.peers) >= s.cfg.MaxPeers {
		return nil, errRegistryFull
	}
	if (old == nil || old.ip != p.ip) && s.perIP[p.ip] >= s.cfg.MaxPeersPerIP {
		return nil, errAddrFull
	}
	if old != nil {
		s.dropIP(old.ip)
		delete(s.tokens, old.token)
	}
	s.peers[p.id] = p
	if p.token != ([16]byte{}) {
		s.tokens[p.token] = p
	}
	s.perIP[p.ip]++
	return old, nil
}

// dropIP counts one registration from ip less. Called with s.mu held.
func (s *Server) dropIP(ip netip.Addr) {
	if s.perIP[ip]--; s.perIP[ip] <= 0 {
		delete(s.perIP, ip)
	}
}

// unregister removes p (if it is still the registered connection for its
// ID) and fails the sessions it is part of. It reports whether p had been
// replaced by a newer registration.
func (s *Server) unregister(p *peer) (replaced bool) {
	s.mu.Lock()
	replaced = s.peers[p.id] != p
	if !replaced {
		delete(s.peers, p.id)
		s.dropIP(p.ip)
	}
	if s.tokens[p.token] == p {
		delete(s.tokens, p.token)
	}
	var orphaned []*session
	for id, ss := range s.sessions {
		if ss.requester == p || ss.target == p {
			delete(s.sessions, id)
			if ss.answered.IsZero() && ss.target == p {
				orphaned = append(orphaned, ss)
			}
		}
	}
	s.mu.Unlock()
	for _, ss := range orphaned {
		s.finishRequest(ss, wire.CodeGone, nil)
	}
	return replaced
}

func (s *Server) lookup(id identity.PeerID) *peer {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.peers[id]
}

// handle processes one message from a registered peer. A returned error is
// a protocol violation that ends the connection.
func (s *Server) handle(p *peer, m wire.Message) error {
	switch m := m.(type) {
	case *wire.AddAddress:
		p.mu.Lock()
		defer p.mu.Unlock()
		for _, c := range p.candidates {
			if c.Addr == m.Candidate.Addr {
				return nil
			}
		}
		if len(p.candidates) >= wire.MaxCandidates {
			return &ProtocolError{Code: wire.CodeTooMany, Msg: "too many candidates"}
		}
		p.candidates = append(p.candidates, m.Candidate)
	case *wire.NATType:
		p.mu.Lock()
		p.nat = m.NAT
		p.mu.Unlock()
	case *wire.RemoveAddress:
		p.mu.Lock()
		defer p.mu.Unlock()
		for i, c := range p.candidates {
			if c.Addr == m.Addr {
				p.candidates = append(p.candidates[:i], p.candidates[i+1:]...)
				break
			}
		}
		if m.Addr == p.also {
			p.also = netip.AddrPort{} // the peer lost that family
		}
	case *wire.ConnectRequest:
		return s.handleConnect(p, m)
	case *wire.ConnectAnswer:
		return s.handleAnswer(p, m)
	case *wire.PunchRequest:
		return s.handlePunchRequest(p, m)
	case *wire.ConnectCancel:
		s.handleCancel(p, m)
	case *wire.RelayRequest:
		return s.handleRelayRequest(p, m)
	case *wire.RelayAddress:
		return s.handleRelayAddress(p, m)
	case *wire.ProbeRequest:
		if !p.allow() {
			s.rec.Record(event.Event{Kind: event.KindSecurity, Reason: event.ReasonRateLimited, Peer: p.id.String(), Detail: "probe"})
			return nil
		}
		p.mu.Lock()
		to := p.observed
		if m.Other {
			to = p.also // invalid until the peer showed it (ObserveUsername)
		}
		p.mu.Unlock()
		if !to.IsValid() || s.familyOf(to.Addr()).probeCaps()&m.Kind == 0 {
			return nil // not offered: the peer's wait times out, as for a filtered probe
		}
		// Only ever to an address this bootstrap observed the peer at: no
		// reflection.
		if err := s.probe(m.Kind, m.TxID, to); err != nil {
			s.log.Debug("bootstrap: probe", "err", err)
		}
	case *wire.Ping:
		// The per-peer message bucket (checked before handle) bounds how
		// fast a peer can make the bootstrap answer.
		if err := p.ctl.send(&wire.Pong{Seq: m.Seq, Peers: uint64(s.NumPeers())}); err != nil {
			s.log.Debug("bootstrap: pong", "err", err) // the read loop ends with the connection
		}
	case *wire.Register:
		return &ProtocolError{Code: wire.CodeBadRequest, Msg: "already registered"}
	case *wire.Error:
		return &ProtocolError{Code: m.Code, Msg: "peer reported: " + m.Text}
	default:
		return &ProtocolError{Code: wire.CodeBadRequest, Msg: m.Type().String() + " is not sent by peers"}
	}
	return nil
}

func codeReason(c wire.Code) event.Reason {
	switch c {
	case wire.CodeOK:
		return event.ReasonNone
	case wire.CodeUnknownPeer:
		return event.ReasonUnknownPeer
	case wire.CodeRateLimited:
		return event.ReasonRateLimited
	case wire.CodeExpired:
		return event.ReasonExpired
	case wire.CodeRefused:
		return event.ReasonRefused
	case wire.CodeOverloaded, wire.CodeTooMany:
		return event.ReasonOverloaded
	case wire.CodeRegistryFull:
		return event.ReasonRegistryFull
	case wire.CodeSelf:
		return event.ReasonSelf
	case wire.CodeGone:
		return event.ReasonConnectionLost
	}
	return event.ReasonProtocolError
}

// reply sends a ConnectResult that ends a request early and reports it.
func (s *Server) reply(p *peer, id uint64, code wire.Code) {
	s.rec.Record(event.Event{Kind: event.KindBootstrapRequest, Bootstrap: "server", Detail: "connect",
		Outcome: event.OutcomeFail, Reason: codeReason(code), Peer: p.id.String()})
	if code == wire.CodeRateLimited {
		s.rec.Record(event.Event{Kind: event.KindSecurity, Reason: event.ReasonRateLimited, Peer: p.id.String(), Detail: "connect"})
	}
	s.sendTo(p, &wire.ConnectResult{ID: id, Code: code})
}

// sendTo writes to a peer's control stream; if that fails the peer is
// disconnected (its serve goroutine then unregisters it).
func (s *Server) sendTo(p *peer, m wire.Message) {
	if err := p.ctl.send(m); err != nil {
		p.conn.Close(closeSlowConsumer, "control stream write failed")
	}
}

// srflx returns the candidates to forward for a peer: its announced ones
// and the addresses this bootstrap observed it at (unless announced too;
// its registration's first, then its other family's), each marked with
// its origin. A peer can announce any address; only what this bootstrap
// saw is marked observed (see wire.Origin).
func srflx(observed []netip.AddrPort, cands []wire.Candidate) []wire.Candidate {
	out := make([]wire.Candidate, 0, len(cands)+len(observed))
	seen := make([]bool, len(observed))
	for _, c := range cands {
		c.Origin = wire.OriginAnnounced
		for i, o := range observed {
			switch {
			case c.Addr == o:
				seen[i], c.Origin = true, wire.OriginObserved
			case o.IsValid() && c.Origin == wire.OriginAnnounced && c.Addr.Addr().Unmap() == o.Addr().Unmap():
				c.Origin = wire.OriginObservedIP
			}
		}
		out = append(out, c)
	}
	var extra []wire.Candidate
	for i, o := range observed {
		if !seen[i] && o.IsValid() {
			// Observed by the bootstrap: the most reliable server-reflexive
			// candidate; priority per RFC 8445 type preference 100.
			extra = append(extra, wire.Candidate{Kind: wire.KindServerReflexive, Priority: 100<<24 | 65535<<8 | 255, Addr: o,
				Origin: wire.OriginObserved})
		}
	}
	if len(out)+len(extra) > wire.MaxCandidates {
		out = out[max(0, len(out)+len(extra)-wire.MaxCandidates):] // keep the observed addresses
	}
	return append(out, extra...)
}

func (s *Server) handleConnect(p *peer, m *wire.ConnectRequest) error {
	switch {
	case !p.allow():
		s.reply(p, m.ID, wire.CodeRateLimited)
		return nil
	case m.Target == p.id:
		s.reply(p, m.ID, wire.CodeSelf)
		return nil
	}
	target := s.lookup(m.Target)
	if target == nil {
		s.reply(p, m.ID, wire.CodeUnknownPeer)
		return nil
	}
	p.mu.Lock()
	if _, dup := p.reqs[m.ID]; dup {
		p.mu.Unlock()
		return &ProtocolError{Code: wire.CodeBadRequest, Msg: fmt.Sprintf("request ID %d reused", m.ID)}
	}
	if p.pending >= s.cfg.MaxPendingPerPeer {
		p.mu.Unlock()
		s.reply(p, m.ID, wire.CodeTooMany)
		return nil
	}
	p.pending++
	p.reqs[m.ID] = 0 // reserved until the session exists
	// Announced candidates replace the registered ones for this request;
	// the observed address is always included.
	if len(m.Candidates) > 0 {
		p.candidates = m.Candidates
	}
	p.nat = m.NAT
	cands := srflx(p.observationsLocked(), p.candidates)
	p.mu.Unlock()

	// Lock order: s.mu before any peer's mu.
	s.mu.Lock()
	s.nextID++
	ss := &session{id: s.nextID, reqID: m.ID, requester: p, target: target, created: time.Now(),
		early: m.Purpose == wire.PurposeConnect && p.features&target.features&wire.FeatureEarly != 0}
	s.sessions[ss.id] = ss
	// The target's relay may reach the requester (who asked for this
	// introduction) from the offer on: a target with a warm allocation
	// permits the requester's addresses while it answers, not a round
	// trip later. The other direction waits for the answer.
	s.allowRelay(target.id, p)
	relayedReq := hasRelayed(m.Candidates)
	if relayedReq || ss.early {
		// A requester with a warm relay allocation may reach the target
		// through it from the request on (it permits where the target is
		// observed while the target answers: see wire.ConnectAck), and
		// so may an early requester, which holds the target's candidates
		// from now on.
		s.allowRelay(p.id, target)
	}
	p.mu.Lock()
	p.reqs[m.ID] = ss.id
	p.mu.Unlock()
	s.mu.Unlock()
	offer := &wire.ConnectOffer{ID: ss.id, From: p.id, NAT: m.NAT, Candidates: cands, Creds: m.Creds, Purpose: m.Purpose}
	if !ss.early {
		ack := &wire.ConnectAck{ID: m.ID}
		if relayedReq {
			ack.Target = target.observedNow()
		}
		s.sendTo(target, offer)
		s.sendTo(p, ack)
		return nil
	}
	early, offerEarly := s.earlyStart(ss)
	offer.Early = offerEarly
	s.sendTo(target, offer)
	s.sendTo(p, early)
	return nil
}

// earlyStart makes the two halves of an early introduction (see
// wire.ConnectEarly): the requester's answer, with what the target
// registered, and the target's part of the offer. Both carry the check
// credentials issued to the target for this session, and delays that
// make the two sides start at the same moment, as PunchNow's do.
func (s *Server) earlyStart(ss *session) (*wire.ConnectEarly, *wire.Early) {
	ra, rb := ss.requester.conn.RTT(), ss.target.conn.RTT()
	da, db := PunchDelays(ra, rb)
	creds := wire.NewCreds()
	t := ss.target
	t.mu.Lock()
	m := &wire.ConnectEarly{ID: ss.reqID, NAT: t.nat, Candidates: srflx(t.observationsLocked(), t.candidates), Creds: creds,
		PeerRTTMicros: uint64(rb.Microseconds()), DelayMicros: uint64(da.Microseconds())}
	t.mu.Unlock()
	return m, &wire.Early{Creds: creds, DelayMicros: uint64(db.Microseconds()), PeerRTTMicros: uint64(ra.Microseconds())}
}

// hasRelayed says whether cands hold a relayed address.
func hasRelayed(cands []wire.Candidate) bool {
	return slices.ContainsFunc(cands, func(c wire.Candidate) bool { return c.Kind == wire.KindRelay })
}

// observedNow returns where the peer's control connection comes from now
// (its last observed address if the connection has none), as a list for
// wire.ConnectAck; none if neither is known.
func (p *peer) observedNow() []netip.AddrPort {
	p.mu.Lock()
	defer p.mu.Unlock()
	if observed := p.observedLocked(); observed.IsValid() {
		return []netip.AddrPort{observed}
	}
	return nil
}

// observedLocked returns where the peer's control connection comes from
// now: it may have moved since the last sweep recorded p.observed (which
// it returns when the connection has no address). p.mu held.
func (p *peer) observedLocked() netip.AddrPort {
	if cur := p.conn.RemoteAddr(); cur.IsValid() {
		return cur
	}
	return p.observed
}

// observationsLocked are the addresses this bootstrap observed p at: its
// registration's, then its address in the other family (if it showed
// one). Called with p.mu held.
func (p *peer) observationsLocked() []netip.AddrPort {
	obs := []netip.AddrPort{p.observedLocked()}
	if p.also.IsValid() {
		obs = append(obs, p.also)
	}
	return obs
}

// sessionOf finds an answered session of p by the ID p knows it by (or,
// on the requester's side, an early one: it may announce a relayed
// address before the target answers). Called with s.mu held.
func (s *Server) sessionOf(p *peer, id uint64, offer bool) *session {
	if offer {
		if ss := s.sessions[id]; ss != nil && ss.target == p && !ss.answered.IsZero() {
			return ss
		}
		return nil
	}
	p.mu.Lock()
	sid, ok := p.reqs[id]
	p.mu.Unlock()
	if ss := s.sessions[sid]; ok && ss != nil && (!ss.answered.IsZero() || ss.early) {
		return ss
	}
	return nil
}

func (s *Server) handleRelayRequest(p *peer, m *wire.RelayRequest) error {
	if !p.allow() {
		s.sendTo(p, &wire.RelayGrant{ID: m.ID, Code: wire.CodeRateLimited})
		return nil
	}
	if s.cfg.Relay == nil {
		s.sendTo(p, &wire.RelayGrant{ID: m.ID, Code: wire.CodeRefused})
		return nil
	}
	cr := s.cfg.Relay.Credentials(p.id, s.cfg.RelayTTL)
	s.rec.Record(event.Event{Kind: event.KindRelay, Detail: "credentials", Outcome: event.OutcomeOK, Peer: p.id.String()})
	p.mu.Lock()
	at := p.observed.Addr()
	p.mu.Unlock()
	udp, tcp := s.cfg.Relay.AddrsFor(at)
	s.sendTo(p, &wire.RelayGrant{ID: m.ID, Code: wire.CodeOK, Username: cr.Username, Password: cr.Password,
		UDP: udp, TCP: tcp, ExpiresUnix: uint64(cr.Expires.Unix())})
	return nil
}

// handleRelayAddress records a peer's relayed address in its session and
// forwards it to the other side.
func (s *Server) handleRelayAddress(p *peer, m *wire.RelayAddress) error {
	s.mu.Lock()
	ss := s.sessionOf(p, m.ID, m.Offer)
	if ss == nil {
		s.mu.Unlock()
		return nil // expired or unknown session
	}
	var fwd *wire.RelayAddress
	var to *peer
	if ss.requester == p {
		to, fwd = ss.target, &wire.RelayAddress{ID: ss.id, Offer: true, Addr: m.Addr}
	} else {
		to, fwd = ss.requester, &wire.RelayAddress{ID: ss.reqID, Offer: false, Addr: m.Addr}
	}
	if ss.relayed < 4 { // a few relayed addresses per session, no more
		ss.relayed++
		s.allowRelay(to.id, p, m.Addr)
	}
	s.mu.Unlock()
	s.sendTo(to, fwd)
	return nil
}

// allowKey is one relay permission grant: peer's allocations may be
// permitted to ip.
type allowKey struct {
	peer identity.PeerID
	ip   netip.Addr
}

// allowRelay lets peer's relay allocations reach the addresses of other
// (its candidates, observed address and extra), for RelayTTL. Called with
// s.mu held.
func (s *Server) allowRelay(peer identity.PeerID, other *peer, extra ...netip.AddrPort) {
	until := time.Now().Add(s.cfg.RelayTTL)
	other.mu.Lock()
	ips := []netip.Addr{other.observed.Addr()}
	for _, c := range other.candidates {
		ips = append(ips, c.Addr.Addr())
	}
	other.mu.Unlock()
	for _, e := range extra {
		ips = append(ips, e.Addr())
	}
	for _, ip := range ips {
		if ip.IsValid() {
			s.allowed[allowKey{peer, ip.Unmap()}] = until
		}
	}
}

// RelayAllowed reports whether peer's relay allocation may be permitted to
// ip: ip must be an address that a peer it was introduced to announced (a
// candidate or a relayed address) or was observed at, within RelayTTL of
// the introduction. This is the relay's permission policy: it forwards
// only between introduced peers.
func (s *Server) RelayAllowed(id identity.PeerID, ip netip.Addr) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	until, ok := s.allowed[allowKey{id, ip.Unmap()}]
	return ok && time.Now().Before(until)
}

func (s *Server) handleAnswer(p *peer, m *wire.ConnectAnswer) error {
	s.mu.Lock()
	ss := s.sessions[m.ID]
	if ss == nil || ss.target != p || !ss.answered.IsZero() {
		s.mu.Unlock()
		// A late answer to an expired offer is normal: the target is told
		// the introduction is over (as at the expiry, which its answer
		// may have crossed). Anything else from this peer for an ID it
		// was not offered is ignored.
		if ss == nil && m.Code == wire.CodeOK {
			s.sendTo(p, &wire.ConnectCancel{ID: m.ID, Offer: true})
		}
		return nil
	}
	ss.answered = time.Now()
	if m.Code != wire.CodeOK {
		delete(s.sessions, ss.id)
	}
	s.mu.Unlock()
	if m.Code != wire.CodeOK {
		s.finishRequest(ss, m.Code, nil)
		return nil
	}
	p.mu.Lock()
	if len(m.Candidates) > 0 {
		p.candidates = m.Candidates
	}
	p.nat = m.NAT
	cands := srflx(p.observationsLocked(), p.candidates)
	p.mu.Unlock()
	s.mu.Lock()
	s.allowRelay(ss.requester.id, ss.target)
	s.allowRelay(ss.target.id, ss.requester)
	s.mu.Unlock()
	s.finishRequest(ss, wire.CodeOK, &wire.ConnectResult{NAT: m.NAT, Candidates: cands, Creds: m.Creds})
	ss.round = 1
	s.punch(ss, 1)
	return nil
}

// finishRequest answers the requester of ss.
func (s *Server) finishRequest(ss *session, code wire.Code, res *wire.ConnectResult) {
	r := ss.requester
	r.mu.Lock()
	r.pending--
	if code != wire.CodeOK {
		delete(r.reqs, ss.reqID)
	}
	r.mu.Unlock()
	if res == nil {
		res = &wire.ConnectResult{}
	}
	res.ID, res.Code = ss.reqID, code
	if code == wire.CodeOK {
		res.PeerRTTMicros = uint64(ss.target.conn.RTT().Microseconds())
	}
	o := event.OutcomeOK
	if code != wire.CodeOK {
		o = event.OutcomeFail
	}
	s.rec.Record(event.Event{Kind: event.KindBootstrapRequest, Bootstrap: "server", Detail: "connect",
		Outcome: o, Reason: codeReason(code), Duration: time.Since(ss.created), Peer: r.id.String()})
	s.sendTo(r, res)
}

// punch tells both sides of ss to start round. The delays make the two
// sides start when the later of the two PunchNow messages arrives, so that
// their first probes cross.
func (s *Server) punch(ss *session, round uint64) {
	ra := ss.requester.conn.RTT()
	rb := ss.target.conn.RTT()
	da, db := PunchDelays(ra, rb)
	s.sendTo(ss.requester, &wire.PunchNow{ID: ss.reqID, Round: round, DelayMicros: uint64(da.Microseconds()), PeerRTTMicros: uint64(rb.Microseconds())})
	s.sendTo(ss.target, &wire.PunchNow{ID: ss.id, Offer: true, Round: round, DelayMicros: uint64(db.Microseconds()), PeerRTTMicros: uint64(ra.Microseconds())})
}

// PunchDelays returns how long each side waits after receiving PunchNow,
// given the bootstrap's RTT to each, so that both start at the same moment:
// the one-way delay to the farther peer.
func PunchDelays(rttA, rttB time.Duration) (delayA, delayB time.Duration) {
	far := max(rttA, rttB)
	return (far - rttA) / 2, (far - rttB) / 2
}

// handleCancel ends a session one side gave up on and tells the other
// side. A requester may cancel before the target has answered (the
// target's late answer is then ignored); a target cancels only what it
// answered (before that it declines).
func (s *Server) handleCancel(p *peer, m *wire.ConnectCancel) {
	s.mu.Lock()
	var ss *session
	if m.Offer {
		if c := s.sessions[m.ID]; c != nil && c.target == p && !c.answered.IsZero() {
			ss = c
		}
	} else {
		p.mu.Lock()
		sid, ok := p.reqs[m.ID]
		p.mu.Unlock()
		if c := s.sessions[sid]; ok && c != nil && c.requester == p {
			ss = c
		}
	}
	if ss == nil {
		s.mu.Unlock()
		return // ended already (expired, answered with a refusal, cancelled)
	}
	delete(s.sessions, ss.id)
	pending := ss.answered.IsZero()
	s.mu.Unlock()
	r := ss.requester
	r.mu.Lock()
	delete(r.reqs, ss.reqID)
	if pending {
		r.pending-- // no result will be sent for it
	}
	r.mu.Unlock()
	if m.Offer {
		s.sendTo(ss.requester, &wire.ConnectCancel{ID: ss.reqID})
	} else {
		s.sendTo(ss.target, &wire.ConnectCancel{ID: ss.id, Offer: true})
	}
}

func (s *Server) handlePunchRequest(p *peer, m *wire.PunchRequest) error {
	if !p.allow() {
		s.rec.Record(event.Event{Kind: event.KindSecurity, Reason: event.ReasonRateLimited, Peer: p.id.String(), Detail: "punch"})
		return nil
	}
	s.mu.Lock()
	ss := s.sessionOf(p, m.ID, m.Offer)
	if ss == nil || ss.answered.IsZero() || m.Round <= ss.round {
		s.mu.Unlock()
		return nil // stale or unknown: a new round already superseded it
	}
	ss.round = m.Round
	s.mu.Unlock()
	s.punch(ss, m.Round)
	return nil
}

// sweepLoop expires unanswered offers and old sessions, and pushes
// observed-address changes (NAT rebinding, client migration).
func (s *Server) sweepLoop() {
	defer s.wg.Done()
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		select {
		case <-s.ctx.Done():
			return
		case <-t.C:
		}
		s.sweep(time.Now())
	}
}

func (s *Server) sweep(now time.Time) {
	var expired []*session
	s.mu.Lock()
	for id, ss := range s.sessions {
		switch {
		case ss.answered.IsZero() && now.Sub(ss.created) > s.cfg.OfferTimeout:
			expired = append(expired, ss)
			delete(s.sessions, id)
		case !ss.answered.IsZero() && now.Sub(ss.answered) > s.cfg.SessionTTL:
			delete(s.sessions, id)
			ss.requester.mu.Lock()
			delete(ss.requester.reqs, ss.reqID)
			ss.requester.mu.Unlock()
		}
	}
	for k, until := range s.allowed {
		if now.After(until) {
			delete(s.allowed, k)
		}
	}
	peers := make([]*peer, 0, len(s.peers))
	for _, p := range s.peers {
		peers = append(peers, p)
	}
	s.mu.Unlock()
	for _, ss := range expired {
		s.finishRequest(ss, wire.CodeExpired, nil)
		// The target may still answer (its control connection was slow,
		// its NAT mapped it anew): it is to stop rather than wait for
		// punch rounds that will never come.
		s.sendTo(ss.target, &wire.ConnectCancel{ID: ss.id, Offer: true})
	}
	for _, p := range peers {
		cur := p.conn.RemoteAddr()
		p.mu.Lock()
		changed := cur.IsValid() && cur != p.observed
		if changed {
			p.observed = cur
			p.obsSeq++
		}
		seq := p.obsSeq
		p.mu.Unlock()
		if changed {
			s.sendTo(p, &wire.ObservedAddress{Seq: seq, Addr: cur})
		}
	}
}

// handleSTUN answers RFC 5389 Binding requests on ep with the source
// address (XOR-MAPPED-ADDRESS). It runs on ep's reader goroutine.
func (s *Server) handleSTUN(ep *endpoint.Endpoint, req *stun.Message, from netip.AddrPort) {
	if req.Type != stun.BindingRequest {
		return
	}
	var u stun.Username
	if err := u.GetFrom(req); err == nil {
		if token, ok := wire.ParseObserveUsername(u.String()); ok {
			s.observeOther(token, from)
		}
	}
	resp, err := BindingResponse(req, from)
	if err != nil {
		return
	}
	_ = ep.WriteTo(resp.Raw, from)
}

// observeOther records from as the address, in the bootstrap's other
// family, of the peer whose registration token is token (a Binding
// request of a dual-stack peer, see wire.ObserveUsername). A token of
// nobody, or an address in the registration's own family, changes
// nothing.
func (s *Server) observeOther(token [16]byte, from netip.AddrPort) {
	s.mu.Lock()
	p := s.tokens[token]
	s.mu.Unlock()
	if p == nil || endpoint.Family(from.Addr()) == endpoint.Family(p.observed.Addr()) {
		return
	}
	p.mu.Lock()
	changed := p.also != from
	p.also = from
	p.mu.Unlock()
	if changed {
		s.rec.Record(event.Event{Kind: event.KindCandidate, Peer: p.id.String(), Addr: from, Detail: wire.KindServerReflexive.String()}) // observed in the other family
	}
}

// BindingResponse builds the success response to a Binding request from
// `from`. It carries XOR-MAPPED-ADDRESS, and FINGERPRINT if the request
// had one.
func BindingResponse(req *stun.Message, from netip.AddrPort) (*stun.Message, error) {
	extra := []stun.Setter{stun.NewSoftware("antnode")}
	if _, err := req.Get(stun.AttrFingerprint); err == nil {
		extra = append(extra, stun.Fingerprint)
	}
	return endpoint.BindingSuccess(req, from, extra...)
}
