// Package nat64 owns the address arithmetic of NAT64 (RFC 6052) and the
// reading of a DNS64 answer for the NAT64 prefix (RFC 7050): a node on an
// IPv6-only network whose NAT64 gateway translates to IPv4 reaches an
// IPv4 bootstrap or peer at the IPv6 address that embeds its IPv4
// address in the network's prefix.
//
// It is pure: it starts no goroutines and asks no server. The DNS query
// for ipv4only.arpa is package discovery's (Resolver.NAT64Prefixes).
package nat64

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"
)

// WellKnown is the Well-Known Prefix 64:ff9b::/96 (RFC 6052 section 2.1).
var WellKnown = Prefix{p: netip.MustParsePrefix("64:ff9b::/96")}

// WKAName is the name whose AAAA records a DNS64 server synthesises from
// the well-known IPv4 addresses (RFC 7050 section 2).
const WKAName = "ipv4only.arpa."

// wellKnownAddrs are the A records of ipv4only.arpa (RFC 7050 section 2).
var wellKnownAddrs = []netip.Addr{netip.AddrFrom4([4]byte{192, 0, 0, 170}), netip.AddrFrom4([4]byte{192, 0, 0, 171})}

// Errors.
var (
	// ErrPrefixLength: a NAT64 prefix is 32, 40, 48, 56, 64 or 96 bits.
	ErrPrefixLength = errors.New("nat64: prefix length is not 32, 40, 48, 56, 64 or 96")
	// ErrNotIPv4: only an IPv4 address is synthesised.
	ErrNotIPv4 = errors.New("nat64: not an IPv4 address")
	// ErrNotInPrefix: the IPv6 address is not under the prefix, or its
	// reserved bits (u octet, suffix) are not zero.
	ErrNotInPrefix = errors.New("nat64: address not synthesised under the prefix")
	// ErrLocalWithWKP: the Well-Known Prefix must not embed a non-global
	// IPv4 address (RFC 6052 section 3.1): a NAT64 drops it.
	ErrLocalWithWKP = errors.New("nat64: the well-known prefix does not carry a non-global IPv4 address")
	// ErrNoPrefix: no answer embeds a well-known IPv4 address.
	ErrNoPrefix = errors.New("nat64: no NAT64 prefix in the answer")
)

// Prefix is a NAT64 prefix: an IPv6 prefix of one of the six lengths of
// RFC 6052. The zero Prefix is invalid.
type Prefix struct{ p netip.Prefix }

// ParsePrefix parses "64:ff9b::/96" and checks the length.
func ParsePrefix(s string) (Prefix, error) {
	p, err := netip.ParsePrefix(s)
	if err != nil {
		return Prefix{}, fmt.Errorf("nat64: %w", err)
	}
	return NewPrefix(p)
}

// NewPrefix checks p (an IPv6 prefix of a valid length) and masks it.
func NewPrefix(p netip.Prefix) (Prefix, error) {
	if !p.Addr().Is6() || p.Addr().Is4In6() {
		return Prefix{}, fmt.Errorf("nat64: %s: not an IPv6 prefix", p)
	}
	if !slices.Contains(lengths, p.Bits()) {
		return Prefix{}, fmt.Errorf("%w: %s", ErrPrefixLength, p)
	}
	return Prefix{p: p.Masked()}, nil
}

// lengths are the prefix lengths of RFC 6052 section 2.2, in the order
// RFC 7050 section 3 searches an answer for them.
var lengths = []int{96, 64, 56, 48, 40, 32}

// IsValid reports whether p is a prefix (not the zero Prefix).
func (p Prefix) IsValid() bool { return p.p.IsValid() }

// Prefix returns p as a netip.Prefix.
func (p Prefix) Prefix() netip.Prefix { return p.p }

func (p Prefix) String() string { return p.p.String() }

// positions returns the byte indexes of the IPv6 address that carry the
// four IPv4 octets under a prefix of bits: after the prefix, skipping
// byte 8 (bits 64 to 71, the "u" octet, always zero).
func positions(bits int) [4]int {
	var out [4]int
	i := bits / 8
	for k := range out {
		if i == 8 {
			i++
		}
		out[k] = i
		i++
	}
	return out
}

