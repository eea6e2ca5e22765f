package testnet

import (
	"fmt"
	"net/netip"
	"sort"
	"strings"
)

// Role is what a namespace is in the topology.
type Role string

// Roles.
const (
	RoleInet   Role = "inet"   // the internet router
	RoleServer Role = "server" // bootstrap and probe servers
	RoleRouter Role = "router" // a NAT router
	RoleHost   Role = "host"   // a peer's machine
	RoleWire   Role = "wire"   // an impaired link's delay line
)

// Host is a machine at a site.
type Host struct {
	Site  string
	Class Class
	Index int    // 0 or 1
	NS    string // namespace name
	Addr  netip.Addr
	// Addr6 is a dual-stack host's global IPv6 address (invalid for
	// every other class: an IPv6-only host's is Addr).
	Addr6 netip.Addr
	// Router is the namespace of the NAT router in front of the host
	// (the home router for cgnat); empty for a public host.
	Router string
}

// Router is a NAT router.
type Router struct {
	Site    string
	NS      string
	Ruleset Ruleset
	// Outer is true for the router on the site's access link (for cgnat:
	// the carrier NAT).
	Outer bool
	// NAT64 is true for a router that runs tayga (v6-nat64): its tun
	// device NAT64Dev carries NAT64Prefix and the pool NAT64Pool.
	NAT64 bool
}

// The v6-nat64 router's NAT64: tayga's tun device, its IPv4 address and
// the pool it maps IPv6 hosts into (then masqueraded to the router's
// public address).
const (
	NAT64Dev  = "nat64"
	nat64Addr = "192.168.255.1"
	nat64Pool = "192.168.255.0/24"
)

// Wire is an impaired link: frames between IfA (towards the site) and IfB
// (towards the internet) are delayed, dropped and rate-limited in NS.
type Wire struct {
	Site     string
	NS       string
	IfA, IfB string
	Impair   Impairment
	// Neighbours are the interfaces at both ends (ns, ifname) whose
	// offloads must be off so that the delay line sees real frames.
	Neighbours [2][2]string
}

// link is one veth pair.
type link struct {
	nsA, ifA, nsB, ifB string
}

// Plan is a topology as data: what Build creates. It is a pure function
// of the spec (see PlanFor) and is what the golden tests pin.
type Plan struct {
	Prefix     string
	Namespaces []string
	Roles      map[string]Role
	Links      []link
	// IP holds, per namespace, the `ip -batch` lines (addresses, links up,
	// routes).
	IP      map[string][]string
	Forward []string // namespaces that route (ip_forward=1)
	Routers []Router
	Hosts   []Host
	Wires   []Wire
	// Public is each site's public address (the host's for public sites).
	Public map[string]netip.Addr
}

// PlanFor turns a validated spec into a plan.
func PlanFor(s Spec) (*Plan, error) {
	s, err := s.Validate()
	if err != nil {
		return nil, err
	}
	b := &planner{prefix: s.Prefix, p: &Plan{Prefix: s.Prefix, Roles: map[string]Role{}, IP: map[string][]string{}, Public: map[string]netip.Addr{}}}
	inet := b.core()
	for i, site := range s.Sites {
		b.site(i, site, inet)
	}
	return b.p, nil
}

// planner builds a plan: it names namespaces and records them, their
// links and their ip lines in the order Build applies them.
type planner struct {
	prefix string
	p      *Plan
}

// ns adds the namespace prefix+name with its role (routing if it is the
// internet or a NAT router) and returns its full name.
func (b *planner) ns(name string, role Role) string {
	full := b.prefix + name
	b.p.Namespaces = append(b.p.Namespaces, full)
	b.p.Roles[full] = role
	if role == RoleInet || role == RoleRouter {
		b.p.Forward = append(b.p.Forward, full)
	}
	b.p.IP[full] = append(b.p.IP[full], "link set lo up")
	return full
}

// ip adds an `ip -batch` line to namespace n.
func (b *planner) ip(n string, format string, args ...any) {
	b.p.IP[n] = append(b.p.IP[n], fmt.Sprintf(format, args...))
}

// veth adds a veth pair between ifA in nsA and ifB in nsB, both up.
func (b *planner) veth(nsA, ifA, nsB, ifB string) {
	b.p.Links = append(b.p.Links, link{nsA, ifA, nsB, ifB})
	b.ip(nsA, "link set %s up", ifA)
	b.ip(nsB, "link set %s up", ifB)
}

