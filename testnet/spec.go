package testnet

import (
	"fmt"
	"net/netip"
	"regexp"
	"slices"
	"time"
)

// Class is a site's NAT class, as named in reports.
type Class string

// Site classes.
const (
	ClassPublic  Class = "public"   // no NAT
	ClassEIMEIF  Class = "eim-eif"  // full cone
	ClassEIMADF  Class = "eim-adf"  // restricted cone
	ClassEIMAPDF Class = "eim-apdf" // port-restricted cone
	ClassAPDM    Class = "apdm"     // symmetric: a random port per destination
	// ClassAPDMPortmap is apdm whose router also runs Debian's miniupnpd
	// (UPnP IGD, NAT-PMP and PCP): a host may map a port on it (issue 18).
	ClassAPDMPortmap Class = "apdm-portmap"
	ClassCGNAT       Class = "cgnat"       // a home NAT (eim-apdf) behind a carrier NAT (eim-apdf) on 100.64.0.0/10
	ClassUDPBlocked  Class = "udp-blocked" // a NAT that drops all outbound UDP, TCP passes
	// ClassV6Firewall is an IPv6-only site: no NAT, its host's global
	// address behind a stateful firewall that drops unsolicited inbound
	// (address- and port-dependent filtering).
	ClassV6Firewall Class = "v6-firewall"
	// ClassV6NAT64 is an IPv6-only site on a mobile-style network: its
	// host's global address behind the same firewall as v6-firewall, and
	// IPv4 only through the router's NAT64 (Debian's tayga, prefix
	// NAT64Prefix, then an eim-apdf NAT to the router's public IPv4
	// address), with a DNS64 answer for ipv4only.arpa (dnsmasq).
	ClassV6NAT64 Class = "v6-nat64"
	// ClassDualStack is a home network in both families: IPv4 behind an
	// eim-apdf NAT, and the host's global IPv6 address on the site's /64
	// behind the same stateful firewall as v6-firewall. Its node runs
	// one dual-stack socket (--listen 0.0.0.0:P,[::]:P) and registers
	// over IPv4; the bootstraps observe its IPv6 address through its
	// token (see bootstrap/wire.Registered.Other).
	ClassDualStack Class = "dual-stack"
)

// NAT64Prefix is the prefix of the v6-nat64 sites' NAT64 (a
// network-specific one: the Well-Known Prefix would not carry the
// testbed's IPv4 addresses to tayga if it took them for private ones).
const NAT64Prefix = "2001:db8:64::/96"

// Classes returns every class the testbed knows, in report order.
func Classes() []Class {
	return []Class{ClassPublic, ClassEIMEIF, ClassEIMADF, ClassEIMAPDF, ClassAPDM, ClassAPDMPortmap, ClassCGNAT, ClassUDPBlocked, ClassV6Firewall, ClassV6NAT64, ClassDualStack}
}

// IPv6Only reports whether a site of class c has IPv6 addresses and no
// IPv4 ones (a v6-nat64 host reaches IPv4 through its NAT64 all the same).
func (c Class) IPv6Only() bool { return c == ClassV6Firewall || c == ClassV6NAT64 }

// SharesFamily reports whether nodes at sites of classes a and b can
// reach each other's addresses without a relay: both IPv6-only, both
// IPv4-only, or one behind NAT64 (which reaches both).
func SharesFamily(a, b Class) bool {
	return a.IPv6Only() == b.IPv6Only() || a == ClassV6NAT64 || b == ClassV6NAT64 || a == ClassDualStack || b == ClassDualStack
}

// HasIPv6 reports whether a site of class c gives its host a global IPv6
// address.
func (c Class) HasIPv6() bool { return c.IPv6Only() || c == ClassDualStack }

// DefaultClasses returns the classes of the default set, in report order:
// every class (apdm-portmap among them since the node maps ports).
func DefaultClasses() []Class {
	return Classes()
}

