package relay

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"strings"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/antnode/antnode/event"
	"github.com/antnode/antnode/identity"
	"github.com/antnode/antnode/internal/testkit"
	"github.com/pion/stun/v3"
)

type testRelay struct {
	*Server
	secret []byte
}

func startRelay(t *testing.T, cfg ServerConfig, allow func(identity.PeerID, netip.Addr) bool) *testRelay {
	t.Helper()
	udp, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	tcp, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	cfg.UDP, cfg.TCP, cfg.RelayIP = udp, tcp, netip.MustParseAddr("127.0.0.1")
	if cfg.Secret == nil {
		cfg.Secret = []byte("test secret")
	}
	s, err := NewServer(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if allow != nil {
		s.SetPolicy(allow)
	}
	t.Cleanup(func() { s.Close() })
	return &testRelay{Server: s, secret: cfg.Secret}
}

func peerID(t *testing.T) identity.PeerID {
	id, err := identity.Generate()
	if err != nil {
		t.Fatal(err)
	}
	return id.ID()
}

func allocate(t *testing.T, r *testRelay, creds Credentials, tcp bool) (*Allocation, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	server := r.UDPAddr()
	if tcp {
		server = r.TCPAddr()
	}
	a, err := Allocate(ctx, ClientConfig{Server: server, TCP: tcp, Credentials: creds})
	if err == nil {
		t.Cleanup(func() { a.Close() })
	}
	return a, err
}

func allowLoopback(identity.PeerID, netip.Addr) bool { return true }

func TestRelayCarriesDataBothWays(t *testing.T) {
	for _, tcp := range []bool{false, true} {
		name := "udp"
		if tcp {
			name = "tcp"
		}
		t.Run(name, func(t *testing.T) {
			r := startRelay(t, ServerConfig{}, func(_ identity.PeerID, ip netip.Addr) bool { return ip.IsLoopback() })
			a, err := allocate(t, r, r.Credentials(peerID(t), time.Minute), tcp)
			if err != nil {
				t.Fatal(err)
			}
			if a.Relayed.Addr() != netip.MustParseAddr("127.0.0.1") || a.Relayed.Port() == 0 {
				t.Fatalf("relayed address %v", a.Relayed)
			}
			peer, _ := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
			defer peer.Close()
			peerAddr := peer.LocalAddr().(*net.UDPAddr).AddrPort()
			if err := a.Permit(peerAddr); err != nil {
				t.Fatal(err)
			}
			// Peer -> relayed address -> client.
			peer.WriteToUDPAddrPort([]byte("to client"), a.Relayed)
			buf := make([]byte, 100)
			a.Conn.SetReadDeadline(time.Now().Add(3 * time.Second))
			n, from, err := a.Conn.ReadFrom(buf)
			if err != nil || string(buf[:n]) != "to client" || from.String() != peerAddr.String() {
				t.Fatalf("client read %q from %v: %v", buf[:n], from, err)
			}
			// Client -> relay -> peer, from the relayed address.
			if _, err := a.Conn.WriteTo([]byte("to peer"), from); err != nil {
				t.Fatal(err)
			}
			peer.SetReadDeadline(time.Now().Add(3 * time.Second))
			n, src, err := peer.ReadFromUDPAddrPort(buf)
			if err != nil || string(buf[:n]) != "to peer" || src != a.Relayed {
				t.Fatalf("peer read %q from %v: %v", buf[:n], src, err)
			}
			if r.Allocations() != 1 || r.BytesRelayed() == 0 {
				t.Fatalf("allocations %d, bytes %d", r.Allocations(), r.BytesRelayed())
			}
			a.Close()
			deadline := time.Now().Add(3 * time.Second)
			for r.Allocations() != 0 && time.Now().Before(deadline) {
				time.Sleep(10 * time.Millisecond)
			}
			if r.Allocations() != 0 {
				t.Fatal("allocation not released on Close")
			}
		})
	}
}

// securityLog keeps what a relay records (its security events: Kind).
type securityLog = testkit.Recorder

func TestRelayRefusesNonEphemeralCredentials(t *testing.T) {
	sec := &securityLog{}
	r := startRelay(t, ServerConfig{Recorder: sec}, allowLoopback)
	peer := peerID(t)
	good := r.Credentials(peer, time.Minute)
	tests := []struct {
		name  string
		creds Credentials
	}{
		{"static username", Credentials{Username: "alice", Password: "secret"}},
		{"static with a valid-looking password", Credentials{Username: "alice", Password: Password(r.secret, "alice")}},
		{"expired", NewCredentials(r.secret, peer, time.Now().Add(-2*time.Hour), time.Hour)},
		{"wrong secret", NewCredentials([]byte("other secret"), peer, time.Now(), time.Hour)},
		{"tampered peer", Credentials{Username: strings.Replace(good.Username, good.Username[len(good.Username)-4:], "aaaa", 1), Password: good.Password}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := allocate(t, r, tc.creds, false); !errors.Is(err, ErrRefused) {
				t.Fatalf("got %v, want ErrRefused", err)
			}
		})
	}
	if r.Allocations() != 0 {
		t.Fatalf("%d allocations made with bad credentials", r.Allocations())
	}
	// Refused credentials are audited as what they are: bad credentials,
	// not a key mismatch (no peer presented another key).
	secs := sec.Kind(event.KindSecurity)
	if len(secs) == 0 {
		t.Fatal("no security event for refused credentials")
	}
	for _, ev := range secs {
		if ev.Reason != event.ReasonBadCredentials {
			t.Fatalf("security event %s (%s), want bad_credentials", ev.Reason, ev.Detail)
		}
	}
}

