package testnet

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/antnode/antnode/internal/testkit"
)

// nftSample is `nft -j list chain inet miniupnpd prerouting_miniupnpd`
// (nftables 1.0.6) after a UDP mapping by upnpc and a TCP one, plus a rule
// that is not a DNAT and a DNAT in the newer meta l4proto form.
const nftSample = `{"nftables": [{"metainfo": {"version": "1.0.6", "release_name": "Lester Gooch #5", "json_schema_version": 1}},
{"chain": {"family": "inet", "table": "miniupnpd", "name": "prerouting_miniupnpd", "handle": 5}},
{"rule": {"family": "inet", "table": "miniupnpd", "chain": "prerouting_miniupnpd", "handle": 18, "expr": [
  {"match": {"op": "==", "left": {"meta": {"key": "iif"}}, "right": "wan0"}},
  {"match": {"op": "==", "left": {"payload": {"base": "nh", "offset": 72, "len": 8}}, "right": 17}},
  {"match": {"op": "==", "left": {"payload": {"protocol": "th", "field": "dport"}}, "right": 5555}},
  {"dnat": {"family": "ip", "addr": "192.168.0.10", "port": 5555}}]}},
{"rule": {"family": "inet", "table": "miniupnpd", "chain": "prerouting_miniupnpd", "handle": 19, "expr": [
  {"match": {"op": "==", "left": {"meta": {"key": "iif"}}, "right": "wan0"}},
  {"match": {"op": "==", "left": {"payload": {"base": "nh", "offset": 72, "len": 8}}, "right": 6}},
  {"match": {"op": "==", "left": {"payload": {"protocol": "th", "field": "dport"}}, "right": 8080}},
  {"dnat": {"family": "ip", "addr": "192.168.0.10", "port": 80}}]}},
{"rule": {"family": "inet", "table": "miniupnpd", "chain": "prerouting_miniupnpd", "handle": 20, "expr": [
  {"counter": {"packets": 0, "bytes": 0}}, {"accept": null}]}},
{"rule": {"family": "inet", "table": "miniupnpd", "chain": "prerouting_miniupnpd", "handle": 21, "expr": [
  {"match": {"op": "==", "left": {"meta": {"key": "l4proto"}}, "right": "udp"}},
  {"match": {"op": "==", "left": {"payload": {"protocol": "udp", "field": "dport"}}, "right": 4000}},
  {"dnat": {"family": "ip", "addr": "192.168.100.10", "port": 4001}}]}}]}`

func TestParsePortmapRules(t *testing.T) {
	got, err := parsePortmapRules([]byte(nftSample))
	if err != nil {
		t.Fatal(err)
	}
	want := []PortMapping{
		{Proto: "udp", External: 5555, Internal: netip.MustParseAddrPort("192.168.0.10:5555")},
		{Proto: "tcp", External: 8080, Internal: netip.MustParseAddrPort("192.168.0.10:80")},
		{Proto: "udp", External: 4000, Internal: netip.MustParseAddrPort("192.168.100.10:4001")},
	}
	if !slices.Equal(got, want) {
		t.Fatalf("got %v\nwant %v", got, want)
	}
	for _, bad := range []string{"", "{", `{"nftables": 1}`} {
		if ms, err := parsePortmapRules([]byte(bad)); err == nil || len(ms) != 0 {
			t.Errorf("%q: %v, %v", bad, ms, err)
		}
	}
	// Rules that do not parse as a mapping are skipped.
	for _, skip := range []string{
		`{"dnat": {"addr": "x", "port": 1}}`,
		`{"dnat": {"addr": "192.168.0.10"}}`,
		`{"dnat": "x"}`,
		`{"match": {"left": {"payload": {"protocol": "th", "field": "dport"}}, "right": 70000}}, {"dnat": {"addr": "192.168.0.10", "port": 1}}`,
		`{"dnat": {"addr": "192.168.0.10", "port": 1}}`, // no port matched
		`{"match": {"left": {"payload": {"protocol": "th", "field": "dport"}}, "right": 1}}, {"accept": null}`,
	} {
		js := `{"nftables": [{"rule": {"expr": [{"match": {"left": {"meta": {"key": "l4proto"}}, "right": 17}}, ` + skip + `]}}]}`
		if ms, err := parsePortmapRules([]byte(js)); err != nil || len(ms) != 0 {
			t.Errorf("%s: %v, %v", skip, ms, err)
		}
	}
	empty, err := parsePortmapRules([]byte(`{"nftables": [{"metainfo": {}}, {"chain": {"name": "prerouting_miniupnpd"}}]}`))
	if err != nil || len(empty) != 0 {
		t.Fatalf("empty chain: %v, %v", empty, err)
	}
}