// Valid reports whether c is a known class.
func (c Class) Valid() bool { return slices.Contains(Classes(), c) }

// Behaviour is the RFC 4787 behaviour a class must show: mapping "none",
// "EIM", "ADM", "APDM" or "-" (not measurable: UDP blocked); filtering
// "none", "EIF", "ADF", "APDF" or "blocked".
func (c Class) Behaviour() (mapping, filtering string) {
	switch c {
	case ClassPublic:
		return "none", "none"
	case ClassEIMEIF:
		return "EIM", "EIF"
	case ClassEIMADF:
		return "EIM", "ADF"
	case ClassEIMAPDF, ClassCGNAT, ClassDualStack: // dual-stack: its IPv4 (IPv6 checked apart, as v6-firewall)
		return "EIM", "APDF"
	case ClassAPDM, ClassAPDMPortmap: // apdm-portmap measured without a mapping
		return "APDM", "APDF"
	case ClassUDPBlocked:
		return "-", "blocked"
	case ClassV6Firewall:
		return "none", "APDF"
	case ClassV6NAT64: // measured through the NAT64, at IPv4 servers
		return "EIM", "APDF"
	}
	return "", ""
}

// AntnodeClass is the NAT class antnode must measure for a site of class
// c (nattype.Type.Class): a carrier NAT in front of a home NAT, both
// port-preserving and port-restricted, behaves as one eim-apdf NAT; an
// apdm router that also maps ports on request is apdm to STUN; a global
// address behind a port-restricted firewall behaves as an eim-apdf NAT.
func (c Class) AntnodeClass() string {
	switch c {
	case ClassCGNAT, ClassV6Firewall, ClassV6NAT64, ClassDualStack:
		return string(ClassEIMAPDF)
	case ClassAPDMPortmap:
		return string(ClassAPDM)
	}
	return string(c)
}

// Impairment is what a link adds to every packet, one way.
type Impairment struct {
	Delay    time.Duration // one-way delay
	Loss     float64       // percent of packets dropped, 0-100
	RateKbit int           // rate limit in kbit/s; zero: none
}

// Zero reports whether the link is unimpaired.
func (i Impairment) Zero() bool { return i.Delay == 0 && i.Loss == 0 && i.RateKbit == 0 }

// SiteSpec describes one site: hosts behind a NAT router of a class.
type SiteSpec struct {
	Name    string // unique; lower-case letters, digits and dashes, at most 20 characters
	Class   Class
	Hosts   int  // 1 or 2 hosts (for cgnat: two homes behind one carrier NAT). Zero: 1
	Hairpin bool // the router (for cgnat: the carrier NAT) hairpins
	// Link overrides Spec.Link for this site's access link.
	Link *Impairment
}

// Spec is a whole testbed.
type Spec struct {
	// Prefix names every namespace of the testbed; it must be unique per
	// concurrent run. Empty: "antb" + the process ID + "-". Cleanup reads
	// the owner's process ID from prefixes of the form "antb" + optional
	// lower-case letters + ID, and keeps the namespaces of live owners.
	Prefix string
	Sites  []SiteSpec
	// Link is the impairment of every access link (site to internet).
	Link Impairment
}

var siteName = regexp.MustCompile(`^[a-z0-9][a-z0-9-]{0,19}$`)