func TestRelayQuota(t *testing.T) {
	r := startRelay(t, ServerConfig{MaxAllocationsPerPeer: 2}, allowLoopback)
	peer := peerID(t)
	for i := range 2 {
		if _, err := allocate(t, r, r.Credentials(peer, time.Minute), false); err != nil {
			t.Fatalf("allocation %d: %v", i, err)
		}
	}
	_, err := allocate(t, r, r.Credentials(peer, time.Minute), false)
	if !errors.Is(err, ErrRefused) || !errors.Is(err, ErrQuota) { // 486 Allocation Quota Reached
		t.Fatalf("third allocation: %v, want a quota refusal", err)
	}
	// Another peer is not affected.
	if _, err := allocate(t, r, r.Credentials(peerID(t), time.Minute), false); err != nil {
		t.Fatalf("another peer: %v", err)
	}
}

func TestRelayPermissionPolicy(t *testing.T) {
	allowed := netip.MustParseAddr("127.0.0.1")
	r := startRelay(t, ServerConfig{}, func(_ identity.PeerID, ip netip.Addr) bool { return ip == allowed })
	a, err := allocate(t, r, r.Credentials(peerID(t), time.Minute), false)
	if err != nil {
		t.Fatal(err)
	}
	if err := a.Permit(netip.MustParseAddrPort("127.0.0.1:9")); err != nil {
		t.Fatalf("announced address refused: %v", err)
	}
	if err := a.Permit(netip.MustParseAddrPort("192.0.2.77:9")); !errors.Is(err, ErrRefused) {
		t.Fatalf("unannounced address: %v, want ErrRefused", err)
	}
	// Without a policy nothing is permitted but the relay's own address
	// (127.0.0.1 here: see TestRelayToRelay).
	r2 := startRelay(t, ServerConfig{}, nil)
	a2, err := allocate(t, r2, r2.Credentials(peerID(t), time.Minute), false)
	if err != nil {
		t.Fatal(err)
	}
	if err := a2.Permit(netip.MustParseAddrPort("127.0.0.2:9")); !errors.Is(err, ErrRefused) {
		t.Fatalf("no policy: %v, want ErrRefused", err)
	}
}

func TestCredentials(t *testing.T) {
	peer := peerID(t)
	now := time.Unix(1_800_000_000, 0)
	c := NewCredentials([]byte("s"), peer, now, time.Hour)
	got, err := ParseUsername(c.Username, now)
	if err != nil || got != peer {
		t.Fatalf("parse: %v %v", got, err)
	}
	if _, err := ParseUsername(c.Username, now.Add(2*time.Hour)); !errors.Is(err, ErrExpired) {
		t.Fatalf("after expiry: %v", err)
	}
	for _, bad := range []string{"", "alice", "123", "x:" + peer.String(), "123:notapeer"} {
		if _, err := ParseUsername(bad, now); !errors.Is(err, ErrBadUsername) {
			t.Errorf("%q: %v", bad, err)
		}
	}
	if Password([]byte("s"), c.Username) != c.Password {
		t.Fatal("password not reproducible")
	}
}

