// Package endpoint owns a node's UDP socket and the one quic.Transport on it.
// QUIC to bootstraps, QUIC to peers, STUN, punch probes and keepalives all
// leave from this socket, so that the NAT mapping a bootstrap observes is the
// mapping a peer connection uses. The socket serves one address family, or
// both (an unspecified IPv6 socket with IPV6_V6ONLY off: ListenDualStack,
// DualStack); the addresses of its STUN traffic are unmapped (an IPv4
// peer is an IPv4 address, never ::ffff:a.b.c.d), while quic-go's remote
// addresses on a dual-stack socket are IPv4-mapped: unmap them.
//
// New starts one goroutine, the only caller of Transport.ReadNonQUICPacket.
// It demultiplexes STUN: responses go to the waiting transaction (matched by
// transaction ID), requests and indications to the handler set with
// HandleRequests; anything else is counted and dropped. Close stops that
// goroutine, closes the Transport and the socket, and returns after the
// goroutine has exited.
package endpoint

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pion/stun/v3"
	"github.com/quic-go/quic-go"
)

// Config configures an Endpoint.
type Config struct {
	// Conn is the UDP socket (a *net.UDPConn, or an in-process model of
	// one in tests). Required. The Endpoint owns it from now on and closes
	// it on Close.
	Conn net.PacketConn
	// Logger receives the endpoint's few log records. Nil: discard.
	Logger *slog.Logger
	// StatelessResetKey lets peers detect a restart of this node quickly
	// (RFC 9000 section 10.3). Nil: stateless resets are disabled.
	StatelessResetKey *quic.StatelessResetKey
	// MaxTransactions bounds the STUN transactions in flight.
	// Zero: 4096.
	MaxTransactions int
}

// Errors.
var (
	ErrClosed              = errors.New("endpoint: closed")
	ErrTooManyTransactions = errors.New("endpoint: too many STUN transactions in flight")
	ErrDuplicateID         = errors.New("endpoint: duplicate STUN transaction ID")
)

// RequestHandler is called on the reader goroutine for every STUN request
// or indication. It must not block; msg and its buffer are valid only for
// the duration of the call.
type RequestHandler func(msg *stun.Message, from netip.AddrPort)

// Response is an answer to a STUN transaction.
type Response struct {
	Msg  *stun.Message // owned by the receiver
	From netip.AddrPort
	At   time.Time // when it was read from the socket
}

// Stats are the endpoint's packet counters.
type Stats struct {
	STUNRequests    uint64 // requests and indications delivered to the handler
	STUNResponses   uint64 // responses matched to a transaction
	STUNUnmatched   uint64 // responses without a waiting transaction
	NonSTUN         uint64 // non-QUIC, non-STUN packets (dropped)
	Malformed       uint64 // packets that looked like STUN but did not decode
	HandlerAbsent   uint64 // requests dropped because no handler was set
	ReadErrorsTotal uint64
	// SendLost counts QUIC packets whose send failed because the network
	// was changing (no route, address gone); QUIC saw them as lost.
	SendLost uint64
}

// Endpoint is one UDP socket with its QUIC transport and STUN demultiplexer.
type Endpoint struct {
	conn    net.PacketConn
	tr      *quic.Transport
	local   netip.AddrPort
	dual    bool // the socket serves both families (see ListenDualStack)
	log     *slog.Logger
	maxTx   int
	handler atomic.Pointer[RequestHandler]

	mu      sync.Mutex
	pending map[[stun.TransactionIDSize]byte]chan<- Response
	closed  bool

	stats struct {
		requests, responses, unmatched, nonSTUN, malformed, noHandler, readErrs atomic.Uint64
	}

	cancel    context.CancelFunc
	done      chan struct{}
	closeOnce sync.Once
	closeErr  error
}

