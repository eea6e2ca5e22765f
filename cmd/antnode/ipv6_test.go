package main

import (
	"encoding/json"
	"maps"
	"net/netip"
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
	testkit.NeedIPv6Loopback(t)
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
	// A dual-stack diagnosis against an IPv6-only bootstrap: IPv6 works,
	// IPv4 is not tested (no bootstrap offers a socket in it), not failed.
	t.Run("diagnose", func(t *testing.T) {
		code, out, errOut := run("diagnose", "--bootstrap-nodes", boot, "--listen", "0.0.0.0:0,[::]:0", "--json", "--timeout", "15s")
		if code != exitOK && code != exitFailure {
			t.Fatalf("exit %d: %s", code, errOut)
		}
		var rep diagnoseReport
		if err := json.Unmarshal([]byte(out), &rep); err != nil {
			t.Fatalf("not JSON: %v\n%s", err, out)
		}
		if len(rep.Families) != 2 || rep.Families[0].Family != "ipv6" || !rep.Families[0].Works ||
			rep.Families[1].Family != "ipv4" || rep.Families[1].Works || rep.Families[1].Asked != 0 {
			t.Fatalf("families %+v, want ipv6 working and ipv4 not tested", rep.Families)
		}
		_, text, _ := run("diagnose", "--bootstrap-nodes", boot, "--listen", "0.0.0.0:0,[::]:0", "--timeout", "15s")
		if !strings.Contains(text, "?    ipv4      not tested") {
			t.Fatalf("the text report does not say IPv4 was not tested:\n%s", text)
		}
	})
}

