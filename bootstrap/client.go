package bootstrap

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/failsafe-go/failsafe-go"
	"github.com/failsafe-go/failsafe-go/retrypolicy"
	"github.com/quic-go/quic-go"

	"github.com/antnode/antnode/bootstrap/wire"
	"github.com/antnode/antnode/endpoint"
	"github.com/antnode/antnode/event"
	"github.com/antnode/antnode/identity"
	"github.com/antnode/antnode/nattype"
)

// ClientConfig configures a Client.
type ClientConfig struct {
	// Identity is the peer's key. Required.
	Identity *identity.Identity
	// Endpoint is the peer's socket; control connections leave from it so
	// the bootstrap observes the mapping peers will use. Required; not
	// closed by the Client.
	Endpoint *endpoint.Endpoint
	// Addr is the bootstrap's address. Required.
	Addr netip.AddrPort
	// MapAddr rewrites every address the bootstrap tells of other hosts
	// (peers' candidates and relayed addresses, relay and alternate STUN
	// sockets; not this node's own observed address): a node behind
	// NAT64 maps IPv4 ones into its NAT64 prefix (nat64.Prefix). Nil:
	// unchanged.
	MapAddr func(netip.AddrPort) netip.AddrPort
	// ID is the bootstrap's expected peer ID. Zero: the first key seen is
	// accepted and pinned; a later connection presenting another key is
	// refused.
	ID identity.PeerID
	// Label names the bootstrap in metrics (a small index). Empty: "0".
	Label string
	// Recorder receives events. Nil: discarded.
	Recorder event.Recorder
	// Logger receives records that are not events. Nil: discarded.
	Logger *slog.Logger
	// Local returns what the peer announces at each (re)registration.
	// Nil: nothing but the observed address.
	Local func() (nattype.Type, []wire.Candidate)
	// OnOffer is called on its own goroutine for each connect offer; it
	// must call Accept or Decline. Nil: every offer is declined.
	OnOffer func(*Offer)
	// OnObserved is called when the bootstrap reports a new observed
	// address. It must not block. Nil: ignored.
	OnObserved func(netip.AddrPort)
	// KeepAlive is the QUIC keepalive period. Zero: 10 s.
	KeepAlive time.Duration
	// IdleTimeout ends a control connection that hears nothing. Zero: 30 s.
	IdleTimeout time.Duration
	// MinBackoff and MaxBackoff bound the re-registration backoff
	// (exponential with jitter). Zero: 250 ms and 30 s.
	MinBackoff, MaxBackoff time.Duration
	// RefusedBackoff is the least wait before registering again after
	// the bootstrap refused a registration (registry full, or this
	// address at its cap), at most MaxBackoff. Zero: 10 s.
	RefusedBackoff time.Duration
	// DialTimeout bounds one dial and registration. Zero: 5 s.
	DialTimeout time.Duration
	// MaxOffers bounds concurrent OnOffer calls; further offers are
	// declined as overloaded. Zero: 64.
	MaxOffers int
	// MinAckWait is the least time to wait for a bootstrap to acknowledge
	// a connect request (the wait is at least 4 RTT). Zero: 500 ms.
	MinAckWait time.Duration
	// DisableEarly leaves wire.FeatureEarly out of the registration: the
	// bootstrap then introduces this peer the old way (offer, answer,
	// PunchNow; two round trips before the first check instead of one and
	// a half). Zero: early introductions where the other peer takes part.
	DisableEarly bool
	// TCPFallback also registers over TLS on TCP (same address and port)
	// when QUIC has not registered within TCPDelay, for hosts whose UDP is
	// blocked. Zero TCPDelay: 1 s.
	TCPFallback bool
	TCPDelay    time.Duration
	// Heartbeat is how often the client pings the bootstrap on the
	// control stream; a Pong must come back within HeartbeatTimeout or
	// the connection is declared dead and re-registered. It also makes a
	// restarted bootstrap answer with a stateless reset at once. Zero:
	// KeepAlive; negative: no heartbeat. Zero HeartbeatTimeout: 5 s.
	Heartbeat        time.Duration
	HeartbeatTimeout time.Duration
	// DialTCP opens the TCP connection of the fallback. Nil: net.Dialer.
	DialTCP func(ctx context.Context, addr netip.AddrPort) (net.Conn, error)
	// SessionCache keeps the TLS sessions of the control connections, so
	// that a re-registration resumes the session (after a bootstrap
	// restart too: its ticket key is derived from its identity) and skips
	// the certificates and their signatures; the key exchange still runs.
	// It may be shared by the clients of one identity (a node's): entries
	// are keyed by the bootstrap's address and the transport, not by the
	// identity, and a resumed session is the identity that made it. Nil:
	// a cache of this client alone, of sessionCacheSize sessions.
	SessionCache tls.ClientSessionCache
	// ReturnRate and MaxReturnSpread spread a fleet's return after it
	// lost its bootstrap: the first re-registration after a registered
	// connection ends waits a random time, uniform over a window of the
	// registry size the bootstrap told last (at the registration, then
	// with every heartbeat's answer) over ReturnRate,
	// at least MinBackoff and at most MaxReturnSpread (see returnDelay).
	// Zero: 2000 registrations per second and 5 s.
	ReturnRate      float64
	MaxReturnSpread time.Duration
}

func (c *ClientConfig) validate() error {
	switch {
	case c.Identity == nil:
		return errors.New("bootstrap: ClientConfig.Identity is required")
	case c.Endpoint == nil:
		return errors.New("bootstrap: ClientConfig.Endpoint is required")
	case !c.Addr.IsValid():
		return errors.New("bootstrap: ClientConfig.Addr is required")
	case c.KeepAlive < 0, c.IdleTimeout < 0, c.MinBackoff < 0, c.MaxBackoff < 0, c.DialTimeout < 0, c.MaxOffers < 0,
		c.ReturnRate < 0, c.MaxReturnSpread < 0:
		return errors.New("bootstrap: ClientConfig has a negative duration or limit")
	}
	if c.SessionCache == nil {
		c.SessionCache = tls.NewLRUClientSessionCache(sessionCacheSize)
	}
	if c.ReturnRate == 0 {
		c.ReturnRate = 2000
	}
	if c.MaxReturnSpread == 0 {
		c.MaxReturnSpread = 5 * time.Second
	}
	if c.Label == "" {
		c.Label = "0"
	}
	if c.Recorder == nil {
		c.Recorder = event.Nop{}
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.Local == nil {
		c.Local = func() (nattype.Type, []wire.Candidate) { return nattype.Type{}, nil }
	}
	if c.KeepAlive == 0 {
		c.KeepAlive = 10 * time.Second
	}
	if c.IdleTimeout == 0 {
		c.IdleTimeout = 30 * time.Second
	}
	if c.MinBackoff == 0 {
		c.MinBackoff = 250 * time.Millisecond
	}
	if c.MaxBackoff == 0 {
		c.MaxBackoff = 30 * time.Second
	}
	if c.RefusedBackoff <= 0 {
		c.RefusedBackoff = 10 * time.Second
	}
	c.RefusedBackoff = min(max(c.RefusedBackoff, c.MinBackoff), c.MaxBackoff)
	if c.MaxBackoff < c.MinBackoff {
		return errors.New("bootstrap: MaxBackoff < MinBackoff")
	}
	if c.DialTimeout == 0 {
		c.DialTimeout = 5 * time.Second
	}
	if c.MaxOffers == 0 {
		c.MaxOffers = 64
	}
	if c.TCPDelay <= 0 {
		c.TCPDelay = time.Second
	}
	if c.Heartbeat == 0 {
		c.Heartbeat = c.KeepAlive
	}
	if c.HeartbeatTimeout <= 0 {
		c.HeartbeatTimeout = 5 * time.Second
	}
	if c.MinAckWait <= 0 {
		c.MinAckWait = 500 * time.Millisecond
	}
	if c.DialTCP == nil {
		c.DialTCP = func(ctx context.Context, a netip.AddrPort) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "tcp", a.String())
		}
	}
	return nil
}

