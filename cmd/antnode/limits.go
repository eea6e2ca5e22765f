package main

import (
	"errors"
	"flag"
	"fmt"
	"time"

	"github.com/antnode/antnode/bootstrap"
	"github.com/antnode/antnode/relay"
)

// limitFlags are a bootstrap node's limits on what one source can hold:
// registrations, TCP connections (control and TURN), the time a TCP
// connection may stay unauthenticated, idle or mid-frame, and how often
// one source's repeated security events are written to the audit trail.
// Each flag's help names its default and its bounds.
type limitFlags struct {
	maxPeersPerIP    int
	tcpMaxConns      int
	tcpMaxConnsPerIP int
	authTimeout      time.Duration
	tcpIdleTimeout   time.Duration
	frameTimeout     time.Duration
	auditInterval    time.Duration
}

// Bounds of the limit flags.
const (
	maxCountBound   = 1_000_000
	minLimitTimeout = 100 * time.Millisecond
)

func (f *limitFlags) register(fs *flag.FlagSet) {
	fs.IntVar(&f.maxPeersPerIP, "max-peers-per-ip", 64, "bootstrap: registrations from one source IP; one more is refused as rate_limited (1-1000000; --max-peers when larger)")
	fs.IntVar(&f.tcpMaxConns, "tcp-max-conns", 4096, "bootstrap: TCP connections held at once on each TCP port (control, relay); more are closed at once (1-1000000)")
	fs.IntVar(&f.tcpMaxConnsPerIP, "tcp-max-conns-per-ip", 32, "bootstrap: TCP connections held at once from one source IP on each TCP port (1-1000000; --tcp-max-conns when larger)")
	fs.DurationVar(&f.authTimeout, "auth-timeout", 10*time.Second, "bootstrap: a connection (control over QUIC or TCP, TURN over TCP) that has not authenticated (and registered) this long after it opened is closed (100ms-5m)")
	fs.DurationVar(&f.tcpIdleTimeout, "tcp-idle-timeout", 10*time.Minute, "bootstrap: an authenticated TURN-over-TCP connection silent this long is closed (1m-1h; control connections expire after 60 s of silence)")
	fs.DurationVar(&f.frameTimeout, "frame-timeout", 5*time.Second, "bootstrap: a control or TURN frame not complete this long after its first byte closes its connection (100ms-1m)")
	fs.DurationVar(&f.auditInterval, "audit-interval", 10*time.Second, "bootstrap: repeats of one security event (one source, one reason) are written once per interval with a count (1s-1h)")
}

// validate checks the flags against their bounds; maxPeers is --max-peers.
func (f *limitFlags) validate(maxPeers int) error {
	between := func(name string, v, lo, hi time.Duration) error {
		if v < lo || v > hi {
			return fmt.Errorf("--%s %v: want %v to %v", name, v, lo, hi)
		}
		return nil
	}
	switch {
	case f.maxPeersPerIP < 1 || f.maxPeersPerIP > maxCountBound:
		return fmt.Errorf("--max-peers-per-ip %d: want 1 to %d", f.maxPeersPerIP, maxCountBound)
	case f.tcpMaxConns < 1 || f.tcpMaxConns > maxCountBound:
		return fmt.Errorf("--tcp-max-conns %d: want 1 to %d", f.tcpMaxConns, maxCountBound)
	case f.tcpMaxConnsPerIP < 1 || f.tcpMaxConnsPerIP > maxCountBound:
		return fmt.Errorf("--tcp-max-conns-per-ip %d: want 1 to %d", f.tcpMaxConnsPerIP, maxCountBound)
	}
	f.maxPeersPerIP = min(f.maxPeersPerIP, maxPeers)
	f.tcpMaxConnsPerIP = min(f.tcpMaxConnsPerIP, f.tcpMaxConns)
	return errors.Join(
		between("auth-timeout", f.authTimeout, minLimitTimeout, 5*time.Minute),
		between("tcp-idle-timeout", f.tcpIdleTimeout, time.Minute, time.Hour),
		between("frame-timeout", f.frameTimeout, minLimitTimeout, time.Minute),
		between("audit-interval", f.auditInterval, time.Second, time.Hour))
}

// bootstrap sets the limits on a bootstrap server's configuration.
func (f *limitFlags) bootstrap(cfg *bootstrap.ServerConfig) {
	cfg.MaxPeersPerIP = f.maxPeersPerIP
	cfg.MaxTCPConns, cfg.MaxTCPConnsPerIP = f.tcpMaxConns, f.tcpMaxConnsPerIP
	cfg.HandshakeTimeout = f.authTimeout
	cfg.FrameTimeout = f.frameTimeout
	cfg.AuditInterval = f.auditInterval
}

// relay sets the limits on the relay's configuration.
func (f *limitFlags) relay(cfg *relay.ServerConfig) {
	cfg.MaxTCPConns, cfg.MaxTCPConnsPerIP = f.tcpMaxConns, f.tcpMaxConnsPerIP
	cfg.TCPAuthTimeout, cfg.TCPIdleTimeout = f.authTimeout, f.tcpIdleTimeout
	cfg.TCPFrameTimeout = f.frameTimeout
	cfg.AuditInterval = f.auditInterval
}

// bootstrapReady is a bootstrap node's readiness (/readyz): every
// listener accepting, the relay's included (rs may be nil: no relay).
func bootstrapReady(srv *bootstrap.Server, rs *relay.Server) error {
	if rs == nil {
		return srv.Ready()
	}
	return errors.Join(srv.Ready(), rs.Ready())
}
