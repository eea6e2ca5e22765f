package main

import (
	"errors"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/antnode/antnode/bootstrap"
	"github.com/antnode/antnode/endpoint"
	"github.com/antnode/antnode/identity"
	"github.com/antnode/antnode/internal/netguard"
	"github.com/antnode/antnode/internal/testkit"
	"github.com/antnode/antnode/relay"
)

// TestLimitFlags: the limit flags' defaults pass, each bound is enforced,
// and a per-IP cap above its total takes the total.
func TestLimitFlags(t *testing.T) {
	def := limitFlags{maxPeersPerIP: 64, tcpMaxConns: 4096, tcpMaxConnsPerIP: 32, authTimeout: 10 * time.Second,
		tcpIdleTimeout: 10 * time.Minute, frameTimeout: 5 * time.Second, auditInterval: 10 * time.Second}
	if err := def.validate(100_000); err != nil {
		t.Fatalf("defaults: %v", err)
	}
	small := def
	if err := small.validate(10); err != nil || small.maxPeersPerIP != 10 {
		t.Fatalf("--max-peers 10: %v, per-IP %d, want 10", err, small.maxPeersPerIP)
	}
	for _, tc := range []struct {
		flag string
		set  func(*limitFlags)
	}{
		{"--max-peers-per-ip", func(f *limitFlags) { f.maxPeersPerIP = 0 }},
		{"--max-peers-per-ip", func(f *limitFlags) { f.maxPeersPerIP = 2_000_000 }},
		{"--tcp-max-conns", func(f *limitFlags) { f.tcpMaxConns = 2_000_000 }},
		{"--tcp-max-conns-per-ip", func(f *limitFlags) { f.tcpMaxConnsPerIP = -1 }},
		{"--auth-timeout", func(f *limitFlags) { f.authTimeout = time.Hour }},
		{"--tcp-idle-timeout", func(f *limitFlags) { f.tcpIdleTimeout = time.Second }},
		{"--frame-timeout", func(f *limitFlags) { f.frameTimeout = 0 }},
		{"--audit-interval", func(f *limitFlags) { f.auditInterval = 48 * time.Hour }},
	} {
		f := def
		tc.set(&f)
		if err := f.validate(100_000); err == nil || !strings.Contains(err.Error(), tc.flag+" ") {
			t.Errorf("%s out of bounds: %v", tc.flag, err)
		}
	}
}

// TestReadyzFailsWhileAListenerIsNotAccepting: a bootstrap node's
// readiness (/readyz) fails while the TCP control listener or the relay's
// TCP listener does not accept (it said ready with both dead).
func TestReadyzFailsWhileAListenerIsNotAccepting(t *testing.T) {
	for _, which := range []string{"control", "relay"} {
		t.Run(which, func(t *testing.T) {
			id, _ := identity.Generate()
			ep, err := endpoint.Listen("udp4", "127.0.0.1:0", endpoint.Config{})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { ep.Close() })
			ctl, err := net.Listen("tcp4", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			udp, err := net.ListenPacket("udp4", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			rtcp, err := net.Listen("tcp4", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			rs, err := relay.NewServer(relay.ServerConfig{UDP: udp, TCP: rtcp, RelayIP: netip.MustParseAddr("127.0.0.1")})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { rs.Close() })
			srv, err := bootstrap.NewServer(bootstrap.ServerConfig{Identity: id, Endpoint: ep, TCP: ctl, Relay: rs})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { srv.Close() })
			ready := bootstrapAPI(id, srv, rs, time.Now()).ready
			if err := ready(); err != nil {
				t.Fatalf("not ready with every listener accepting: %v", err)
			}
			dead := ctl
			if which == "relay" {
				dead = rtcp
			}
			dead.Close() // the listener fails for good
			testkit.WaitFor(t, 5*time.Second, "readiness to fail", func() bool { return ready() != nil })
			if err := ready(); !errors.Is(err, netguard.ErrNotAccepting) {
				t.Fatalf("readiness %v, want ErrNotAccepting", err)
			}
		})
	}
}