// Errors of Client calls.
var (
	// ErrUnavailable: the client is not registered with its bootstrap
	// right now (connecting, reconnecting or closed).
	ErrUnavailable = errors.New("bootstrap: not registered")
	// ErrClosed: the Client was closed.
	ErrClosed = errors.New("bootstrap: client closed")
	// Sentinels for the codes a bootstrap answers a connect request with;
	// *RequestError matches them with errors.Is.
	ErrUnknownPeer = errors.New("bootstrap: peer not registered with this bootstrap")
	ErrRateLimited = errors.New("bootstrap: rate limited")
	ErrExpired     = errors.New("bootstrap: peer did not answer in time")
	ErrRefused     = errors.New("bootstrap: peer refused")
	ErrOverloaded  = errors.New("bootstrap: overloaded")
	// ErrRegistryFull: the bootstrap refused a registration because its
	// registry is full. (An address at its cap is ErrRateLimited.)
	ErrRegistryFull = errors.New("bootstrap: registry full")
	// ErrPeerCanceled ends a Session whose other side gave up on the
	// introduction (Session.Cancel).
	ErrPeerCanceled = errors.New("bootstrap: the other peer gave up on the introduction")
	// ErrEarlyCreds: an early offer (Offer.Early) was accepted with check
	// credentials other than the ones the bootstrap issued for it.
	ErrEarlyCreds = errors.New("bootstrap: an early offer must be answered with its issued check credentials")
)

// RequestError is a request (a registration or a connect request) that
// the bootstrap answered with a code other than OK.
type RequestError struct{ Code wire.Code }

func (e *RequestError) Error() string { return "bootstrap: request refused: " + e.Code.String() }

// Reason is the code's reason (event.ReasonOf finds it).
func (e *RequestError) Reason() event.Reason { return codeReason(e.Code) }

// Is maps codes to the package's sentinels.
func (e *RequestError) Is(target error) bool {
	switch e.Code {
	case wire.CodeUnknownPeer:
		return target == ErrUnknownPeer
	case wire.CodeRateLimited:
		return target == ErrRateLimited
	case wire.CodeExpired, wire.CodeGone:
		return target == ErrExpired
	case wire.CodeRefused:
		return target == ErrRefused
	case wire.CodeOverloaded, wire.CodeTooMany:
		return target == ErrOverloaded
	case wire.CodeRegistryFull:
		return target == ErrRegistryFull
	}
	return false
}

// live is one registered control connection.
type live struct {
	conn        ctlConn
	server      identity.PeerID
	ctl         *ctlStream
	observed    netip.AddrPort
	altSTUN     []netip.AddrPort
	other       []netip.AddrPort // wire.Registered.Other
	token       [16]byte         // wire.Registered.Token
	otherProbes uint64           // wire.Registered.OtherProbes
	probes      uint64
	resumed     bool          // the TLS session was resumed
	since       time.Time     // when the registration was made
	peers       atomic.Uint64 // the registry size the bootstrap told last (0: not told)
	done        chan struct{} // closed when the connection ends
	pong        chan uint64   // Pong sequence numbers, for the heartbeat
	hbErr       atomic.Pointer[error]
}

// Client keeps a peer registered with one bootstrap and carries its
// coordination requests. NewClient starts one goroutine that (re)connects,
// plus one per connection to read it and one per offer being handled;
// Close stops them all and returns after they exit.
type Client struct {
	cfg ClientConfig
	rec event.Recorder
	log *slog.Logger

	hbOverride atomic.Int64 // SetHeartbeat's period, ns (0: cfg.Heartbeat)
	// Handshakes in a row that failed resuming a session, by transport
	// (see keyedCache).
	quicTicketFailures, tcpTicketFailures atomic.Int32

	mu       sync.Mutex
	cur      *live
	sessions uint64 // registrations made (commit), for Status.Session
	pinned   identity.PeerID
	ready    chan struct{} // closed while registered; replaced on loss
	// refused is closed when the bootstrap presents another key than the
	// configured one (no retry mends that; WaitReady returns at once),
	// and replaced by the next such failure's.
	refused  chan struct{}
	nextReq  uint64
	requests map[uint64]chan *wire.ConnectResult
	acks     map[uint64]chan wire.Message // a *wire.ConnectAck or *wire.ConnectEarly
	grants   map[uint64]chan *wire.RelayGrant
	outgoing map[uint64]*Session // by request ID
	incoming map[uint64]*Session // by offer ID
	// canceled holds offers the requester gave up on before this side
	// accepted them (Accept then fails); bounded by maxCanceled.
	canceled map[uint64]struct{}
	lastErr  error

	offers atomic.Int32

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
	once   sync.Once
}

// NewClient starts keeping the peer registered with cfg.Addr.
func NewClient(cfg ClientConfig) (*Client, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	c := &Client{
		cfg:      cfg,
		rec:      cfg.Recorder,
		log:      cfg.Logger,
		pinned:   cfg.ID,
		ready:    make(chan struct{}),
		refused:  make(chan struct{}),
		requests: make(map[uint64]chan *wire.ConnectResult),
		acks:     make(map[uint64]chan wire.Message),
		grants:   make(map[uint64]chan *wire.RelayGrant),
		outgoing: make(map[uint64]*Session),
		incoming: make(map[uint64]*Session),
		canceled: make(map[uint64]struct{}),
		ctx:      ctx,
		cancel:   cancel,
	}
	c.wg.Add(1)
	go c.run()
	return c, nil
}

// Addr returns the bootstrap's address.
func (c *Client) Addr() netip.AddrPort { return c.cfg.Addr }

// Label returns the bootstrap's metrics label.
func (c *Client) Label() string { return c.cfg.Label }

// ServerID returns the bootstrap's peer ID (zero until first contact when
// none was configured).
func (c *Client) ServerID() identity.PeerID {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.pinned
}

// Status is a snapshot of the client's state.
type Status struct {
	Registered bool
	Observed   netip.AddrPort
	AltSTUN    []netip.AddrPort
	// Other are the bootstrap's STUN sockets in its other family and
	// Token the registration's secret for them (wire.Registered).
	Other       []netip.AddrPort
	Token       [16]byte
	OtherProbes uint64 // the probes offered to the address in the other family
	Probes      uint64 // wire.ProbeOtherPort | wire.ProbeOtherAddr offered
	Transport   string // TransportQUIC or TransportTCP
	RTT         time.Duration
	LastError   error
	// Session counts the registrations the client has made: a new value
	// means a new control connection, to a bootstrap that may have
	// restarted since and forgotten what it granted (relay allocations).
	Session uint64
	// Resumed says that the current control connection resumed an earlier
	// TLS session (no certificates were exchanged or verified).
	Resumed bool
	// Since is when the current registration was made.
	Since time.Time
}