// TestDualStackBootstrap: a bootstrap given one --listen address per
// family registers an IPv4 peer and an IPv6 peer, each over its own
// family, introduces connections in each family, and connects an
// IPv6-only node to an IPv4-only one through its relay (which listens in
// both families, with allocations on its IPv4 address); a peer given two
// addresses is refused with the reason.
func TestDualStackBootstrap(t *testing.T) {
	testkit.NeedIPv6Loopback(t)
	dir := t.TempDir()
	bootKey := dir + "/boot.key"
	_, bootID, _ := run("id", "--key", bootKey)
	bootID = strings.TrimSpace(bootID)
	p4, p6 := freePortsOn(t, "127.0.0.1"), freePortsOn(t, "::1")
	boot4, boot6 := bootID+"@127.0.0.1:"+strconv.Itoa(p4), bootID+"@[::1]:"+strconv.Itoa(p6)
	out, _ := daemon(t, "--bootstrap", "--listen", "127.0.0.1:"+strconv.Itoa(p4)+",[::1]:"+strconv.Itoa(p6), "--key", bootKey, "--metrics-addr", "off")
	testkit.WaitFor(t, 10*time.Second, "the bootstrap to name both sockets", func() bool {
		return strings.Contains(out.String(), "listening on 127.0.0.1:"+strconv.Itoa(p4)+" and [::1]:"+strconv.Itoa(p6))
	})
	peers := map[string]string{} // name -> peer ID of a daemon
	secret := dir + "/turn.secret"
	if err := os.WriteFile(secret, []byte("s\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, p := range []struct {
		name, listen, boot string
		extra              []string
	}{
		{"ipv4", "127.0.0.1:0", boot4, nil},
		{"ipv6", "[::1]:0", boot6, nil},
		// Its relay is a TURN server that does not answer: the IPv6
		// side's allocation reaches it at its observed IPv4 address.
		{"ipv4 without a relay", "127.0.0.1:0", boot4, []string{"--turn-server", "127.0.0.1:9", "--turn-secret-file", secret}},
		{"dual-stack", "0.0.0.0:0,[::]:0", boot4, nil},
	} {
		key := dir + "/" + strings.ReplaceAll(p.name, " ", "-") + ".key"
		_, id, _ := run("id", "--key", key)
		peers[p.name] = strings.TrimSpace(id)
		health := freeTCP(t)
		daemon(t, append([]string{"--listen", p.listen, "--bootstrap-nodes", p.boot, "--key", key, "--metrics-addr", health}, p.extra...)...)
		testkit.WaitFor(t, 10*time.Second, "the "+p.name+" peer to register", func() bool {
			code, _ := httpGet(t, "http://"+health+"/readyz", "")
			return code == 200
		})
	}
	for _, tc := range []struct{ name, to, listen, boot, path, family string }{
		{"ipv4 direct", "ipv4", "127.0.0.1:0", boot4, "direct", "ipv4"},
		{"ipv6 direct", "ipv6", "[::1]:0", boot6, "direct", "ipv6"},
		{"ipv6-only to ipv4-only through the relay", "ipv4", "[::1]:0", boot6, "relay", "ipv6"},
		{"ipv4-only to ipv6-only through the relay", "ipv6", "127.0.0.1:0", boot4, "relay", "ipv4"},
		{"ipv6-only to an ipv4-only peer whose relay does not answer", "ipv4 without a relay", "[::1]:0", boot6, "relay", "ipv6"},
		// The dual-stack peer registered over IPv4; the bootstrap observed
		// its IPv6 address too (a Binding request with its token).
		{"ipv6-only to dual-stack", "dual-stack", "[::1]:0", boot6, "direct", "ipv6"},
		{"ipv4-only to dual-stack", "dual-stack", "127.0.0.1:0", boot4, "direct", "ipv4"},
		{"dual-stack to dual-stack: IPv6 wins the race", "dual-stack", "0.0.0.0:0,[::]:0", boot4, "direct", "ipv6"},
		{"dual-stack to ipv4-only", "ipv4", "0.0.0.0:0,[::]:0", boot4, "direct", "ipv4"},
		{"dual-stack to ipv6-only", "ipv6", "0.0.0.0:0,[::]:0", boot4, "direct", "ipv6"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, out, errOut := run("connect", peers[tc.to], "--bootstrap-nodes", tc.boot, "--listen", tc.listen,
				"--send", "64KiB", "--json", "--timeout", "10s")
			if code != exitOK {
				t.Fatalf("exit %d: %s %s", code, out, errOut)
			}
			r := decode(t, out)
			if !r.Connected || r.Path != tc.path || r.BytesVerified != 64<<10 || r.Family != tc.family || r.NAT64 != "" {
				t.Fatalf("result %+v, want %s over %s with 64 KiB verified", r, tc.path, tc.family)
			}
			// The NAT in each family the socket serves, the old field
			// that of the family it registered in.
			wantFams := []string{family(tc.listen)}
			if isDual(tc.listen) {
				wantFams = []string{"4", "6"}
			}
			if len(r.NATFamilies) != len(wantFams) || r.NATFamilies["ipv"+family(strings.SplitN(tc.boot, "@", 2)[1])] != r.NAT {
				t.Fatalf("nat %q, nat_families %v; want one per family of %s", r.NAT, r.NATFamilies, tc.listen)
			}
			for _, f := range wantFams {
				// Loopback: no NAT in either family, measured in each
				// (a family not measured would say unknown).
				if c := r.NATFamilies["ipv"+f]; c != "public" {
					t.Fatalf("nat_families %v: ipv%s is %q, want public", r.NATFamilies, f, c)
				}
			}
		})
	}
	t.Run("diagnose tests both families", func(t *testing.T) {
		for _, tc := range []struct {
			name, listen string
			want         map[string]bool // family: works
		}{
			{"dual-stack", "0.0.0.0:0,[::]:0", map[string]bool{"ipv4": true, "ipv6": true}},
			{"ipv4 only", "127.0.0.1:0", map[string]bool{"ipv4": true}},
		} {
			t.Run(tc.name, func(t *testing.T) {
				code, out, errOut := run("diagnose", "--bootstrap-nodes", boot4, "--listen", tc.listen, "--json", "--timeout", "15s")
				if code != exitOK && code != exitFailure {
					t.Fatalf("exit %d: %s", code, errOut)
				}
				var rep diagnoseReport
				if err := json.Unmarshal([]byte(out), &rep); err != nil {
					t.Fatalf("not JSON: %v\n%s", err, out)
				}
				got := map[string]bool{}
				for _, f := range rep.Families {
					got[f.Family] = f.Works
					if f.Works && (f.Answered == 0 || f.Observed == "" || f.NAT.Class != "public") {
						t.Errorf("family %+v: works without an answer, an address seen or the loopback's class", f)
					}
				}
				if !maps.Equal(got, tc.want) {
					t.Fatalf("families %+v, want %v", rep.Families, tc.want)
				}
			})
		}
	})
	for _, listen := range []string{"127.0.0.1:0,[::1]:0", "0.0.0.0:4000,[::]:4001"} {
		t.Run("a peer with two addresses one socket cannot serve: "+listen, func(t *testing.T) {
			code, _, errOut := run("--listen", listen, "--bootstrap-nodes", boot4, "--key", dir+"/p.key", "--metrics-addr", "off")
			if code != exitUsage || !strings.Contains(errOut, ErrPeerDualStack.Error()) {
				t.Fatalf("exit %d, stderr %q; want a usage error naming the dual-stack form", code, errOut)
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

func TestDefaultPeerListen(t *testing.T) {
	a := netip.MustParseAddr
	for _, tc := range []struct {
		name  string
		addrs []netip.Addr
		want  string
	}{
		{"IPv4 only", []netip.Addr{a("127.0.0.1"), a("192.168.1.10"), a("::1"), a("fe80::1")}, "0.0.0.0:0"},
		{"IPv4 and global IPv6: both", []netip.Addr{a("192.168.1.10"), a("2001:db8:14::10")}, dualListen},
		{"a unique local IPv6 reaches no IPv6 internet", []netip.Addr{a("10.0.0.2"), a("fd00::2")}, "0.0.0.0:0"},
		{"global IPv6 without IPv4 (behind NAT64: --listen [::]:0 by hand)", []netip.Addr{a("2001:db8::10"), a("127.0.0.1")}, "0.0.0.0:0"},
		{"IPv4 link-local only", []netip.Addr{a("169.254.1.2"), a("2001:db8::10")}, "0.0.0.0:0"},
		{"nothing known", nil, "0.0.0.0:0"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := defaultPeerListen(tc.addrs); got != tc.want {
				t.Fatalf("defaultPeerListen = %q, want %q", got, tc.want)
			}
		})
	}
}