// core adds the internet router and the server namespace behind it, and
// returns the internet router's namespace.
func (b *planner) core() string {
	inet := b.ns("inet", RoleInet)
	srv := b.ns("srv", RoleServer)
	b.veth(srv, "eth0", inet, "srv0")
	b.ip(inet, "addr add 203.0.113.254/24 dev srv0")
	for n := 1; n <= 3; n++ {
		b.ip(srv, "addr add %s/24 dev eth0", ServerAddr(n))
	}
	b.ip(srv, "route add default via 203.0.113.254")
	// The internet's IPv6: the servers' /64 (2001:db8::/64). No duplicate
	// address detection: nothing else claims these addresses, and a
	// tentative address cannot send for a second.
	b.ip(inet, "addr add %s/64 dev srv0 nodad", inetAddr6())
	for n := 1; n <= 3; n++ {
		b.ip(srv, "addr add %s/64 dev eth0 nodad", ServerAddr6(n))
	}
	b.ip(srv, "addr add %s/64 dev eth0 nodad", dns64Server())
	b.ip(srv, "route add ::/0 via %s", inetAddr6())
	return inet
}

// site adds site i: its access link to the internet router inet and,
// by class, a public host, a carrier NAT with its homes, or a NAT router
// with its hosts.
func (b *planner) site(i int, site SiteSpec, inet string) {
	if site.Class.IPv6Only() {
		b.v6Site(i, site, inet)
		return
	}
	public, gw := siteWAN(i)
	b.p.Public[site.Name] = public
	inetIf := fmt.Sprintf("a%d", i)
	b.ip(inet, "addr add %s/30 dev %s", gw, inetIf)

	if site.Class == ClassPublic {
		h := b.ns(fmt.Sprintf("h%da", i), RoleHost)
		b.attach(i, site, h, "eth0", inet, inetIf)
		b.ip(h, "addr add %s/30 dev eth0", public)
		b.ip(h, "route add default via %s", gw)
		b.p.Hosts = append(b.p.Hosts, Host{Site: site.Name, Class: site.Class, NS: h, Addr: public})
		return
	}

	r := b.ns(fmt.Sprintf("r%d", i), RoleRouter)
	b.attach(i, site, r, "wan0", inet, inetIf)
	b.ip(r, "addr add %s/30 dev wan0", public)
	b.ip(r, "route add default via %s", gw)
	if site.Class == ClassCGNAT {
		b.carrierNAT(i, site, r, public)
		return
	}
	b.natRouter(i, site, r, public)
	if site.Class == ClassDualStack {
		b.dualStack(i, r, inet)
	}
}

// v6Site adds an IPv6-only site: its router (a stateful firewall, no NAT)
// on its IPv6 access link, and its host on the site's /64. A v6-nat64
// router also has the site's IPv4 address on the access link, behind
// which its NAT64's pool is masqueraded (eim-apdf).
func (b *planner) v6Site(i int, site SiteSpec, inet string) {
	wan, gw := siteWAN6(i)
	lan, lanGW, hostAddr := siteLAN6(i)
	inetIf := fmt.Sprintf("a%d", i)
	b.ip(inet, "addr add %s/64 dev %s nodad", gw, inetIf)
	r := b.ns(fmt.Sprintf("r%d", i), RoleRouter)
	b.attach(i, site, r, "wan0", inet, inetIf)
	b.ip(inet, "route add %s via %s", lan, wan) // once the link is up
	b.ip(r, "addr add %s/64 dev wan0 nodad", wan)
	b.ip(r, "route add ::/0 via %s", gw)
	h := b.ns(fmt.Sprintf("h%da", i), RoleHost)
	b.veth(r, "lan0", h, "eth0")
	b.ip(r, "addr add %s/64 dev lan0 nodad", lanGW)
	b.ip(h, "addr add %s/64 dev eth0 nodad", hostAddr)
	b.ip(h, "route add ::/0 via %s", lanGW)
	b.p.Public[site.Name] = hostAddr
	b.p.Hosts = append(b.p.Hosts, Host{Site: site.Name, Class: site.Class, NS: h, Addr: hostAddr, Router: r})
	rs := Ruleset{WAN: "wan0", LANs: []string{"lan0"}, Firewall6: true,
		Comment: fmt.Sprintf("%s: IPv6 only, stateful firewall (APDF), no NAT", site.Name)}
	nat64 := site.Class == ClassV6NAT64
	if nat64 {
		public, gw4 := siteWAN(i)
		b.ip(inet, "addr add %s/30 dev %s", gw4, inetIf)
		b.ip(r, "addr add %s/30 dev wan0", public)
		b.ip(r, "route add default via %s", gw4)
		b.p.Public[site.Name] = public
		rs = Ruleset{WAN: "wan0", WANAddr: public, LANs: []string{NAT64Dev}, Mapping: "eim", Filtering: "apdf",
			Firewall6: true, LANs6: []string{"lan0"},
			Comment: fmt.Sprintf("%s: IPv6 only behind a stateful firewall (APDF); IPv4 through NAT64 %s, then eim-apdf", site.Name, NAT64Prefix)}
	}
	b.p.Routers = append(b.p.Routers, Router{Site: site.Name, NS: r, Outer: true, NAT64: nat64, Ruleset: rs})
}