// Status returns the client's state.
func (c *Client) Status() Status {
	c.mu.Lock()
	defer c.mu.Unlock()
	st := Status{LastError: c.lastErr, Session: c.sessions}
	if c.cur != nil {
		st.Registered = true
		st.Observed = c.cur.observed
		st.AltSTUN = c.cur.altSTUN
		st.Other, st.Token, st.OtherProbes = c.cur.other, c.cur.token, c.cur.otherProbes
		st.Probes = c.cur.probes
		st.RTT = c.cur.conn.RTT()
		st.Transport = c.cur.conn.Transport()
		st.Resumed = c.cur.resumed
		st.Since = c.cur.since
	}
	return st
}

// WaitReady blocks until the client is registered, ctx ends or the client
// is closed. A bootstrap that presents another key than the configured
// one ends the wait at once with an error that matches
// identity.ErrKeyMismatch: waiting would not mend it.
func (c *Client) WaitReady(ctx context.Context) error {
	for {
		c.mu.Lock()
		ready, refused, registered, lastErr := c.ready, c.refused, c.cur != nil, c.lastErr
		c.mu.Unlock()
		if registered {
			return nil
		}
		if errors.Is(lastErr, identity.ErrKeyMismatch) {
			return fmt.Errorf("bootstrap %s: %w", c.cfg.Addr, lastErr)
		}
		select {
		case <-refused:
		case <-ready:
		case <-ctx.Done():
			if lastErr != nil {
				return fmt.Errorf("bootstrap %s: %w (last error: %w)", c.cfg.Addr, context.Cause(ctx), lastErr)
			}
			return fmt.Errorf("bootstrap %s: %w", c.cfg.Addr, context.Cause(ctx))
		case <-c.ctx.Done():
			return ErrClosed
		}
	}
}

// Close deregisters (by closing the connection) and stops the client.
func (c *Client) Close() error {
	c.once.Do(func() {
		c.cancel()
		c.mu.Lock()
		cur := c.cur
		c.mu.Unlock()
		if cur != nil {
			cur.conn.Close(closeNormal, "client closed")
		}
		c.wg.Wait()
	})
	return nil
}

func (c *Client) run() {
	defer c.wg.Done()
	policy := registrationRetry(c.cfg.MinBackoff, c.cfg.MaxBackoff, c.cfg.RefusedBackoff, func() bool { return c.ctx.Err() != nil },
		func(e failsafe.ExecutionScheduledEvent[*live]) {
			c.log.Debug("bootstrap: re-registering", "bootstrap", c.cfg.Label, "in", e.Delay, "attempt", e.Attempts())
		})
	for c.ctx.Err() == nil {
		l, err := failsafe.With(policy).WithContext(c.ctx).GetWithExecution(c.dialAndRegister)
		if err != nil {
			if c.ctx.Err() == nil {
				// Only a key mismatch aborts: the bootstrap at this
				// address is not the one configured. Keep trying slowly
				// (the operator may fix it) but say why.
				c.log.Error("bootstrap: giving up this round", "bootstrap", c.cfg.Label, "err", err)
				c.sleep(c.cfg.MaxBackoff)
			}
			continue
		}
		c.serve(l)
		// A connection that registered and then died: wait a random time
		// that grows with the registry the bootstrap had, so that a
		// bootstrap that drops every peer at once is not hammered in
		// lockstep when it comes back.
		c.sleep(returnDelay(c.cfg.MinBackoff, c.cfg.MaxReturnSpread, c.cfg.ReturnRate, l.peers.Load(), rand.Float64()))
	}
	c.failAll(ErrClosed)
}

// refused reports whether err is a bootstrap's refusal of a registration
// (registry full, or this address at its cap), which the client backs off
// on for at least RefusedBackoff.
func refused(err error) bool {
	r := classify(err)
	return err != nil && (r == event.ReasonRegistryFull || r == event.ReasonRateLimited)
}

// backoffJitter is how much a registration retry's delay varies: up to
// this fraction of the exponential delay either way (see backoff).
const backoffJitter = 0.25

// registrationRetry is the retry policy of (re-)registration: attempts
// without end, each retry after backoff(minD, maxD, n, random), until
// stopped reports true or the bootstrap presents another key than the
// configured one (which no retry mends). onScheduled, if not nil, hears
// every scheduled retry and its delay.
func registrationRetry[R any](minD, maxD, refusedD time.Duration, stopped func() bool,
	onScheduled func(failsafe.ExecutionScheduledEvent[R])) retrypolicy.RetryPolicy[R] {
	b := retrypolicy.NewBuilder[R]().
		WithMaxRetries(-1).
		WithDelayFunc(func(exec failsafe.ExecutionAttempt[R]) time.Duration {
			lo := minD
			if refused(exec.LastError()) {
				lo = refusedD // the bootstrap said it has no room: do not insist
			}
			return backoff(lo, maxD, exec.Attempts(), rand.Float64())
		}).
		AbortIf(func(_ R, err error) bool { return stopped() || errors.Is(err, identity.ErrKeyMismatch) }).
		ReturnLastFailure()
	if onScheduled != nil {
		b = b.OnRetryScheduled(onScheduled)
	}
	return b.Build()
}

// backoff is the delay before retry n (1: the first): minD doubled n-1
// times, at most maxD; then jitter: r (uniform in [0, 1)) picks the delay
// in that value's ±backoffJitter range, cut to [minD, maxD] (the bounds
// hold with jitter too, and no delay value is more likely than another).
// It is a pure function.
func backoff(minD, maxD time.Duration, n int, r float64) time.Duration {
	base := float64(maxD)
	if n >= 1 && n <= 63 {
		base = min(base, float64(minD)*float64(uint64(1)<<(n-1)))
	}
	lo := max(float64(minD), base*(1-backoffJitter))
	hi := min(float64(maxD), base*(1+backoffJitter))
	return time.Duration(lo + r*(hi-lo))
}

// returnDelay is the wait before the first re-registration after a
// registered connection ended, when the bootstrap had peers registered
// (0: not told): r (uniform in [0, 1)) picks it in [minD/2, minD/2 +
// window), where the window is peers/rate seconds, at least minD and at
// most maxSpread (or minD, if that is larger). A fleet of peers that
// lose their bootstrap at once thus comes back at about rate per second,
// each within maxSpread; with no size told it is minD with ±50% jitter.
// It is a pure function.
func returnDelay(minD, maxSpread time.Duration, rate float64, peers uint64, r float64) time.Duration {
	window := float64(minD)
	if rate > 0 {
		window = max(window, min(float64(peers)/rate*float64(time.Second), float64(maxSpread)))
	}
	return minD/2 + time.Duration(r*window)
}

// sessionCacheSize is how many TLS sessions a client's own cache keeps
// (one for each transport, and one to spare).
const sessionCacheSize = 3

// maxTicketFailures is how many handshakes in a row may fail while
// resuming before the session is dropped (see keyedCache.Put).
const maxTicketFailures = 3

// keyedCache files a shared session cache's entries under one
// bootstrap's address and transport: crypto/tls keys them by server
// name, which is the same for every antnode node.
//
// crypto/tls drops a session (Put with nil) whenever a handshake that
// tried to resume it fails, to recover from a corrupted one. A handshake
// that timed out at an overloaded bootstrap fails too, and its peer's
// next attempt would then be a full handshake, costing the bootstrap
// more just when it has least: keyedCache keeps the session through
// maxTicketFailures-1 such failures in a row and drops it at the next.
// (A ticket the bootstrap cannot open, of another key, costs no failure:
// it is ignored and the handshake is a full one.)
type keyedCache struct {
	c        tls.ClientSessionCache
	prefix   string
	failures *atomic.Int32 // handshakes in a row that failed resuming
}

