package testnet

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
	"syscall"
	"testing"
	"time"
)

// needRoot skips outside CI when not root; in CI (CI set) it fails instead,
// so a missing privilege never hides a test.
func needRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() == 0 && RequireTools() == nil {
		return
	}
	if os.Getenv("CI") != "" {
		t.Fatalf("CI must run the testbed tests as root with the tools installed: euid %d, %v", os.Geteuid(), RequireTools())
	}
	t.Skip("needs root and ip/nft/tc/conntrack/ethtool (runs in CI)")
}

// uniquePrefix names a test's namespaces after the test process (its
// whole ID, so that Cleanup knows the owner is alive): at most 16
// characters for a 7-digit ID and a 2-character tag.
func uniquePrefix(tag string) string { return fmt.Sprintf("antbt%d%s-", os.Getpid(), tag) }

func build(t *testing.T, spec Spec) *Testbed {
	t.Helper()
	tb, err := Build(context.Background(), spec)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tb.Close() })
	return tb
}

func leftovers(t *testing.T, prefix string) []string {
	t.Helper()
	out, err := exec.Command("ip", "netns", "list").Output()
	if err != nil {
		t.Fatal(err)
	}
	var left []string
	for _, l := range strings.Split(string(out), "\n") {
		if f := strings.Fields(l); len(f) > 0 && strings.HasPrefix(f[0], prefix) {
			left = append(left, f[0])
		}
	}
	return left
}

func allClassesSpec(prefix string, delay time.Duration) Spec {
	return Spec{Prefix: prefix, Link: Impairment{Delay: delay}, Sites: []SiteSpec{
		{Name: "pub", Class: ClassPublic},
		{Name: "eif", Class: ClassEIMEIF},
		{Name: "adf", Class: ClassEIMADF},
		{Name: "apdf", Class: ClassEIMAPDF, Hosts: 2, Hairpin: true},
		{Name: "apdf-nohp", Class: ClassEIMAPDF, Hosts: 2},
		{Name: "sym", Class: ClassAPDM},
		{Name: "cgn", Class: ClassCGNAT, Hosts: 2, Hairpin: true},
		{Name: "blk", Class: ClassUDPBlocked},
	}}
}

// TestBuildVerifyTeardown builds every class, checks that the
// self-verification classifies each router correctly (including hairpin
// on and off), and that teardown leaves nothing behind.
func TestBuildVerifyTeardown(t *testing.T) {
	needRoot(t)
	prefix := uniquePrefix("a")
	spec := allClassesSpec(prefix, 10*time.Millisecond)
	tb, err := Build(context.Background(), spec)
	if err != nil {
		t.Fatal(err)
	}
	meas, err := tb.Verify(context.Background(), spec)
	if err != nil {
		tb.Close()
		t.Fatal(err)
	}
	for _, s := range spec.Sites {
		m := meas[s.Name]
		wm, wf := s.Class.Behaviour()
		if m.Mapping != wm || m.Filtering != wf || !m.Verified {
			t.Errorf("%s: measured %+v", s.Name, m)
		}
	}
	if hp := meas["apdf-nohp"].Hairpin; hp == nil || *hp {
		t.Errorf("hairpin off not measured as off: %v", hp)
	}
	if hp := meas["apdf"].Hairpin; hp == nil || !*hp {
		t.Errorf("hairpin on not measured as on: %v", hp)
	}
	teardown := tb.Close()
	t.Logf("%d namespaces: build %v, teardown %v", len(tb.Namespaces), tb.BuildTime.Round(time.Millisecond), teardown.Round(time.Millisecond))
	if left := leftovers(t, prefix); len(left) > 0 {
		t.Fatalf("left behind: %v", left)
	}
}