func TestParseLeases(t *testing.T) {
	text := "UDP:6666:192.168.0.10:6666:1796568997:NAT-PMP 6666 udp\n" +
		"UDP:5555:192.168.0.10:5555:0:antnode: with colons\n" +
		"TCP:80:192.168.0.10:8080:1796572597:web\n" +
		"UDP:7777:192.168.0.10:7777:1796572603:PCP MAP a0db48c344c29258b31b991d\r\n" +
		"garbage\nUDP:x:192.168.0.10:1:0:bad port\nSCTP:1:192.168.0.10:1:0:proto\nUDP:1:nope:1:0:addr\n\n"
	got := parseLeases(text)
	want := []PortMapping{
		{Proto: "udp", External: 6666, Internal: netip.MustParseAddrPort("192.168.0.10:6666"), Desc: "NAT-PMP 6666 udp", Expires: time.Unix(1796568997, 0)},
		{Proto: "udp", External: 5555, Internal: netip.MustParseAddrPort("192.168.0.10:5555"), Desc: "antnode: with colons"},
		{Proto: "tcp", External: 80, Internal: netip.MustParseAddrPort("192.168.0.10:8080"), Desc: "web", Expires: time.Unix(1796572597, 0)},
		{Proto: "udp", External: 7777, Internal: netip.MustParseAddrPort("192.168.0.10:7777"), Desc: "PCP MAP a0db48c344c29258b31b991d", Expires: time.Unix(1796572603, 0)},
	}
	if len(got) != len(want) {
		t.Fatalf("got %v\nwant %v", got, want)
	}
	for i := range want {
		if got[i].Proto != want[i].Proto || got[i].External != want[i].External || got[i].Internal != want[i].Internal ||
			got[i].Desc != want[i].Desc || !got[i].Expires.Equal(want[i].Expires) {
			t.Errorf("%d: got %v, want %v", i, got[i], want[i])
		}
	}
	vias := []string{"natpmp", "upnp", "upnp", "pcp"}
	for i, m := range got {
		if m.Via() != vias[i] {
			t.Errorf("%v: via %q, want %q", m, m.Via(), vias[i])
		}
	}
	if (PortMapping{}).Via() != "" {
		t.Error("a mapping without a description has a protocol")
	}
	h := Host{Addr: netip.MustParseAddr("192.168.0.10")}
	for i, tc := range []struct {
		port uint16
		via  string
		want []bool
	}{
		{6666, "", []bool{true, false, false, false}},
		{6666, "natpmp", []bool{true, false, false, false}},
		{6666, "pcp", []bool{false, false, false, false}},
		{7777, "pcp", []bool{false, false, false, true}},
		{5555, "upnp", []bool{false, true, false, false}},
	} {
		for j, m := range got {
			if MappingOf(h, tc.port, tc.via)(m) != tc.want[j] {
				t.Errorf("case %d: MappingOf(%d, %q)(%v) = %v", i, tc.port, tc.via, m, !tc.want[j])
			}
		}
	}
}

func TestMergeLeases(t *testing.T) {
	rules, _ := parsePortmapRules([]byte(nftSample))
	leases := parseLeases("UDP:5555:192.168.0.10:5555:1796568997:NAT-PMP 5555 udp\nUDP:4000:192.168.100.10:9999:0:other internal port\n")
	got := mergeLeases(rules, leases, "udp")
	if len(got) != 2 || got[0].Desc != "NAT-PMP 5555 udp" || got[0].Expires.IsZero() || got[1].Desc != "" || got[1].External != 4000 {
		t.Fatalf("merged: %v", got)
	}
}