// attach adds site i's access link from siteIf in siteNS to inetIf in
// inet: directly, or through a wire namespace when the link is impaired.
func (b *planner) attach(i int, site SiteSpec, siteNS, siteIf, inet, inetIf string) {
	if site.Link.Zero() {
		b.veth(siteNS, siteIf, inet, inetIf)
		return
	}
	w := b.ns(fmt.Sprintf("w%d", i), RoleWire)
	b.veth(siteNS, siteIf, w, "x0")
	b.veth(w, "x1", inet, inetIf)
	b.p.Wires = append(b.p.Wires, Wire{Site: site.Name, NS: w, IfA: "x0", IfB: "x1", Impair: *site.Link,
		Neighbours: [2][2]string{{siteNS, siteIf}, {inet, inetIf}}})
}

// lanHost adds host k of site i on a LAN behind router (the router's side
// of the link is lan) and returns it.
func (b *planner) lanHost(i, k int, site SiteSpec, router, lan string) Host {
	h := b.ns(fmt.Sprintf("h%d%c", i, 'a'+k), RoleHost)
	lanGW := netip.AddrFrom4([4]byte{192, 168, byte(i + 100*k), 1})
	hostAddr := netip.AddrFrom4([4]byte{192, 168, byte(i + 100*k), 10})
	b.veth(router, lan, h, "eth0")
	b.ip(router, "addr add %s/24 dev %s", lanGW, lan)
	b.ip(h, "addr add %s/24 dev eth0", hostAddr)
	b.ip(h, "route add default via %s", lanGW)
	return Host{Site: site.Name, Class: site.Class, Index: k, NS: h, Addr: hostAddr, Router: router}
}

// carrierNAT adds a cgnat site's homes behind its carrier NAT r (public
// address public): one inner link per home, each home an eim-apdf NAT
// with one host; then the carrier NAT's ruleset.
func (b *planner) carrierNAT(i int, site SiteSpec, r string, public netip.Addr) {
	var inner []string
	for k := range site.Hosts {
		in := fmt.Sprintf("in%d", k+1)
		inner = append(inner, in)
		home := b.ns(fmt.Sprintf("r%dh%d", i, k+1), RoleRouter)
		cgnSide := netip.AddrFrom4([4]byte{100, 64, byte(i), byte(4*k + 1)})
		homeWAN := netip.AddrFrom4([4]byte{100, 64, byte(i), byte(4*k + 2)})
		b.veth(r, in, home, "wan0")
		b.ip(r, "addr add %s/30 dev %s", cgnSide, in)
		b.ip(home, "addr add %s/30 dev wan0", homeWAN)
		b.ip(home, "route add default via %s", cgnSide)
		h := b.lanHost(i, k, site, home, "lan0")
		b.p.Routers = append(b.p.Routers, Router{Site: site.Name, NS: home, Ruleset: Ruleset{
			WAN: "wan0", WANAddr: homeWAN, LANs: []string{"lan0"}, Mapping: "eim", Filtering: "apdf",
			Comment: fmt.Sprintf("%s home %d: eim-apdf", site.Name, k+1)}})
		b.p.Hosts = append(b.p.Hosts, h)
	}
	b.p.Routers = append(b.p.Routers, Router{Site: site.Name, NS: r, Outer: true, Ruleset: Ruleset{
		WAN: "wan0", WANAddr: public, LANs: inner, Mapping: "eim", Filtering: "apdf", Hairpin: site.Hairpin,
		Comment: fmt.Sprintf("%s carrier NAT: eim-apdf, hairpin %v", site.Name, site.Hairpin)}})
}

