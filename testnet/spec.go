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
)

// Classes returns every class the testbed knows, in report order.
func Classes() []Class {
	return []Class{ClassPublic, ClassEIMEIF, ClassEIMADF, ClassEIMAPDF, ClassAPDM, ClassAPDMPortmap, ClassCGNAT, ClassUDPBlocked}
}

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
	case ClassEIMAPDF, ClassCGNAT:
		return "EIM", "APDF"
	case ClassAPDM, ClassAPDMPortmap: // apdm-portmap measured without a mapping
		return "APDM", "APDF"
	case ClassUDPBlocked:
		return "-", "blocked"
	}
	return "", ""
}

// AntnodeClass is the NAT class antnode must measure for a site of class
// c (nattype.Type.Class): a carrier NAT in front of a home NAT, both
// port-preserving and port-restricted, behaves as one eim-apdf NAT; an
// apdm router that also maps ports on request is apdm to STUN.
func (c Class) AntnodeClass() string {
	switch c {
	case ClassCGNAT:
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
		if site.Class == ClassPublic && site.Hosts != 1 {
			return s, fmt.Errorf("testnet: site %s: a public site has one host", site.Name)
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

// siteWAN returns the /30 of site i (0-based) on 198.51.100.0/24: the
// site's public address and the internet router's side.
func siteWAN(i int) (public, gateway netip.Addr) {
	base := byte(4 * (i + 1))
	return netip.AddrFrom4([4]byte{198, 51, 100, base + 1}), netip.AddrFrom4([4]byte{198, 51, 100, base + 2})
}