// Synthesize embeds v4 under p (RFC 6052 section 2.2): the IPv6 address
// a node behind the NAT64 sends to to reach v4.
func (p Prefix) Synthesize(v4 netip.Addr) (netip.Addr, error) {
	if !p.IsValid() {
		return netip.Addr{}, fmt.Errorf("nat64: synthesise %s: %w", v4, ErrPrefixLength)
	}
	v4 = v4.Unmap()
	if !v4.Is4() {
		return netip.Addr{}, fmt.Errorf("%w: %s", ErrNotIPv4, v4)
	}
	if p == WellKnown && !global4(v4) {
		return netip.Addr{}, fmt.Errorf("%w: %s", ErrLocalWithWKP, v4)
	}
	out := p.p.Addr().As16()
	four := v4.As4()
	for k, i := range positions(p.p.Bits()) {
		out[i] = four[k]
	}
	return netip.AddrFrom16(out), nil
}

// SynthesizePort is Synthesize for an address and port.
func (p Prefix) SynthesizePort(ap netip.AddrPort) (netip.AddrPort, error) {
	a, err := p.Synthesize(ap.Addr())
	if err != nil {
		return netip.AddrPort{}, err
	}
	return netip.AddrPortFrom(a, ap.Port()), nil
}

// Extract returns the IPv4 address a synthesised under p (RFC 6052
// section 2.3); ErrNotInPrefix if a is not under p or carries non-zero
// reserved bits.
func (p Prefix) Extract(a netip.Addr) (netip.Addr, error) {
	if !p.IsValid() || !p.p.Contains(a) {
		return netip.Addr{}, fmt.Errorf("%w: %s under %s", ErrNotInPrefix, a, p)
	}
	v4, ok := extract(a.As16(), p.p.Bits())
	if !ok {
		return netip.Addr{}, fmt.Errorf("%w: %s under %s: reserved bits set", ErrNotInPrefix, a, p)
	}
	return v4, nil
}

// extract reads the IPv4 address at the positions of a prefix of bits and
// reports whether the u octet and the suffix after it are zero.
func extract(a [16]byte, bits int) (netip.Addr, bool) {
	var four [4]byte
	pos := positions(bits)
	for k, i := range pos {
		four[k] = a[i]
	}
	if bits < 96 && a[8] != 0 {
		return netip.Addr{}, false
	}
	for i := pos[3] + 1; i < 16; i++ {
		if a[i] != 0 {
			return netip.Addr{}, false
		}
	}
	return netip.AddrFrom4(four), true
}

// PrefixesFrom returns the NAT64 prefixes that the AAAA answers for
// ipv4only.arpa reveal (RFC 7050 section 3): for each answer, the longest
// prefix length at whose position a well-known IPv4 address sits with
// zero reserved bits, in the order of the answers and without duplicates.
// ErrNoPrefix if none does: the network has no DNS64 (or it filtered the
// name), and so presumably no NAT64 this node can find.
func PrefixesFrom(answers []netip.Addr) ([]Prefix, error) {
	var out []Prefix
	for _, a := range answers {
		if !a.Is6() || a.Is4In6() {
			continue
		}
		for _, bits := range lengths {
			v4, ok := extract(a.As16(), bits)
			if !ok || !slices.Contains(wellKnownAddrs, v4) {
				continue
			}
			p := Prefix{p: netip.PrefixFrom(a, bits).Masked()}
			if !slices.Contains(out, p) {
				out = append(out, p)
			}
			break
		}
	}
	if len(out) == 0 {
		return nil, ErrNoPrefix
	}
	return out, nil
}

// global4 reports whether v4 is a global IPv4 address for RFC 6052
// section 3.1: not private (RFC 1918), shared (RFC 6598), loopback,
// link-local, multicast, unspecified or broadcast.
func global4(v4 netip.Addr) bool {
	shared := netip.MustParsePrefix("100.64.0.0/10")
	return v4.IsGlobalUnicast() && !v4.IsPrivate() && !shared.Contains(v4)
}

// Map returns ap with its IPv4 address synthesised under p: where a node
// behind the NAT64 sends to reach ap. An IPv6 address, an address p
// cannot carry (a non-global one under the Well-Known Prefix) and any
// address under the zero Prefix are returned unchanged.
func (p Prefix) Map(ap netip.AddrPort) netip.AddrPort {
	if !p.IsValid() || !ap.Addr().Unmap().Is4() {
		return ap
	}
	out, err := p.SynthesizePort(ap)
	if err != nil {
		return ap
	}
	return out
}
