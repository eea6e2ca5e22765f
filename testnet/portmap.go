package testnet

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/pion/stun/v3"
)

// The apdm-portmap class: the apdm NAT, plus Debian's miniupnpd-nftables
// (2.3.1) in the router namespace, offering UPnP IGD (SSDP and HTTP on the
// LAN side), NAT-PMP and PCP (UDP 5351). The testbed writes its config
// and its nftables table itself, runs it in the foreground under its
// process management (stopped by Close, killed with the thread that
// started it), and removes its files with the testbed.
//
// What miniupnpd needs in a namespace, found by trying:
//
//   - Its own table with the chains its config names (upnp_table_name,
//     upnp_nat_table_name, upnp_forward_chain, upnp_nat_chain,
//     upnp_nat_postrouting_chain; Debian's /etc/miniupnpd/nft_init.sh
//     makes the same shape, but needs the miniupnpd package's
//     miniupnpd_functions.sh): an inet table with a forward filter chain
//     and prerouting and postrouting NAT chains, each jumping to the
//     chain miniupnpd fills. It adds a DNAT rule to the prerouting chain
//     and an accept to the forward chain per mapping, and leaves them
//     behind when it exits (SIGTERM): a restart must flush them.
//   - The testbed's own forward filter must let DNATed packets through
//     (Ruleset.PortMap: `ct status dnat accept` from the WAN): an accept
//     in miniupnpd's table does not override a drop in natlab.
//   - A public address it believes. 2.3.1 calls every TEST-NET address
//     reserved: on the WAN interface it disables port forwarding ("Port
//     forwarding is impossible"), and ext_ip= with one is a fatal error;
//     it has no option to allow a private one. With ext_perform_stun=yes
//     it takes the address a STUN server reports and enables port
//     forwarding when all four of its Binding requests are answered with
//     the same address. The testbed answers them itself: a STUN responder
//     on the router's loopback (127.0.0.1:3478, so neither natlab's
//     masquerade nor its input filter is in the way) reports the site's
//     public address, as a STUN server on the internet would see the
//     router (it ignores CHANGE-REQUEST, which miniupnpd does not check).
//     miniupnpd asks once, at start.
//   - A pid file of its own (-P): miniupnpd refuses to start while the
//     process its pid file names lives ("MiniUPnPd is already running"),
//     so daemons of several sites or runs must not share the default
//     /var/run/miniupnpd.pid.
//   - Nothing for SSDP: the hosts' default route carries their M-SEARCH
//     to 239.255.255.250 out of eth0, and miniupnpd joins the group on
//     each listening interface and answers by unicast.
//
// Clients: miniupnpc 2.2.4's discovery (upnpc without -u) finds the IGD
// but refuses it for the same reason ("Found a (not connected?) IGD":
// its external address is reserved), so the testbed's own use of upnpc
// names the description URL (-u), which a fixed HTTP port makes known.
// natpmpc needs -g (the gateway) in a namespace.
//
// Conntrack, when the host behind the mapping sends first: a host that
// sends from its mapped port P to a peer's endpoint E before E sends to
// public:P goes out through natlab's masquerade random (a random public
// port R, apdm). E's packet to public:P is then still let in and
// DNATed to the host, but the entry's reply tuple (host:P -> E) is the
// original tuple of the outbound entry, and conntrack resolves the clash
// with an implicit source NAT: the host sees the packet from E's address
// and another port E'. Its answers to E' leave from public:P and reach E;
// what it sends to E itself still leaves from public:R. (Measured on
// Linux 6.18 with nftables 1.0.6; TestPortmap checks it.)