// Listen opens a UDP socket on addr ("host:port"; port 0 picks one) and
// returns an Endpoint on it. network is "udp4" or "udp6".
func Listen(network, addr string, cfg Config) (*Endpoint, error) {
	ua, err := net.ResolveUDPAddr(network, addr)
	if err != nil {
		return nil, fmt.Errorf("endpoint: resolve %q: %w", addr, err)
	}
	c, err := net.ListenUDP(network, ua)
	if err != nil {
		return nil, fmt.Errorf("endpoint: listen: %w", err)
	}
	cfg.Conn = c
	ep, err := New(cfg)
	if err != nil {
		c.Close()
		return nil, err
	}
	return ep, nil
}

// New wraps cfg.Conn and starts the reader goroutine.
func New(cfg Config) (*Endpoint, error) {
	if cfg.Conn == nil {
		return nil, errors.New("endpoint: Config.Conn is required")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.MaxTransactions <= 0 {
		cfg.MaxTransactions = 4096
	}
	local, err := netip.ParseAddrPort(cfg.Conn.LocalAddr().String())
	if err != nil {
		return nil, fmt.Errorf("endpoint: local address: %w", err)
	}
	var trConn net.PacketConn = &routedPacketConn{PacketConn: cfg.Conn} // see Reroute
	if uc, ok := cfg.Conn.(*net.UDPConn); ok {
		trConn = &routedConn{UDPConn: uc} // still OOB-capable for quic-go
	}
	ctx, cancel := context.WithCancel(context.Background())
	e := &Endpoint{
		conn:    cfg.Conn,
		tr:      &quic.Transport{Conn: trConn, StatelessResetKey: cfg.StatelessResetKey},
		local:   local,
		dual:    dualStack(cfg.Conn),
		log:     cfg.Logger,
		maxTx:   cfg.MaxTransactions,
		pending: make(map[[stun.TransactionIDSize]byte]chan<- Response),
		cancel:  cancel,
		done:    make(chan struct{}),
	}
	// The transport drops non-QUIC packets until ReadNonQUICPacket has been
	// called once. Call it here, with a cancelled context (it returns at
	// once), so that no STUN packet is lost between New and the moment the
	// reader goroutine gets scheduled. This also starts the transport.
	done, stop := context.WithCancel(context.Background())
	stop()
	if _, _, err := e.tr.ReadNonQUICPacket(done, nil); err != nil && !errors.Is(err, context.Canceled) {
		cancel()
		return nil, fmt.Errorf("endpoint: start transport: %w", err)
	}
	go e.readLoop(ctx)
	return e, nil
}

// Transport returns the QUIC transport on the socket.
func (e *Endpoint) Transport() *quic.Transport { return e.tr }

// LocalAddr returns the socket's local address.
func (e *Endpoint) LocalAddr() netip.AddrPort { return e.local }

// HandleRequests sets the handler for incoming STUN requests and
// indications. Nil drops them.
func (e *Endpoint) HandleRequests(h RequestHandler) {
	if h == nil {
		e.handler.Store(nil)
		return
	}
	e.handler.Store(&h)
}

// WriteTo sends a raw (non-QUIC) packet from the socket.
func (e *Endpoint) WriteTo(b []byte, to netip.AddrPort) error {
	_, err := e.tr.WriteTo(b, net.UDPAddrFromAddrPort(to))
	if err != nil {
		return fmt.Errorf("endpoint: write: %w", err)
	}
	return nil
}

// ErrTTLUnsupported is returned by WriteTTL on a socket that is not a
// *net.UDPConn (an in-process model).
var ErrTTLUnsupported = errors.New("endpoint: per-packet TTL not supported on this socket")

// WriteTTL sends a raw packet with the IP time-to-live set to ttl for this
// packet only (an IP_TTL control message), as TTL-limited priming packets
// need: they open this side's NAT mapping and die before the far NAT.
// QUIC packets on the socket keep the default TTL.
func (e *Endpoint) WriteTTL(b []byte, to netip.AddrPort, ttl int) error {
	uc, ok := e.conn.(*net.UDPConn)
	if !ok {
		return ErrTTLUnsupported
	}
	if ttl < 1 || ttl > 255 {
		return fmt.Errorf("endpoint: TTL %d out of range", ttl)
	}
	oob := ttlControl(to, ttl)
	if oob == nil {
		return ErrTTLUnsupported
	}
	if _, _, err := uc.WriteMsgUDPAddrPort(b, oob, to); err != nil {
		return fmt.Errorf("endpoint: write with TTL %d: %w", ttl, err)
	}
	return nil
}

// Pending returns how many STUN transactions are awaited.
func (e *Endpoint) Pending() int {
	e.mu.Lock()
	defer e.mu.Unlock()
	return len(e.pending)
}

// Stats returns a snapshot of the packet counters.
func (e *Endpoint) Stats() Stats {
	return Stats{
		STUNRequests:    e.stats.requests.Load(),
		STUNResponses:   e.stats.responses.Load(),
		STUNUnmatched:   e.stats.unmatched.Load(),
		NonSTUN:         e.stats.nonSTUN.Load(),
		Malformed:       e.stats.malformed.Load(),
		HandlerAbsent:   e.stats.noHandler.Load(),
		ReadErrorsTotal: e.stats.readErrs.Load(),
		SendLost:        e.sendLost(),
	}
}

func (e *Endpoint) sendLost() uint64 {
	if r := e.routerOf(); r != nil {
		return r.lost.Load()
	}
	return 0
}

// Expect registers interest in the response to transaction id. The returned
// channel receives at most one Response; release must be called when the
// caller stops waiting.
func (e *Endpoint) Expect(id [stun.TransactionIDSize]byte) (ch <-chan Response, release func(), err error) {
	c := make(chan Response, 1)
	release, err = e.ExpectInto(id, c)
	return c, release, err
}

// ExpectInto is Expect with a caller-owned channel, so that one goroutine
// can wait for many transactions. A response is dropped if ch is full; size
// it for the transactions that share it. release must be called when the
// caller stops waiting for id.
func (e *Endpoint) ExpectInto(id [stun.TransactionIDSize]byte, ch chan<- Response) (release func(), err error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	switch {
	case e.closed:
		return nil, ErrClosed
	case len(e.pending) >= e.maxTx:
		return nil, ErrTooManyTransactions
	}
	if _, dup := e.pending[id]; dup {
		return nil, ErrDuplicateID
	}
	e.pending[id] = ch
	return func() {
		e.mu.Lock()
		if e.pending[id] == ch {
			delete(e.pending, id)
		}
		e.mu.Unlock()
	}, nil
}

// RoundTrip sends the STUN request req to `to`, retransmitting it on the
// schedule rto (each entry is the wait after a transmission; the last one
// repeats) until a response arrives or ctx ends. rtt is measured from the
// last transmission (Karn: it is only exact when retransmits == 0).
// An empty rto means RFC 5389's schedule: 500 ms, doubling, capped at 2 s.
func (e *Endpoint) RoundTrip(ctx context.Context, req *stun.Message, to netip.AddrPort, rto []time.Duration) (resp Response, rtt time.Duration, retransmits int, err error) {
	if len(rto) == 0 {
		rto = []time.Duration{500 * time.Millisecond, time.Second, 2 * time.Second}
	}
	ch, release, err := e.Expect(req.TransactionID)
	if err != nil {
		return Response{}, 0, 0, err
	}
	defer release()
	t := time.NewTimer(time.Hour)
	defer t.Stop()
	for i := 0; ; i++ {
		if i > 0 {
			retransmits++
		}
		sent := time.Now()
		if err := e.WriteTo(req.Raw, to); err != nil {
			return Response{}, 0, retransmits, err
		}
		t.Reset(rto[min(i, len(rto)-1)])
		select {
		case r := <-ch:
			return r, max(r.At.Sub(sent), 0), retransmits, nil
		case <-t.C:
		case <-ctx.Done():
			return Response{}, 0, retransmits, fmt.Errorf("endpoint: STUN transaction to %s: %w", to, context.Cause(ctx))
		}
	}
}

func (e *Endpoint) readLoop(ctx context.Context) {
	defer close(e.done)
	buf := make([]byte, 2048)
	for {
		n, from, err := e.tr.ReadNonQUICPacket(ctx, buf)
		if err != nil {
			if ctx.Err() != nil || errors.Is(err, net.ErrClosed) {
				return
			}
			e.stats.readErrs.Add(1)
			e.log.Warn("endpoint: read non-QUIC packet", "err", err)
			// A transport error other than close is not expected to
			// recover; back off briefly so a persistent error cannot spin.
			select {
			case <-ctx.Done():
				return
			case <-time.After(100 * time.Millisecond):
			}
			continue
		}
		e.dispatch(buf[:n], from, time.Now())
	}
}

func (e *Endpoint) dispatch(b []byte, from net.Addr, at time.Time) {
	if !stun.IsMessage(b) {
		e.stats.nonSTUN.Add(1)
		return
	}
	ua, ok := from.(*net.UDPAddr)
	if !ok {
		e.stats.malformed.Add(1)
		return
	}
	src := ua.AddrPort()
	src = netip.AddrPortFrom(src.Addr().Unmap(), src.Port())
	m := &stun.Message{Raw: append([]byte(nil), b...)}
	if err := m.Decode(); err != nil {
		e.stats.malformed.Add(1)
		return
	}
	switch m.Type.Class {
	case stun.ClassSuccessResponse, stun.ClassErrorResponse, stun.ClassIndication:
		e.mu.Lock()
		ch := e.pending[m.TransactionID]
		delete(e.pending, m.TransactionID)
		e.mu.Unlock()
		if ch == nil {
			if m.Type.Class == stun.ClassIndication {
				break // not awaited: an ordinary indication for the handler
			}
			e.stats.unmatched.Add(1)
			return
		}
		select {
		case ch <- Response{Msg: m, From: src, At: at}:
			e.stats.responses.Add(1)
		default: // the waiter's channel is full: it sized it for fewer
			e.stats.unmatched.Add(1)
		}
		return
	}
	h := e.handler.Load()
	if h == nil {
		e.stats.noHandler.Add(1)
		return
	}
	e.stats.requests.Add(1)
	(*h)(m, src)
}

// Close stops the reader, closes the transport (and with it every QUIC
// connection on it) and the socket. It is idempotent.
func (e *Endpoint) Close() error {
	e.closeOnce.Do(func() {
		e.mu.Lock()
		e.closed = true
		e.mu.Unlock()
		e.cancel()
		trErr := e.tr.Close()
		connErr := e.conn.Close()
		<-e.done
		e.closeErr = errors.Join(trErr, connErr)
	})
	return e.closeErr
}

// Transact sends the STUN request req to `to` once per entry of schedule
// (see RetransmitSchedule), waiting that entry's time after each
// transmission, and returns the first response. Unlike RoundTrip it ends
// after the last wait, with ErrNoResponse: the count of transmissions is
// bounded as well as the time. retransmits is how many transmissions
// followed the first. An empty schedule is RoundTrip's: 500 ms, 1 s, 2 s.
func (e *Endpoint) Transact(ctx context.Context, req *stun.Message, to netip.AddrPort, schedule []time.Duration) (resp Response, retransmits int, err error) {
	if len(schedule) == 0 {
		schedule = RetransmitSchedule(500*time.Millisecond, 3, 0)
	}
	ch, release, err := e.Expect(req.TransactionID)
	if err != nil {
		return Response{}, 0, err
	}
	defer release()
	t := time.NewTimer(time.Hour)
	defer t.Stop()
	for i, wait := range schedule {
		retransmits = i
		if err := e.WriteTo(req.Raw, to); err != nil {
			return Response{}, retransmits, err
		}
		t.Reset(wait)
		select {
		case r := <-ch:
			return r, retransmits, nil
		case <-t.C:
		case <-ctx.Done():
			return Response{}, retransmits, fmt.Errorf("endpoint: STUN transaction to %s: %w", to, context.Cause(ctx))
		}
	}
	return Response{}, retransmits, fmt.Errorf("endpoint: STUN transaction to %s after %d transmissions: %w", to, len(schedule), ErrNoResponse)
}
