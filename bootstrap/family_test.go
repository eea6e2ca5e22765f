package bootstrap

import (
	"errors"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/pion/stun/v3"

	"github.com/antnode/antnode/bootstrap/wire"
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

// TestObserveOtherFamily: a dual-stack peer registered over IPv4 learns
// the bootstrap's IPv6 sockets and a token; a Binding request carrying
// the token on the IPv6 socket makes the bootstrap forward the request's
// source as an observed candidate of the peer. A wrong token, or the
// token from the registration's own family, observes nothing; the peer
// removing the address drops it.
func TestObserveOtherFamily(t *testing.T) {
	ep6 := v6Endpoint(t)
	alt6, err := net.ListenPacket("udp6", "[::1]:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := startServer(t, ServerConfig{Also: []Sockets{{Endpoint: ep6, AltSTUN: alt6}}})
	dual := testkit.DualStackEndpoint(t)
	c := startClient(t, srv, ClientConfig{ID: srv.id.ID(), Endpoint: dual})
	ready(t, c)
	st := c.Status()
	if len(st.Other) != 2 || st.Other[0] != ep6.LocalAddr() || st.Other[1].String() != alt6.LocalAddr().String() || st.Token == ([16]byte{}) {
		t.Fatalf("other %v token %x, want [%s %s] and a token", st.Other, st.Token, ep6.LocalAddr(), alt6.LocalAddr())
	}
	me := netip.AddrPortFrom(netip.IPv6Loopback(), dual.LocalAddr().Port())
	observed := func() []wire.Candidate {
		p := srv.lookup(c.cfg.Identity.ID())
		p.mu.Lock()
		defer p.mu.Unlock()
		var out []wire.Candidate
		for _, cand := range srflx(p.observationsLocked(), p.candidates) {
			if cand.Origin == wire.OriginObserved && cand.Addr.Addr().Is6() {
				out = append(out, cand)
			}
		}
		return out
	}
	bind := func(to netip.AddrPort, token [16]byte) {
		t.Helper()
		req := stun.MustBuild(stun.TransactionID, stun.BindingRequest, stun.NewUsername(wire.ObserveUsername(token)))
		if _, _, err := dual.Transact(t.Context(), req, to, endpoint.RetransmitSchedule(100*time.Millisecond, 3, time.Second)); err != nil {
			t.Fatal(err)
		}
	}
	bind(ep6.LocalAddr(), [16]byte{1, 2, 3})
	bind(srv.Addr(), st.Token) // its own family: nothing new
	if got := observed(); len(got) != 0 {
		t.Fatalf("observed %v before the token came over IPv6", got)
	}
	bind(ep6.LocalAddr(), st.Token)
	if got := observed(); len(got) != 1 || got[0].Addr != me || got[0].Kind != wire.KindServerReflexive {
		t.Fatalf("observed %v, want %s", got, me)
	}
	// A probe to the peer's IPv6 address comes from the IPv6 family's
	// address, from a port the peer never contacted.
	if st.OtherProbes != wire.ProbeOtherPort {
		t.Fatalf("other probes %b, want ProbeOtherPort alone (no probe address in IPv6)", st.OtherProbes)
	}
	probe := func() (endpoint.Response, bool) {
		t.Helper()
		tx := [12]byte{9, 9, byte(time.Now().UnixNano())}
		ch := make(chan endpoint.Response, 1)
		release, err := dual.ExpectInto(tx, ch)
		if err != nil {
			t.Fatal(err)
		}
		defer release()
		if err := c.RequestProbe(wire.ProbeOtherPort, tx, true); err != nil {
			t.Fatal(err)
		}
		select {
		case r := <-ch:
			return r, true
		case <-time.After(time.Second):
			return endpoint.Response{}, false
		}
	}
	if r, ok := probe(); !ok || r.From.Addr() != ep6.LocalAddr().Addr() || r.From == ep6.LocalAddr() {
		t.Fatalf("probe to the IPv6 address: arrived %v from %s, want from another port of %s", ok, r.From, ep6.LocalAddr().Addr())
	}
	if err := c.Announce(nil, []netip.AddrPort{me}); err != nil {
		t.Fatal(err)
	}
	testkit.WaitFor(t, 2*time.Second, "the removal to drop the IPv6 observation", func() bool { return len(observed()) == 0 })
	if _, ok := probe(); ok {
		t.Fatal("a probe went to the dropped IPv6 address")
	}
}

func TestParseObserveUsername(t *testing.T) {
	token := [16]byte{0xab, 15: 0x01}
	for _, tc := range []struct {
		name, u string
		ok      bool
	}{
		{"round trip", wire.ObserveUsername(token), true},
		{"no prefix", "ab000000000000000000000000000001", false},
		{"short", wire.ObservePrefix + "ab00", false},
		{"not hex", wire.ObservePrefix + strings.Repeat("zz", 16), false},
		{"the zero token", wire.ObserveUsername([16]byte{}), false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, ok := wire.ParseObserveUsername(tc.u)
			if ok != tc.ok || (ok && got != token) {
				t.Fatalf("ParseObserveUsername = %x, %v; want ok %v", got, ok, tc.ok)
			}
		})
	}
}