// Names and ports of the port-mapping daemon in a router namespace.
const (
	// The inet table and the chains that miniupnpd fills.
	portmapTable       = "miniupnpd"
	portmapForward     = "miniupnpd"
	portmapPrerouting  = "prerouting_miniupnpd"
	portmapPostrouting = "postrouting_miniupnpd"
	// PortmapHTTPPort is miniupnpd's HTTP port (UPnP description and
	// control) on each LAN gateway address.
	PortmapHTTPPort = 5000
	// PortmapPort is NAT-PMP's and PCP's server port.
	PortmapPort = 5351
	// portmapSTUN is the STUN responder on the router's loopback.
	portmapSTUN = "127.0.0.1:3478"
	// Lifetimes miniupnpd grants PCP requests (it clamps the asked
	// lifetime into this range; NAT-PMP and UPnP get what they ask,
	// UPnP IGDv2 at most a week).
	portmapMinLifetime = 120
	portmapMaxLifetime = 7200
	// portmapReady is what miniupnpd logs when it serves NAT-PMP and
	// PCP, the last of its start.
	portmapReady = "Listening for NAT-PMP/PCP traffic"
)

// portmapd is the port-mapping daemon of one apdm-portmap site's router.
type portmapd struct {
	ns     string // the router namespace
	dir    string // config, lease file and pid file
	public netip.Addr
	conf   string       // the config file's text
	stun   *net.UDPConn // the STUN responder on the router's loopback
	wg     sync.WaitGroup

	mu   sync.Mutex
	proc *Proc
	// logs holds the output of the daemons restarts replaced.
	logs []string
}

func (pm *portmapd) leaseFile() string { return filepath.Join(pm.dir, "leases") }

func (pm *portmapd) current() *Proc {
	pm.mu.Lock()
	defer pm.mu.Unlock()
	return pm.proc
}

// portmapConfig renders miniupnpd's config for a router with WAN
// interface wan and LAN interfaces lans, its files in dir.
func portmapConfig(wan string, lans []string, dir, uuid string) string {
	lines := []string{
		"# written by the antnode testbed (testnet/portmap.go)",
		"ext_ifname=" + wan,
	}
	for _, l := range lans {
		lines = append(lines, "listening_ip="+l)
	}
	lines = append(lines,
		"http_port="+strconv.Itoa(PortmapHTTPPort),
		"enable_upnp=yes",
		"enable_natpmp=yes", // NAT-PMP and PCP
		"secure_mode=yes",   // a client maps only to its own address
		"ipv6_disable=yes",
		"system_uptime=no",
		"min_lifetime="+strconv.Itoa(portmapMinLifetime),
		"max_lifetime="+strconv.Itoa(portmapMaxLifetime),
		// TEST-NET is reserved to miniupnpd: take the public address from
		// the STUN responder on the router's loopback.
		"ext_perform_stun=yes",
		"ext_stun_host=127.0.0.1",
		"ext_stun_port=3478",
		"upnp_table_name="+portmapTable,
		"upnp_nat_table_name="+portmapTable,
		"upnp_forward_chain="+portmapForward,
		"upnp_nat_chain="+portmapPrerouting,
		"upnp_nat_postrouting_chain="+portmapPostrouting,
		"lease_file="+filepath.Join(dir, "leases"),
		"uuid="+uuid,
		"friendly_name=antnode testbed router",
		"allow 1024-65535 192.168.0.0/16 1024-65535",
		"deny 0-65535 0.0.0.0/0 0-65535",
	)
	return strings.Join(lines, "\n") + "\n"
}

// portmapNFT is miniupnpd's table: the chains it fills, each hooked by a
// base chain of the same kind (Debian's nft_init.sh, with the forward
// chain accepting: natlab's drops what it must).
func portmapNFT() string {
	return fmt.Sprintf(`table inet %[1]s
delete table inet %[1]s
table inet %[1]s {
  chain forward {
    type filter hook forward priority filter; policy accept;
    jump %[2]s
  }
  chain %[2]s {
  }
  chain prerouting {
    type nat hook prerouting priority dstnat; policy accept;
    jump %[3]s
  }
  chain postrouting {
    type nat hook postrouting priority srcnat; policy accept;
    jump %[4]s
  }
  chain %[3]s {
  }
  chain %[4]s {
  }
}
`, portmapTable, portmapForward, portmapPrerouting, portmapPostrouting)
}

// randomUUID returns a random (version 4) UUID.
func randomUUID() string {
	var b [16]byte
	rand.Read(b[:])
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:16])
}

