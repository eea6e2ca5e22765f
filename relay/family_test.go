package relay

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/antnode/antnode/identity"
	"github.com/antnode/antnode/internal/testkit"
	"github.com/antnode/antnode/nat64"
)

// v6Listeners opens a UDP socket and a TCP listener on the IPv6 loopback.
func v6Listeners(t *testing.T) Listeners {
	t.Helper()
	testkit.NeedIPv6Loopback(t)
	udp, err := net.ListenPacket("udp6", "[::1]:0")
	if err != nil {
		t.Fatal(err)
	}
	tcp, err := net.Listen("tcp6", "[::1]:0")
	if err != nil {
		t.Fatal(err)
	}
	return Listeners{UDP: udp, TCP: tcp}
}

// TestRelayAcrossFamilies: a client that reaches the relay over IPv6 (UDP
// or TCP) gets an allocation on the relay's IPv4 address, and an IPv4
// peer exchanges datagrams with it both ways: the relay carries one
// family to the other. AddrsFor gives each client its own family's
// sockets.
func TestRelayAcrossFamilies(t *testing.T) {
	v6 := v6Listeners(t)
	r := startRelay(t, ServerConfig{Also: []Listeners{v6}}, func(_ identity.PeerID, ip netip.Addr) bool { return ip.IsLoopback() })
	udp6, tcp6 := r.AddrsFor(netip.IPv6Loopback())
	if udp6.String() != v6.UDP.LocalAddr().String() || tcp6.String() != v6.TCP.Addr().String() {
		t.Fatalf("AddrsFor(::1) = %s, %s; want the IPv6 sockets", udp6, tcp6)
	}
	if udp4, _ := r.AddrsFor(netip.MustParseAddr("127.0.0.1")); udp4 != r.UDPAddr() {
		t.Fatalf("AddrsFor(127.0.0.1) = %s, want %s", udp4, r.UDPAddr())
	}
	for _, tc := range []struct {
		name   string
		server netip.AddrPort
		tcp    bool
	}{{"udp", udp6, false}, {"tcp", tcp6, true}} {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			a, err := Allocate(ctx, ClientConfig{Server: tc.server, TCP: tc.tcp, Credentials: r.Credentials(peerID(t), time.Minute)})
			if err != nil {
				t.Fatal(err)
			}
			defer a.Close()
			if !a.Relayed.Addr().Is4() {
				t.Fatalf("relayed address %s, want the relay's IPv4 address", a.Relayed)
			}
			peer, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
			if err != nil {
				t.Fatal(err)
			}
			defer peer.Close()
			peerAddr := peer.LocalAddr().(*net.UDPAddr).AddrPort()
			if err := a.Permit(peerAddr); err != nil {
				t.Fatal(err)
			}
			peer.WriteToUDPAddrPort([]byte("v4 to v6"), a.Relayed)
			buf := make([]byte, 100)
			a.Conn.SetReadDeadline(time.Now().Add(3 * time.Second))
			n, from, err := a.Conn.ReadFrom(buf)
			if err != nil || string(buf[:n]) != "v4 to v6" {
				t.Fatalf("client read %q from %v: %v", buf[:n], from, err)
			}
			if _, err := a.Conn.WriteTo([]byte("v6 to v4"), from); err != nil {
				t.Fatal(err)
			}
			peer.SetReadDeadline(time.Now().Add(3 * time.Second))
			n, src, err := peer.ReadFromUDPAddrPort(buf)
			if err != nil || string(buf[:n]) != "v6 to v4" || src != a.Relayed {
				t.Fatalf("peer read %q from %v: %v", buf[:n], src, err)
			}
		})
	}
}

func TestAlsoListenersValidation(t *testing.T) {
	udp4, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer udp4.Close()
	other4, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer other4.Close()
	for _, tc := range []struct {
		name string
		also []Listeners
	}{
		{"no UDP", []Listeners{{}}},
		{"a second IPv4 socket", []Listeners{{UDP: other4}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := NewServer(ServerConfig{UDP: udp4, RelayIP: netip.MustParseAddr("127.0.0.1"), Also: tc.also})
			if !errors.Is(err, ErrListeners) {
				t.Fatalf("err = %v, want ErrListeners", err)
			}
		})
	}
}

// TestAllocationBehindNAT64: a client behind NAT64 knows its IPv4 peer by
// the peer's synthesised address: its allocation permits and sends to the
// IPv4 address embedded, and reports the peer's datagrams from the
// synthesised one.
func TestAllocationBehindNAT64(t *testing.T) {
	p, err := nat64.ParsePrefix("2001:db8:64::/96")
	if err != nil {
		t.Fatal(err)
	}
	r := startRelay(t, ServerConfig{}, func(_ identity.PeerID, ip netip.Addr) bool { return ip.IsLoopback() })
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	a, err := Allocate(ctx, ClientConfig{Server: r.UDPAddr(), Credentials: r.Credentials(peerID(t), time.Minute), NAT64: p})
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	peer, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer peer.Close()
	peerAddr := peer.LocalAddr().(*net.UDPAddr).AddrPort()
	synth := p.Map(peerAddr)
	if err := a.Permit(synth); err != nil {
		t.Fatalf("permit %s: %v", synth, err)
	}
	peer.WriteToUDPAddrPort([]byte("from v4"), a.Relayed)
	buf := make([]byte, 100)
	a.Conn.SetReadDeadline(time.Now().Add(3 * time.Second))
	n, from, err := a.Conn.ReadFrom(buf)
	if err != nil || string(buf[:n]) != "from v4" || from.String() != net.UDPAddrFromAddrPort(synth).String() {
		t.Fatalf("client read %q from %v (%v), want from %s", buf[:n], from, err, synth)
	}
	if _, err := a.Conn.WriteTo([]byte("to v4"), net.UDPAddrFromAddrPort(synth)); err != nil {
		t.Fatal(err)
	}
	peer.SetReadDeadline(time.Now().Add(3 * time.Second))
	n, src, err := peer.ReadFromUDPAddrPort(buf)
	if err != nil || string(buf[:n]) != "to v4" || src != a.Relayed {
		t.Fatalf("peer read %q from %v: %v", buf[:n], src, err)
	}
}