// Validate checks the spec and fills defaults into a copy.
func (s Spec) Validate() (Spec, error) {
	if len(s.Sites) == 0 {
		return s, fmt.Errorf("testnet: spec has no sites")
	}
	if len(s.Sites) > maxSites {
		return s, fmt.Errorf("testnet: %d sites, at most %d", len(s.Sites), maxSites)
	}
	if s.Prefix != "" && !regexp.MustCompile(`^[a-z0-9-]{1,16}$`).MatchString(s.Prefix) {
		return s, fmt.Errorf("testnet: prefix %q: use at most 16 lower-case letters, digits, dashes", s.Prefix)
	}
	seen := map[string]bool{}
	sites := make([]SiteSpec, len(s.Sites))
	for i, site := range s.Sites {
		if !siteName.MatchString(site.Name) {
			return s, fmt.Errorf("testnet: site name %q: want [a-z0-9-], at most 20 characters", site.Name)
		}
		if seen[site.Name] {
			return s, fmt.Errorf("testnet: duplicate site %q", site.Name)
		}
		seen[site.Name] = true
		if !site.Class.Valid() {
			return s, fmt.Errorf("testnet: site %s: unknown class %q", site.Name, site.Class)
		}
		if site.Hosts == 0 {
			site.Hosts = 1
		}
		if site.Hosts < 1 || site.Hosts > 2 {
			return s, fmt.Errorf("testnet: site %s: %d hosts, want 1 or 2", site.Name, site.Hosts)
		}
		if (site.Class == ClassPublic || site.Class.IPv6Only()) && site.Hosts != 1 {
			return s, fmt.Errorf("testnet: site %s: a %s site has one host", site.Name, site.Class)
		}
		l := s.Link
		if site.Link != nil {
			l = *site.Link
		}
		if l.Delay < 0 || l.Delay > 5*time.Second || l.Loss < 0 || l.Loss > 100 || l.RateKbit < 0 {
			return s, fmt.Errorf("testnet: site %s: impairment %+v out of range", site.Name, l)
		}
		site.Link = &l
		sites[i] = site
	}
	s.Sites = sites
	return s, nil
}

// maxSites is bounded by the /30 access subnets in 198.51.100.0/24.
const maxSites = 60

// ServerAddr returns server n (1, 2 or 3): 203.0.113.n. S1 and S2 run
// the bootstrap nodes; S1 (on two ports), S2 and S3 the verification
// probes.
func ServerAddr(n int) netip.Addr { return netip.AddrFrom4([4]byte{203, 0, 113, byte(n)}) }

// ServerAddr6 returns server n's IPv6 address: 2001:db8::n.
func ServerAddr6(n int) netip.Addr {
	return netip.AddrFrom16([16]byte{0x20, 0x01, 0x0d, 0xb8, 15: byte(n)})
}

// dns64Server is the DNS64 of the v6-nat64 sites (dnsmasq, on the
// servers' network, reached over IPv6): 2001:db8::53.
func dns64Server() netip.Addr { return ServerAddr6(0x53) }

// inetAddr6 is the internet router's IPv6 address on the servers' /64.
func inetAddr6() netip.Addr { return ServerAddr6(0xfe) }

// siteWAN6 returns site i's IPv6 access link, 2001:db8:<i+1>::/64: the
// site's address (::1) and the internet router's (::2).
func siteWAN6(i int) (site, gateway netip.Addr) {
	a := [16]byte{0x20, 0x01, 0x0d, 0xb8, 0, byte(i + 1), 15: 1}
	site = netip.AddrFrom16(a)
	a[15] = 2
	return site, netip.AddrFrom16(a)
}

// siteLAN6 returns site i's /64, 2001:db8:1<i>::/64 (i in hex, two
// digits), on which its router is ::1 and its host ::10.
func siteLAN6(i int) (lan netip.Prefix, router, host netip.Addr) {
	a := [16]byte{0x20, 0x01, 0x0d, 0xb8, 0x01, byte(i)}
	lan = netip.PrefixFrom(netip.AddrFrom16(a), 64)
	a[15] = 1
	router = netip.AddrFrom16(a)
	a[15] = 0x10
	return lan, router, netip.AddrFrom16(a)
}

// siteWAN returns the /30 of site i (0-based) on 198.51.100.0/24: the
// site's public address and the internet router's side.
func siteWAN(i int) (public, gateway netip.Addr) {
	base := byte(4 * (i + 1))
	return netip.AddrFrom4([4]byte{198, 51, 100, base + 1}), netip.AddrFrom4([4]byte{198, 51, 100, base + 2})
}
