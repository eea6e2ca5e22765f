// Package nattype is the NAT vocabulary shared by the packages of antnode:
// mapping and filtering behaviour in the terms of RFC 4787, and what a pair
// of them implies for a direct connection. It has no state and starts no
// goroutines.
package nattype

import "fmt"

// Mapping is a NAT's mapping behaviour (RFC 4787 section 4.1).
type Mapping uint8

// Mapping behaviours.
const (
	MappingUnknown Mapping = iota
	// MappingNone: the node has a public address (observed == local).
	MappingNone
	// MappingEIM: endpoint-independent mapping.
	MappingEIM
	// MappingADM: address-dependent mapping.
	MappingADM
	// MappingAPDM: address-and-port-dependent mapping ("symmetric").
	MappingAPDM
	mappingEnd
)

var mappingNames = [...]string{"unknown", "none", "EIM", "ADM", "APDM"}

func (m Mapping) String() string {
	if m < mappingEnd {
		return mappingNames[m]
	}
	return fmt.Sprintf("mapping(%d)", uint8(m))
}

// Valid reports whether m is a known value.
func (m Mapping) Valid() bool { return m < mappingEnd }

// Filtering is a NAT's filtering behaviour (RFC 4787 section 5).
type Filtering uint8

// Filtering behaviours.
const (
	FilteringUnknown Filtering = iota
	// FilteringNone: no filter in front of the node.
	FilteringNone
	// FilteringEIF: endpoint-independent filtering ("full cone").
	FilteringEIF
	// FilteringADF: address-dependent filtering ("restricted cone").
	FilteringADF
	// FilteringAPDF: address-and-port-dependent filtering ("port-restricted").
	FilteringAPDF
	// FilteringBlocked: UDP does not pass at all.
	FilteringBlocked
	filteringEnd
)

var filteringNames = [...]string{"unknown", "none", "EIF", "ADF", "APDF", "blocked"}

func (f Filtering) String() string {
	if f < filteringEnd {
		return filteringNames[f]
	}
	return fmt.Sprintf("filtering(%d)", uint8(f))
}

// Valid reports whether f is a known value.
func (f Filtering) Valid() bool { return f < filteringEnd }

// Type is a node's NAT: its mapping and filtering behaviour.
type Type struct {
	Mapping   Mapping
	Filtering Filtering
}

// Known reports whether both behaviours have been measured.
func (t Type) Known() bool { return t.Mapping != MappingUnknown && t.Filtering != FilteringUnknown }

// Settled reports whether the type says all a peer's strategy needs: both
// behaviours are measured, or UDP is blocked (whose mapping cannot be
// measured, and does not matter: such a node is reached through a relay).
func (t Type) Settled() bool { return t.Known() || t.Filtering == FilteringBlocked }

// Class returns the bounded name used in metrics, reports and logs:
// "public", "eim-eif", "eim-adf", "eim-apdf", "apdm", "adm", "udp-blocked" or
// "unknown".
func (t Type) Class() string {
	switch {
	case t.Filtering == FilteringBlocked:
		return "udp-blocked"
	case t.Mapping == MappingNone && (t.Filtering == FilteringNone || t.Filtering == FilteringUnknown):
		return "public"
	case t.Mapping == MappingNone:
		// A public address behind a stateful firewall behaves like an EIM NAT.
		return "eim-" + lower(t.Filtering)
	case t.Mapping == MappingEIM && t.Filtering >= FilteringEIF && t.Filtering <= FilteringAPDF:
		return "eim-" + lower(t.Filtering)
	case t.Mapping == MappingAPDM:
		return "apdm"
	case t.Mapping == MappingADM:
		return "adm"
	}
	return "unknown"
}

func lower(f Filtering) string {
	switch f {
	case FilteringEIF:
		return "eif"
	case FilteringADF:
		return "adf"
	case FilteringAPDF:
		return "apdf"
	}
	return "unknown"
}

func (t Type) String() string { return t.Class() }

// Classes lists every value Class can return, for metric label sets.
func Classes() []string {
	return []string{"public", "eim-eif", "eim-adf", "eim-apdf", "adm", "apdm", "udp-blocked", "unknown"}
}

// Hard reports whether the mapping depends on the destination, so that the
// port a peer sees cannot be learnt from a third party.
func (t Type) Hard() bool { return t.Mapping == MappingADM || t.Mapping == MappingAPDM }

// DirectPossible reports whether two NATs can, in principle, be traversed
// with a direct UDP path. Unknown behaviour is assumed to be possible. Two
// destination-dependent mappings cannot be punched; one destination-dependent
// mapping against a port-restricted filter needs a birthday search, which is
// possible; any side with UDP blocked cannot go direct.
func DirectPossible(a, b Type) bool {
	if a.Filtering == FilteringBlocked || b.Filtering == FilteringBlocked {
		return false
	}
	return !(a.Hard() && b.Hard())
}

// Drops reports whether a filter of type t is known to drop an
// unsolicited packet from an endpoint the host never sent to: one whose
// address it did send to (addressContacted, from another port) or not.
// Blocked drops everything; address-dependent filtering drops what comes
// from an uncontacted address, address-and-port-dependent filtering from
// any uncontacted endpoint; no filter and endpoint-independent filtering
// drop nothing; unknown filtering is known to drop nothing. Such a packet
// arriving contradicts t: the node should measure again.
func (t Type) Drops(addressContacted bool) bool {
	switch t.Filtering {
	case FilteringBlocked, FilteringAPDF:
		return true
	case FilteringADF:
		return !addressContacted
	}
	return false
}
