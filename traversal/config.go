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
	"time"

	"github.com/quic-go/quic-go"
	"github.com/quic-go/quic-go/qlogwriter"

	"github.com/antnode/antnode/endpoint"
	"github.com/antnode/antnode/event"
	"github.com/antnode/antnode/holepunch"
	"github.com/antnode/antnode/identity"
	"github.com/antnode/antnode/nat64"
	"github.com/antnode/antnode/service"
)

// The node's configuration: bootstraps, limits, times and their defaults.

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
	// WarmRelay says whether the node keeps one relay allocation ready
	// on its first registered bootstrap's relay (or the TURN server)
	// and announces its relayed address with its candidates, while its
	// NAT type says peers cannot reach it directly (NeedsWarmRelay): its
	// relayed connections share it, so an introduction to it goes
	// through the relay at once. Zero: WarmRelayAuto.
	WarmRelay WarmRelayMode
	// TURN is a third-party TURN server to allocate on instead of the
	// bootstraps' relay. Nil: the bootstraps' relay.
	TURN *TURNServer
	// NAT64 is the prefix of the NAT64 in front of an IPv6-only node
	// (discovery.Resolver.NAT64Prefixes finds it): the IPv4 addresses of
	// its bootstraps, tickets' bootstraps, the TURN server, and whatever
	// a bootstrap tells it of peers and relays are reached at their
	// synthesised IPv6 addresses (nat64.Prefix.Map). Zero: none.
	NAT64 nat64.Prefix
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
	// PortMapped returns the public address the node's router maps to its
	// socket now (PCP, NAT-PMP or UPnP IGD; see package portmap), or the
	// zero AddrPort when there is none. The node announces it as a
	// mapped candidate while its IP is one a bootstrap observed the node
	// at (a mapping on a router behind another NAT reaches nobody), and
	// answers the peers that check it instead of checking them. Call
	// Node.PortMapChanged when it changes. Nil: no port mapping.
	PortMapped func() netip.AddrPort
	// TicketIdle is how long a bootstrap registration made on demand for
	// a ticket (ConnectTicket, DialTicket) outlives its use: the last
	// attempt using it and the last connection to a peer it was made for.
	// Zero: 30 s.
	TicketIdle time.Duration
	// RememberFor is how long the node remembers a peer it kept a
	// connection with: the address of the connection's last direct path
	// from the node's socket and the peer's last TLS session ticket,
	// counted from when the connection was made and again from when it
	// ended. Within it a connect to the peer races a direct dial there,
	// resuming the session, against the introduction, and the peer may
	// dial this node without one. Zero: 10 minutes; negative: nothing is
	// remembered.
	RememberFor time.Duration
	// RememberPeers bounds the peers remembered; beyond it the one
	// remembered longest ago is forgotten. Zero: 256; negative: none.
	RememberPeers int
	// OnNetworkChange, if set, is called (on the network watcher's
	// goroutine; it must not block) when the host's addresses changed: a
	// port mapping is asked for anew there.
	OnNetworkChange func()
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
	c.Bootstraps = MapBootstraps(c.NAT64, c.Bootstraps)
	if c.TURN != nil {
		t := *c.TURN
		t.Addr = c.NAT64.Map(t.Addr)
		c.TURN = &t
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

// MapBootstraps returns bs with their addresses mapped through the NAT64
// prefix p (a copy; bs unchanged when p is zero).
func MapBootstraps(p nat64.Prefix, bs []Bootstrap) []Bootstrap {
	if !p.IsValid() {
		return bs
	}
	out := slices.Clone(bs)
	for i := range out {
		out[i].Addr = p.Map(out[i].Addr)
	}
	return out
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
	orPositive(&c.TicketIdle, 30*time.Second)
	orPositive(&c.ReclassifyEvery, 10*time.Minute)
	orPositive(&c.BreakerDelay, 60*time.Second)
	orZero(&c.RememberFor, 10*time.Minute) // negative: nothing is remembered
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
	orZero(&c.RememberPeers, 256) // negative: none
}

func (c *Config) peerQUIC(keepalive time.Duration) *quic.Config {
	return &quic.Config{
		HandshakeIdleTimeout:  c.HandshakeTimeout,
		MaxIdleTimeout:        c.IdleTimeout,
		KeepAlivePeriod:       keepalive,
		MaxIncomingStreams:    int64(c.Services.MaxStreamsPerPeer) + 16, // past the service limit: refusals, not stalls
		MaxIncomingUniStreams: 32,                                       // notices: the nomination, path moves, pings (a dead path piles them up)
		Tracer:                c.Tracer,
	}
}