// TestVerifyUnderLoss checks that the self-verification holds on lossy
// access links (10 % each way, five times CI's lossy pass): its
// unsolicited probes are repeated and a site that does not verify is
// measured again, so a lost probe is not taken for a filter.
func TestVerifyUnderLoss(t *testing.T) {
	needRoot(t)
	lossy := &Impairment{Delay: 5 * time.Millisecond, Loss: 10}
	spec := Spec{Prefix: uniquePrefix("l"), Sites: []SiteSpec{
		{Name: "public", Class: ClassPublic, Link: lossy},
		{Name: "eif", Class: ClassEIMEIF, Link: lossy},
		{Name: "adf", Class: ClassEIMADF, Link: lossy},
		{Name: "apdf", Class: ClassEIMAPDF, Link: lossy},
		{Name: "sym", Class: ClassAPDM, Link: lossy},
	}}
	tb := build(t, spec)
	meas, err := tb.Verify(context.Background(), spec)
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range spec.Sites {
		if m := meas[s.Name]; !m.Verified {
			t.Errorf("%s: measured %+v", s.Name, m)
		} else if m.Detail != "" {
			t.Logf("%s: %s", s.Name, m.Detail)
		}
	}
}

// TestWrongRulesetIsDetected loads a full-cone ruleset onto a router that
// claims to be port-restricted: verification must refuse it.
func TestWrongRulesetIsDetected(t *testing.T) {
	needRoot(t)
	spec := Spec{Prefix: uniquePrefix("w"), Sites: []SiteSpec{{Name: "apdf", Class: ClassEIMAPDF}, {Name: "sym", Class: ClassAPDM}}}
	tb := build(t, spec)
	r := tb.RouterOf("apdf")
	r.Ruleset.Filtering = "eif" // the mistake
	if err := tb.reload(context.Background(), r); err != nil {
		t.Fatal(err)
	}
	s := tb.RouterOf("sym")
	s.Ruleset.Mapping, s.Ruleset.Filtering = "eim", "apdf" // a "symmetric" NAT that preserves ports
	if err := tb.reload(context.Background(), s); err != nil {
		t.Fatal(err)
	}
	meas, err := tb.Verify(context.Background(), spec)
	if err == nil {
		t.Fatal("a wrong ruleset passed verification")
	}
	if m := meas["apdf"]; m.Verified || m.Filtering != "EIF" {
		t.Fatalf("apdf site measured %+v", m)
	}
	if m := meas["sym"]; m.Verified || m.Mapping != "EIM" {
		t.Fatalf("sym site measured %+v", m)
	}
	if !strings.Contains(err.Error(), "site apdf") || !strings.Contains(err.Error(), "site sym") {
		t.Fatalf("error does not name both sites: %v", err)
	}
}

// TestConcurrentTestbedsDoNotInterfere builds two testbeds with the same
// address plan at once and verifies both at once.
func TestConcurrentTestbedsDoNotInterfere(t *testing.T) {
	needRoot(t)
	var wg sync.WaitGroup
	errs := make([]error, 2)
	for i := range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			spec := Spec{Prefix: uniquePrefix(fmt.Sprintf("c%d", i)), Link: Impairment{Delay: 5 * time.Millisecond},
				Sites: []SiteSpec{{Name: "eif", Class: ClassEIMEIF}, {Name: "sym", Class: ClassAPDM}, {Name: "adf", Class: ClassEIMADF}}}
			tb, err := Build(context.Background(), spec)
			if err != nil {
				errs[i] = err
				return
			}
			defer tb.Close()
			_, errs[i] = tb.Verify(context.Background(), spec)
		}()
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Errorf("testbed %d: %v", i, err)
		}
	}
}

// TestDelayLine measures the RTT through two impaired access links.
func TestDelayLine(t *testing.T) {
	needRoot(t)
	delay := 15 * time.Millisecond
	spec := Spec{Prefix: uniquePrefix("d"), Link: Impairment{Delay: delay}, Sites: []SiteSpec{{Name: "pub", Class: ClassPublic}}}
	tb := build(t, spec)
	ps, err := startProbeServers(tb.Server())
	if err != nil {
		t.Fatal(err)
	}
	defer ps.close()
	h := tb.Hosts[0]
	c, err := ListenUDP(h.NS, netip.AddrPortFrom(h.Addr, 0))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	var rtts []float64
	for range 10 {
		start := time.Now()
		if !binding(c, probeServerAddrs(false)[0], 1, time.Second).IsValid() {
			t.Fatal("no answer through the delay line")
		}
		rtts = append(rtts, float64(time.Since(start).Microseconds())/1000)
	}
	med := percentile(rtts, 50)
	// One impaired access link on the path: RTT = 2 x delay.
	if want := 2 * float64(delay.Milliseconds()); med < want || med > want+10 {
		t.Fatalf("median RTT %.1f ms through a %v link, want about %.0f ms", med, delay, want)
	}
	t.Logf("median RTT %.1f ms (2 x %v one-way)", med, delay)
}

