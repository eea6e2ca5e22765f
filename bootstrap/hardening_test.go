package bootstrap

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"testing"
	"testing/synctest"
	"time"

	"github.com/failsafe-go/failsafe-go"
	"github.com/quic-go/quic-go/quicvarint"

	"github.com/antnode/antnode/bootstrap/wire"
	"github.com/antnode/antnode/event"
	"github.com/antnode/antnode/identity"
	"github.com/antnode/antnode/internal/testkit"
)

// TestRegistrationCapPerIP: one source address registers at most its cap
// (it filled the whole registry before); the next registration from it is
// refused as rate limited, which the client reports as such, while a peer
// at another address still registers.
func TestRegistrationCapPerIP(t *testing.T) {
	srv := startServer(t, ServerConfig{MaxPeers: 20, MaxPeersPerIP: 2})
	for range 2 {
		ready(t, startClient(t, srv, ClientConfig{}))
	}
	third := startClient(t, srv, ClientConfig{TCPFallback: true, TCPDelay: 10 * time.Millisecond})
	ctx, cancel := context.WithTimeout(t.Context(), 500*time.Millisecond)
	defer cancel()
	if err := third.WaitReady(ctx); err == nil {
		t.Fatal("a third registration from one address was accepted")
	}
	err := third.Status().LastError
	if classify(err) != event.ReasonRateLimited {
		t.Fatalf("refused registration: %v classified %s, want rate_limited", err, classify(err))
	}
	if srv.NumPeers() != 2 {
		t.Fatalf("%d peers registered, want the cap of 2", srv.NumPeers())
	}
	other := startClient(t, srv, ClientConfig{Endpoint: newEndpoint(t, "127.0.0.2:0")})
	ready(t, other)
}

// TestRefusedRegistrationError: the client turns a refusal into an error
// that names it (a reason, a sentinel), for both refusal codes, through
// the Error frame and through the close code alone.
func TestRefusedRegistrationError(t *testing.T) {
	for _, tc := range []struct {
		code     wire.Code
		reason   event.Reason
		sentinel error
	}{
		{wire.CodeRegistryFull, event.ReasonRegistryFull, ErrRegistryFull},
		{wire.CodeRateLimited, event.ReasonRateLimited, ErrRateLimited},
	} {
		err := fmt.Errorf("register: %w", &RequestError{Code: tc.code})
		if r, ok := event.ReasonOf(err); !ok || r != tc.reason || classify(err) != tc.reason || !errors.Is(err, tc.sentinel) || !refused(err) {
			t.Errorf("%s: reason %s (%v), classified %s, refused %v", tc.code, r, ok, classify(err), refused(err))
		}
	}
	if refused(ErrUnavailable) || refused(nil) {
		t.Error("an unreachable bootstrap counts as a refusal")
	}
}

// TestRefusedRegistrationBacksOff: after a refusal the client waits at
// least RefusedBackoff before it registers again (the exponential backoff
// alone starts at MinBackoff), in a bubble whose clock moves only when
// everything waits.
func TestRefusedRegistrationBacksOff(t *testing.T) {
	const minD, maxD, refusedD = 100 * time.Millisecond, 30 * time.Second, 5 * time.Second
	for _, tc := range []struct {
		name  string
		err   error
		least time.Duration
	}{
		{"registry full", &RequestError{Code: wire.CodeRegistryFull}, refusedD},
		{"address at its cap", &RequestError{Code: wire.CodeRateLimited}, refusedD},
		{"unreachable", ErrUnavailable, minD},
	} {
		t.Run(tc.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				var delays []time.Duration
				policy := registrationRetry(minD, maxD, refusedD, func() bool { return false },
					func(e failsafe.ExecutionScheduledEvent[int]) { delays = append(delays, e.Delay) })
				n := 0
				failsafe.With(policy).Get(func() (int, error) {
					if n++; n <= 3 {
						return 0, fmt.Errorf("register: %w", tc.err)
					}
					return n, nil
				})
				if len(delays) != 3 {
					t.Fatalf("%d retries", len(delays))
				}
				if delays[0] < tc.least || (tc.least == minD && delays[0] >= refusedD) {
					t.Fatalf("first retry after %v, want at least %v", delays[0], tc.least)
				}
			})
		})
	}
}