// requirePortmapTools checks that the tools of apdm-portmap are installed.
func requirePortmapTools() error {
	var missing []string
	for _, t := range []string{"miniupnpd", "upnpc", "natpmpc"} {
		if _, err := exec.LookPath(t); err != nil {
			missing = append(missing, t)
		}
	}
	if len(missing) > 0 {
		return fmt.Errorf("testnet: apdm-portmap needs %s (apt-get install miniupnpd-nftables miniupnpc natpmpc)", strings.Join(missing, ", "))
	}
	return nil
}

// lanGateway is the address of a host's router on the host's LAN.
func lanGateway(h Host) netip.Addr {
	b := h.Addr.As4()
	b[3] = 1
	return netip.AddrFrom4(b)
}

// startPortmaps starts the port-mapping daemon of every apdm-portmap
// router.
func (tb *Testbed) startPortmaps(ctx context.Context) error {
	for _, r := range tb.Routers {
		if !r.Ruleset.PortMap {
			continue
		}
		if tb.portmapDir == "" {
			dir, err := os.MkdirTemp("", "antnode-portmap-")
			if err != nil {
				return fmt.Errorf("testnet: portmap: %w", err)
			}
			tb.portmapDir = dir
		}
		pm := &portmapd{ns: r.NS, dir: filepath.Join(tb.portmapDir, r.Site), public: r.Ruleset.WANAddr}
		pm.conf = portmapConfig(r.Ruleset.WAN, r.Ruleset.LANs, pm.dir, randomUUID())
		tb.mu.Lock()
		if tb.portmaps == nil {
			tb.portmaps = map[string]*portmapd{}
		}
		tb.portmaps[r.Site] = pm
		tb.mu.Unlock()
		if err := tb.startPortmap(ctx, pm); err != nil {
			return fmt.Errorf("testnet: portmap of site %s: %w", r.Site, err)
		}
	}
	return nil
}

// startPortmap writes pm's files and its table (replacing the old one,
// rules and all), starts its STUN responder (once) and then the daemon,
// and waits (10 s at most) until it serves with port forwarding enabled.
func (tb *Testbed) startPortmap(ctx context.Context, pm *portmapd) error {
	if err := os.MkdirAll(pm.dir, 0o700); err != nil {
		return err
	}
	conf := filepath.Join(pm.dir, "miniupnpd.conf")
	if err := os.WriteFile(conf, []byte(pm.conf), 0o600); err != nil {
		return err
	}
	if err := runStdin(ctx, pm.ns, portmapNFT(), "nft", "-f", "-"); err != nil {
		return err
	}
	if pm.stun == nil {
		c, err := ListenUDP(pm.ns, netip.MustParseAddrPort(portmapSTUN))
		if err != nil {
			return fmt.Errorf("STUN responder: %w", err)
		}
		pm.stun = c
		pm.wg.Add(1)
		go func() {
			defer pm.wg.Done()
			serveSTUN(c, func(from netip.AddrPort) netip.AddrPort { return netip.AddrPortFrom(pm.public, from.Port()) })
		}()
	}
	p, err := tb.Start(pm.ns, "miniupnpd", "-d", "-f", conf, "-P", filepath.Join(pm.dir, "miniupnpd.pid"))
	if err != nil {
		return err
	}
	pm.mu.Lock()
	pm.proc = p
	pm.mu.Unlock()
	if err := waitOutput(ctx, p, portmapReady, 10*time.Second); err != nil {
		return fmt.Errorf("miniupnpd: %w: %s", err, tail(p.Output(), 1500))
	}
	if out := p.Output(); !strings.Contains(out, "Port forwarding is now enabled") {
		return fmt.Errorf("miniupnpd did not enable port forwarding: %s", tail(out, 1500))
	}
	return nil
}

