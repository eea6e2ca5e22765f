package relay

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
	"github.com/pion/transport/v4/stdnet"
	"github.com/pion/turn/v4"

	"github.com/antnode/antnode/endpoint"
	"github.com/antnode/antnode/nat64"
)

// ClientConfig configures an allocation.
type ClientConfig struct {
	// Server is the TURN server. Required.
	Server netip.AddrPort
	// TCP carries TURN over TCP (for a peer whose UDP is blocked); the
	// relayed transport towards peers is UDP either way.
	TCP bool
	// Credentials authenticate the allocation. Required.
	Credentials Credentials
	// ListenUDP opens the client's own UDP socket (never the node's QUIC
	// socket: quic-go would swallow TURN ChannelData there). Nil: a real
	// socket on any address. A *net.UDPConn, where the kernel has GSO,
	// sends in runs (see batchWriter).
	ListenUDP func() (net.PacketConn, error)
	// DialTCP opens the TCP connection. Nil: net.Dialer.
	DialTCP func(ctx context.Context, addr netip.AddrPort) (net.Conn, error)
	// Logger receives pion's records. Nil: discarded.
	Logger *slog.Logger
	// NAT64 is the prefix of the NAT64 in front of the client (an
	// IPv6-only node): the relayed socket and Permit take peers' IPv4
	// addresses synthesised under it and reach the IPv4 addresses they
	// embed; the relayed socket reports IPv4 sources synthesised. Zero:
	// addresses as they are.
	NAT64 nat64.Prefix
}

// Allocation is a TURN allocation: a relayed address and the packet conn
// that sends and receives through it.
type Allocation struct {
	// Conn is the relayed socket; QUIC runs over it.
	Conn net.PacketConn
	// Relayed is the allocation's public address on the relay.
	Relayed netip.AddrPort
	// Server is the TURN server.
	Server netip.AddrPort
	TCP    bool

	client  *turn.Client
	sock    net.PacketConn
	watched *watchedConn
	once    sync.Once
	permits sync.WaitGroup // PermitAsync's requests; Close waits for them
	permMu  sync.Mutex     // orders permits.Add before Close's Wait
	closed  bool           // under permMu: Close began
	dead    chan struct{}  // closed when the socket to the relay fails
	nat64   nat64.Prefix   // ClientConfig.NAT64
}

// releaseWait bounds how long Close waits for the relay to answer the
// zero-lifetime refresh, which pion retransmits (from 200 ms) only while
// the client's socket stays open: one lost packet would otherwise leave
// the allocation to its lifetime.
const releaseWait = time.Second

// Dead is closed when the socket to the relay fails (a TCP connection
// reset by a restarted relay, or Close): the allocation is gone.
func (a *Allocation) Dead() <-chan struct{} { return a.dead }

// Keepalive sends a STUN Binding request to the relay from the
// allocation's socket and waits for the answer: the NAT in front of an
// allocation over UDP forgets its mapping when it idles (often within 30
// s), and the relay then knows the allocation by a mapping that is gone.
// pion refreshes an allocation only every few minutes. An error means no
// answer came (pion's retransmissions ran out).
func (a *Allocation) Keepalive() error {
	if _, err := a.client.SendBindingRequest(); err != nil {
		return fmt.Errorf("relay: keepalive: %w", err)
	}
	return nil
}

// watchedConn closes dead on the first read error that is not a timeout:
// the TURN client's read loop ends there, and so does the allocation.
type watchedConn struct {
	net.PacketConn
	once sync.Once
	dead chan struct{}
	// Once closing is set, the first Refresh response closes released.
	closing      atomic.Bool
	releasedOnce sync.Once
	released     chan struct{}
}

func (w *watchedConn) ReadFrom(b []byte) (int, net.Addr, error) {
	n, addr, err := w.PacketConn.ReadFrom(b)
	if err == nil && w.closing.Load() && isRefreshResponse(b[:n]) {
		w.releasedOnce.Do(func() { close(w.released) })
	}
	if err != nil {
		var ne net.Error
		if !errors.As(err, &ne) || !ne.Timeout() {
			w.once.Do(func() { close(w.dead) })
		}
	}
	return n, addr, err
}