// dialTCPControl opens a control connection over TLS on TCP as id.
func dialTCPControl(t *testing.T, srv *testServer, id *identity.Identity) *tls.Conn {
	t.Helper()
	raw, err := net.Dial("tcp4", srv.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	tc := tls.Client(raw, id.ClientTLS(identity.PeerID{}, wire.ALPN))
	t.Cleanup(func() { tc.Close() })
	if err := tc.HandshakeContext(t.Context()); err != nil {
		t.Fatal(err)
	}
	return tc
}

// registerTCP registers id over TCP and waits for Registered.
func registerTCP(t *testing.T, srv *testServer, id *identity.Identity) *tls.Conn {
	t.Helper()
	tc := dialTCPControl(t, srv, id)
	if _, err := tc.Write(mustMarshal(t, &wire.Register{Version: wire.Version})); err != nil {
		t.Fatal(err)
	}
	tc.SetReadDeadline(time.Now().Add(5 * time.Second))
	if m, err := wire.NewReader(tc).Read(); err != nil {
		t.Fatal(err)
	} else if _, ok := m.(*wire.Registered); !ok {
		t.Fatalf("got %s, want registered", m.Type())
	}
	tc.SetReadDeadline(time.Time{})
	return tc
}

// waitClosed waits (at most d) for the server to close c, and returns how
// long it took.
func waitClosed(t *testing.T, c net.Conn, d time.Duration) time.Duration {
	t.Helper()
	start := time.Now()
	c.SetReadDeadline(start.Add(d))
	_, err := io.Copy(io.Discard, c)
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		t.Fatalf("connection still open after %v", d)
	}
	return time.Since(start)
}

func (s *testServer) registered(id identity.PeerID) bool {
	for _, p := range s.Peers() {
		if p.ID == id {
			return true
		}
	}
	return false
}

// TestSilentTCPRegistrationExpires: a registration over TCP that sends
// nothing expires after IdleTimeout, as one over QUIC does (TCP ones
// never expired).
func TestSilentTCPRegistrationExpires(t *testing.T) {
	const idle = 400 * time.Millisecond
	srv := startServer(t, ServerConfig{IdleTimeout: idle})
	silent := newIdentity(t)
	tc := registerTCP(t, srv, silent)
	if !srv.registered(silent.ID()) {
		t.Fatal("not registered")
	}
	testkit.WaitFor(t, 10*idle, "the silent TCP registration to expire", func() bool { return !srv.registered(silent.ID()) })
	waitClosed(t, tc, 5*time.Second)
}

