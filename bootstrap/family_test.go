package bootstrap

import (
	"errors"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/pion/stun/v3"

	"github.com/antnode/antnode/endpoint"
	"github.com/antnode/antnode/internal/testkit"
)

// v6Endpoint opens an endpoint on the IPv6 loopback.
func v6Endpoint(t *testing.T) *endpoint.Endpoint {
	t.Helper()
	testkit.NeedIPv6Loopback(t)
	ep, err := endpoint.Listen("udp6", "[::1]:0", endpoint.Config{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ep.Close() })
	return ep
}

// TestTwoFamilies: a bootstrap with an IPv4 and an IPv6 socket registers
// peers of both families in one registry, observes each in its family,
// answers STUN on both and points each peer to the alternate STUN socket
// of its own family.
func TestTwoFamilies(t *testing.T) {
	ep6 := v6Endpoint(t)
	alt4, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	alt6, err := net.ListenPacket("udp6", "[::1]:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := startServer(t, ServerConfig{AltSTUN: alt4, Also: []Sockets{{Endpoint: ep6, AltSTUN: alt6}}})

	c4 := startClient(t, srv, ClientConfig{ID: srv.id.ID()})
	c6 := startClient(t, srv, ClientConfig{ID: srv.id.ID(), Endpoint: v6Endpoint(t), Addr: ep6.LocalAddr()})
	ready(t, c4)
	ready(t, c6)
	testkit.WaitFor(t, 2*time.Second, "both registered", func() bool { return srv.NumPeers() == 2 })
	for _, tc := range []struct {
		name    string
		c       *Client
		wantAlt net.Addr
	}{{"ipv4", c4, alt4.LocalAddr()}, {"ipv6", c6, alt6.LocalAddr()}} {
		t.Run(tc.name, func(t *testing.T) {
			st := tc.c.Status()
			if st.Observed != tc.c.cfg.Endpoint.LocalAddr() {
				t.Fatalf("observed %s, want %s", st.Observed, tc.c.cfg.Endpoint.LocalAddr())
			}
			if len(st.AltSTUN) != 1 || st.AltSTUN[0].String() != tc.wantAlt.String() {
				t.Fatalf("alternate STUN %v, want [%s]", st.AltSTUN, tc.wantAlt)
			}
		})
	}
	// STUN on the IPv6 socket answers in IPv6, from that socket.
	resp, _, err := c6.cfg.Endpoint.Transact(t.Context(), stun.MustBuild(stun.TransactionID, stun.BindingRequest), ep6.LocalAddr(),
		endpoint.RetransmitSchedule(100*time.Millisecond, 3, time.Second))
	if err != nil {
		t.Fatal(err)
	}
	if got, err := endpoint.MappedAddress(resp.Msg); err != nil || got != c6.cfg.Endpoint.LocalAddr() || resp.From != ep6.LocalAddr() {
		t.Fatalf("STUN over IPv6: mapped %s from %s (%v), want %s from %s", got, resp.From, err, c6.cfg.Endpoint.LocalAddr(), ep6.LocalAddr())
	}
}

func TestAlsoValidation(t *testing.T) {
	ep4 := newEndpoint(t, "127.0.0.1:0")
	ep6 := v6Endpoint(t)
	for _, tc := range []struct {
		name string
		also []Sockets
	}{
		{"a second IPv4 socket", []Sockets{{Endpoint: newEndpoint(t, "127.0.0.1:0")}}},
		{"no endpoint", []Sockets{{}}},
		{"a probe address of the other family", []Sockets{{Endpoint: ep6, ProbeAddr: netip.MustParseAddr("127.0.0.2")}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := NewServer(ServerConfig{Identity: newIdentity(t), Endpoint: ep4, Also: tc.also})
			if !errors.Is(err, ErrSockets) {
				t.Fatalf("err = %v, want ErrSockets", err)
			}
		})
	}
}
