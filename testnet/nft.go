package testnet

import (
	"fmt"
	"net/netip"
	"strings"
)

// Ruleset describes one NAT router's nftables ruleset. Render turns it into
// the text that `nft -f -` loads. The rules follow the rulesets verified in
// ../shared/notes/nat-emulation.md: masquerade (port-preserving, so EIM) or
// masquerade random (APDM) for mapping; conntrack plus dynamic maps keyed by
// the mapped port for filtering (EIF: any source may use a mapping; ADF:
// only addresses the host sent to; APDF: only exact address and port, which
// is plain conntrack); unsolicited input to the router is dropped before
// conntrack confirms it (pitfall 1 of the notes).
type Ruleset struct {
	WAN       string     // WAN interface name
	WANAddr   netip.Addr // the router's public address
	LANs      []string   // LAN interface names
	Mapping   string     // "eim" or "apdm"
	Filtering string     // "eif", "adf" or "apdf"
	Hairpin   bool       // LAN hosts may reach each other through the public address
	BlockUDP  bool       // drop all UDP from the LANs to the WAN (TCP still passes)
	// PortMap lets in from the WAN what a port-mapping daemon's own
	// table (miniupnpd's, see portmap.go) destination-NATs: its accept
	// there does not override this table's drop.
	PortMap bool
	// Firewall6 adds an IPv6 stateful firewall (table ip6 fwlab): from
	// the WAN only what conntrack has seen the LAN send to first, exact
	// address and port (APDF); no NAT. A ruleset without WANAddr (and
	// mapping) is that firewall alone: an IPv6-only site.
	Firewall6 bool
	// LANs6 are the firewall's LAN interfaces (Firewall6). Empty: LANs.
	LANs6   []string
	Timeout int      // dynamic map timeout in seconds; zero: 120
	Extra   []string // extra rules for the forward chain, before the defaults (fault injection)
	// Extra6 are extra rules for the IPv6 firewall's forward chain of a
	// dual-stack router (Firewall6 with an IPv4 NAT), before its
	// defaults; an IPv6-only router's are in Extra.
	Extra6  []string
	Comment string // a first-line comment
}

// Validate checks the fields.
func (r Ruleset) Validate() error {
	switch {
	case r.WAN == "" || len(r.LANs) == 0:
		return fmt.Errorf("testnet: ruleset needs a WAN and at least one LAN interface")
	case r.v6Only():
		return nil
	case !r.WANAddr.Is4():
		return fmt.Errorf("testnet: ruleset WAN address %v is not IPv4", r.WANAddr)
	case r.Mapping != "eim" && r.Mapping != "apdm":
		return fmt.Errorf("testnet: mapping %q: want eim or apdm", r.Mapping)
	case r.Filtering != "eif" && r.Filtering != "adf" && r.Filtering != "apdf":
		return fmt.Errorf("testnet: filtering %q: want eif, adf or apdf", r.Filtering)
	case r.Mapping == "apdm" && r.Filtering != "apdf":
		return fmt.Errorf("testnet: APDM mapping implies APDF filtering")
	}
	return nil
}

// v6Only reports whether r is an IPv6 firewall alone (no IPv4 NAT).
func (r Ruleset) v6Only() bool {
	return r.Firewall6 && !r.WANAddr.IsValid() && r.Mapping == "" && r.Filtering == ""
}

// Render returns the ruleset as nft input. It replaces any earlier table of
// the same name atomically.
func (r Ruleset) Render() (string, error) {
	if err := r.Validate(); err != nil {
		return "", err
	}
	if r.v6Only() {
		n := &nftText{r: r, lanSet: r.lanSet(), wan: fmt.Sprintf("%q", r.WAN)}
		if r.Comment != "" {
			n.w("# %s", r.Comment)
		}
		n.firewall6()
		return n.b.String(), nil
	}
	to := r.Timeout
	if to <= 0 {
		to = 120
	}
	n := &nftText{r: r, lanSet: r.lanSet(), wan: fmt.Sprintf("%q", r.WAN), addr: r.WANAddr.String()}
	if r.Comment != "" {
		n.w("# %s", r.Comment)
	}
	n.w("table ip natlab")
	n.w("delete table ip natlab")
	n.w("table ip natlab {")
	n.w("  map inmap  { type inet_service : ipv4_addr . inet_service; flags dynamic,timeout; timeout %ds; }", to)
	n.w("  map outmap { type ipv4_addr . inet_service : inet_service; flags dynamic,timeout; timeout %ds; }", to)
	n.w("  set adfset { type ipv4_addr . inet_service . ipv4_addr; flags dynamic,timeout; timeout %ds; }", to)
	n.natChains()
	n.trackChain()
	n.forwardChain()
	n.inputChain()
	n.w("}")
	if r.Firewall6 {
		n.firewall6()
	}
	return n.b.String(), nil
}

// lanSet is the LAN interfaces as an nft set: { "lan0", "lan1" }.
func (r Ruleset) lanSet() string { return nftSet(r.LANs) }

// nftSet renders interface names as an nft set.
func nftSet(names []string) string {
	q := make([]string, len(names))
	for i, l := range names {
		q[i] = fmt.Sprintf("%q", l)
	}
	return "{ " + strings.Join(q, ", ") + " }"
}