func (k keyedCache) Get(key string) (*tls.ClientSessionState, bool) { return k.c.Get(k.prefix + key) }

func (k keyedCache) Put(key string, cs *tls.ClientSessionState) {
	if cs == nil && k.failures.Add(1) < maxTicketFailures {
		return
	}
	k.failures.Store(0)
	k.c.Put(k.prefix+key, cs)
}

// clientTLS is the TLS configuration of a control connection over
// transport to a bootstrap of peer ID expect (zero: any), resuming
// sessions from the session cache.
func (c *Client) clientTLS(expect identity.PeerID, transport string) *tls.Config {
	conf := c.cfg.Identity.ClientTLS(expect, wire.ALPN)
	failures := &c.quicTicketFailures
	if transport == TransportTCP {
		failures = &c.tcpTicketFailures
	}
	conf.ClientSessionCache = keyedCache{c: c.cfg.SessionCache, prefix: c.cfg.Addr.String() + "/" + transport + "/", failures: failures}
	return conf
}

func (c *Client) sleep(d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
	case <-c.ctx.Done():
	}
}

// dialAndRegister opens a control connection and registers on it.
func (c *Client) dialAndRegister(exec failsafe.Execution[*live]) (*live, error) {
	start := time.Now()
	l, err := c.tryRegister(exec.Context())
	if err != nil {
		c.mu.Lock()
		c.lastErr = err
		if errors.Is(err, identity.ErrKeyMismatch) {
			close(c.refused)
			c.refused = make(chan struct{})
		}
		c.mu.Unlock()
		c.rec.Record(event.Event{Kind: event.KindBootstrapRequest, Bootstrap: c.cfg.Label, Detail: "register",
			Outcome: event.OutcomeFail, Reason: classify(err), Duration: time.Since(start), Addr: c.cfg.Addr, Err: err})
		return nil, err
	}
	c.rec.Record(event.Event{Kind: event.KindBootstrapRequest, Bootstrap: c.cfg.Label, Detail: "register",
		Outcome: event.OutcomeOK, Duration: time.Since(start), Addr: c.cfg.Addr})
	return l, nil
}

// classify maps an error of a bootstrap interaction to a Reason.
func classify(err error) event.Reason {
	var idle *quic.IdleTimeoutError
	var hs *quic.HandshakeTimeoutError
	var app *quic.ApplicationError
	var re *RequestError
	var pe *ProtocolError
	var te *quic.TransportError
	switch {
	case errors.Is(err, identity.ErrKeyMismatch):
		return event.ReasonKeyMismatch
	case errors.Is(err, identity.ErrUnauthenticated), errors.As(err, &te):
		return event.ReasonHandshakeFailed
	case errors.As(err, &re):
		return re.Reason()
	case errors.As(err, &pe):
		return pe.Reason()
	case errors.As(err, &app) && app.ErrorCode == closeOverloaded:
		return event.ReasonOverloaded
	case errors.As(err, &app) && app.ErrorCode == closeRegistryFull:
		return event.ReasonRegistryFull
	case errors.As(err, &app) && app.ErrorCode == closeRateLimited:
		return event.ReasonRateLimited
	case errors.Is(err, context.Canceled):
		return event.ReasonCanceled
	case errors.As(err, &hs), errors.As(err, &idle), errors.Is(err, context.DeadlineExceeded):
		return event.ReasonBootstrapUnreachable
	case errors.Is(err, net.ErrClosed):
		return event.ReasonConnectionLost
	}
	return event.ReasonBootstrapUnreachable
}

// tryRegister registers over QUIC; if that has not succeeded within
// TCPDelay (UDP may be blocked), it also tries TLS over TCP, and the first
// registration wins.
func (c *Client) tryRegister(ctx context.Context) (*live, error) {
	ctx, cancel := context.WithTimeout(ctx, c.cfg.DialTimeout)
	defer cancel()
	type result struct {
		l   *live
		err error
	}
	results := make(chan result, 2)
	start := func(transport string) {
		go func() {
			l, err := c.dialRegister(ctx, transport)
			results <- result{l, err}
		}()
	}
	start(TransportQUIC)
	running := 1
	var tcpTimer <-chan time.Time
	if c.cfg.TCPFallback {
		t := time.NewTimer(c.cfg.TCPDelay)
		defer t.Stop()
		tcpTimer = t.C
	}
	var errs []error
	for running > 0 || tcpTimer != nil {
		select {
		case <-tcpTimer:
			tcpTimer = nil
			start(TransportTCP)
			running++
		case r := <-results:
			running--
			if r.err != nil {
				errs = append(errs, r.err)
				if errors.Is(r.err, identity.ErrKeyMismatch) {
					return nil, r.err // the bootstrap is not who it should be
				}
				if tcpTimer != nil { // QUIC failed fast: no need to wait
					tcpTimer = nil
					start(TransportTCP)
					running++
				}
				continue
			}
			cancel() // stop the other attempt
			for range running {
				if o := <-results; o.l != nil {
					o.l.conn.Close(closeNormal, "superseded")
				}
			}
			c.commit(r.l)
			return r.l, nil
		}
	}
	return nil, errors.Join(errs...)
}

// dialRegister opens a control connection over transport and registers.
func (c *Client) dialRegister(ctx context.Context, transport string) (*live, error) {
	c.mu.Lock()
	expect := c.pinned
	c.mu.Unlock()
	var conn ctlConn
	var str streamRW
	var tlsState tls.ConnectionState
	switch transport {
	case TransportQUIC:
		qconf := &quic.Config{
			KeepAlivePeriod:       c.cfg.KeepAlive,
			MaxIdleTimeout:        c.cfg.IdleTimeout,
			HandshakeIdleTimeout:  c.cfg.DialTimeout,
			MaxIncomingStreams:    -1,
			MaxIncomingUniStreams: -1,
		}
		qc, err := c.cfg.Endpoint.Transport().Dial(ctx, net.UDPAddrFromAddrPort(c.cfg.Addr),
			c.clientTLS(expect, TransportQUIC), qconf)
		if err != nil {
			return nil, fmt.Errorf("bootstrap %s: dial: %w", c.cfg.Addr, err)
		}
		conn, tlsState = quicCtl{qc}, qc.ConnectionState().TLS
		if str, err = qc.OpenStreamSync(ctx); err != nil {
			conn.Close(closeNormal, "")
			return nil, fmt.Errorf("bootstrap %s: register: %w", c.cfg.Addr, err)
		}
	case TransportTCP:
		raw, err := c.cfg.DialTCP(ctx, c.cfg.Addr)
		if err != nil {
			return nil, fmt.Errorf("bootstrap %s: dial TCP: %w", c.cfg.Addr, err)
		}
		tc := tls.Client(raw, c.clientTLS(expect, TransportTCP))
		if err := tc.HandshakeContext(ctx); err != nil {
			raw.Close()
			return nil, fmt.Errorf("bootstrap %s: TLS over TCP: %w", c.cfg.Addr, err)
		}
		t := newTCPCtl(tc, raw)
		conn, str, tlsState = t, failingRW{t}, tc.ConnectionState()
	}
	srv, err := identity.PeerFromState(tlsState)
	if err != nil {
		conn.Close(closeProtocol, "unauthenticated")
		return nil, err
	}
	fail := func(err error) (*live, error) {
		conn.Close(closeNormal, "")
		return nil, fmt.Errorf("bootstrap %s: register over %s: %w", c.cfg.Addr, transport, err)
	}
	ctl := newCtlStream(str)
	if err := ctl.send(c.hello()); err != nil {
		return fail(err)
	}
	if dl, ok := ctx.Deadline(); ok {
		str.SetReadDeadline(dl)
	}
	m, err := ctl.r.Read()
	str.SetReadDeadline(time.Time{})
	if err != nil {
		return fail(err)
	}
	var reg *wire.Registered
	switch m := m.(type) {
	case *wire.Registered:
		mapAddrs(m, c.cfg.MapAddr)
		reg = m
	case *wire.Error:
		if m.Code == wire.CodeRegistryFull || m.Code == wire.CodeRateLimited {
			return fail(&RequestError{Code: m.Code}) // refused: back off (see refused)
		}
		return fail(&ProtocolError{Code: m.Code, Msg: "bootstrap said: " + m.Text})
	default:
		return fail(&ProtocolError{Code: wire.CodeBadRequest, Msg: "expected registered, got " + m.Type().String()})
	}
	l := &live{conn: conn, ctl: ctl, observed: reg.Observed, altSTUN: reg.AltSTUN, other: reg.Other, token: reg.Token, otherProbes: reg.OtherProbes, probes: reg.Probes,
		resumed: tlsState.DidResume, server: srv, done: make(chan struct{}), pong: make(chan uint64, 1)}
	l.peers.Store(reg.Peers)
	return l, nil
}

