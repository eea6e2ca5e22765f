package portmap

import (
	"context"
	"fmt"
	"log/slog"
	"net/netip"
	"net/url"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Bounds and defaults of a Config.
const (
	// MaxLease is the longest lease ever asked for, and the default.
	MaxLease = 2 * time.Hour
	// MinLease is the shortest lease a Config may ask for.
	MinLease = time.Minute
	// DefaultCheck is how often the router is checked between renewals.
	DefaultCheck = time.Minute
	// DeleteTimeout bounds the deletion of the mapping when the Mapper
	// stops.
	DeleteTimeout = 2 * time.Second
	// defaultServerPort is the UDP port of PCP and NAT-PMP servers.
	defaultServerPort = 5351
	// defaultAnnounceAddr is where PCP and NAT-PMP servers multicast their
	// announcements: the all-hosts group, port 5350.
	defaultAnnounceAddr = "224.0.0.1:5350"
	// defaultTimeout bounds one request (with its retransmissions).
	defaultTimeout = 4 * time.Second
	// defaultRTO is the first retransmission timeout of PCP and NAT-PMP;
	// it doubles on each retransmission (RFC 6886, section 3.1).
	defaultRTO = 250 * time.Millisecond
	// defaultRetryBase and defaultRetryMax bound the backoff between
	// failed attempts to map.
	defaultRetryBase = 2 * time.Second
	defaultRetryMax  = 5 * time.Minute
	// description names the mapping on the router (UPnP).
	description = "antnode"
)

// Config configures a Mapper. New validates it and fills the zero values
// named.
type Config struct {
	// Protocol is the protocol to use: Auto (zero) tries PCP, then NAT-PMP,
	// then UPnP; PCP, NATPMP or UPnP forces one; Off makes a Mapper that
	// sends nothing.
	Protocol Protocol
	// Gateway is the router to ask. Zero: the default IPv4 gateway of
	// /proc/net/route, found again at each attempt (so after Remap).
	Gateway netip.Addr
	// LocalAddr is the node's LAN address, the mapping's internal address.
	// Zero: the local address that routes to the gateway, found again at
	// each attempt.
	LocalAddr netip.Addr
	// Port is the node's QUIC socket port: the only port ever mapped, as
	// internal port and as suggested external port. Required.
	Port uint16
	// Lease is the lease asked for, between MinLease and MaxLease. Zero:
	// MaxLease.
	Lease time.Duration
	// Check is how often the router is checked between renewals (PCP and
	// NAT-PMP epoch, UPnP entry and external address). Zero: DefaultCheck;
	// negative: never.
	Check time.Duration
	// UPnPDescription is the URL of the gateway's UPnP device description.
	// Empty: found by SSDP on LocalAddr. Either way its host must be the
	// gateway's address.
	UPnPDescription string
	// AddrString renders the external address in the logs (for example
	// monitor.Sanitizer.AddrPort). Nil: as it is.
	AddrString func(netip.AddrPort) string
	// Logger logs the mapping's life. Nil: discarded.
	Logger *slog.Logger
	// Registerer receives the metrics. Nil: none are registered.
	Registerer prometheus.Registerer
	// OnChange is called, on the Mapper's goroutine, with the new Status
	// whenever the mapping appears, changes its external address or port,
	// is granted anew after the router lost it, or is lost (not when Close
	// deletes it). It should return quickly and must not call Close. Nil:
	// not called.
	OnChange func(Status)

	// What tests change: the PCP and NAT-PMP server port (0: 5351); the
	// announcement listener's address ("": 224.0.0.1:5350, "-": none);
	// the timeouts; the backoff; and the protocol clients.
	serverPort          uint16
	announceAddr        string
	timeout, rto        time.Duration
	retryBase, retryMax time.Duration
	dial                dialFunc
}

// dialFunc makes the client of one protocol for a target.
type dialFunc func(ctx context.Context, p Protocol, t target) (client, error)

// validate checks c and fills its defaults.
func (c *Config) validate() error {
	switch {
	case !c.Protocol.valid():
		return fmt.Errorf("%w: unknown protocol %d", ErrConfig, uint8(c.Protocol))
	case c.Protocol == Off:
		return nil
	case c.Port == 0:
		return fmt.Errorf("%w: Port is required", ErrConfig)
	case c.Gateway.IsValid() && (!c.Gateway.Unmap().Is4() || c.Gateway.IsUnspecified()):
		return fmt.Errorf("%w: Gateway %s is not an IPv4 unicast address", ErrConfig, c.Gateway)
	case c.LocalAddr.IsValid() && (!c.LocalAddr.Unmap().Is4() || c.LocalAddr.IsUnspecified()):
		return fmt.Errorf("%w: LocalAddr %s is not an IPv4 unicast address", ErrConfig, c.LocalAddr)
	case c.Lease != 0 && (c.Lease < MinLease || c.Lease > MaxLease):
		return fmt.Errorf("%w: Lease %v is not between %v and %v", ErrConfig, c.Lease, MinLease, MaxLease)
	}
	if c.UPnPDescription != "" {
		u, err := url.Parse(c.UPnPDescription)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return fmt.Errorf("%w: UPnPDescription %q is not an http URL", ErrConfig, c.UPnPDescription)
		}
	}
	c.Gateway, c.LocalAddr = c.Gateway.Unmap(), c.LocalAddr.Unmap()
	c.fill()
	return nil
}

// fill sets the defaults of the zero fields.
func (c *Config) fill() {
	if c.Lease == 0 {
		c.Lease = MaxLease
	}
	if c.Check == 0 {
		c.Check = DefaultCheck
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.serverPort == 0 {
		c.serverPort = defaultServerPort
	}
	if c.announceAddr == "" {
		c.announceAddr = defaultAnnounceAddr
	}
	if c.timeout <= 0 {
		c.timeout = defaultTimeout
	}
	if c.rto <= 0 {
		c.rto = defaultRTO
	}
	if c.retryBase <= 0 {
		c.retryBase = defaultRetryBase
	}
	if c.retryMax < c.retryBase {
		c.retryMax = max(defaultRetryMax, c.retryBase)
	}
}