// serveSTUN answers every STUN Binding request on c, until c is closed,
// with answer(source) as its XOR-MAPPED-ADDRESS.
func serveSTUN(c *net.UDPConn, answer func(from netip.AddrPort) netip.AddrPort) {
	buf := make([]byte, 1500)
	for {
		n, from, err := c.ReadFromUDPAddrPort(buf)
		if err != nil {
			return
		}
		req := &stun.Message{Raw: append([]byte(nil), buf[:n]...)}
		if req.Decode() != nil || req.Type != stun.BindingRequest {
			continue
		}
		from = netip.AddrPortFrom(from.Addr().Unmap(), from.Port())
		mapped := answer(from)
		resp, err := stun.Build(stun.NewTransactionIDSetter(req.TransactionID), stun.BindingSuccess,
			&stun.XORMappedAddress{IP: mapped.Addr().AsSlice(), Port: int(mapped.Port())})
		if err == nil {
			c.WriteToUDPAddrPort(resp.Raw, from)
		}
	}
}

// closePortmaps stops the STUN responders and removes the daemons'
// files; Close has stopped the daemons.
func (tb *Testbed) closePortmaps() {
	tb.mu.Lock()
	pms := tb.portmaps
	dir := tb.portmapDir
	tb.mu.Unlock()
	for _, pm := range pms {
		if pm.stun != nil {
			pm.stun.Close()
		}
		pm.wg.Wait()
	}
	if dir != "" {
		os.RemoveAll(dir)
	}
}

// portmap returns the port-mapping daemon of a site.
func (tb *Testbed) portmap(site string) (*portmapd, error) {
	tb.mu.Lock()
	defer tb.mu.Unlock()
	pm := tb.portmaps[site]
	if pm == nil {
		return nil, fmt.Errorf("testnet: site %s has no port-mapping router (class %s)", site, ClassAPDMPortmap)
	}
	return pm, nil
}

// PortmapGateway returns the address on which the router of an
// apdm-portmap site answers NAT-PMP and PCP (UDP PortmapPort) for host h,
// and the URL of its UPnP root description there.
func (tb *Testbed) PortmapGateway(h Host) (gw netip.Addr, rootDesc string, err error) {
	if _, err := tb.portmap(h.Site); err != nil {
		return netip.Addr{}, "", err
	}
	gw = lanGateway(h)
	return gw, fmt.Sprintf("http://%s/rootDesc.xml", netip.AddrPortFrom(gw, PortmapHTTPPort)), nil
}

// PortmapLog returns what the site's miniupnpd logged, across restarts.
func (tb *Testbed) PortmapLog(site string) string {
	pm, err := tb.portmap(site)
	if err != nil {
		return ""
	}
	pm.mu.Lock()
	defer pm.mu.Unlock()
	logs := slices.Clone(pm.logs)
	if pm.proc != nil {
		logs = append(logs, pm.proc.Output())
	}
	return strings.Join(logs, "\n--- restarted ---\n")
}