func TestLossAndFaults(t *testing.T) {
	needRoot(t)
	ctx := context.Background()
	spec := Spec{Prefix: uniquePrefix("f"), Sites: []SiteSpec{
		{Name: "lossy", Class: ClassPublic, Link: &Impairment{Loss: 50}},
		{Name: "apdf", Class: ClassEIMAPDF},
		{Name: "slow", Class: ClassPublic, Link: &Impairment{RateKbit: 800}},
	}}
	tb := build(t, spec)
	ps, err := startProbeServers(tb.Server())
	if err != nil {
		t.Fatal(err)
	}
	defer ps.close()
	t.Run("loss", func(t *testing.T) {
		h := tb.HostsOf("lossy")[0]
		c, _ := ListenUDP(h.NS, netip.AddrPortFrom(h.Addr, 0))
		defer c.Close()
		answered := 0
		for range 100 {
			if binding(c, probeServerAddrs(false)[0], 1, 50*time.Millisecond).IsValid() {
				answered++
			}
		}
		// Two traversals at 50 % each: about 25 % of round trips survive.
		if answered < 8 || answered > 45 {
			t.Fatalf("%d of 100 round trips through 50%% loss each way", answered)
		}
	})
	t.Run("rate", func(t *testing.T) {
		// 200 kB sent at once through an 800 kbit/s tbf (100 ms queue):
		// only the queue and the burst get through in the first 300 ms.
		h := tb.HostsOf("slow")[0]
		c, _ := ListenUDP(h.NS, netip.AddrPortFrom(h.Addr, 0))
		defer c.Close()
		sink, err := ListenUDP(tb.Server(), netip.AddrPortFrom(ServerAddr(2), 9999))
		if err != nil {
			t.Fatal(err)
		}
		defer sink.Close()
		payload := make([]byte, 1000)
		for range 200 {
			c.WriteToUDPAddrPort(payload, netip.AddrPortFrom(ServerAddr(2), 9999))
		}
		got := 0
		buf := make([]byte, 1500)
		sink.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
		for {
			n, _, err := sink.ReadFromUDPAddrPort(buf)
			if err != nil {
				break
			}
			got += n
		}
		if got < 5000 || got > 60000 {
			t.Fatalf("%d of 200000 bytes passed an 800 kbit/s link in 300 ms", got)
		}
		t.Logf("%d of 200000 bytes passed", got)
	})
	h := tb.HostsOf("apdf")[0]
	c, _ := ListenUDP(h.NS, netip.AddrPortFrom(h.Addr, 0))
	defer c.Close()
	before := binding(c, probeServerAddrs(false)[0], 3, 300*time.Millisecond)
	if !before.IsValid() {
		t.Fatal("no mapping")
	}
	t.Run("direct blocked keeps the servers", func(t *testing.T) {
		if err := tb.SetDirectBlocked(ctx, "apdf", true); err != nil {
			t.Fatal(err)
		}
		if !binding(c, probeServerAddrs(false)[0], 3, 300*time.Millisecond).IsValid() {
			t.Fatal("servers unreachable with direct blocked")
		}
		// The NATed host's packets to a peer outside the server network
		// are dropped; after unblocking they pass. (The path to the peer
		// is the 50 %-lossy one, so several tries each way.)
		pub := tb.HostsOf("lossy")[0]
		pc, _ := ListenUDP(pub.NS, netip.AddrPortFrom(pub.Addr, 0))
		defer pc.Close()
		to := pc.LocalAddr().(*net.UDPAddr).AddrPort()
		for range 10 {
			c.WriteToUDPAddrPort([]byte("blocked"), to)
		}
		if receives(pc, 300*time.Millisecond, "blocked")["blocked"] {
			t.Fatal("a direct packet passed while blocked")
		}
		if err := tb.SetDirectBlocked(ctx, "apdf", false); err != nil {
			t.Fatal(err)
		}
		for range 10 {
			c.WriteToUDPAddrPort([]byte("open"), to)
		}
		if !receives(pc, 300*time.Millisecond, "open")["open"] {
			t.Fatal("direct packets still dropped after unblocking")
		}
	})
	t.Run("transmit counter", func(t *testing.T) {
		before, err := TxBytes(h.NS)
		if err != nil {
			t.Fatal(err)
		}
		payload := make([]byte, 1000)
		for range 100 {
			c.WriteToUDPAddrPort(payload, probeServerAddrs(false)[0])
		}
		after, err := TxBytes(h.NS)
		if err != nil {
			t.Fatal(err)
		}
		// 100 datagrams of 1000 bytes with their UDP, IP and Ethernet
		// headers; a little more if something else went out.
		if d := after - before; d < 100*1042 || d > 100*1042+20000 {
			t.Fatalf("eth0 sent %d bytes for 100 datagrams of 1000 bytes", d)
		}
	})
	t.Run("address change remaps", func(t *testing.T) {
		hh := tb.HostsOf("apdf")[0]
		na, err := tb.ChangeAddress(ctx, &hh)
		if err != nil || na == h.Addr {
			t.Fatalf("new address %v: %v", na, err)
		}
		c2, err := ListenUDP(hh.NS, netip.AddrPortFrom(na, before.Port()))
		if err != nil {
			t.Fatalf("port %d on the new address: %v", before.Port(), err)
		}
		defer c2.Close()
		after := binding(c2, probeServerAddrs(false)[0], 3, 300*time.Millisecond)
		if !after.IsValid() || after == before {
			t.Fatalf("mapping %v after the address change, was %v", after, before)
		}
	})
	t.Run("udp timeout and conntrack flush", func(t *testing.T) {
		if err := tb.SetUDPTimeout(ctx, "apdf", 5); err != nil {
			t.Fatal(err)
		}
		out, err := runIn(ctx, tb.RouterOf("apdf").NS, "sysctl", "-n", "net.netfilter.nf_conntrack_udp_timeout")
		if err != nil || strings.TrimSpace(out) != "5" {
			t.Fatalf("timeout %q %v", out, err)
		}
		if err := tb.FlushConntrack(ctx, "apdf"); err != nil {
			t.Fatal(err)
		}
		out, _ = runIn(ctx, tb.RouterOf("apdf").NS, "conntrack", "-L")
		if strings.Contains(out, "udp") {
			t.Fatalf("conntrack not flushed: %s", out)
		}
	})
}