func TestParseUpnpcList(t *testing.T) {
	out := `upnpc : miniupnpc library test client, version 2.2.4.
Found valid IGD : http://192.168.0.1:5000/ctl/IPConn
Local LAN ip address : 192.168.0.10
ExternalIPAddress = 198.51.100.5
 i protocol exPort->inAddr:inPort description remoteHost leaseTime
 0 UDP  6667->192.168.0.10:6667  'NAT-PMP 6667 udp' '' 99999
 1 UDP  6666->192.168.0.10:6666  'NAT-PMP 6666 udp' '' 3599
 2 TCP  5555->192.168.0.10:80  'libminiupnpc' '' 0
 3 UDP  4000->192.168.0.10:4000  '' '198.51.100.9' 10
GetGenericPortMappingEntry() returned 713 (SpecifiedArrayIndexInvalid)
`
	now := time.Unix(1_800_000_000, 0)
	got := parseUpnpcList(out, now)
	want := []PortMapping{
		{Proto: "udp", External: 4000, Internal: netip.MustParseAddrPort("192.168.0.10:4000"), Expires: now.Add(10 * time.Second)},
		{Proto: "tcp", External: 5555, Internal: netip.MustParseAddrPort("192.168.0.10:80"), Desc: "libminiupnpc"},
		{Proto: "udp", External: 6666, Internal: netip.MustParseAddrPort("192.168.0.10:6666"), Desc: "NAT-PMP 6666 udp", Expires: now.Add(3599 * time.Second)},
		{Proto: "udp", External: 6667, Internal: netip.MustParseAddrPort("192.168.0.10:6667"), Desc: "NAT-PMP 6667 udp", Expires: now.Add(99999 * time.Second)},
	}
	if !slices.Equal(got, want) {
		t.Fatalf("got %v\nwant %v", got, want)
	}
	if ms := parseUpnpcList("No valid UPNP Internet Gateway Device found.\n", now); len(ms) != 0 {
		t.Fatalf("no IGD: %v", ms)
	}
}

func TestPortmapConfig(t *testing.T) {
	conf := portmapConfig("wan0", []string{"lan0", "lan1"}, "/tmp/x/pm", "uuid-1")
	for _, line := range []string{"ext_ifname=wan0", "listening_ip=lan0", "listening_ip=lan1", "http_port=5000",
		"enable_upnp=yes", "enable_natpmp=yes", "secure_mode=yes", "min_lifetime=120", "max_lifetime=7200",
		"ext_perform_stun=yes", "ext_stun_host=127.0.0.1", "ext_stun_port=3478",
		"upnp_table_name=miniupnpd", "upnp_nat_table_name=miniupnpd", "upnp_forward_chain=miniupnpd",
		"upnp_nat_chain=prerouting_miniupnpd", "upnp_nat_postrouting_chain=postrouting_miniupnpd",
		"lease_file=/tmp/x/pm/leases", "uuid=uuid-1", "deny 0-65535 0.0.0.0/0 0-65535"} {
		if !slices.Contains(strings.Split(conf, "\n"), line) {
			t.Errorf("config lacks %q:\n%s", line, conf)
		}
	}
	if strings.Contains(conf, "ext_ip=") {
		t.Error("ext_ip= with a TEST-NET address is fatal to miniupnpd 2.3.1")
	}
	nft := portmapNFT()
	for _, s := range []string{"table inet miniupnpd {", "jump miniupnpd", "jump prerouting_miniupnpd", "jump postrouting_miniupnpd",
		"chain prerouting_miniupnpd {", "type nat hook prerouting priority dstnat"} {
		if !strings.Contains(nft, s) {
			t.Errorf("table lacks %q:\n%s", s, nft)
		}
	}
	if u := randomUUID(); !regexp.MustCompile(`^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$`).MatchString(u) {
		t.Errorf("uuid %q", u)
	}
}