func TestRateShapes(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r := newRate(100_000) // 100 kB/s, 10 kB burst
		start := time.Now()
		for range 100 {
			r.wait(10_000) // 1 MB in all
		}
		// 1 MB at 100 kB/s after a 10 kB burst: 9.9 s.
		if d := time.Since(start); d < 9800*time.Millisecond || d > 10*time.Second {
			t.Fatalf("1 MB took %v at 100 kB/s", d)
		}
	})
}

func FuzzParseUsername(f *testing.F) {
	f.Add("1800000000:" + strings.Repeat("a", 52))
	f.Add("x:y")
	f.Fuzz(func(t *testing.T, s string) {
		peer, err := ParseUsername(s, time.Unix(0, 0))
		// Peer IDs parse case-insensitively.
		if err == nil && !strings.HasSuffix(strings.ToLower(s), peer.String()) {
			t.Fatalf("parsed %q as %v", s, peer)
		}
	})
}

// TestAllocationDiesWithItsRelay: over TCP, a relay that goes away (a
// restart) ends the allocation at once, and Dead says so; Close does too.
func TestAllocationDiesWithItsRelay(t *testing.T) {
	r := startRelay(t, ServerConfig{}, allowLoopback)
	a, err := allocate(t, r, r.Credentials(peerID(t), time.Minute), true)
	if err != nil {
		t.Fatal(err)
	}
	select {
	case <-a.Dead():
		t.Fatal("a live allocation is dead")
	default:
	}
	r.Close()
	select {
	case <-a.Dead():
	case <-time.After(5 * time.Second):
		t.Fatal("the allocation outlived its relay's TCP connection")
	}
	r2 := startRelay(t, ServerConfig{}, allowLoopback)
	b, err := allocate(t, r2, r2.Credentials(peerID(t), time.Minute), false)
	if err != nil {
		t.Fatal(err)
	}
	b.Close()
	select {
	case <-b.Dead():
	case <-time.After(5 * time.Second):
		t.Fatal("a closed allocation is not dead")
	}
}

// TestClientStateIsPruned: the relay's state per client 5-tuple goes with
// the client's last allocation, and an authentication that allocated
// nothing is forgotten once its grace is over: a stream of clients does
// not grow the relay without bound.
func TestClientStateIsPruned(t *testing.T) {
	r := startRelay(t, ServerConfig{MaxAllocationsPerPeer: 64}, allowLoopback)
	peer := peerID(t)
	for i := range 10 {
		a, err := allocate(t, r, r.Credentials(peer, time.Minute), i%2 == 1)
		if err != nil {
			t.Fatal(err)
		}
		if n := r.Clients(); n != 1 {
			t.Fatalf("allocation %d: state for %d clients, want 1", i, n)
		}
		a.Close()
		testkit.WaitFor(t, 5*time.Second, "the released client's state to go", func() bool { return r.Clients() == 0 })
	}

	// Authentications without an allocation, on a virtual clock.
	t0 := time.Unix(1_700_000_000, 0)
	src := func(i int) net.Addr { return &net.UDPAddr{IP: net.IPv4(127, 0, byte(i>>8), byte(i)), Port: 4000} }
	for i := range 1000 {
		r.authenticated(src(i), peer, t0)
	}
	if n := r.Clients(); n != 1000 {
		t.Fatalf("%d clients within their grace, want 1000", n)
	}
	for i := range 1000 {
		r.authenticated(src(1000+i), peer, t0.Add(clientGrace+time.Second))
	}
	if n := r.Clients(); n > 1000 {
		t.Fatalf("state for %d clients after the first 1000's grace: not pruned", n)
	}
}

// dropFirstRefresh is a client socket that loses the first Refresh
// request it sends: the zero-lifetime refresh of a Close.
type dropFirstRefresh struct {
	net.PacketConn
	dropped atomic.Bool
}

func (d *dropFirstRefresh) WriteTo(b []byte, addr net.Addr) (int, error) {
	m := &stun.Message{Raw: append([]byte(nil), b...)}
	if stun.IsMessage(b) && m.Decode() == nil && m.Type.Method == stun.MethodRefresh && m.Type.Class == stun.ClassRequest &&
		d.dropped.CompareAndSwap(false, true) {
		return len(b), nil
	}
	return d.PacketConn.WriteTo(b, addr)
}