// TestTCPDeadlines: a TCP control connection that authenticates nothing
// ends at HandshakeTimeout; a registered one that leaves a frame
// incomplete ends at FrameTimeout, long before its idle timeout.
func TestTCPDeadlines(t *testing.T) {
	const handshake, frame = 300 * time.Millisecond, 200 * time.Millisecond
	srv := startServer(t, ServerConfig{HandshakeTimeout: handshake, FrameTimeout: frame, IdleTimeout: time.Minute})
	raw, err := net.Dial("tcp4", srv.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	if d := waitClosed(t, raw, 10*handshake); d < handshake/2 {
		t.Errorf("closed after %v, before the handshake deadline", d)
	}
	tc := registerTCP(t, srv, newIdentity(t))
	partial := quicvarint.Append(quicvarint.Append(nil, uint64(wire.TypePing)), 60_000)
	if _, err := tc.Write(append(partial, make([]byte, 1000)...)); err != nil {
		t.Fatal(err)
	}
	if d := waitClosed(t, tc, 5*time.Second); d > 10*frame {
		t.Errorf("a partial frame held the connection %v (frame deadline %v)", d, frame)
	}
}

// TestUnknownFramesCountAgainstMessageRate: frames of unknown types (from
// a newer peer, or a flood) are ignored but counted: a flood of them
// disconnects the peer like any other message flood.
func TestUnknownFramesCountAgainstMessageRate(t *testing.T) {
	srv := startServer(t, ServerConfig{MessageRate: 0.001, MessageBurst: 5})
	conn, str := rawControl(t, srv)
	flood := mustMarshal(t, &wire.Register{Version: wire.Version})
	for range 20 {
		flood = append(flood, frameBytes(0x3f00, make([]byte, 4096))...)
	}
	str.Write(flood) // fails once the server has closed: fine

	if got := closedByServer(t, conn); got != closeProtocol {
		t.Fatalf("close code %#x, want protocol (message rate)", got)
	}
}

// TestTCPConnectionCaps: control connections past the per-IP cap are
// closed at once.
func TestTCPConnectionCaps(t *testing.T) {
	srv := startServer(t, ServerConfig{MaxTCPConnsPerIP: 2})
	for range 2 {
		c, err := net.Dial("tcp4", srv.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
	}
	testkit.WaitFor(t, 5*time.Second, "2 connections held", func() bool { return srv.tcp.Conns() == 2 })
	c, err := net.Dial("tcp4", srv.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if d := waitClosed(t, c, 5*time.Second); d > time.Second {
		t.Fatalf("the connection past the cap closed after %v, want at once", d)
	}
}

// TestTCPListenerSurvivesFDExhaustion: under a limit of 256 file
// descriptors, 300 idle connections to the TCP control port exhaust the
// bootstrap's descriptors: it reports itself not ready meanwhile, and
// once they go it completes TLS handshakes again within the accept
// backoff (its accept loop used to end for good). The bootstrap runs in a
// helper process, so that the test process's limit is never lowered.
func TestTCPListenerSurvivesFDExhaustion(t *testing.T) {
	if testkit.IsChild() {
		srv := startServer(t, ServerConfig{MaxTCPConns: 10_000, MaxTCPConnsPerIP: 10_000, HandshakeTimeout: time.Minute})
		testkit.ServeChild(t, []string{"addr " + srv.Addr().String()}, map[string]func(string) string{
			"ready": func(string) string { return strconv.FormatBool(srv.Ready() == nil) },
		})
		return
	}
	child := testkit.StartChild(t, "TestTCPListenerSurvivesFDExhaustion", 256)
	addr := child.Expect("addr")
	id := newIdentity(t)
	handshake := func(d time.Duration) bool {
		raw, err := net.DialTimeout("tcp4", addr, d)
		if err != nil {
			return false
		}
		defer raw.Close()
		ctx, cancel := context.WithTimeout(t.Context(), d)
		defer cancel()
		return tls.Client(raw, id.ClientTLS(identity.PeerID{}, wire.ALPN)).HandshakeContext(ctx) == nil
	}
	if !handshake(5 * time.Second) {
		t.Fatal("no handshake before the flood")
	}
	var flood []net.Conn
	defer func() {
		for _, c := range flood {
			c.Close()
		}
	}()
	for range 300 {
		c, err := net.DialTimeout("tcp4", addr, 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		flood = append(flood, c)
	}
	testkit.WaitFor(t, 10*time.Second, "the bootstrap to report itself not ready", func() bool { return child.Ask("ready") == "false" })
	for _, c := range flood {
		c.Close()
	}
	flood = nil
	start := time.Now()
	for !handshake(time.Second) {
		if time.Since(start) > 10*time.Second {
			t.Fatal("no handshake within 10 s of the flood's end")
		}
	}
	back := time.Since(start)
	t.Logf("handshakes again %v after 300 idle connections under a limit of 256 descriptors ended", back)
	if back > 2*time.Second {
		t.Errorf("handshakes again only after %v, want within the 1 s backoff (and a margin)", back)
	}
	testkit.WaitFor(t, 5*time.Second, "the bootstrap to report itself ready", func() bool { return child.Ask("ready") == "true" })
}
