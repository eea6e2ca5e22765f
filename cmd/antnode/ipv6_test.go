package main

import (
	"net"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/antnode/antnode/internal/testkit"
)

// TestIPv6Node: a node whose --listen is an IPv6 address runs all its
// sockets in that family (control, STUN, TCP, relay): a bootstrap and a
// peer on [::1] connect a third node directly and through the relay, with
// verified transfers.
func TestIPv6Node(t *testing.T) {
	if c, err := net.ListenPacket("udp6", "[::1]:0"); err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("no IPv6 loopback: %v", err)
		}
		t.Skipf("no IPv6 loopback: %v", err)
	} else {
		c.Close()
	}
	dir := t.TempDir()
	bootKey, peerKey := dir+"/boot.key", dir+"/peer.key"
	_, bootID, _ := run("id", "--key", bootKey)
	_, peerID, _ := run("id", "--key", peerKey)
	port := freePortsOn(t, "::1")
	boot := strings.TrimSpace(bootID) + "@[::1]:" + strconv.Itoa(port)
	daemon(t, "--bootstrap", "--listen", "[::1]:"+strconv.Itoa(port), "--key", bootKey, "--metrics-addr", "off")
	health := freeTCP(t)
	daemon(t, "--listen", "[::1]:0", "--bootstrap-nodes", boot, "--key", peerKey, "--metrics-addr", health)
	testkit.WaitFor(t, 10*time.Second, "the peer to register", func() bool {
		code, _ := httpGet(t, "http://"+health+"/readyz", "")
		return code == 200
	})
	for _, tc := range []struct {
		name, relay, path string
	}{{"direct", "auto", "direct"}, {"relay", "force", "relay"}} {
		t.Run(tc.name, func(t *testing.T) {
			code, out, errOut := run("connect", strings.TrimSpace(peerID), "--bootstrap-nodes", boot, "--listen", "[::1]:0",
				"--relay", tc.relay, "--send", "256KiB", "--json", "--timeout", "10s")
			if code != exitOK {
				t.Fatalf("exit %d: %s %s", code, out, errOut)
			}
			if r := decode(t, out); !r.Connected || r.Path != tc.path || r.BytesVerified != 256<<10 {
				t.Fatalf("result %+v, want %s with 256 KiB verified", r, tc.path)
			}
		})
	}
}

func TestSocketFamily(t *testing.T) {
	tests := []struct{ hostport, udp, tcp string }{
		{"127.0.0.1:4433", "udp4", "tcp4"},
		{"0.0.0.0:0", "udp4", "tcp4"},
		{"[::]:4433", "udp6", "tcp6"},
		{"[2001:db8::1]:4433", "udp6", "tcp6"},
		{"[::ffff:192.0.2.1]:4433", "udp4", "tcp4"},
		{"bootstrap.example:4433", "udp4", "tcp4"},
		{"no port", "udp4", "tcp4"},
	}
	for _, tc := range tests {
		t.Run(tc.hostport, func(t *testing.T) {
			if u, c := udpNetwork(tc.hostport), tcpNetwork(tc.hostport); u != tc.udp || c != tc.tcp {
				t.Fatalf("%s, %s; want %s, %s", u, c, tc.udp, tc.tcp)
			}
		})
	}
}