// hello is the registration: this peer's NAT type and candidates now,
// and the features it speaks.
func (c *Client) hello() *wire.Register {
	nat, cands := c.cfg.Local()
	if len(cands) > wire.MaxCandidates {
		cands = cands[:wire.MaxCandidates]
	}
	m := &wire.Register{Version: wire.Version, NAT: nat, Candidates: cands}
	if !c.cfg.DisableEarly {
		m.Features = wire.FeatureEarly
	}
	return m
}

// commit makes a registration the current one.
func (c *Client) commit(l *live) {
	c.mu.Lock()
	if c.pinned.IsZero() {
		c.pinned = l.server
	}
	l.since = time.Now()
	c.cur = l
	c.sessions++
	c.lastErr = nil
	close(c.ready)
	c.mu.Unlock()
	c.rec.Record(event.Event{Kind: event.KindBootstrapState, Bootstrap: c.cfg.Label, Outcome: event.OutcomeOK,
		Addr: c.cfg.Addr, Detail: l.conn.Transport()})
	if c.cfg.OnObserved != nil && l.observed.IsValid() {
		c.cfg.OnObserved(l.observed)
	}
}

// Heartbeat returns the current heartbeat period.
func (c *Client) Heartbeat() time.Duration {
	if d := c.hbOverride.Load(); d > 0 {
		return time.Duration(d)
	}
	return c.cfg.Heartbeat
}

// SetHeartbeat changes the heartbeat period (for a NAT whose mappings
// expire faster than the configured one); it applies from the next beat.
func (c *Client) SetHeartbeat(d time.Duration) {
	if d > 0 && c.cfg.Heartbeat > 0 {
		c.hbOverride.Store(int64(d))
	}
}

// ErrHeartbeat is the error of a control connection whose bootstrap did
// not answer a heartbeat in time.
var ErrHeartbeat = errors.New("bootstrap: no answer to heartbeat")

// serve reads the control stream until the connection ends.
func (c *Client) serve(l *live) {
	hbDone := make(chan struct{})
	go func() {
		defer close(hbDone)
		c.heartbeat(l)
	}()
	err := c.readLoop(l)
	if hb := l.hbErr.Load(); hb != nil {
		err = *hb
	}
	l.conn.Close(closeNormal, "")
	close(l.done)
	<-hbDone
	c.mu.Lock()
	c.cur = nil
	c.ready = make(chan struct{})
	if c.ctx.Err() == nil {
		c.lastErr = err
	}
	c.mu.Unlock()
	reason := classify(err)
	if c.ctx.Err() != nil {
		reason = event.ReasonCanceled
	}
	c.rec.Record(event.Event{Kind: event.KindBootstrapState, Bootstrap: c.cfg.Label, Outcome: event.OutcomeFail,
		Reason: reason, Addr: c.cfg.Addr, Err: err})
	c.failAll(fmt.Errorf("%w: connection to bootstrap %s lost: %w", ErrUnavailable, c.cfg.Label, err))
}

// failAll fails every waiting request and ends every session.
func (c *Client) failAll(err error) {
	c.mu.Lock()
	reqs := c.requests
	c.requests = make(map[uint64]chan *wire.ConnectResult)
	grants := c.grants
	c.grants = make(map[uint64]chan *wire.RelayGrant)
	sessions := make([]*Session, 0, len(c.outgoing)+len(c.incoming))
	for _, s := range c.outgoing {
		sessions = append(sessions, s)
	}
	for _, s := range c.incoming {
		sessions = append(sessions, s)
	}
	clear(c.outgoing)
	clear(c.incoming)
	c.mu.Unlock()
	for _, ch := range reqs {
		close(ch)
	}
	for _, ch := range grants {
		close(ch)
	}
	for _, s := range sessions {
		s.end(err)
	}
}

// heartbeat pings the bootstrap every Heartbeat and closes the
// connection when a Pong does not come back within HeartbeatTimeout. It
// returns when the connection ends.
func (c *Client) heartbeat(l *live) {
	if c.cfg.Heartbeat < 0 {
		<-l.done
		return
	}
	period := c.Heartbeat()
	tick := time.NewTicker(period)
	defer tick.Stop()
	pad := make([]byte, 24)
	var seq uint64
	for {
		select {
		case <-l.done:
			return
		case <-tick.C:
		}
		if p := c.Heartbeat(); p != period {
			period = p
			tick.Reset(p)
		}
		seq++
		start := time.Now()
		if err := l.ctl.send(&wire.Ping{Seq: seq, Pad: pad}); err != nil {
			return // the read loop sees the failure too
		}
		timeout := time.NewTimer(max(c.cfg.HeartbeatTimeout, 4*l.conn.RTT()))
	wait:
		for {
			select {
			case <-l.done:
				timeout.Stop()
				return
			case got := <-l.pong:
				if got == seq {
					timeout.Stop()
					c.rec.Record(event.Event{Kind: event.KindBootstrapRequest, Bootstrap: c.cfg.Label, Detail: "heartbeat",
						Outcome: event.OutcomeOK, Duration: time.Since(start)})
					break wait
				}
			case <-timeout.C:
				err := fmt.Errorf("%w within %v", ErrHeartbeat, time.Since(start).Round(time.Millisecond))
				l.hbErr.Store(&err)
				c.rec.Record(event.Event{Kind: event.KindBootstrapRequest, Bootstrap: c.cfg.Label, Detail: "heartbeat",
					Outcome: event.OutcomeFail, Reason: event.ReasonTimeout, Duration: time.Since(start)})
				l.conn.Close(closeNormal, "heartbeat timeout")
				return
			}
		}
	}
}

func (c *Client) readLoop(l *live) error {
	for {
		m, err := l.ctl.r.Read()
		var ut *wire.UnknownTypeError
		switch {
		case errors.As(err, &ut):
			continue
		case errors.Is(err, wire.ErrMalformed), errors.Is(err, wire.ErrTooLarge):
			l.ctl.sendError(wire.CodeBadRequest, err.Error())
			return err
		case err != nil:
			return err
		}
		if err := c.handle(l, m); err != nil {
			l.ctl.sendError(wire.CodeBadRequest, err.Error())
			return err
		}
	}
}

