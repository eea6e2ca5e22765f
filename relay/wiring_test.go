package relay_test

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/antnode/antnode/bootstrap"
	"github.com/antnode/antnode/endpoint"
	"github.com/antnode/antnode/identity"
	"github.com/antnode/antnode/relay"
)

// newRelay starts a relay on loopback (UDP only).
func newRelay(t *testing.T, cfg relay.ServerConfig) *relay.Server {
	t.Helper()
	udp, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	cfg.UDP, cfg.RelayIP = udp, netip.MustParseAddr("127.0.0.1")
	s, err := relay.NewServer(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func newID(t *testing.T) *identity.Identity {
	t.Helper()
	id, err := identity.Generate()
	if err != nil {
		t.Fatal(err)
	}
	return id
}

// udpOn opens a UDP socket on a loopback address (Linux routes all of
// 127/8 to lo, so 127.0.0.2 is a second host on the same machine).
func udpOn(t *testing.T, ip string) *net.UDPConn {
	t.Helper()
	c, err := net.ListenUDP("udp4", net.UDPAddrFromAddrPort(netip.AddrPortFrom(netip.MustParseAddr(ip), 0)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func addrOf(c net.PacketConn) netip.AddrPort { return c.LocalAddr().(*net.UDPAddr).AddrPort() }

// arrives sends payload from from to to and reports whether read, within
// wait, receives it (and only that: anything else read is a failure).
func arrives(t *testing.T, from net.PacketConn, to netip.AddrPort, read net.PacketConn, payload string, wait time.Duration) bool {
	t.Helper()
	if _, err := from.WriteTo([]byte(payload), net.UDPAddrFromAddrPort(to)); err != nil {
		return false
	}
	buf := make([]byte, 1500)
	read.SetReadDeadline(time.Now().Add(wait))
	defer read.SetReadDeadline(time.Time{})
	for {
		n, _, err := read.ReadFrom(buf)
		if err != nil {
			return false
		}
		if string(buf[:n]) == payload {
			return true
		}
		t.Fatalf("read %q, want %q", buf[:n], payload)
	}
}

// TestAllocationLifetimeQuota: an allocation carries data both ways until
// the relay's MaxLifetime, refreshes or not, and nothing afterwards: what
// peers send to it is dropped, what the client sends through it is not
// forwarded, and the relay counts no more bytes for it.
func TestAllocationLifetimeQuota(t *testing.T) {
	const lifetime = 1500 * time.Millisecond
	rs := newRelay(t, relay.ServerConfig{MaxLifetime: lifetime, MaxAllocationsPerPeer: 1})
	rs.SetPolicy(func(_ identity.PeerID, ip netip.Addr) bool { return ip.IsLoopback() })
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	made := time.Now()
	id := newID(t)
	a, err := relay.Allocate(ctx, relay.ClientConfig{Server: rs.UDPAddr(), Credentials: rs.Credentials(id.ID(), time.Hour)})
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	peer := udpOn(t, "127.0.0.1")
	if err := a.Permit(addrOf(peer)); err != nil {
		t.Fatal(err)
	}
	if !arrives(t, peer, a.Relayed, a.Conn, "in, early", 2*time.Second) {
		t.Fatal("peer -> client: nothing arrived within the lifetime")
	}
	if !arrives(t, a.Conn, addrOf(peer), peer, "out, early", 2*time.Second) {
		t.Fatal("client -> peer: nothing arrived within the lifetime")
	}
	time.Sleep(time.Until(made.Add(lifetime + 100*time.Millisecond)))
	before := rs.BytesRelayed()
	for i := range 3 { // not one lost datagram: none goes through
		if arrives(t, peer, a.Relayed, a.Conn, "in, late", 300*time.Millisecond) {
			t.Fatalf("peer -> client %d: carried after the lifetime", i)
		}
		if arrives(t, a.Conn, addrOf(peer), peer, "out, late", 300*time.Millisecond) {
			t.Fatalf("client -> peer %d: carried after the lifetime", i)
		}
	}
	if after := rs.BytesRelayed(); after != before {
		t.Fatalf("the relay counted %d bytes after the lifetime", after-before)
	}
	// The expired allocation is gone from the relay, and its slot is free:
	// the same peer allocates again within a quota of one.
	if n := rs.Allocations(); n != 0 {
		t.Fatalf("%d allocations on the relay after the lifetime", n)
	}
	b, err := relay.Allocate(ctx, relay.ClientConfig{Server: rs.UDPAddr(), Credentials: rs.Credentials(id.ID(), time.Hour)})
	if err != nil {
		t.Fatalf("a new allocation after the lifetime: %v", err)
	}
	b.Close()
}

// peerOn is a peer registered with the bootstrap from a socket on ip.
type peerOn struct {
	id *identity.Identity
	ep *endpoint.Endpoint
	c  *bootstrap.Client
}

func startPeer(t *testing.T, srv *bootstrap.Server, ip string, onOffer func(*bootstrap.Offer)) peerOn {
	t.Helper()
	id := newID(t)
	ep, err := endpoint.Listen("udp4", ip+":0", endpoint.Config{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ep.Close() })
	c, err := bootstrap.NewClient(bootstrap.ClientConfig{Identity: id, Endpoint: ep, Addr: srv.Addr(), OnOffer: onOffer,
		MinBackoff: 20 * time.Millisecond, MaxBackoff: 200 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	if err := c.WaitReady(ctx); err != nil {
		t.Fatal(err)
	}
	return peerOn{id: id, ep: ep, c: c}
}

// TestPermissionOnlyToIntroducedPeers wires the relay to a real
// bootstrap's policy (bootstrap.Server.RelayAllowed), as a bootstrap node
// does, with three registered peers on three loopback addresses: A
// (127.0.0.1) is introduced to B (127.0.0.2) and not to C (127.0.0.3).
// A's allocation may not be permitted to B before the introduction, may
// be afterwards, and never to C; the relay carries data between A and B
// and none between A and C, either way.
func TestPermissionOnlyToIntroducedPeers(t *testing.T) {
	rs := newRelay(t, relay.ServerConfig{})
	bootEP, err := endpoint.Listen("udp4", "127.0.0.1:0", endpoint.Config{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { bootEP.Close() })
	srv, err := bootstrap.NewServer(bootstrap.ServerConfig{Identity: newID(t), Endpoint: bootEP, Relay: rs})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close() })
	rs.SetPolicy(srv.RelayAllowed)

	accepted := make(chan *bootstrap.Session, 1)
	a := startPeer(t, srv, "127.0.0.1", nil)
	b := startPeer(t, srv, "127.0.0.2", func(o *bootstrap.Offer) {
		if s, err := o.Accept(bootstrap.Intro{}); err == nil {
			accepted <- s
		}
	})
	c := startPeer(t, srv, "127.0.0.3", nil)

	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	g, err := a.c.RequestRelay(ctx)
	if err != nil {
		t.Fatal(err)
	}
	alloc, err := relay.Allocate(ctx, relay.ClientConfig{Server: g.UDP,
		Credentials: relay.Credentials{Username: g.Username, Password: g.Password}})
	if err != nil {
		t.Fatal(err)
	}
	defer alloc.Close()
	bAddr, cAddr := b.ep.LocalAddr(), c.ep.LocalAddr()
	if err := alloc.Permit(bAddr); !errors.Is(err, relay.ErrRefused) {
		t.Fatalf("permission to B before the introduction: %v, want ErrRefused", err)
	}

	sa, err := a.c.Connect(ctx, b.id.ID(), bootstrap.Intro{})
	if err != nil {
		t.Fatal(err)
	}
	defer sa.Close()
	select {
	case sb := <-accepted:
		defer sb.Close()
	case <-ctx.Done():
		t.Fatal("B never accepted the introduction")
	}
	if err := alloc.Permit(bAddr); err != nil {
		t.Fatalf("permission to B after the introduction: %v", err)
	}
	if err := alloc.Permit(cAddr); !errors.Is(err, relay.ErrRefused) {
		t.Fatalf("permission to C, never introduced: %v, want ErrRefused", err)
	}
	// Permissions are per IP: sockets on B's and C's addresses stand for
	// their hosts.
	onB, onC := udpOn(t, "127.0.0.2"), udpOn(t, "127.0.0.3")
	if !arrives(t, onB, alloc.Relayed, alloc.Conn, "from B", 2*time.Second) {
		t.Fatal("B -> A through the relay: nothing arrived")
	}
	if !arrives(t, alloc.Conn, addrOf(onB), onB, "to B", 2*time.Second) {
		t.Fatal("A -> B through the relay: nothing arrived")
	}
	for i := range 3 {
		if arrives(t, onC, alloc.Relayed, alloc.Conn, "from C", 300*time.Millisecond) {
			t.Fatalf("C -> A %d: the relay forwarded from an address B did not announce", i)
		}
		if arrives(t, alloc.Conn, addrOf(onC), onC, "to C", 300*time.Millisecond) {
			t.Fatalf("A -> C %d: the relay forwarded to an address B did not announce", i)
		}
	}
}
