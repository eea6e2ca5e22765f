package traversal

import (
	"cmp"
	"net"
	"net/netip"
	"slices"

	"github.com/antnode/antnode/bootstrap/wire"
	"github.com/antnode/antnode/holepunch"
)

// HostPolicy says which interface addresses become host candidates.
type HostPolicy struct {
	// Loopback includes loopback addresses (only useful when every peer
	// runs on this machine, as in the demo).
	Loopback bool
	// DualStack: the socket serves both families (an unspecified IPv6
	// socket with IPV6_V6ONLY off), and the addresses of both are
	// candidates, IPv6 ones preferred (RFC 8421). False: the bound
	// address's family only.
	DualStack bool
}

// HostCandidates returns the host candidates for a socket bound to local:
// the bound address itself if it is specific, else every usable address of
// the interfaces (ifAddrs) of the same family. Loopback (unless allowed),
// link-local, multicast and unspecified addresses are skipped. It is a pure
// function of its inputs.
func HostCandidates(local netip.AddrPort, ifAddrs []netip.Addr, pol HostPolicy) []wire.Candidate {
	usable := func(a netip.Addr) bool {
		a = a.Unmap()
		switch {
		case !a.IsValid(), a.IsUnspecified(), a.IsMulticast(), a.IsLinkLocalUnicast(), a.IsLinkLocalMulticast():
			return false
		case a.IsLoopback():
			return pol.Loopback
		}
		return pol.DualStack || a.Is4() == local.Addr().Unmap().Is4()
	}
	var addrs []netip.Addr
	if la := local.Addr().Unmap(); !la.IsUnspecified() {
		if usable(la) {
			addrs = append(addrs, la)
		}
	} else {
		for _, a := range ifAddrs {
			if usable(a) {
				addrs = append(addrs, a.Unmap())
			}
		}
	}
	slices.SortFunc(addrs, func(a, b netip.Addr) int {
		if a.Is4() != b.Is4() {
			return cmp.Compare(boolInt(a.Is4()), boolInt(b.Is4())) // IPv6 first
		}
		return a.Compare(b)
	})
	addrs = slices.Compact(addrs)
	out := make([]wire.Candidate, 0, len(addrs))
	for i, a := range addrs {
		// Earlier interfaces get a slightly higher local preference; a
		// loopback address the lowest, so real interfaces win.
		pref := uint16(65535 - i)
		if a.IsLoopback() {
			pref = 0
		}
		out = append(out, wire.Candidate{Kind: wire.KindHost, Priority: holepunch.Priority(wire.KindHost, pref),
			Addr: netip.AddrPortFrom(a, local.Port())})
	}
	return out
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}

// interfaceAddrs lists the addresses of the up interfaces.
func interfaceAddrs() []netip.Addr {
	ifs, err := net.Interfaces()
	if err != nil {
		return nil
	}
	var out []netip.Addr
	for _, ifc := range ifs {
		if ifc.Flags&net.FlagUp == 0 {
			continue
		}
		addrs, err := ifc.Addrs()
		if err != nil {
			continue
		}
		for _, a := range addrs {
			if pfx, err := netip.ParsePrefix(a.String()); err == nil {
				out = append(out, pfx.Addr())
			}
		}
	}
	return out
}

// ServerReflexive turns observed addresses into candidates, skipping those
// already among have.
func ServerReflexive(observed []netip.AddrPort, have []wire.Candidate) []wire.Candidate {
	var out []wire.Candidate
	for i, o := range observed {
		if !o.IsValid() || slices.ContainsFunc(have, func(c wire.Candidate) bool { return c.Addr == o }) ||
			slices.ContainsFunc(out, func(c wire.Candidate) bool { return c.Addr == o }) {
			continue
		}
		out = append(out, wire.Candidate{Kind: wire.KindServerReflexive,
			Priority: holepunch.Priority(wire.KindServerReflexive, uint16(65535-i)), Addr: o})
	}
	return out
}

// Mapped returns the mapped candidate for a router's port mapping at
// mapped, if its IP is one a bootstrap observed the node at: a router
// behind another NAT (a home router behind a carrier's) maps an address
// that nobody outside reaches. It is a pure function.
func Mapped(mapped netip.AddrPort, observed []netip.AddrPort) []wire.Candidate {
	if !mapped.IsValid() || mapped.Port() == 0 ||
		!slices.ContainsFunc(observed, func(o netip.AddrPort) bool { return o.Addr().Unmap() == mapped.Addr().Unmap() }) {
		return nil
	}
	return []wire.Candidate{{Kind: wire.KindMapped, Priority: holepunch.Priority(wire.KindMapped, 65535),
		Addr: netip.AddrPortFrom(mapped.Addr().Unmap(), mapped.Port())}}
}

// MaxAnnouncedTargets bounds the addresses of one introduction that this
// node checks on the peer's word alone: candidates no bootstrap observed
// (host candidates, and whatever else the peer announced). A peer can
// announce anybody's address; this cap, with the check schedule's pacing
// (holepunch.Plan), bounds what such an address receives from an honest
// node per attempt. What a bootstrap observed is never capped.
const MaxAnnouncedTargets = 8

// checkTargets returns the candidates of an introduction that this node
// will check: every one whose IP a bootstrap observed, and the
// MaxAnnouncedTargets merely announced ones of highest priority (a
// bootstrap that does not mark origins counts as announcing), and the
// relayed addresses (a warm relay; the lowest priority, but never capped
// away: only relay legs use them, at most maxRelayed of them, see
// relayedOf). It keeps the input's order and is a pure function.
func checkTargets(cands []wire.Candidate) []wire.Candidate {
	var announced []wire.Candidate
	for _, c := range cands {
		if !c.Origin.Observed() && c.Kind != wire.KindRelay {
			announced = append(announced, c)
		}
	}
	if len(announced) <= MaxAnnouncedTargets {
		return cands
	}
	slices.SortStableFunc(announced, func(x, y wire.Candidate) int { return cmp.Compare(y.Priority, x.Priority) })
	keep := make(map[wire.Candidate]bool, MaxAnnouncedTargets)
	for _, c := range announced[:MaxAnnouncedTargets] {
		keep[c] = true
	}
	out := make([]wire.Candidate, 0, len(cands))
	for _, c := range cands {
		if c.Origin.Observed() || keep[c] || c.Kind == wire.KindRelay {
			out = append(out, c)
		}
	}
	return out
}

// observedOnly returns the candidates whose IP a bootstrap observed: the
// only ones a search or a speculative dial may aim at. A relayed address
// never is one (it may share the IP the peer was observed at, a relay on
// the peer's host).
func observedOnly(cands []wire.Candidate) []wire.Candidate {
	var out []wire.Candidate
	for _, c := range cands {
		if c.Origin.Observed() && c.Kind != wire.KindRelay {
			out = append(out, c)
		}
	}
	return out
}
