package endpoint

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"testing"
	"time"

	"github.com/antnode/antnode/testnet"
)

// TestWriteTTL sends from a host one hop behind the internet router: a
// packet with TTL 1 dies at the router, one with TTL 2 arrives.
func TestWriteTTL(t *testing.T) {
	if os.Geteuid() != 0 || testnet.RequireTools() != nil {
		if os.Getenv("CI") != "" {
			t.Fatal("CI must run this test as root with the testbed tools")
		}
		t.Skip("needs root and the testbed tools (runs in CI)")
	}
	spec := testnet.Spec{Prefix: fmt.Sprintf("antbe%d-", os.Getpid()), Sites: []testnet.SiteSpec{{Name: "pub", Class: testnet.ClassPublic}}}
	tb, err := testnet.Build(context.Background(), spec)
	if err != nil {
		t.Fatal(err)
	}
	defer tb.Close()
	h := tb.Hosts[0]
	c, err := testnet.ListenUDP(h.NS, netip.AddrPortFrom(h.Addr, 0))
	if err != nil {
		t.Fatal(err)
	}
	ep, err := New(Config{Conn: c})
	if err != nil {
		t.Fatal(err)
	}
	defer ep.Close()
	sinkAddr := netip.AddrPortFrom(testnet.ServerAddr(1), 9000)
	sink, err := testnet.ListenUDP(tb.Server(), sinkAddr)
	if err != nil {
		t.Fatal(err)
	}
	defer sink.Close()
	for _, tc := range []struct {
		ttl  int
		body string
	}{{1, "ttl1"}, {2, "ttl2"}} {
		if err := ep.WriteTTL([]byte(tc.body), sinkAddr, tc.ttl); err != nil {
			t.Fatal(err)
		}
	}
	// A QUIC-era write without TTL still uses the default.
	if err := ep.WriteTo([]byte("default"), sinkAddr); err != nil {
		t.Fatal(err)
	}
	// Read until the two that must arrive have (a loaded machine's delay
	// line may take a while); ttl1, sent first on the same path, would
	// have arrived before them.
	got := map[string]bool{}
	buf := make([]byte, 100)
	sink.SetReadDeadline(time.Now().Add(5 * time.Second))
	for !got["ttl2"] || !got["default"] {
		n, _, err := sink.ReadFromUDPAddrPort(buf)
		if err != nil {
			break
		}
		got[string(buf[:n])] = true
	}
	if got["ttl1"] || !got["ttl2"] || !got["default"] {
		t.Fatalf("received %v; want ttl2 and default, not ttl1", got)
	}
}
