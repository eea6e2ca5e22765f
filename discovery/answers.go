// Package discovery finds bootstraps through DNS: "dns:NAME" in a
// --bootstrap-nodes list stands for the SRV records of
// _antnode._udp.NAME, each target a bootstrap at the target's address
// and the record's port. A target's key is a TXT record at the target
// name holding "antnode-id=PEERID".
//
// It owns the queries (Resolver, with bounded timeouts, through
// github.com/miekg/dns), the pure step from DNS answers to bootstraps
// (Entries), and a Watcher that resolves again when the answers' TTL
// runs out (between a floor and a ceiling) or when registration with
// every bootstrap fails, handing each new set to its Apply callback
// (Node.SetBootstraps in the node).
//
// # Goroutines
//
// Watch starts one goroutine, the watch loop; Watcher.Close (or the end
// of Watch's context) stops it, and Close returns after it exits. A
// Resolve runs on its caller's goroutine.
package discovery

import (
	"cmp"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"time"

	"github.com/miekg/dns"

	"github.com/antnode/antnode/identity"
	"github.com/antnode/antnode/traversal"
)

const (
	// Prefix marks a --bootstrap-nodes entry to resolve through DNS.
	Prefix = "dns:"
	// Service is the SRV owner label prepended to a name.
	Service = "_antnode._udp."
	// IDKey starts the TXT string at a target that names its key:
	// "antnode-id=PEERID".
	IDKey = "antnode-id="
	// maxTargets bounds the SRV targets used from one name.
	maxTargets = 16
)

// ErrNoTargets is the error when a name's SRV records name no bootstrap
// (none, or only the "." target, which RFC 2782 reads as "no service").
var ErrNoTargets = errors.New("discovery: no SRV targets")

// ErrBadID is the error of a target whose TXT "antnode-id=" value is not
// a peer ID, or which names more than one: the target is refused.
var ErrBadID = errors.New("discovery: bad antnode-id TXT record")

// ErrNoAddress is the error of a target with no A or AAAA record.
var ErrNoAddress = errors.New("discovery: target has no address")

// SRVName returns the SRV owner name queried for name, fully qualified.
func SRVName(name string) string { return dns.Fqdn(Service + strings.TrimSuffix(name, ".")) }

// Entries turns the DNS answers about name (every SRV, TXT, A and AAAA
// record received, in any order) into bootstraps, ordered by SRV priority
// (lowest first), then weight (highest first), then target name. A
// target's address is its A record (else its AAAA: IPv4 first, as
// traversal.ParseBootstrap). A target without an "antnode-id=" TXT gets
// a zero ID: its key is pinned on first contact, as for HOST:PORT. A
// target with a bad ID, or without an address, is left out and named in
// problems. ttl is the smallest TTL of the records used (zero when none
// was). err is ErrNoTargets when the SRV records name no target.
func Entries(name string, rrs []dns.RR) (bs []traversal.Bootstrap, ttl time.Duration, problems []error, err error) {
	srvs := srvRecords(name, rrs)
	if len(srvs) == 0 {
		return nil, 0, nil, fmt.Errorf("%s: %w", SRVName(name), ErrNoTargets)
	}
	minTTL := uint32(0)
	use := func(h *dns.RR_Header) {
		if minTTL == 0 || h.Ttl < minTTL {
			minTTL = h.Ttl
		}
	}
	for _, s := range srvs {
		use(s.Header())
		b, used, perr := target(s, rrs)
		if perr != nil {
			problems = append(problems, perr)
			continue
		}
		for _, h := range used {
			use(h)
		}
		if !slices.ContainsFunc(bs, func(o traversal.Bootstrap) bool { return o.Addr == b.Addr }) {
			bs = append(bs, b)
		}
	}
	return bs, time.Duration(minTTL) * time.Second, problems, nil
}

// srvRecords returns name's SRV records that name a target, sorted, at
// most maxTargets.
func srvRecords(name string, rrs []dns.RR) []*dns.SRV {
	owner := SRVName(name)
	var out []*dns.SRV
	for _, rr := range rrs {
		if s, ok := rr.(*dns.SRV); ok && strings.EqualFold(s.Hdr.Name, owner) && s.Target != "." && s.Target != "" {
			out = append(out, s)
		}
	}
	slices.SortFunc(out, func(a, b *dns.SRV) int {
		return cmp.Or(cmp.Compare(a.Priority, b.Priority), cmp.Compare(b.Weight, a.Weight),
			strings.Compare(strings.ToLower(a.Target), strings.ToLower(b.Target)))
	})
	return out[:min(len(out), maxTargets)]
}

// target builds the bootstrap of SRV record s from the records at its
// target name; used are the headers of the records it took.
func target(s *dns.SRV, rrs []dns.RR) (traversal.Bootstrap, []*dns.RR_Header, error) {
	var b traversal.Bootstrap
	var used []*dns.RR_Header
	var v4, v6 netip.Addr
	for _, rr := range rrs {
		if !strings.EqualFold(rr.Header().Name, s.Target) {
			continue
		}
		switch r := rr.(type) {
		case *dns.A:
			if a, ok := netip.AddrFromSlice(r.A.To4()); ok && !v4.IsValid() {
				v4 = a
				used = append(used, r.Header())
			}
		case *dns.AAAA:
			if a, ok := netip.AddrFromSlice(r.AAAA); ok && !v6.IsValid() {
				v6 = a.Unmap()
				used = append(used, r.Header())
			}
		case *dns.TXT:
			id, err := txtID(b.ID, r.Txt)
			if err != nil {
				return b, nil, fmt.Errorf("target %s: %w", s.Target, err)
			}
			b.ID = id
			if !id.IsZero() {
				used = append(used, r.Header())
			}
		}
	}
	addr := cmp.Or(v4, v6)
	if !addr.IsValid() || addr.IsUnspecified() || addr.IsMulticast() || s.Port == 0 {
		return b, nil, fmt.Errorf("target %s: %w", s.Target, ErrNoAddress)
	}
	b.Addr = netip.AddrPortFrom(addr, s.Port)
	return b, used, nil
}

// txtID reads the "antnode-id=" strings of one TXT record; have is the
// ID read so far for the same target (another ID is an error).
func txtID(have identity.PeerID, txt []string) (identity.PeerID, error) {
	for _, t := range txt {
		v, ok := strings.CutPrefix(strings.TrimSpace(t), IDKey)
		if !ok {
			continue
		}
		id, err := identity.ParsePeerID(v)
		if err != nil {
			return have, fmt.Errorf("%w: %w", ErrBadID, err)
		}
		if !have.IsZero() && have != id {
			return have, fmt.Errorf("%w: two IDs, %s and %s", ErrBadID, have.Short(), id.Short())
		}
		have = id
	}
	return have, nil
}