func (c *Client) handle(l *live, m wire.Message) error {
	mapAddrs(m, c.cfg.MapAddr)
	switch m := m.(type) {
	case *wire.ObservedAddress:
		c.mu.Lock()
		changed := l.observed != m.Addr
		l.observed = m.Addr
		c.mu.Unlock()
		if changed && c.cfg.OnObserved != nil {
			c.cfg.OnObserved(m.Addr)
		}
	case *wire.ConnectResult:
		c.mu.Lock()
		ch := c.requests[m.ID]
		delete(c.requests, m.ID)
		s := c.outgoing[m.ID]
		c.mu.Unlock()
		switch {
		case ch != nil:
			ch <- m // buffered 1
		case s != nil:
			s.deliverAnswer(m) // an early session (see wire.ConnectEarly)
		}
	case *wire.Pong:
		if m.Peers > 0 {
			l.peers.Store(m.Peers)
		}
		select {
		case l.pong <- m.Seq:
		default: // a late answer to a heartbeat already given up on
		}
	case *wire.ConnectAck:
		c.mu.Lock()
		ch := c.acks[m.ID]
		delete(c.acks, m.ID)
		c.mu.Unlock()
		if ch != nil {
			ch <- m // buffered 1
		}
	case *wire.ConnectEarly:
		c.takeEarly(m)
	case *wire.RelayGrant:
		c.mu.Lock()
		ch := c.grants[m.ID]
		delete(c.grants, m.ID)
		c.mu.Unlock()
		if ch != nil {
			ch <- m // buffered 1
		}
	case *wire.RelayAddress:
		s := c.session(m.ID, m.Offer)
		if s != nil {
			s.deliverRelay(m.Addr)
		}
	case *wire.ConnectOffer:
		c.handleOffer(l, m)
	case *wire.PunchNow:
		s := c.session(m.ID, m.Offer)
		if s != nil {
			s.deliver(Punch{Round: m.Round, Delay: time.Duration(m.DelayMicros) * time.Microsecond,
				PeerRTT: time.Duration(m.PeerRTTMicros) * time.Microsecond, At: time.Now()})
		}
	case *wire.ConnectCancel:
		s := c.session(m.ID, m.Offer)
		if s != nil {
			s.end(ErrPeerCanceled)
		} else if m.Offer && c.offers.Load() > 0 {
			// An offer still being handled, not accepted yet.
			c.mu.Lock()
			if len(c.canceled) >= maxCanceled {
				clear(c.canceled)
			}
			c.canceled[m.ID] = struct{}{}
			c.mu.Unlock()
		}
	case *wire.Error:
		return &ProtocolError{Code: m.Code, Msg: "bootstrap said: " + m.Text}
	default:
		return &ProtocolError{Code: wire.CodeBadRequest, Msg: m.Type().String() + " is not sent by bootstraps"}
	}
	return nil
}

// takeEarly hands an early answer to its waiting Connect. The result
// will come to the session, which Connect returns now: it is taken from
// the request's channel here, on the goroutine that reads the result
// too, so that it cannot be left in a channel nobody reads.
func (c *Client) takeEarly(m *wire.ConnectEarly) {
	c.mu.Lock()
	ch := c.acks[m.ID]
	delete(c.acks, m.ID)
	if ch != nil {
		delete(c.requests, m.ID)
	}
	c.mu.Unlock()
	if ch != nil {
		ch <- m // buffered 1
	}
}

// session finds the session a message names: by offer ID on the target's
// side (offer), by request ID on the requester's.
func (c *Client) session(id uint64, offer bool) *Session {
	c.mu.Lock()
	defer c.mu.Unlock()
	if offer {
		return c.incoming[id]
	}
	return c.outgoing[id]
}

func (c *Client) handleOffer(l *live, m *wire.ConnectOffer) {
	o := &Offer{c: c, l: l, ID: m.ID, From: m.From, Remote: Intro{NAT: m.NAT, Candidates: m.Candidates, Creds: m.Creds, Purpose: m.Purpose}}
	if m.Early != nil && !c.cfg.DisableEarly {
		o.EarlyCreds = m.Early.Creds
		o.Early = &Punch{Round: 1, Delay: time.Duration(m.Early.DelayMicros) * time.Microsecond,
			PeerRTT: time.Duration(m.Early.PeerRTTMicros) * time.Microsecond, At: time.Now()}
	}
	if c.cfg.OnOffer == nil {
		o.Decline(wire.CodeRefused)
		return
	}
	if int(c.offers.Add(1)) > c.cfg.MaxOffers {
		c.offers.Add(-1)
		o.Decline(wire.CodeOverloaded)
		return
	}
	c.wg.Add(1)
	go func() {
		defer c.wg.Done()
		defer c.offers.Add(-1)
		c.cfg.OnOffer(o)
		o.Decline(wire.CodeRefused) // no-op if the handler answered
	}()
}

func (c *Client) current() (*live, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.ctx.Err() != nil {
		return nil, ErrClosed
	}
	if c.cur == nil {
		return nil, ErrUnavailable
	}
	return c.cur, nil
}

// AnnounceNAT tells the bootstrap this peer's NAT type anew (see
// wire.NATType); a registration after it carries the type of Local.
func (c *Client) AnnounceNAT(t nattype.Type) error {
	l, err := c.current()
	if err != nil {
		return err
	}
	if err := l.ctl.send(&wire.NATType{NAT: t}); err != nil {
		return fmt.Errorf("bootstrap: announce NAT type: %w", err)
	}
	return nil
}

// Announce sends a candidate change (add or remove) to the bootstrap.
func (c *Client) Announce(add []wire.Candidate, remove []netip.AddrPort) error {
	l, err := c.current()
	if err != nil {
		return err
	}
	for _, a := range add {
		if err := l.ctl.send(&wire.AddAddress{Candidate: a}); err != nil {
			return fmt.Errorf("bootstrap: announce: %w", err)
		}
	}
	for _, r := range remove {
		if err := l.ctl.send(&wire.RemoveAddress{Addr: r}); err != nil {
			return fmt.Errorf("bootstrap: announce: %w", err)
		}
	}
	return nil
}

// maxCanceled bounds Client.canceled.
const maxCanceled = 256

// Intro is what a peer tells the other side of an introduction about
// itself: its NAT type, its candidates and its check credentials.
type Intro struct {
	NAT        nattype.Type
	Candidates []wire.Candidate
	Creds      wire.Creds
	// Purpose is what the introduction is for (requests and offers).
	Purpose wire.Purpose
	// OnTarget, if set, is called on Connect's goroutine with where the
	// bootstrap observes the target, when its acknowledgement says
	// (wire.ConnectAck.Target: a request that announced a relayed
	// address), before the target answers. Nil: nothing.
	OnTarget func([]netip.AddrPort)
}

func (in Intro) clamp() Intro {
	if len(in.Candidates) > wire.MaxCandidates {
		in.Candidates = in.Candidates[:wire.MaxCandidates]
	}
	return in
}

// RequestProbe asks the bootstrap to send an unsolicited STUN indication
// with txID to this peer's observed address, or (other) to its address in
// the bootstrap's other family (see wire.ProbeRequest). The caller waits
// for it on its endpoint.
func (c *Client) RequestProbe(kind uint64, txID [12]byte, other bool) error {
	l, err := c.current()
	if err != nil {
		return err
	}
	return l.ctl.send(&wire.ProbeRequest{TxID: txID, Kind: kind, Other: other})
}