// TestPortmapClass checks the class's place: in Classes and the default
// set, with two sites, its router's ruleset apdm's plus the accept of
// DNATed packets.
func TestPortmapClass(t *testing.T) {
	if !ClassAPDMPortmap.Valid() || !slices.Contains(DefaultClasses(), ClassAPDMPortmap) {
		t.Fatalf("classes %v, default %v", Classes(), DefaultClasses())
	}
	has := func(s Spec) int {
		n := 0
		for _, site := range s.Sites {
			if site.Class == ClassAPDMPortmap {
				n++
			}
		}
		return n
	}
	def := DefaultSpec("x-", Impairment{})
	if has(def) != 2 || len(def.Sites) != 2*len(DefaultClasses()) {
		t.Fatalf("default spec: %d apdm-portmap sites of %d", has(def), len(def.Sites))
	}
	named := SpecFor("x-", Impairment{}, []Class{ClassAPDMPortmap, ClassPublic})
	if has(named) != 2 || len(named.Sites) != len(def.Sites) {
		t.Fatalf("named: %d apdm-portmap sites of %d", has(named), len(named.Sites))
	}
	if m, f := ClassAPDMPortmap.Behaviour(); m != "APDM" || f != "APDF" || ClassAPDMPortmap.AntnodeClass() != "apdm" {
		t.Fatalf("behaviour %s/%s, antnode %s", m, f, ClassAPDMPortmap.AntnodeClass())
	}
	p, err := PlanFor(Spec{Prefix: "t-", Sites: []SiteSpec{{Name: "pm", Class: ClassAPDMPortmap}, {Name: "sym", Class: ClassAPDM}}})
	if err != nil {
		t.Fatal(err)
	}
	pm, _ := p.Routers[0].Ruleset.Render()
	sym, _ := p.Routers[1].Ruleset.Render()
	rule := `    iifname "wan0" ct status dnat accept comment "port mappings"` + "\n"
	if !strings.Contains(pm, "masquerade random") || !strings.Contains(pm, rule) || strings.Contains(sym, rule) {
		t.Fatalf("apdm-portmap ruleset:\n%s", pm)
	}
	norm := func(s string) string {
		s = strings.Replace(s, rule, "", 1)
		return regexp.MustCompile(`(?m)^# .*\n|198\.51\.100\.\d+|192\.168\.\d+\.`).ReplaceAllString(s, "")
	}
	if norm(pm) != norm(sym) {
		t.Fatalf("apdm-portmap is not apdm plus the accept:\n%s\n%s", pm, sym)
	}
}

// pcpMap sends a PCP MAP request (RFC 6887 section 11) for UDP from host h
// to the server at gw and returns the answer: result code, assigned
// external address and lifetime.
func pcpMap(h Host, gw netip.Addr, nonce [12]byte, internal, suggested uint16, lifetime uint32) (byte, netip.AddrPort, uint32, error) {
	c, err := ListenUDP(h.NS, netip.AddrPortFrom(h.Addr, 0))
	if err != nil {
		return 0, netip.AddrPort{}, 0, err
	}
	defer c.Close()
	req := make([]byte, 60)
	req[0], req[1] = 2, 1 // version 2, MAP request
	binary.BigEndian.PutUint32(req[4:], lifetime)
	a := h.Addr.As16()
	copy(req[8:], a[:])
	copy(req[24:], nonce[:])
	req[36] = 17 // UDP
	binary.BigEndian.PutUint16(req[40:], internal)
	binary.BigEndian.PutUint16(req[42:], suggested)
	any4 := netip.IPv4Unspecified().As16()
	copy(req[44:], any4[:])
	buf := make([]byte, 1100)
	for range 3 {
		c.WriteToUDPAddrPort(req, netip.AddrPortFrom(gw, PortmapPort))
		c.SetReadDeadline(time.Now().Add(500 * time.Millisecond))
		n, _, err := c.ReadFromUDPAddrPort(buf)
		if err != nil {
			continue
		}
		if n < 60 || buf[0] != 2 || buf[1] != 0x81 || string(buf[24:36]) != string(nonce[:]) {
			return 0, netip.AddrPort{}, 0, fmt.Errorf("not our MAP response: % x", buf[:n])
		}
		ext := netip.AddrFrom16([16]byte(buf[44:60])).Unmap()
		return buf[3], netip.AddrPortFrom(ext, binary.BigEndian.Uint16(buf[42:])), binary.BigEndian.Uint32(buf[4:]), nil
	}
	return 0, netip.AddrPort{}, 0, errors.New("no PCP answer")
}

// sendUntil sends msg from `from` to `to` until `at` receives it (5 tries,
// 300 ms apart) and returns the source `at` saw it from.
func sendUntil(from *net.UDPConn, to netip.AddrPort, at *net.UDPConn, msg string) (netip.AddrPort, bool) {
	buf := make([]byte, 1500)
	for range 5 {
		from.WriteToUDPAddrPort([]byte(msg), to)
		at.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
		for {
			n, src, err := at.ReadFromUDPAddrPort(buf)
			if err != nil {
				break
			}
			if string(buf[:n]) == msg {
				return netip.AddrPortFrom(src.Addr().Unmap(), src.Port()), true
			}
		}
	}
	return netip.AddrPort{}, false
}

// portmapBed is TestPortmap's testbed: an apdm-portmap site, an apdm peer
// and a public one.
type portmapBed struct {
	t          *testing.T
	ctx        context.Context
	tb         *Testbed
	host, peer Host // behind the mapping router; behind apdm
	pub        Host // a public host
	public     netip.Addr
	gw         netip.Addr
	url        string
}