// SavePortmapLogs writes each apdm-portmap router's miniupnpd log to dir
// as NS-miniupnpd.log.
func (tb *Testbed) SavePortmapLogs(dir string) error {
	tb.mu.Lock()
	var sites []string
	for s := range tb.portmaps {
		sites = append(sites, s)
	}
	tb.mu.Unlock()
	if len(sites) == 0 {
		return nil
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	var errs []error
	for _, s := range sites {
		pm, _ := tb.portmap(s)
		errs = append(errs, os.WriteFile(filepath.Join(dir, pm.ns+"-miniupnpd.log"), []byte(tb.PortmapLog(s)), 0o644))
	}
	return errors.Join(errs...)
}

// RestartPortmap restarts the site's miniupnpd with its mappings lost,
// as a router that reboots: the daemon is stopped (SIGTERM), its rules
// flushed and its lease file removed, then it starts again (a new
// NAT-PMP/PCP epoch) and serves within 10 s. With forgetConntrack the
// router's DNATed conntrack entries are deleted too, so that packets of
// flows that went through a mapping stop reaching the host. A
// portmap-router-restart scenario calls it.
func (tb *Testbed) RestartPortmap(ctx context.Context, site string, forgetConntrack bool) error {
	pm, err := tb.portmap(site)
	if err != nil {
		return err
	}
	if p := pm.current(); p != nil {
		p.Stop(2 * time.Second)
		pm.mu.Lock()
		pm.logs = append(pm.logs, p.Output())
		pm.proc = nil
		pm.mu.Unlock()
	}
	// startPortmap loads the table anew, without the old rules.
	if err := os.Remove(pm.leaseFile()); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	if forgetConntrack {
		_, err := runIn(ctx, pm.ns, "conntrack", "-D", "--dst-nat")
		var ce *CommandError
		if err != nil && !(errors.As(err, &ce) && strings.Contains(ce.Output, "flow entries have been deleted")) {
			return err
		}
	}
	if err := tb.startPortmap(ctx, pm); err != nil {
		return fmt.Errorf("testnet: portmap of site %s: restart: %w", site, err)
	}
	return nil
}

// PortMapping is one port mapping of a router's miniupnpd.
type PortMapping struct {
	Proto    string         // "udp" or "tcp"
	External uint16         // the port on the site's public address
	Internal netip.AddrPort // the LAN host and port it forwards to
	// Desc is miniupnpd's description of the mapping: "NAT-PMP <port>
	// udp", "PCP MAP <nonce>", or the UPnP client's own (empty: unknown).
	Desc string
	// Expires is when its lease ends (zero: unknown or none).
	Expires time.Time
}

// Via names the protocol that made the mapping, from its description:
// "natpmp", "pcp", "upnp", or "" when unknown.
func (m PortMapping) Via() string {
	switch {
	case m.Desc == "":
		return ""
	case strings.HasPrefix(m.Desc, "NAT-PMP "):
		return "natpmp"
	case strings.HasPrefix(m.Desc, "PCP "):
		return "pcp"
	}
	return "upnp"
}

func (m PortMapping) String() string {
	s := fmt.Sprintf("%s %d->%s", m.Proto, m.External, m.Internal)
	if m.Desc != "" {
		s += fmt.Sprintf(" %q", m.Desc)
	}
	if !m.Expires.IsZero() {
		s += " until " + m.Expires.UTC().Format(time.TimeOnly)
	}
	return s
}

// MappingOf returns a matcher (for WaitUDPMapping) of the mappings to
// host h's port, made by protocol via ("pcp", "natpmp", "upnp"; empty:
// any).
func MappingOf(h Host, port uint16, via string) func(PortMapping) bool {
	to := netip.AddrPortFrom(h.Addr, port)
	return func(m PortMapping) bool { return m.Internal == to && (via == "" || m.Via() == via) }
}

// UDPMappings returns the UDP port mappings of the site's router: the
// DNAT rules in miniupnpd's prerouting chain (what the kernel forwards),
// with the description and expiry of its lease file where it has them.
func (tb *Testbed) UDPMappings(ctx context.Context, site string) ([]PortMapping, error) {
	pm, err := tb.portmap(site)
	if err != nil {
		return nil, err
	}
	js, err := runIn(ctx, pm.ns, "nft", "-j", "list", "chain", "inet", portmapTable, portmapPrerouting)
	if err != nil {
		return nil, err
	}
	rules, err := parsePortmapRules([]byte(js))
	if err != nil {
		return nil, err
	}
	leases, err := os.ReadFile(pm.leaseFile())
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("testnet: portmap leases: %w", err)
	}
	return mergeLeases(rules, parseLeases(string(leases)), "udp"), nil
}

// mergeLeases returns the rules of proto, each with the description and
// expiry of its lease (same protocol and ports) if there is one.
func mergeLeases(rules, leases []PortMapping, proto string) []PortMapping {
	var out []PortMapping
	for _, r := range rules {
		if r.Proto != proto {
			continue
		}
		for _, l := range leases {
			if l.Proto == r.Proto && l.External == r.External && l.Internal == r.Internal {
				r.Desc, r.Expires = l.Desc, l.Expires
				break
			}
		}
		out = append(out, r)
	}
	return out
}

