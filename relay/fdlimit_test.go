package relay

import (
	"encoding/binary"
	"fmt"
	"net"
	"strconv"
	"testing"
	"time"

	"github.com/pion/stun/v3"

	"github.com/antnode/antnode/internal/testkit"
)

// tcpBinding sends a STUN Binding request over TCP to addr and reports
// whether it was answered within d.
func tcpBinding(addr string, d time.Duration) bool {
	c, err := net.DialTimeout("tcp4", addr, d)
	if err != nil {
		return false
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(d))
	if _, err := c.Write(stun.MustBuild(stun.TransactionID, stun.BindingRequest).Raw); err != nil {
		return false
	}
	hdr := make([]byte, 20)
	if _, err := c.Read(hdr); err != nil {
		return false
	}
	return binary.BigEndian.Uint32(hdr[4:8]) == 0x2112A442
}

// TestRelayTCPSurvivesFDExhaustion: the probe's attack. Under a file
// descriptor limit of 256, 300 idle connections to the relay's TCP port
// exhaust the process's descriptors: the relay reports itself not ready
// meanwhile, and once the connections go it answers again within the
// accept backoff (it used to stop accepting for good). The relay runs in
// a helper process, so that the test process's limit is never lowered.
func TestRelayTCPSurvivesFDExhaustion(t *testing.T) {
	if testkit.IsChild() {
		// Caps above the flood: the descriptors run out first.
		r := startRelay(t, ServerConfig{MaxTCPConns: 10_000, MaxTCPConnsPerIP: 10_000, TCPAuthTimeout: time.Minute}, allowLoopback)
		testkit.ServeChild(t, []string{"addr " + r.TCPAddr().String()}, map[string]func(string) string{
			"ready": func(string) string { return fmt.Sprint(r.Ready() == nil) },
			"rss":   func(string) string { return strconv.FormatUint(testkit.RSS(), 10) },
		})
		return
	}
	child := testkit.StartChild(t, "TestRelayTCPSurvivesFDExhaustion", 256)
	addr := child.Expect("addr")
	if !tcpBinding(addr, 5*time.Second) {
		t.Fatal("the relay does not answer before the flood")
	}
	flood := make([]net.Conn, 0, 300)
	defer func() {
		for _, c := range flood {
			c.Close()
		}
	}()
	for range 300 {
		c, err := net.DialTimeout("tcp4", addr, 5*time.Second)
		if err != nil {
			t.Fatalf("flood connection %d: %v", len(flood), err)
		}
		flood = append(flood, c)
	}
	testkit.WaitFor(t, 10*time.Second, "the relay to report itself not ready", func() bool { return child.Ask("ready") == "false" })
	if tcpBinding(addr, 300*time.Millisecond) {
		t.Fatal("answered with its descriptors exhausted: the flood did not exhaust them")
	}
	for _, c := range flood {
		c.Close()
	}
	flood = flood[:0]
	start := time.Now()
	deadline := start.Add(10 * time.Second)
	for !tcpBinding(addr, time.Second) {
		if time.Now().After(deadline) {
			t.Fatal("the relay's TCP listener did not answer again within 10 s of the flood's end")
		}
	}
	back := time.Since(start)
	t.Logf("answered again %v after 300 idle connections under a limit of 256 descriptors ended", back)
	if back > 2*time.Second {
		t.Errorf("answered again only after %v, want within the 1 s backoff (and a margin)", back)
	}
	testkit.WaitFor(t, 5*time.Second, "the relay to report itself ready", func() bool { return child.Ask("ready") == "true" })
}

// TestRelayTCPPartialFramesBoundMemory: the probe's partial-frame flood.
// 2 000 connections that each send most of a 65 KB frame and stop used
// to hold 290 MB (pion buffers a frame until it is complete); now a frame
// larger than the relay handles closes its connection at once. Partial
// frames of a size the relay does handle last until the frame deadline.
// The relay runs in a helper process, so that its RSS is its own.
func TestRelayTCPPartialFramesBoundMemory(t *testing.T) {
	if testkit.IsChild() {
		r := startRelay(t, ServerConfig{MaxTCPConns: 10_000, MaxTCPConnsPerIP: 10_000, TCPFrameTimeout: 3 * time.Second}, allowLoopback)
		testkit.ServeChild(t, []string{"addr " + r.TCPAddr().String()}, map[string]func(string) string{
			"rss":   func(string) string { return strconv.FormatUint(testkit.RSS(), 10) },
			"conns": func(string) string { return strconv.Itoa(r.tcp[0].Conns()) },
		})
		return
	}
	child := testkit.StartChild(t, "TestRelayTCPPartialFramesBoundMemory", 8192)
	addr := child.Expect("addr")
	rss := func() float64 {
		v, err := strconv.ParseUint(child.Ask("rss"), 10, 64)
		if err != nil {
			t.Fatal(err)
		}
		return float64(v) / (1 << 20)
	}
	before := rss()
	var conns []net.Conn
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	flood := func(n int, length uint16, send int) {
		body := make([]byte, send)
		for range n {
			c, err := net.DialTimeout("tcp4", addr, 5*time.Second)
			if err != nil {
				t.Fatal(err)
			}
			conns = append(conns, c)
			c.Write(append(stunHeader(length), body...)) // a closed connection refuses the rest: fine
		}
	}
	for _, step := range []struct {
		name   string
		n      int // connections
		length uint16
		send   int
		held   int // connections the relay holds (0: closed at once)
		growMB float64
	}{
		{"500 partial 65 KB frames", 500, 65000, 60_000, 0, 8},
		{"2000 partial 65 KB frames", 1500, 65000, 60_000, 0, 8},
		{"2000 partial 1.5 KB frames", 2000, 1500, 1000, 2000, 30},
	} {
		flood(step.n, step.length, step.send)
		if step.held == 0 {
			testkit.WaitFor(t, 10*time.Second, "the oversized frames' connections to close", func() bool { return child.Ask("conns") == "0" })
		}
		got := rss()
		t.Logf("%s: RSS %.0f MB (before the flood %.0f MB), %s connections held", step.name, got, before, child.Ask("conns"))
		if got-before > step.growMB*raceFactor {
			t.Errorf("%s: RSS grew %.0f MB, want at most %.0f", step.name, got-before, step.growMB*raceFactor)
		}
		for _, c := range conns {
			c.Close()
		}
		conns = conns[:0]
	}
	testkit.WaitFor(t, 10*time.Second, "every connection to end", func() bool { return child.Ask("conns") == "0" })
}