func (b *portmapBed) listen(ns string, a netip.AddrPort) *net.UDPConn {
	b.t.Helper()
	c, err := ListenUDP(ns, a)
	if err != nil {
		b.t.Fatal(err)
	}
	b.t.Cleanup(func() { c.Close() })
	return c
}

// run runs a command in the mapping host and returns its output.
func (b *portmapBed) run(args ...string) string {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, 10*time.Second)
	defer cancel()
	out, err := b.tb.Run(ctx, b.host.NS, args...)
	if err != nil {
		b.t.Fatalf("%v: %v\n%s", args, err, out)
	}
	return out
}

// mapped waits for the router's UDP mapping of port ext to the host's
// port and returns it.
func (b *portmapBed) mapped(ext uint16) PortMapping {
	b.t.Helper()
	is := func(m PortMapping) bool { return m.External == ext }
	ms, err := b.tb.WaitUDPMapping(b.ctx, "pm", true, MappingOf(b.host, ext, ""), 5*time.Second)
	if err != nil {
		b.t.Fatal(err)
	}
	m := ms[slices.IndexFunc(ms, is)]
	if m.Internal != netip.AddrPortFrom(b.host.Addr, ext) {
		b.t.Fatalf("mapping %v, want to %v:%d", m, b.host.Addr, ext)
	}
	return m
}

// unmapped waits until the router has no UDP mapping of port ext.
func (b *portmapBed) unmapped(ext uint16) {
	b.t.Helper()
	if _, err := b.tb.WaitUDPMapping(b.ctx, "pm", false, func(m PortMapping) bool { return m.External == ext }, 5*time.Second); err != nil {
		b.t.Fatal(err)
	}
}

// through checks that a datagram from the apdm peer to the site's public
// address at port ext reaches the host's socket on ext through the apdm
// NAT's filtering, and that the host's answer reaches the peer from that
// public address and port (want false: that nothing arrives).
func (b *portmapBed) through(ext uint16, want bool) {
	b.t.Helper()
	hc := b.listen(b.host.NS, netip.AddrPortFrom(b.host.Addr, ext))
	pc := b.listen(b.peer.NS, netip.AddrPortFrom(b.peer.Addr, 0)) // a new socket: a new apdm mapping
	defer hc.Close()
	defer pc.Close()
	dst := netip.AddrPortFrom(b.public, ext)
	src, ok := sendUntil(pc, dst, hc, fmt.Sprintf("in-%d", ext))
	if ok != want {
		b.t.Fatalf("inbound to %v arrived: %v, want %v", dst, ok, want)
	}
	if !ok {
		return
	}
	if back, ok := sendUntil(hc, src, pc, fmt.Sprintf("back-%d", ext)); !ok || back != dst {
		b.t.Fatalf("answer to %v: arrived %v from %v, want from %v", src, ok, back, dst)
	}
}