// nftRules is what `nft -j list chain` prints, as far as it is read.
type nftRules struct {
	Nftables []struct {
		Rule *struct {
			Expr []map[string]json.RawMessage `json:"expr"`
		} `json:"rule"`
	} `json:"nftables"`
}

// nftMatch is an nft JSON match expression on a payload field or a meta
// key.
type nftMatch struct {
	Left struct {
		Meta *struct {
			Key string `json:"key"`
		} `json:"meta"`
		Payload *struct {
			Protocol string `json:"protocol"`
			Field    string `json:"field"`
			Base     string `json:"base"`
			Offset   int    `json:"offset"`
			Len      int    `json:"len"`
		} `json:"payload"`
	} `json:"left"`
	Right json.RawMessage `json:"right"`
}

// parsePortmapRules reads the DNAT rules of miniupnpd's prerouting chain
// from `nft -j list chain` output. A rule is `iif WAN @nh,72,8 PROTO th
// dport EPORT dnat ip to ADDR:PORT`: the IP protocol is matched as a raw
// network-header payload (byte 9), the port as the transport header's
// destination port. Rules that are not such DNATs are skipped.
func parsePortmapRules(js []byte) ([]PortMapping, error) {
	var doc nftRules
	if err := json.Unmarshal(js, &doc); err != nil {
		return nil, fmt.Errorf("testnet: miniupnpd rules: %w", err)
	}
	var out []PortMapping
	for _, item := range doc.Nftables {
		if item.Rule == nil {
			continue
		}
		if m, ok := portmapRule(item.Rule.Expr); ok {
			out = append(out, m)
		}
	}
	return out, nil
}

// portmapRule reads one rule's expressions; ok is false unless it is a
// DNAT of a port to an IPv4 address and port.
func portmapRule(exprs []map[string]json.RawMessage) (m PortMapping, ok bool) {
	var dnat bool
	for _, e := range exprs {
		if raw, is := e["dnat"]; is {
			var d struct {
				Addr string `json:"addr"`
				Port uint16 `json:"port"`
			}
			if json.Unmarshal(raw, &d) != nil {
				return m, false
			}
			addr, err := netip.ParseAddr(d.Addr)
			if err != nil || d.Port == 0 {
				return m, false
			}
			m.Internal, dnat = netip.AddrPortFrom(addr, d.Port), true
			continue
		}
		raw, is := e["match"]
		if !is {
			continue
		}
		var mt nftMatch
		if json.Unmarshal(raw, &mt) != nil {
			continue
		}
		var n int
		if json.Unmarshal(mt.Right, &n) != nil {
			var name string
			if json.Unmarshal(mt.Right, &name) != nil {
				continue
			}
			n = ipProtoNumbers[name]
		}
		switch p := mt.Left.Payload; {
		case mt.Left.Meta != nil && mt.Left.Meta.Key == "l4proto":
			m.Proto = ipProtoNames[n]
		case p == nil:
		case p.Base == "nh" && p.Offset == 72 && p.Len == 8, p.Protocol == "ip" && p.Field == "protocol":
			m.Proto = ipProtoNames[n]
		case p.Field == "dport" && n > 0 && n < 1<<16:
			m.External = uint16(n)
		}
	}
	return m, dnat && m.Proto != "" && m.External != 0
}

var (
	ipProtoNames   = map[int]string{6: "tcp", 17: "udp"}
	ipProtoNumbers = map[string]int{"tcp": 6, "udp": 17}
)