// Allocate opens the client's socket, authenticates, allocates a relayed
// address and starts pion's refresh timers.
func Allocate(ctx context.Context, cfg ClientConfig) (*Allocation, error) {
	if !cfg.Server.IsValid() {
		return nil, errors.New("relay: ClientConfig.Server is required")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	raw, err := cfg.socket(ctx)
	if err != nil {
		return nil, err
	}
	watched := &watchedConn{PacketConn: raw, dead: make(chan struct{}), released: make(chan struct{})}
	var sock net.PacketConn = watched
	cl, err := cfg.client(sock)
	if err != nil {
		sock.Close()
		return nil, err
	}
	conn, err := requestAllocation(ctx, cl, sock)
	if err != nil {
		cl.Close()
		sock.Close()
		var te *stun.TurnError
		switch {
		case ctx.Err() != nil:
			return nil, fmt.Errorf("relay: allocate: %w", context.Cause(ctx))
		case errors.As(err, &te) && te.ErrorCodeAttr.Code == stun.CodeAllocQuotaReached:
			return nil, fmt.Errorf("relay: allocate on %s: %w: %w: %w", cfg.Server, ErrRefused, ErrQuota, err)
		}
		return nil, fmt.Errorf("relay: allocate on %s: %w: %w", cfg.Server, ErrRefused, err)
	}
	a := &Allocation{Conn: conn, Server: cfg.Server, TCP: cfg.TCP, client: cl, sock: sock, watched: watched, dead: watched.dead, nat64: cfg.NAT64}
	a.Relayed = addrPort(conn.LocalAddr())
	if cfg.NAT64.IsValid() {
		a.Conn = nat64Conn{PacketConn: conn, p: cfg.NAT64}
	}
	return a, nil
}

// socket opens the client's own socket towards the server: a TCP
// connection framed for STUN, or a UDP socket in the server's family.
func (cfg *ClientConfig) socket(ctx context.Context) (net.PacketConn, error) {
	if cfg.TCP {
		dial := cfg.DialTCP
		if dial == nil {
			dial = func(ctx context.Context, a netip.AddrPort) (net.Conn, error) {
				var d net.Dialer
				return d.DialContext(ctx, "tcp", a.String())
			}
		}
		c, err := dial(ctx, cfg.Server)
		if err != nil {
			return nil, fmt.Errorf("relay: dial %s over TCP: %w", cfg.Server, err)
		}
		return turn.NewSTUNConn(c), nil
	}
	listen := cfg.ListenUDP
	if listen == nil {
		listen = func() (net.PacketConn, error) {
			return net.ListenPacket("udp"+endpoint.Family(cfg.Server.Addr()), ":0")
		}
	}
	sock, err := listen()
	if err != nil {
		return nil, fmt.Errorf("relay: socket: %w", err)
	}
	if uc, ok := sock.(*net.UDPConn); ok && gsoSupported(uc) {
		if err := setBuffers(uc); err != nil {
			cfg.Logger.Debug("relay: socket buffers", "err", err)
		}
		return newBatchWriter(uc), nil
	}
	return sock, nil
}

// client starts pion's TURN client on sock.
func (cfg *ClientConfig) client(sock net.PacketConn) (*turn.Client, error) {
	stdNet, err := stdnet.NewNet()
	if err != nil {
		return nil, fmt.Errorf("relay: client: %w", err)
	}
	cl, err := turn.NewClient(&turn.ClientConfig{
		STUNServerAddr: cfg.Server.String(),
		TURNServerAddr: cfg.Server.String(),
		Net:            familyNet{stdNet},
		Username:       cfg.Credentials.Username,
		Password:       cfg.Credentials.Password,
		Conn:           sock,
		LoggerFactory:  pionLogs{cfg.Logger},
		Software:       "antnode",
	})
	if err != nil {
		return nil, fmt.Errorf("relay: client: %w", err)
	}
	if err := cl.Listen(); err != nil {
		cl.Close()
		return nil, fmt.Errorf("relay: listen: %w", err)
	}
	return cl, nil
}

// requestAllocation asks for the allocation, until ctx ends (which closes
// the client and its socket); a relayed socket granted after that is
// closed.
func requestAllocation(ctx context.Context, cl *turn.Client, sock net.PacketConn) (net.PacketConn, error) {
	type result struct {
		conn net.PacketConn
		err  error
	}
	done := make(chan result, 1)
	go func() {
		c, err := cl.Allocate()
		done <- result{c, err}
	}()
	select {
	case r := <-done:
		return r.conn, r.err
	case <-ctx.Done():
		cl.Close() // with the socket, ends the Allocate above
		sock.Close()
		if r := <-done; r.conn != nil {
			r.conn.Close()
		}
		return nil, context.Cause(ctx)
	}
}

// ErrRefused is an allocation or permission the relay did not grant
// (quota, authentication, policy, or no answer); the error's text carries
// the TURN error.
var ErrRefused = errors.New("relay: refused")

// Permit creates permissions for the peers' addresses (TURN permissions
// are per IP): without them the relay drops what those peers send.
func (a *Allocation) Permit(addrs ...netip.AddrPort) error {
	var as []net.Addr
	for _, ap := range addrs {
		as = append(as, net.UDPAddrFromAddrPort(unmap64(a.nat64, ap)))
	}
	if len(as) == 0 {
		return nil
	}
	if err := a.client.CreatePermission(as...); err != nil {
		return fmt.Errorf("relay: permission: %w: %w", ErrRefused, err)
	}
	return nil
}

// PermitAsync asks for permissions like Permit without waiting for the
// answer: the peers' packets pass the relay one round trip later, and
// the caller goes on (its own first packet to an address waits for a
// permission of its own in any case: pion's relayed socket asks for one
// before it sends to an address it has not sent to). A refusal is not
// reported: the first write to the address asks again, and fails there.
// Close ends (and waits for) the requests in flight.
func (a *Allocation) PermitAsync(addrs ...netip.AddrPort) {
	if len(addrs) > 0 {
		a.background(func() { a.Permit(addrs...) }) //nolint:errcheck // see above
	}
}

// background runs f on a goroutine that Close waits for, unless Close
// began.
func (a *Allocation) background(f func()) {
	a.permMu.Lock()
	defer a.permMu.Unlock()
	if a.closed {
		return
	}
	a.permits.Add(1)
	go func() {
		defer a.permits.Done()
		f()
	}()
}

// PermitRelayAsync permits the relay's own address on the allocation, in
// the background: other allocations on the same relay (a peer's warm
// relay) can then reach this one, and this one them, without a permission
// to wait for on the first packet. pion's relayed socket asks for a
// permission, and waits for the answer, before its first packet to an IP
// it holds none for; an explicit CreatePermission (Permit) does not teach
// it one, so this sends one datagram of a zero byte to the allocation's
// own relayed address, which comes back to it (a non-STUN, non-QUIC
// datagram: readers drop it). pion refreshes the permission with the
// allocation. A relay that refuses (a third-party TURN server's policy)
// costs that one request: the first packet to the relay's address asks
// again. Close waits for it.
func (a *Allocation) PermitRelayAsync() {
	a.background(func() { a.Conn.WriteTo([]byte{0}, net.UDPAddrFromAddrPort(a.Relayed)) }) //nolint:errcheck // see above
}

// Close releases the allocation (pion sends a zero-lifetime refresh) and
// closes the client's socket. It is idempotent.
//
// It waits, up to releaseWait, for the relay to answer the refresh, so
// that pion can retransmit a lost one; a relay that is gone costs the
// whole wait.
func (a *Allocation) Close() error {
	a.once.Do(func() {
		a.permMu.Lock()
		a.closed = true
		a.permMu.Unlock()
		a.watched.closing.Store(true)
		a.Conn.Close()
		t := time.NewTimer(releaseWait)
		select {
		case <-a.watched.released:
		case <-a.dead:
		case <-t.C:
		}
		t.Stop()
		a.client.Close() // ends the permission requests in flight
		a.sock.Close()
		a.permits.Wait()
	})
	return nil
}

// isRefreshResponse says whether b is a STUN Refresh response (success
// or error).
func isRefreshResponse(b []byte) bool {
	if !stun.IsMessage(b) {
		return false
	}
	m := &stun.Message{Raw: append([]byte(nil), b...)}
	if m.Decode() != nil {
		return false
	}
	return m.Type.Method == stun.MethodRefresh &&
		(m.Type.Class == stun.ClassSuccessResponse || m.Type.Class == stun.ClassErrorResponse)
}

// familyNet resolves a server address in its own family: pion's TURN
// client asks for "udp4" whatever the address, which fails for an IPv6
// server.
type familyNet struct{ *stdnet.Net }

func (n familyNet) ResolveUDPAddr(network, address string) (*net.UDPAddr, error) {
	if ap, err := netip.ParseAddrPort(address); err == nil {
		network = "udp" + endpoint.Family(ap.Addr())
	}
	return n.Net.ResolveUDPAddr(network, address)
}