// TestPortmap brings up an apdm-portmap site with an apdm and a public
// peer and proves with the real clients: the router answers and measures
// as apdm (Verify); upnpc, natpmpc and a PCP MAP each create a mapping
// that UDPMappings sees (with the protocol that made it), through which
// a datagram from the apdm peer reaches the host past the apdm NAT's
// filtering, and which can be deleted; secure mode refuses a mapping to
// another address; RestartPortmap clears the mappings and the router
// serves again. It also records the conntrack ordering the integrator
// needs (see portmap.go): the host sends first from its mapped port to
// the public peer, then the peer sends to the mapped public port.
func TestPortmap(t *testing.T) {
	needRoot(t)
	for _, tool := range []string{"miniupnpd", "upnpc", "natpmpc"} {
		testkit.NeedTool(t, tool)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	prefix := uniquePrefix("pm")
	spec := Spec{Prefix: prefix, Link: Impairment{Delay: 5 * time.Millisecond}, Sites: []SiteSpec{
		{Name: "pm", Class: ClassAPDMPortmap}, {Name: "sym", Class: ClassAPDM}, {Name: "pub", Class: ClassPublic},
	}}
	tb := build(t, spec)
	t.Logf("built %d namespaces with miniupnpd in %v", len(tb.Namespaces), tb.BuildTime.Round(time.Millisecond))
	start := time.Now()
	meas, err := tb.Verify(ctx, spec)
	if err != nil {
		t.Fatalf("verify: %v\n%s", err, tb.PortmapLog("pm"))
	}
	if m := meas["pm"]; m.Mapping != "APDM" || m.Filtering != "APDF" || !m.Verified || m.Portmap == "" {
		t.Fatalf("apdm-portmap measured %+v", m)
	}
	t.Logf("verified in %v: %s", time.Since(start).Round(time.Millisecond), meas["pm"].Portmap)
	b := &portmapBed{t: t, ctx: ctx, tb: tb, host: tb.HostsOf("pm")[0], peer: tb.HostsOf("sym")[0], pub: tb.HostsOf("pub")[0], public: tb.Public["pm"]}
	if b.gw, b.url, err = tb.PortmapGateway(b.host); err != nil {
		t.Fatal(err)
	}
	dir := tb.portmapDir

	t.Run("upnp", func(t *testing.T) { b.t = t; portmapUPnP(b) })
	t.Run("natpmp", func(t *testing.T) { b.t = t; portmapNATPMP(b) })
	t.Run("pcp", func(t *testing.T) { b.t = t; portmapPCP(b) })
	t.Run("host-sends-first", func(t *testing.T) { b.t = t; portmapHostFirst(b) })
	t.Run("restart", func(t *testing.T) { b.t = t; portmapRestart(b) })

	tb.Close()
	if left := leftovers(t, prefix); len(left) > 0 {
		t.Errorf("namespaces left behind: %v", left)
	}
	if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("portmap files left behind in %s: %v", dir, err)
	}
	procs, _ := filepath.Glob("/proc/[0-9]*/cmdline")
	for _, p := range procs {
		if b, _ := os.ReadFile(p); strings.Contains(string(b), dir) {
			t.Errorf("process left behind: %s %q", p, b)
		}
	}
}

func portmapUPnP(b *portmapBed) {
	t := b.t
	out := b.run("upnpc", "-u", b.url, "-e", "antnode-test", "-a", b.host.Addr.String(), "5555", "5555", "UDP", "600")
	m := b.mapped(5555)
	if m.Via() != "upnp" || m.Desc != "antnode-test" || time.Until(m.Expires) > 601*time.Second || time.Until(m.Expires) < 500*time.Second {
		t.Fatalf("mapping %v from upnpc: %s", m, out)
	}
	ms, err := b.tb.UpnpcMappings(b.ctx, b.host)
	if err != nil || len(ms) != 1 || ms[0].External != 5555 || ms[0].Desc != "antnode-test" {
		t.Fatalf("upnpc -l: %v, %v", ms, err)
	}
	b.through(5555, true)
	// Secure mode: no mapping to another address of the LAN.
	other := b.host.Addr.As4()
	other[3] = 99
	ctx, cancel := context.WithTimeout(b.ctx, 10*time.Second)
	defer cancel()
	out, _ = b.tb.Run(ctx, b.host.NS, "upnpc", "-u", b.url, "-a", netip.AddrFrom4(other).String(), "5556", "5556", "UDP", "600")
	if all, err := b.tb.UDPMappings(b.ctx, "pm"); err != nil || len(all) != 1 {
		t.Fatalf("secure mode let a host map another address: %v %v\n%s", all, err, out)
	}
	b.run("upnpc", "-u", b.url, "-d", "5555", "UDP")
	b.unmapped(5555)
	b.through(5555, false)
}

func portmapNATPMP(b *portmapBed) {
	t := b.t
	out := b.run("natpmpc", "-g", b.gw.String(), "-a", "6666", "6666", "udp", "600")
	if !strings.Contains(out, "Mapped public port 6666 protocol UDP to local port 6666") {
		t.Fatalf("natpmpc: %s", out)
	}
	if m := b.mapped(6666); m.Via() != "natpmp" || m.Expires.IsZero() {
		t.Fatalf("mapping %v from natpmpc", m)
	}
	b.through(6666, true)
	b.run("natpmpc", "-g", b.gw.String(), "-a", "6666", "6666", "udp", "0")
	b.unmapped(6666)
	b.through(6666, false)
}