// parseLeases reads miniupnpd's lease file: one mapping a line,
// PROTO:EPORT:IADDR:IPORT:EXPIRY:DESC, EXPIRY in Unix seconds (0: none),
// DESC the rest of the line. Lines that do not parse are skipped.
func parseLeases(text string) []PortMapping {
	var out []PortMapping
	for _, line := range strings.Split(text, "\n") {
		f := strings.SplitN(strings.TrimRight(line, "\r"), ":", 6)
		if len(f) != 6 {
			continue
		}
		ep, err1 := strconv.ParseUint(f[1], 10, 16)
		addr, err2 := netip.ParseAddr(f[2])
		ip, err3 := strconv.ParseUint(f[3], 10, 16)
		exp, err4 := strconv.ParseInt(f[4], 10, 64)
		proto := strings.ToLower(f[0])
		if err := errors.Join(err1, err2, err3, err4); err != nil || (proto != "udp" && proto != "tcp") {
			continue
		}
		m := PortMapping{Proto: proto, External: uint16(ep), Internal: netip.AddrPortFrom(addr, uint16(ip)), Desc: f[5]}
		if exp > 0 {
			m.Expires = time.Unix(exp, 0)
		}
		out = append(out, m)
	}
	return out
}

// upnpcLine is a mapping in `upnpc -l`'s list:
// " 0 UDP  5555->192.168.0.10:5555  'libminiupnpc' ” 604800".
var upnpcLine = regexp.MustCompile(`^\s*\d+\s+(UDP|TCP)\s+(\d+)->([0-9.]+):(\d+)\s+'([^']*)'\s+'[^']*'\s+(\d+)`)

// parseUpnpcList reads the mappings that `upnpc -l` lists (through UPnP
// IGD's GetGenericPortMappingEntry); each lease's remaining seconds
// count from now (zero: none).
func parseUpnpcList(out string, now time.Time) []PortMapping {
	var ms []PortMapping
	for _, line := range strings.Split(out, "\n") {
		g := upnpcLine.FindStringSubmatch(line)
		if g == nil {
			continue
		}
		ep, err1 := strconv.ParseUint(g[2], 10, 16)
		addr, err2 := netip.ParseAddr(g[3])
		ip, err3 := strconv.ParseUint(g[4], 10, 16)
		secs, err4 := strconv.ParseInt(g[6], 10, 64)
		if errors.Join(err1, err2, err3, err4) != nil {
			continue
		}
		m := PortMapping{Proto: strings.ToLower(g[1]), External: uint16(ep), Internal: netip.AddrPortFrom(addr, uint16(ip)), Desc: g[5]}
		if secs > 0 {
			m.Expires = now.Add(time.Duration(secs) * time.Second)
		}
		ms = append(ms, m)
	}
	sort.Slice(ms, func(i, j int) bool { return ms[i].External < ms[j].External })
	return ms
}

// UpnpcMappings lists the router's mappings as Debian's UPnP client sees
// them: `upnpc -l` run in host h (of an apdm-portmap site), at most 10 s.
func (tb *Testbed) UpnpcMappings(ctx context.Context, h Host) ([]PortMapping, error) {
	_, url, err := tb.PortmapGateway(h)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	out, err := tb.Run(ctx, h.NS, "upnpc", "-u", url, "-l")
	if err != nil {
		return nil, err
	}
	if !strings.Contains(out, "ExternalIPAddress") {
		return nil, fmt.Errorf("testnet: upnpc -l: no answer from %s: %s", url, tail(out, 500))
	}
	return parseUpnpcList(out, time.Now()), nil
}

