package main

import (
	"bytes"
	"context"
	"encoding/json"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/antnode/antnode/bootstrap"
	"github.com/antnode/antnode/endpoint"
	"github.com/antnode/antnode/identity"
	"github.com/antnode/antnode/traversal"
)

func startBootstrap(t *testing.T) string {
	t.Helper()
	id, _ := identity.Generate()
	ep, err := endpoint.Listen("udp4", "127.0.0.1:0", endpoint.Config{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ep.Close() })
	srv, err := bootstrap.NewServer(bootstrap.ServerConfig{Identity: id, Endpoint: ep})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close() })
	return id.ID().String() + "@" + srv.Addr().String()
}

func startPeer(t *testing.T, boot string) identity.PeerID {
	t.Helper()
	return startPeerNode(t, boot).ID()
}

// startPeerNode starts a peer node registered with boot (stopped by the
// test's cleanup).
func startPeerNode(t *testing.T, boot string) *traversal.Node {
	t.Helper()
	id, _ := identity.Generate()
	ep, err := endpoint.Listen("udp4", "127.0.0.1:0", endpoint.Config{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ep.Close() })
	bs, err := traversal.ParseBootstraps(boot)
	if err != nil {
		t.Fatal(err)
	}
	n, err := traversal.New(traversal.Config{Identity: id, Endpoint: ep, Bootstraps: bs})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { n.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := n.WaitReady(ctx); err != nil {
		t.Fatal(err)
	}
	return n
}

func run(args ...string) (int, string, string) {
	var out, errb bytes.Buffer
	code := realMain(context.Background(), args, &out, &errb)
	return code, out.String(), errb.String()
}

func decode(t *testing.T, s string) connectResult {
	t.Helper()
	var r connectResult
	if err := json.Unmarshal([]byte(strings.TrimSpace(s)), &r); err != nil {
		t.Fatalf("output %q is not one JSON object: %v", s, err)
	}
	return r
}

func TestConnectSucceedsWithVerifiedTransfer(t *testing.T) {
	boot := startBootstrap(t)
	peer := startPeer(t, boot)
	code, out, errOut := run("connect", peer.String(), "--bootstrap-nodes", boot, "--send", "256KiB", "--json", "--timeout", "10s")
	if code != exitOK {
		t.Fatalf("exit %d: %s %s", code, out, errOut)
	}
	r := decode(t, out)
	if !r.Connected || r.Path != "direct" || r.BytesVerified != 256<<10 || r.TimeToConnect <= 0 || r.Peer != peer.String() || r.Error != "" {
		t.Fatalf("result %+v", r)
	}
}

func TestConnectFailures(t *testing.T) {
	boot := startBootstrap(t)
	unknown, _ := identity.Generate()
	// A UDP port with nobody behind it.
	dead, _ := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	deadAddr := dead.LocalAddr().String()
	dead.Close()
	tests := []struct {
		name    string
		args    []string
		reason  string
		maxTime time.Duration
	}{
		{"unknown peer", []string{"--bootstrap-nodes", boot, "--timeout", "10s"}, "unknown_peer", 2 * time.Second},
		{"unreachable bootstrap", []string{"--bootstrap-nodes", deadAddr, "--timeout", "1s"}, "bootstrap_unreachable", 3 * time.Second},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			start := time.Now()
			code, out, _ := run(append([]string{"connect", unknown.ID().String(), "--json"}, tc.args...)...)
			if code == exitOK {
				t.Fatal("exit 0 on failure")
			}
			r := decode(t, out)
			if r.Connected || r.Reason != tc.reason || r.Error == "" || strings.Contains(r.Error, "\n") {
				t.Fatalf("result %+v, want reason %s and a one-line error", r, tc.reason)
			}
			if d := time.Since(start); d > tc.maxTime {
				t.Fatalf("took %v", d)
			}
		})
	}
	t.Run("human output names the reason", func(t *testing.T) {
		code, out, _ := run("connect", unknown.ID().String(), "--bootstrap-nodes", boot)
		if code == exitOK || !strings.Contains(out, "unknown_peer") {
			t.Fatalf("exit %d, output %q", code, out)
		}
	})
}

func TestUsageErrors(t *testing.T) {
	tests := []struct {
		name string
		args []string
	}{
		{"connect without peer", []string{"connect", "--bootstrap-nodes", "127.0.0.1:1"}},
		{"connect bad peer", []string{"connect", "xyz", "--bootstrap-nodes", "127.0.0.1:1"}},
		{"connect bad size", []string{"connect", strings.Repeat("a", 52), "--bootstrap-nodes", "127.0.0.1:1", "--send", "lots"}},
		{"peer without bootstraps", []string{"--listen", "127.0.0.1:0"}},
		{"bad log level", []string{"--bootstrap", "--log-level", "loud"}},
		{"unknown command", []string{"frobnicate"}},
		{"id without key", []string{"id"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if code, _, _ := run(tc.args...); code != exitUsage {
				t.Fatalf("exit %d, want %d", code, exitUsage)
			}
		})
	}
}

func TestIDCommand(t *testing.T) {
	path := filepath.Join(t.TempDir(), "node.key")
	code, out1, _ := run("id", "--key", path)
	if code != exitOK {
		t.Fatal(code)
	}
	_, out2, _ := run("id", "--key", path)
	if out1 != out2 {
		t.Fatal("the same key printed two IDs")
	}
	if _, err := identity.ParsePeerID(strings.TrimSpace(out1)); err != nil {
		t.Fatal(err)
	}
	os.WriteFile(path, []byte("garbage"), 0o600)
	if code, _, errOut := run("id", "--key", path); code != exitFailure || !strings.Contains(errOut, "malformed") {
		t.Fatalf("malformed key: exit %d, %q", code, errOut)
	}
}

func TestParseSize(t *testing.T) {
	tests := []struct {
		in   string
		want int64
		err  bool
	}{
		{"0", 0, false}, {"1048576", 1 << 20, false}, {"4MiB", 4 << 20, false}, {"10MB", 10e6, false},
		{"2K", 2048, false}, {"1GiB", 1 << 30, false}, {"-1", 0, true}, {"lots", 0, true}, {"99999999999GiB", 0, true},
	}
	for _, tc := range tests {
		got, err := parseSize(tc.in)
		if (err != nil) != tc.err || got != tc.want {
			t.Errorf("parseSize(%q) = %d, %v", tc.in, got, err)
		}
	}
}
