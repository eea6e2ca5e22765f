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
}

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
	p := &Plan{Prefix: s.Prefix, Roles: map[string]Role{}, IP: map[string][]string{}, Public: map[string]netip.Addr{}}
	ns := func(name string, role Role) string {
		full := s.Prefix + name
		p.Namespaces = append(p.Namespaces, full)
		p.Roles[full] = role
		if role == RoleInet || role == RoleRouter {
			p.Forward = append(p.Forward, full)
		}
		p.IP[full] = append(p.IP[full], "link set lo up")
		return full
	}
	ip := func(n string, format string, args ...any) { p.IP[n] = append(p.IP[n], fmt.Sprintf(format, args...)) }
	veth := func(nsA, ifA, nsB, ifB string) {
		p.Links = append(p.Links, link{nsA, ifA, nsB, ifB})
		ip(nsA, "link set %s up", ifA)
		ip(nsB, "link set %s up", ifB)
	}

	inet := ns("inet", RoleInet)
	srv := ns("srv", RoleServer)
	veth(srv, "eth0", inet, "srv0")
	ip(inet, "addr add 203.0.113.254/24 dev srv0")
	for n := 1; n <= 3; n++ {
		ip(srv, "addr add %s/24 dev eth0", ServerAddr(n))
	}
	ip(srv, "route add default via 203.0.113.254")

	for i, site := range s.Sites {
		public, gw := siteWAN(i)
		p.Public[site.Name] = public
		inetIf := fmt.Sprintf("a%d", i)
		// The access link: directly, or through a wire namespace.
		attach := func(siteNS, siteIf string) {
			if site.Link.Zero() {
				veth(siteNS, siteIf, inet, inetIf)
				return
			}
			w := ns(fmt.Sprintf("w%d", i), RoleWire)
			veth(siteNS, siteIf, w, "x0")
			veth(w, "x1", inet, inetIf)
			p.Wires = append(p.Wires, Wire{Site: site.Name, NS: w, IfA: "x0", IfB: "x1", Impair: *site.Link,
				Neighbours: [2][2]string{{siteNS, siteIf}, {inet, inetIf}}})
		}
		ip(inet, "addr add %s/30 dev %s", gw, inetIf)

		if site.Class == ClassPublic {
			h := ns(fmt.Sprintf("h%da", i), RoleHost)
			attach(h, "eth0")
			ip(h, "addr add %s/30 dev eth0", public)
			ip(h, "route add default via %s", gw)
			p.Hosts = append(p.Hosts, Host{Site: site.Name, Class: site.Class, NS: h, Addr: public})
			continue
		}

		r := ns(fmt.Sprintf("r%d", i), RoleRouter)
		attach(r, "wan0")
		ip(r, "addr add %s/30 dev wan0", public)
		ip(r, "route add default via %s", gw)

		if site.Class == ClassCGNAT {
			// Carrier NAT with one inner link per home; each home is an
			// eim-apdf NAT with one host.
			var inner []string
			for k := range site.Hosts {
				in := fmt.Sprintf("in%d", k+1)
				inner = append(inner, in)
				home := ns(fmt.Sprintf("r%dh%d", i, k+1), RoleRouter)
				cgnSide := netip.AddrFrom4([4]byte{100, 64, byte(i), byte(4*k + 1)})
				homeWAN := netip.AddrFrom4([4]byte{100, 64, byte(i), byte(4*k + 2)})
				veth(r, in, home, "wan0")
				ip(r, "addr add %s/30 dev %s", cgnSide, in)
				ip(home, "addr add %s/30 dev wan0", homeWAN)
				ip(home, "route add default via %s", cgnSide)
				h := ns(fmt.Sprintf("h%d%c", i, 'a'+k), RoleHost)
				lanGW := netip.AddrFrom4([4]byte{192, 168, byte(i + 100*k), 1})
				hostAddr := netip.AddrFrom4([4]byte{192, 168, byte(i + 100*k), 10})
				veth(home, "lan0", h, "eth0")
				ip(home, "addr add %s/24 dev lan0", lanGW)
				ip(h, "addr add %s/24 dev eth0", hostAddr)
				ip(h, "route add default via %s", lanGW)
				p.Routers = append(p.Routers, Router{Site: site.Name, NS: home, Ruleset: Ruleset{
					WAN: "wan0", WANAddr: homeWAN, LANs: []string{"lan0"}, Mapping: "eim", Filtering: "apdf",
					Comment: fmt.Sprintf("%s home %d: eim-apdf", site.Name, k+1)}})
				p.Hosts = append(p.Hosts, Host{Site: site.Name, Class: site.Class, Index: k, NS: h, Addr: hostAddr, Router: home})
			}
			p.Routers = append(p.Routers, Router{Site: site.Name, NS: r, Outer: true, Ruleset: Ruleset{
				WAN: "wan0", WANAddr: public, LANs: inner, Mapping: "eim", Filtering: "apdf", Hairpin: site.Hairpin,
				Comment: fmt.Sprintf("%s carrier NAT: eim-apdf, hairpin %v", site.Name, site.Hairpin)}})
			continue
		}

		var lans []string
		for k := range site.Hosts {
			lan := fmt.Sprintf("lan%d", k)
			lans = append(lans, lan)
			h := ns(fmt.Sprintf("h%d%c", i, 'a'+k), RoleHost)
			lanGW := netip.AddrFrom4([4]byte{192, 168, byte(i + 100*k), 1})
			hostAddr := netip.AddrFrom4([4]byte{192, 168, byte(i + 100*k), 10})
			veth(r, lan, h, "eth0")
			ip(r, "addr add %s/24 dev %s", lanGW, lan)
			ip(h, "addr add %s/24 dev eth0", hostAddr)
			ip(h, "route add default via %s", lanGW)
			p.Hosts = append(p.Hosts, Host{Site: site.Name, Class: site.Class, Index: k, NS: h, Addr: hostAddr, Router: r})
		}
		rs := Ruleset{WAN: "wan0", WANAddr: public, LANs: lans, Hairpin: site.Hairpin,
			Comment: fmt.Sprintf("%s: %s, hairpin %v", site.Name, site.Class, site.Hairpin)}
		switch site.Class {
		case ClassEIMEIF:
			rs.Mapping, rs.Filtering = "eim", "eif"
		case ClassEIMADF:
			rs.Mapping, rs.Filtering = "eim", "adf"
		case ClassEIMAPDF:
			rs.Mapping, rs.Filtering = "eim", "apdf"
		case ClassAPDM:
			rs.Mapping, rs.Filtering = "apdm", "apdf"
		case ClassUDPBlocked:
			rs.Mapping, rs.Filtering, rs.BlockUDP = "eim", "apdf", true
		}
		p.Routers = append(p.Routers, Router{Site: site.Name, NS: r, Outer: true, Ruleset: rs})
	}
	return p, nil
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