func portmapPCP(b *portmapBed) {
	t := b.t
	var nonce [12]byte
	rand.Read(nonce[:])
	res, ext, life, err := pcpMap(b.host, b.gw, nonce, 7777, 7777, 99999)
	if err != nil || res != 0 || ext != netip.AddrPortFrom(b.public, 7777) || life != portmapMaxLifetime {
		t.Fatalf("PCP MAP: result %d, %v, lifetime %d (want %d, bounded), %v", res, ext, life, portmapMaxLifetime, err)
	}
	if m := b.mapped(7777); m.Via() != "pcp" {
		t.Fatalf("mapping %v from PCP", m)
	}
	b.through(7777, true)
	if res, _, _, err := pcpMap(b.host, b.gw, nonce, 7777, 7777, 0); err != nil || res != 0 {
		t.Fatalf("PCP delete: result %d, %v", res, err)
	}
	b.unmapped(7777)
}

// portmapHostFirst records what happens when the host sends first from
// its mapped port to a peer's endpoint and then that endpoint sends to the
// mapped public port (see portmap.go): the inbound datagram arrives, from
// a source port conntrack rewrote to resolve the clash with the outbound
// entry; answers to that source leave from the mapped public port.
func portmapHostFirst(b *portmapBed) {
	t := b.t
	b.run("natpmpc", "-g", b.gw.String(), "-a", "8888", "8888", "udp", "600")
	b.mapped(8888)
	hc := b.listen(b.host.NS, netip.AddrPortFrom(b.host.Addr, 8888))
	pc := b.listen(b.pub.NS, netip.AddrPortFrom(b.pub.Addr, 0))
	peerAt := pc.LocalAddr().(*net.UDPAddr).AddrPort()
	peerAt = netip.AddrPortFrom(b.pub.Addr, peerAt.Port())
	out, ok := sendUntil(hc, peerAt, pc, "out-first")
	if !ok {
		t.Fatal("the host's datagram to the public peer did not arrive")
	}
	t.Logf("host %v:8888 -> peer %v: the peer sees %v (apdm: a random port, not the mapped one)", b.host.Addr, peerAt, out)
	in, ok := sendUntil(pc, netip.AddrPortFrom(b.public, 8888), hc, "in-after-out")
	if !ok {
		t.Fatal("after the host sent first, the peer's datagram to the mapped port did not arrive")
	}
	t.Logf("peer %v -> %v:8888: the host sees it from %v", peerAt, b.public, in)
	back, ok := sendUntil(hc, in, pc, "answer")
	if !ok || back != netip.AddrPortFrom(b.public, 8888) {
		t.Fatalf("the host's answer to %v: arrived %v from %v, want from the mapped %v:8888", in, ok, back, b.public)
	}
	again, ok := sendUntil(hc, peerAt, pc, "again-to-real")
	t.Logf("host -> peer's real endpoint %v again: arrived %v from %v", peerAt, ok, again)
	if ct, err := runIn(b.ctx, b.tb.RouterOf("pm").NS, "conntrack", "-L", "-p", "udp"); err == nil {
		for _, line := range strings.Split(ct, "\n") {
			if strings.Contains(line, "="+strconv.Itoa(int(peerAt.Port()))+" ") {
				t.Logf("router conntrack: %s", line)
			}
		}
	}
	hc.Close()
	pc.Close()
	b.run("natpmpc", "-g", b.gw.String(), "-a", "8888", "8888", "udp", "0")
	b.unmapped(8888)
}

func portmapRestart(b *portmapBed) {
	t := b.t
	b.run("natpmpc", "-g", b.gw.String(), "-a", "9999", "9999", "udp", "600")
	b.mapped(9999)
	start := time.Now()
	if err := b.tb.RestartPortmap(b.ctx, "pm", true); err != nil {
		t.Fatal(err)
	}
	t.Logf("restarted miniupnpd in %v", time.Since(start).Round(time.Millisecond))
	if ms, err := b.tb.UDPMappings(b.ctx, "pm"); err != nil || len(ms) != 0 {
		t.Fatalf("after the restart: %v, %v", ms, err)
	}
	b.through(9999, false)
	if got, err := b.tb.verifyPortmap(b.ctx, b.host); err != nil {
		t.Fatalf("after the restart: %v", err)
	} else {
		t.Logf("after the restart: %s", got)
	}
	b.run("natpmpc", "-g", b.gw.String(), "-a", "9999", "9999", "udp", "600")
	b.mapped(9999)
	b.through(9999, true)
	if log := b.tb.PortmapLog("pm"); strings.Count(log, "version 2.3.1 starting") != 2 {
		t.Fatalf("log across the restart:\n%s", tail(log, 2000))
	}
}