// TestCloseReleasesDespiteALostRefresh: the zero-lifetime refresh that
// releases an allocation is lost once; Close keeps the client open long
// enough for pion to send it again, and the relay frees the allocation.
func TestCloseReleasesDespiteALostRefresh(t *testing.T) {
	r := startRelay(t, ServerConfig{}, allowLoopback)
	var sock *dropFirstRefresh
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	a, err := Allocate(ctx, ClientConfig{Server: r.UDPAddr(), Credentials: r.Credentials(peerID(t), time.Minute),
		ListenUDP: func() (net.PacketConn, error) {
			pc, err := net.ListenPacket("udp4", "127.0.0.1:0")
			sock = &dropFirstRefresh{PacketConn: pc}
			return sock, err
		}})
	if err != nil {
		t.Fatal(err)
	}
	if n := r.Allocations(); n != 1 {
		t.Fatalf("%d allocations", n)
	}
	start := time.Now()
	a.Close()
	t.Logf("Close took %v", time.Since(start).Round(time.Millisecond))
	if !sock.dropped.Load() {
		t.Fatal("no refresh was sent on Close")
	}
	testkit.WaitFor(t, 2*time.Second, "the relay to free the allocation", func() bool { return r.Allocations() == 0 })
}

// TestKeepaliveIsAnswered: a keepalive from a UDP allocation's socket is
// answered by its relay, and fails once the relay is gone.
func TestKeepaliveIsAnswered(t *testing.T) {
	r := startRelay(t, ServerConfig{}, allowLoopback)
	a, err := allocate(t, r, r.Credentials(peerID(t), time.Minute), false)
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	if err := a.Keepalive(); err != nil {
		t.Fatalf("keepalive to a live relay: %v", err)
	}
	r.Close()
	if err := a.Keepalive(); err == nil {
		t.Fatal("a keepalive to a relay that is gone was answered")
	}
}

// TestRelayToRelay: with no policy at all (nothing introduced), two
// allocations on one relay reach each other once each permitted the
// relay's own address (PermitRelayAsync: two peers that both keep a warm
// relay), over UDP and TCP; an address that is not the relay's is still
// refused.
func TestRelayToRelay(t *testing.T) {
	rec := &securityLog{}
	r := startRelay(t, ServerConfig{Recorder: rec}, nil)
	a, err := allocate(t, r, r.Credentials(peerID(t), time.Minute), false)
	if err != nil {
		t.Fatal(err)
	}
	b, err := allocate(t, r, r.Credentials(peerID(t), time.Minute), true)
	if err != nil {
		t.Fatal(err)
	}
	permits := func() int {
		return len(rec.Events(func(ev event.Event) bool {
			return ev.Kind == event.KindRelay && ev.Detail == "permission" && ev.Outcome == event.OutcomeOK
		}))
	}
	a.PermitRelayAsync()
	b.PermitRelayAsync()
	a.permits.Wait()
	b.permits.Wait()
	// Each self-permission is granted (pion's channel binding behind it,
	// which asks the same handler, may be granted by now too).
	if got := permits(); got < 2 {
		t.Fatalf("%d permissions granted for the relay's own address, want 2 at least", got)
	}
	buf := make([]byte, 100)
	for _, tc := range []struct {
		name     string
		from, to *Allocation
	}{{"udp to tcp", a, b}, {"tcp to udp", b, a}} {
		if _, err := tc.from.Conn.WriteTo([]byte(tc.name), net.UDPAddrFromAddrPort(tc.to.Relayed)); err != nil {
			t.Fatal(err)
		}
		tc.to.Conn.SetReadDeadline(time.Now().Add(3 * time.Second))
		for {
			n, from, err := tc.to.Conn.ReadFrom(buf)
			if err != nil {
				t.Fatalf("%s: nothing arrived: %v", tc.name, err)
			}
			if n == 1 && buf[0] == 0 {
				continue // the permission's own datagram
			}
			if string(buf[:n]) != tc.name || from.String() != tc.from.Relayed.String() {
				t.Fatalf("%s: read %q from %v", tc.name, buf[:n], from)
			}
			break
		}
	}
	if err := a.Permit(netip.MustParseAddrPort("127.0.0.2:9")); !errors.Is(err, ErrRefused) {
		t.Fatalf("another address without a policy: %v, want ErrRefused", err)
	}
}