// firewall6 renders the IPv6 stateful firewall: forward what the LAN
// sends and what conntrack matches to it (exact remote address and port:
// APDF); drop the rest from the WAN, and new UDP and TCP to the router
// itself (neighbour discovery, which is ICMPv6, passes).
func (n *nftText) firewall6() {
	w := n.w
	w("table ip6 fwlab")
	w("delete table ip6 fwlab")
	w("table ip6 fwlab {")
	w("  chain fwd_filter {")
	w("    type filter hook forward priority filter; policy drop;")
	extra := n.r.Extra6 // a dual-stack router's Extra is its IPv4 table's
	if n.r.v6Only() {
		extra = n.r.Extra
	}
	for _, e := range extra {
		w("    %s", e)
	}
	lans := n.r.LANs6
	if len(lans) == 0 {
		lans = n.r.LANs
	}
	w("    ct state established,related accept")
	w("    iifname %s accept", nftSet(lans))
	w("    counter comment \"dropped unsolicited\"")
	w("  }")
	w("  chain in_filter {")
	w("    type filter hook input priority filter; policy accept;")
	w("    iifname %s ct state new meta l4proto { udp, tcp } counter drop comment \"unsolicited to router\"", n.wan)
	w("  }")
	w("}")
}

// nftText is a ruleset being rendered: the ruleset, its quoted interface
// names and address, and the text so far.
type nftText struct {
	r                 Ruleset
	lanSet, wan, addr string
	b                 strings.Builder
}

// w appends one line.
func (n *nftText) w(format string, args ...any) { fmt.Fprintf(&n.b, format+"\n", args...) }

// natChains renders the prerouting (filtering's and hairpin's DNAT) and
// postrouting (mapping's masquerade and hairpin's SNAT) chains.
func (n *nftText) natChains() {
	r, w, lanSet, wan, addr := n.r, n.w, n.lanSet, n.wan, n.addr
	w("  chain pre {")
	w("    type nat hook prerouting priority dstnat; policy accept;")
	if r.Filtering == "eif" || r.Filtering == "adf" {
		// Endpoint-independent or address-dependent filtering: a packet to
		// a mapped port is sent to the host that owns the mapping; the
		// forward chain decides whether it may pass.
		w("    iifname %s ip daddr %s meta l4proto udp dnat ip to udp dport map @inmap", wan, addr)
	}
	if r.Hairpin {
		w("    iifname %s ip daddr %s meta l4proto udp dnat ip to udp dport map @inmap", lanSet, addr)
	}
	w("  }")

	w("  chain post {")
	w("    type nat hook postrouting priority srcnat; policy accept;")
	if r.Hairpin {
		// Hairpinned packets keep the sender's public address and port.
		w("    iifname %s oifname %s ct status dnat meta l4proto udp snat ip to %s : ip saddr . udp sport map @outmap", lanSet, lanSet, addr)
		w("    iifname %s oifname %s ct status dnat snat ip to %s", lanSet, lanSet, addr)
	}
	switch r.Mapping {
	case "eim":
		w("    oifname %s masquerade", wan)
	case "apdm":
		w("    oifname %s masquerade random", wan)
	}
	w("  }")
}

// trackChain renders the chain that records each mapping in the dynamic
// maps.
func (n *nftText) trackChain() {
	w, wan := n.w, n.wan
	w("  chain track {")
	w("    type filter hook postrouting priority srcnat + 1; policy accept;")
	w("    oifname %s meta l4proto udp ct direction original update @inmap { ct reply proto-dst : ct original ip saddr . ct original proto-src }", wan)
	w("    oifname %s meta l4proto udp ct direction original update @outmap { ct original ip saddr . ct original proto-src : ct reply proto-dst }", wan)
	w("    oifname %s meta l4proto udp ct direction reply ct status dnat update @inmap { ct original proto-dst : ct reply ip saddr . ct reply proto-src }", wan)
	w("  }")
}

// forwardChain renders the forward filter: the extra rules, UDP blocking,
// and what the filtering lets in from the WAN.
func (n *nftText) forwardChain() {
	r, w, lanSet, wan := n.r, n.w, n.lanSet, n.wan
	w("  chain fwd_filter {")
	w("    type filter hook forward priority filter; policy drop;")
	for _, e := range r.Extra {
		w("    %s", e)
	}
	if r.BlockUDP {
		w("    iifname %s oifname %s meta l4proto udp counter drop comment \"UDP blocked\"", lanSet, wan)
	}
	w("    iifname %s oifname %s meta l4proto udp update @adfset { ip saddr . udp sport . ip daddr }", lanSet, wan)
	w("    ct state established,related accept")
	w("    iifname %s oifname %s accept", lanSet, wan)
	w("    iifname %s oifname %s accept", lanSet, lanSet)
	if r.PortMap {
		w("    iifname %s ct status dnat accept comment \"port mappings\"", wan)
	}
	switch r.Filtering {
	case "eif":
		w("    iifname %s ct status dnat accept", wan)
	case "adf":
		w("    iifname %s ct status dnat meta l4proto udp ip daddr . udp dport . ip saddr @adfset accept", wan)
	}
	w("    counter comment \"dropped unsolicited\"")
	w("  }")
}

// inputChain renders the input filter: unsolicited packets to the router
// itself are dropped, and so is hairpin traffic when hairpin is off.
func (n *nftText) inputChain() {
	w := n.w
	w("  chain in_filter {")
	w("    type filter hook input priority filter; policy accept;")
	w("    iifname %s ct state new counter drop comment \"unsolicited to router: drop before conntrack confirm\"", n.wan)
	if !n.r.Hairpin {
		w("    ip daddr %s ct state new meta l4proto udp counter drop comment \"hairpin off\"", n.addr)
	}
	w("  }")
}