// TestRunnerSIGINTLeavesNothing starts the testbed command, interrupts it
// while connects run, and checks that no namespace or process is left.
func TestRunnerSIGINTLeavesNothing(t *testing.T) {
	needRoot(t)
	dir := t.TempDir()
	bin, tbBin := filepath.Join(dir, "antnode"), filepath.Join(dir, "testbed")
	for _, b := range [][2]string{{bin, "../cmd/antnode"}, {tbBin, "./cmd/testbed"}} {
		if out, err := exec.Command("go", "build", "-o", b[0], b[1]).CombinedOutput(); err != nil {
			t.Fatalf("build %s: %v\n%s", b[1], err, out)
		}
	}
	prefix := uniquePrefix("s")
	cmd := exec.Command(tbBin, "--bin", bin, "--prefix", prefix, "--classes", "public,eim-eif", "--runs", "50",
		"--report", filepath.Join(dir, "r.json"), "--expect", "expectations.json", "--scenarios", "none")
	var out lockedBuffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(60 * time.Second)
	for !strings.Contains(out.String(), "run  1") {
		if time.Now().After(deadline) {
			cmd.Process.Kill()
			t.Fatalf("no connect ran within 60 s:\n%s", out.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
	cmd.Process.Signal(syscall.SIGINT)
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case <-done:
	case <-time.After(60 * time.Second):
		cmd.Process.Kill()
		t.Fatal("the runner did not exit within 60 s of SIGINT")
	}
	if left := leftovers(t, prefix); len(left) > 0 {
		removeNamespaces(left)
		t.Fatalf("namespaces left after SIGINT: %v", left)
	}
	if ps, _ := exec.Command("pgrep", "-f", bin).Output(); len(strings.TrimSpace(string(ps))) > 0 {
		t.Fatalf("processes left after SIGINT: %s", ps)
	}
}