// Connect asks the bootstrap to introduce this peer to target, announcing
// local. It returns once the target has answered; the Session then
// delivers punch rounds.
func (c *Client) Connect(ctx context.Context, target identity.PeerID, local Intro) (*Session, error) {
	start := time.Now()
	s, err := c.connect(ctx, target, local.clamp())
	ev := event.Event{Kind: event.KindBootstrapRequest, Bootstrap: c.cfg.Label, Detail: "connect",
		Outcome: event.OutcomeOK, Duration: time.Since(start)}
	if err != nil {
		ev.Outcome, ev.Reason, ev.Err = event.OutcomeFail, classify(err), err
	}
	c.rec.Record(ev)
	return s, err
}

func (c *Client) connect(ctx context.Context, target identity.PeerID, local Intro) (*Session, error) {
	l, err := c.current()
	if err != nil {
		return nil, err
	}
	ch := make(chan *wire.ConnectResult, 1)
	ack := make(chan wire.Message, 1)
	s := newSession(c, false, target)
	c.mu.Lock()
	c.nextReq++
	id := c.nextReq
	c.requests[id] = ch
	c.acks[id] = ack
	s.ID = id
	c.outgoing[id] = s // registered before the request: PunchNow may follow the result at once
	c.mu.Unlock()
	drop := func() {
		c.mu.Lock()
		delete(c.requests, id)
		delete(c.acks, id)
		delete(c.outgoing, id)
		c.mu.Unlock()
	}
	// abandon is drop for a request the bootstrap may be working on: the
	// other side, if it was offered it already, hears that this side gave up.
	abandon := func() {
		drop()
		_ = l.ctl.send(&wire.ConnectCancel{ID: id}) // best effort
	}
	if err := l.ctl.send(&wire.ConnectRequest{ID: id, Target: target, NAT: local.NAT, Candidates: local.Candidates, Creds: local.Creds, Purpose: local.Purpose}); err != nil {
		drop()
		l.conn.Close(closeSlowConsumer, "control stream write failed")
		return nil, fmt.Errorf("bootstrap: connect request: %w", err)
	}
	// A live bootstrap acknowledges at once (an unknown target is answered
	// at once, too); silence for several round trips means it is gone even
	// if its connection has not timed out yet.
	ackWait := time.NewTimer(max(4*l.conn.RTT(), c.cfg.MinAckWait))
	defer ackWait.Stop()
	acked := false
	for !acked {
		select {
		case a := <-ack:
			acked = true
			switch a := a.(type) {
			case *wire.ConnectAck:
				if local.OnTarget != nil && len(a.Target) > 0 {
					local.OnTarget(a.Target)
				}
			case *wire.ConnectEarly:
				return c.startEarly(s, l, a, local.OnTarget), nil
			}
		case res, ok := <-ch:
			if !ok {
				drop()
				return nil, ErrUnavailable
			}
			return c.finishConnect(s, l, res, drop)
		case <-ackWait.C:
			// The request (or its acknowledgement) may only be late: a
			// bootstrap that gets it after all must not offer the target
			// an introduction this side no longer follows (the target
			// would check it for its whole attempt, then fail).
			abandon()
			return nil, fmt.Errorf("%w: bootstrap did not acknowledge the request within %v", ErrUnavailable, max(4*l.conn.RTT(), c.cfg.MinAckWait))
		case <-ctx.Done():
			abandon()
			return nil, fmt.Errorf("bootstrap: connect: %w", context.Cause(ctx))
		case <-l.done:
			drop()
			return nil, ErrUnavailable
		}
	}
	select {
	case res, ok := <-ch:
		if !ok {
			drop()
			return nil, ErrUnavailable
		}
		return c.finishConnect(s, l, res, drop)
	case <-ctx.Done():
		abandon()
		return nil, fmt.Errorf("bootstrap: connect: %w", context.Cause(ctx))
	case <-l.done:
		drop()
		return nil, ErrUnavailable
	}
}

// startEarly sets up the session of an early introduction from the
// bootstrap's wire.ConnectEarly: the target's registered candidates and
// the check credentials the bootstrap issued it, and the first round,
// which starts without a PunchNow. The target's answer arrives on the
// session later (Answers; a refusal ends it).
func (c *Client) startEarly(s *Session, l *live, m *wire.ConnectEarly, onTarget func([]netip.AddrPort)) *Session {
	now := time.Now()
	s.Remote = Intro{NAT: m.NAT, Candidates: m.Candidates, Creds: m.Creds}
	s.PeerRTT = time.Duration(m.PeerRTTMicros) * time.Microsecond
	s.Early = &Punch{Round: 1, Delay: time.Duration(m.DelayMicros) * time.Microsecond, PeerRTT: s.PeerRTT, At: now}
	s.l = l
	if onTarget != nil {
		var observed []netip.AddrPort
		for _, cand := range m.Candidates {
			if cand.Origin == wire.OriginObserved {
				observed = append(observed, cand.Addr)
			}
		}
		if len(observed) > 0 {
			onTarget(observed)
		}
	}
	return s
}

func (c *Client) finishConnect(s *Session, l *live, res *wire.ConnectResult, drop func()) (*Session, error) {
	if res.Code != wire.CodeOK {
		drop()
		return nil, &RequestError{Code: res.Code}
	}
	s.Remote = Intro{NAT: res.NAT, Candidates: res.Candidates, Creds: res.Creds}
	s.PeerRTT = time.Duration(res.PeerRTTMicros) * time.Microsecond
	s.l = l
	return s, nil
}

// RequestRelay asks the bootstrap for relay credentials.
func (c *Client) RequestRelay(ctx context.Context) (*wire.RelayGrant, error) {
	l, err := c.current()
	if err != nil {
		return nil, err
	}
	ch := make(chan *wire.RelayGrant, 1)
	c.mu.Lock()
	c.nextReq++
	id := c.nextReq
	c.grants[id] = ch
	c.mu.Unlock()
	defer func() {
		c.mu.Lock()
		delete(c.grants, id)
		c.mu.Unlock()
	}()
	if err := l.ctl.send(&wire.RelayRequest{ID: id}); err != nil {
		return nil, fmt.Errorf("bootstrap: relay request: %w", err)
	}
	select {
	case g, ok := <-ch:
		if !ok {
			return nil, ErrUnavailable
		}
		if g.Code != wire.CodeOK {
			return nil, &RequestError{Code: g.Code}
		}
		return g, nil
	case <-ctx.Done():
		return nil, fmt.Errorf("bootstrap: relay request: %w", context.Cause(ctx))
	case <-l.done:
		return nil, ErrUnavailable
	}
}

// Offer is a connect request from another peer, relayed by the bootstrap.
type Offer struct {
	c      *Client
	l      *live
	ID     uint64
	From   identity.PeerID
	Remote Intro // what From announced
	// Early, for an early introduction (see wire.ConnectEarly), is its
	// first round, which starts without a PunchNow: the requester has
	// this side's candidates and starts its checks at the same moment.
	// This side must then answer with EarlyCreds as its check
	// credentials (the requester holds them already). Nil: the old way.
	Early      *Punch
	EarlyCreds wire.Creds
	answered   atomic.Bool
}