// natBehaviour is the mapping and filtering of each single-NAT class's
// router, and whether it blocks UDP.
var natBehaviour = map[Class]struct {
	mapping, filtering string
	blockUDP           bool
}{
	ClassEIMEIF:      {"eim", "eif", false},
	ClassEIMADF:      {"eim", "adf", false},
	ClassEIMAPDF:     {"eim", "apdf", false},
	ClassAPDM:        {"apdm", "apdf", false},
	ClassAPDMPortmap: {"apdm", "apdf", false},
	ClassUDPBlocked:  {"eim", "apdf", true},
	ClassDualStack:   {"eim", "apdf", false}, // its IPv4; its IPv6 is firewalled (Ruleset.Firewall6)
}

// natRouter adds a single-NAT site's hosts, one LAN each, behind its
// router r (public address public), and the router's ruleset for the
// site's class.
func (b *planner) natRouter(i int, site SiteSpec, r string, public netip.Addr) {
	var lans []string
	for k := range site.Hosts {
		lan := fmt.Sprintf("lan%d", k)
		lans = append(lans, lan)
		b.p.Hosts = append(b.p.Hosts, b.lanHost(i, k, site, r, lan))
	}
	nb := natBehaviour[site.Class]
	rs := Ruleset{WAN: "wan0", WANAddr: public, LANs: lans, Hairpin: site.Hairpin,
		Mapping: nb.mapping, Filtering: nb.filtering, BlockUDP: nb.blockUDP, PortMap: site.Class == ClassAPDMPortmap,
		Comment: fmt.Sprintf("%s: %s, hairpin %v", site.Name, site.Class, site.Hairpin)}
	if site.Class == ClassDualStack {
		rs.Firewall6, rs.LANs6 = true, []string{"lan0"}
		rs.Comment = fmt.Sprintf("%s: dual-stack: IPv4 eim-apdf, IPv6 a stateful firewall (APDF), no NAT", site.Name)
	}
	b.p.Routers = append(b.p.Routers, Router{Site: site.Name, NS: r, Outer: true, Ruleset: rs})
}

// dualStack gives dual-stack site i's router r and its host (the last one
// added) IPv6 as v6Site does: the access link's /64 and the site's /64,
// the host's global address on it.
func (b *planner) dualStack(i int, r, inet string) {
	wan, gw := siteWAN6(i)
	lan, lanGW, hostAddr := siteLAN6(i)
	inetIf := fmt.Sprintf("a%d", i)
	b.ip(inet, "addr add %s/64 dev %s nodad", gw, inetIf)
	b.ip(inet, "route add %s via %s", lan, wan)
	b.ip(r, "addr add %s/64 dev wan0 nodad", wan)
	b.ip(r, "route add ::/0 via %s", gw)
	h := &b.p.Hosts[len(b.p.Hosts)-1]
	b.ip(r, "addr add %s/64 dev lan0 nodad", lanGW)
	b.ip(h.NS, "addr add %s/64 dev eth0 nodad", hostAddr)
	b.ip(h.NS, "route add ::/0 via %s", lanGW)
	h.Addr6 = hostAddr
}

// String renders the plan for golden tests: namespaces with their roles,
// links, ip commands and rulesets, in a stable order.
func (p *Plan) String() string {
	var b strings.Builder
	for _, n := range p.Namespaces {
		fmt.Fprintf(&b, "netns %s %s\n", n, p.Roles[n])
	}
	for _, l := range p.Links {
		fmt.Fprintf(&b, "veth %s/%s <-> %s/%s\n", l.nsA, l.ifA, l.nsB, l.ifB)
	}
	names := make([]string, 0, len(p.IP))
	for n := range p.IP {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		for _, line := range p.IP[n] {
			fmt.Fprintf(&b, "ip -n %s %s\n", n, line)
		}
	}
	for _, w := range p.Wires {
		fmt.Fprintf(&b, "wire %s %s<->%s delay=%v loss=%.1f%% rate=%dkbit\n", w.NS, w.IfA, w.IfB, w.Impair.Delay, w.Impair.Loss, w.Impair.RateKbit)
	}
	for _, h := range p.Hosts {
		fmt.Fprintf(&b, "host %s[%d] %s %s behind %q\n", h.Site, h.Index, h.NS, h.Addr, h.Router)
	}
	for _, r := range p.Routers {
		text, err := r.Ruleset.Render()
		if err != nil {
			text = "ERROR " + err.Error()
		}
		fmt.Fprintf(&b, "ruleset %s (outer %v):\n%s", r.NS, r.Outer, text)
	}
	return b.String()
}
