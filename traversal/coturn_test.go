package traversal

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/antnode/antnode/internal/testkit"

	"github.com/antnode/antnode/event"
	"github.com/antnode/antnode/relay"
)

// startCoturn runs Debian's coturn on loopback with a shared secret (TURN
// REST credentials) and returns its address and secret. It stops with the
// test. Outside CI a missing coturn skips; in CI it fails.
func startCoturn(t testing.TB) (netip.AddrPort, []byte) {
	t.Helper()
	bin, err := exec.LookPath("turnserver")
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatal("CI must install coturn (turnserver)")
		}
		t.Skip("coturn (turnserver) is not installed")
	}
	secret := "coturn-test-secret"
	// A port found free can be taken by another test's socket before
	// coturn binds it: a coturn that does not come up is stopped and
	// started again on another port (bounded).
	var errs []string
	for range 3 {
		addr, err := tryCoturn(t, bin, secret)
		if err == nil {
			return addr, []byte(secret)
		}
		errs = append(errs, err.Error())
	}
	t.Fatalf("coturn did not come up in 3 tries:\n%s", strings.Join(errs, "\n"))
	return netip.AddrPort{}, nil
}

// tryCoturn starts coturn on a free UDP port of loopback (UDP only: its
// TCP listener on the same number could collide with another socket) and
// returns its address once an allocation succeeds (within 5 s); on
// failure it stops coturn and returns why, with coturn's output.
func tryCoturn(t testing.TB, bin, secret string) (netip.AddrPort, error) {
	l, err := net.ListenPacket("udp4", "127.0.0.1:0") // a free port: bind, note, release
	if err != nil {
		return netip.AddrPort{}, err
	}
	port := l.LocalAddr().(*net.UDPAddr).Port
	l.Close()
	dir := t.TempDir()
	conf := filepath.Join(dir, "turnserver.conf")
	cfg := strings.Join([]string{
		"listening-ip=127.0.0.1", fmt.Sprintf("listening-port=%d", port), "relay-ip=127.0.0.1",
		"min-port=41000", "max-port=41999", "realm=antnode", "use-auth-secret", "static-auth-secret=" + secret,
		"no-tcp", "no-tls", "no-dtls", "no-cli", "fingerprint", "log-file=stdout", "simple-log", "verbose",
		"pidfile=" + filepath.Join(dir, "pid"), "userdb=" + filepath.Join(dir, "turndb"), "allow-loopback-peers",
	}, "\n") + "\n"
	if err := os.WriteFile(conf, []byte(cfg), 0o600); err != nil {
		return netip.AddrPort{}, err
	}
	cmd := exec.Command(bin, "-c", conf)
	out := &syncBuilder{}
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		return netip.AddrPort{}, err
	}
	stop := func() {
		cmd.Process.Kill()
		cmd.Wait()
	}
	addr := netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), uint16(port))
	// Ready when an allocation succeeds (bounded).
	deadline := time.Now().Add(5 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		a, err := relay.Allocate(ctx, relay.ClientConfig{Server: addr, Credentials: relay.NewCredentials([]byte(secret), testkit.Identity(t).ID(), time.Now(), time.Minute)})
		cancel()
		if err == nil {
			a.Close()
			t.Cleanup(stop)
			return addr, nil
		}
		if time.Now().After(deadline) {
			stop()
			return netip.AddrPort{}, fmt.Errorf("coturn on port %d: %w\n%s", port, err, out.String())
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// TestThroughCoturn connects two peers through Debian's coturn, a
// third-party TURN server, with credentials derived from its shared secret.
func TestThroughCoturn(t *testing.T) {
	addr, secret := startCoturn(t)
	b := startBootstrap(t)
	a := startNodeCfg(t, Config{Bootstraps: []Bootstrap{b}, Relay: RelayForce, TURN: &TURNServer{Addr: addr, Secret: secret}})
	peer := startNodeCfg(t, Config{Bootstraps: []Bootstrap{b}})
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	c, err := a.Connect(ctx, peer.ID())
	if err != nil {
		t.Fatal(err)
	}
	if c.Path() != event.PathRelay {
		t.Fatalf("path %s", c.Path())
	}
	res, err := c.SendVerified(ctx, 1<<20)
	if err != nil || res.Bytes != 1<<20 {
		t.Fatalf("transfer through coturn: %+v %v", res, err)
	}
}

// syncBuilder is a strings.Builder that a process writes while the test
// reads it.
type syncBuilder struct {
	mu sync.Mutex
	b  strings.Builder
}

func (s *syncBuilder) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuilder) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