// WaitUDPMapping polls the site's UDP mappings (UDPMappings, every 100
// ms, at most within) until one that match accepts is there (present)
// or none is (!present), and returns the mappings it saw last. A
// scenario shows with it that a node's mapping is on the router while
// the node runs and gone after its clean shutdown.
func (tb *Testbed) WaitUDPMapping(ctx context.Context, site string, present bool, match func(PortMapping) bool, within time.Duration) ([]PortMapping, error) {
	deadline := time.Now().Add(within)
	for {
		ms, err := tb.UDPMappings(ctx, site)
		if err != nil {
			return nil, err
		}
		if slices.ContainsFunc(ms, match) == present {
			return ms, nil
		}
		if time.Now().After(deadline) {
			want := "a matching mapping"
			if !present {
				want = "no matching mapping"
			}
			return ms, fmt.Errorf("testnet: site %s: %s after %v; mappings: %v", site, want, within, ms)
		}
		select {
		case <-ctx.Done():
			return ms, ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// natpmpcAddr is natpmpc's answer to a public address request.
var natpmpcAddr = regexp.MustCompile(`Public IP address : ([0-9.]+)`)

// upnpcExternal is upnpc -s's external address line.
var upnpcExternal = regexp.MustCompile(`ExternalIPAddress = ([0-9.]+)`)

// verifyPortmap checks that the router of h's apdm-portmap site holds no
// mapping and answers h with the site's public address over every
// protocol: UPnP IGD (found by SSDP, then asked by its URL), NAT-PMP and
// PCP (an ANNOUNCE). It returns what answered (for the report) and, when
// the router falls short, why. 15 s at most.
func (tb *Testbed) verifyPortmap(ctx context.Context, h Host) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	pm, err := tb.portmap(h.Site)
	if err != nil {
		return "", err
	}
	gw, url, _ := tb.PortmapGateway(h)
	if ms, err := tb.UDPMappings(ctx, h.Site); err != nil || len(ms) > 0 {
		return "", fmt.Errorf("mappings before any client asked: %v %w", ms, err)
	}
	var got []string
	out, err := tb.Run(ctx, h.NS, "upnpc", "-s")
	if !strings.Contains(out, "desc: "+url) {
		return "", fmt.Errorf("SSDP did not find %s: %w: %s", url, err, tail(out, 300))
	}
	out, err = tb.Run(ctx, h.NS, "upnpc", "-u", url, "-s")
	if g := upnpcExternal.FindStringSubmatch(out); g == nil || g[1] != pm.public.String() {
		return "", fmt.Errorf("UPnP IGD at %s: want external address %s: %w: %s", url, pm.public, err, tail(out, 300))
	}
	got = append(got, "upnp "+pm.public.String())
	out, err = tb.Run(ctx, h.NS, "natpmpc", "-g", gw.String())
	if g := natpmpcAddr.FindStringSubmatch(out); g == nil || g[1] != pm.public.String() {
		return "", fmt.Errorf("NAT-PMP at %s: want public address %s: %w: %s", gw, pm.public, err, tail(out, 300))
	}
	got = append(got, "natpmp "+pm.public.String())
	res, epoch, err := pcpAnnounce(h, gw, 500*time.Millisecond)
	if err != nil || res != 0 {
		return "", fmt.Errorf("PCP ANNOUNCE at %s: result %d: %w", gw, res, err)
	}
	got = append(got, fmt.Sprintf("pcp epoch %d", epoch))
	return strings.Join(got, ", "), nil
}

// pcpAnnounce sends a PCP ANNOUNCE request (RFC 6887 section 14.1) from
// host h to the server at gw, up to 3 times wait apart, and returns the
// answer's result code (0: success) and epoch.
func pcpAnnounce(h Host, gw netip.Addr, wait time.Duration) (result byte, epoch uint32, err error) {
	c, err := ListenUDP(h.NS, netip.AddrPortFrom(h.Addr, 0))
	if err != nil {
		return 0, 0, err
	}
	defer c.Close()
	req := make([]byte, 24) // version 2, opcode ANNOUNCE, lifetime 0
	req[0] = 2
	a := h.Addr.As16() // the client's address, IPv4-mapped
	copy(req[8:], a[:])
	buf := make([]byte, 1100)
	for range 3 {
		if _, err := c.WriteToUDPAddrPort(req, netip.AddrPortFrom(gw, PortmapPort)); err != nil {
			return 0, 0, err
		}
		c.SetReadDeadline(time.Now().Add(wait))
		n, from, err := c.ReadFromUDPAddrPort(buf)
		if err != nil {
			continue
		}
		if from.Addr().Unmap() != gw || n < 24 || buf[0] != 2 || buf[1] != 0x80 {
			return 0, 0, fmt.Errorf("not a PCP ANNOUNCE response from %v: % x", from, buf[:min(n, 24)])
		}
		return buf[3], uint32(buf[8])<<24 | uint32(buf[9])<<16 | uint32(buf[10])<<8 | uint32(buf[11]), nil
	}
	return 0, 0, errors.New("no answer")
}