// Accept answers the offer with what this peer announces and returns the
// Session on which punch rounds arrive. An early offer's answer carries
// its issued check credentials (EarlyCreds): local.Creds must be those or
// empty. Empty local.Creds are filled in: the issued ones, or fresh ones.
func (o *Offer) Accept(local Intro) (*Session, error) {
	if !o.answered.CompareAndSwap(false, true) {
		return nil, errors.New("bootstrap: offer already answered")
	}
	local = local.clamp()
	if local.Creds == (wire.Creds{}) {
		local.Creds = wire.NewCreds()
		if o.Early != nil {
			local.Creds = o.EarlyCreds
		}
	}
	if o.Early != nil && local.Creds != o.EarlyCreds {
		o.answered.Store(false) // may still be declined
		return nil, ErrEarlyCreds
	}
	s := newSession(o.c, true, o.From)
	s.ID, s.Remote, s.l, s.Early = o.ID, o.Remote, o.l, o.Early
	o.c.mu.Lock()
	if o.c.cur != o.l {
		o.c.mu.Unlock()
		return nil, ErrUnavailable
	}
	if _, gone := o.c.canceled[o.ID]; gone {
		delete(o.c.canceled, o.ID)
		o.c.mu.Unlock()
		return nil, ErrPeerCanceled
	}
	o.c.incoming[o.ID] = s
	o.c.mu.Unlock()
	if err := o.l.ctl.send(&wire.ConnectAnswer{ID: o.ID, Code: wire.CodeOK, NAT: local.NAT, Candidates: local.Candidates, Creds: local.Creds}); err != nil {
		s.Close()
		return nil, fmt.Errorf("bootstrap: answer: %w", err)
	}
	return s, nil
}

// Decline answers the offer with code (if it was not answered yet).
func (o *Offer) Decline(code wire.Code) {
	if !o.answered.CompareAndSwap(false, true) {
		return
	}
	_ = o.l.ctl.send(&wire.ConnectAnswer{ID: o.ID, Code: code})
}

// Punch is one punch round.
type Punch struct {
	Round   uint64
	Delay   time.Duration // wait this long after At before starting
	PeerRTT time.Duration // the bootstrap's RTT to the other peer
	At      time.Time     // when the PunchNow arrived
}

// Session is one introduction, from the requester's side (Incoming false)
// or the target's.
type Session struct {
	c        *Client
	l        *live
	ID       uint64
	Incoming bool
	Peer     identity.PeerID
	Remote   Intro         // what the other peer announced
	PeerRTT  time.Duration // the bootstrap's RTT to the other peer
	// Early, if set, is the first round of an early introduction (see
	// wire.ConnectEarly), begun without a PunchNow. Rounds from PunchNow
	// still arrive on Punches, for a strategy that waits for one.
	Early *Punch

	punches  chan Punch
	relays   chan netip.AddrPort
	answered chan struct{} // closed when an early session's answer came
	answer   Intro
	done     chan struct{}
	mu       sync.Mutex
	err      error
	round    uint64
	closed   bool
}

func newSession(c *Client, incoming bool, peer identity.PeerID) *Session {
	return &Session{c: c, Incoming: incoming, Peer: peer, punches: make(chan Punch, 1),
		relays: make(chan netip.AddrPort, 4), answered: make(chan struct{}), done: make(chan struct{})}
}

// AwaitAnswer waits, on an early requester's session, for the target's
// answer and makes the session an ordinary one: Remote becomes what the
// target answered and Early nil (the first round then comes with the
// bootstrap's PunchNow). For a requester that cannot choose its strategy
// from what the target registered (no classified NAT type). A refusal
// is returned as the session's error.
func (s *Session) AwaitAnswer(ctx context.Context) error {
	if s.Early == nil {
		return nil
	}
	select {
	case <-s.answered:
		s.Remote, s.Early = s.Answer(), nil
		return nil
	case <-s.done:
		if err := s.Err(); err != nil {
			return err
		}
		return ErrUnavailable
	case <-ctx.Done():
		return fmt.Errorf("bootstrap: waiting for the answer: %w", context.Cause(ctx))
	}
}

// Answered is closed, on an early requester's session, when the target
// has answered (Answer: what it answered; its candidates may include some
// its registration did not). A refusal ends the session instead (Err: a
// *RequestError). On other sessions it is never closed.
func (s *Session) Answered() <-chan struct{} { return s.answered }

// Answer returns what the target answered, once Answered is closed.
func (s *Session) Answer() Intro {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.answer
}

func (s *Session) deliverAnswer(m *wire.ConnectResult) {
	if m.Code != wire.CodeOK {
		s.end(&RequestError{Code: m.Code})
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	select {
	case <-s.answered:
		return // one answer per session
	default:
	}
	if s.closed {
		return
	}
	s.answer = Intro{NAT: m.NAT, Candidates: m.Candidates, Creds: m.Creds}
	close(s.answered)
}

// Punches delivers punch rounds; only the newest undelivered one is kept.
func (s *Session) Punches() <-chan Punch { return s.punches }

// Done is closed when the session ends (Close, or the control connection
// was lost); Err then says why.
func (s *Session) Done() <-chan struct{} { return s.done }

// Err returns why the session ended, or nil.
func (s *Session) Err() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.err
}

func (s *Session) deliver(p Punch) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed || p.Round <= s.round {
		return
	}
	s.round = p.Round
	select {
	case <-s.punches: // superseded
	default:
	}
	s.punches <- p
}

// Bootstrap returns the client of the bootstrap that made the
// introduction: its relay is the one whose permission policy knows it.
func (s *Session) Bootstrap() *Client { return s.c }

// Relays delivers the relayed addresses the other peer announces.
func (s *Session) Relays() <-chan netip.AddrPort { return s.relays }

func (s *Session) deliverRelay(a netip.AddrPort) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return
	}
	select {
	case s.relays <- a:
	default: // four relayed addresses are plenty
	}
}

// AnnounceRelay tells the other peer (through the bootstrap) this side's
// relayed address, and lets the relay permit it.
func (s *Session) AnnounceRelay(a netip.AddrPort) error {
	if s.l == nil {
		return ErrUnavailable
	}
	select {
	case <-s.done:
		return ErrUnavailable
	default:
	}
	return s.l.ctl.send(&wire.RelayAddress{ID: s.ID, Offer: s.Incoming, Addr: a})
}

// RequestRound asks the bootstrap for punch round `round` (greater than
// every earlier round).
func (s *Session) RequestRound(round uint64) error {
	if s.l == nil {
		return ErrUnavailable
	}
	select {
	case <-s.done:
		return ErrUnavailable
	default:
	}
	return s.l.ctl.send(&wire.PunchRequest{ID: s.ID, Offer: s.Incoming, Round: round})
}

func (s *Session) end(err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return
	}
	s.closed = true
	s.err = err
	close(s.done)
}

// Cancel ends the session and tells the other side, through the
// bootstrap, that this side gave up on the introduction, so that it stops
// at once (its Session ends with ErrPeerCanceled). Use it when an attempt
// fails or is cancelled; Close when it succeeded (the other side may still
// be finishing).
func (s *Session) Cancel() {
	if s.l != nil && !s.isClosed() {
		_ = s.l.ctl.send(&wire.ConnectCancel{ID: s.ID, Offer: s.Incoming}) // best effort: the bootstrap may be gone
	}
	s.Close()
}

func (s *Session) isClosed() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.closed
}

// Close ends the session; later punch rounds for it are ignored.
func (s *Session) Close() {
	s.c.mu.Lock()
	if s.Incoming {
		if s.c.incoming[s.ID] == s {
			delete(s.c.incoming, s.ID)
		}
	} else if s.c.outgoing[s.ID] == s {
		delete(s.c.outgoing, s.ID)
	}
	s.c.mu.Unlock()
	s.end(nil)
}
