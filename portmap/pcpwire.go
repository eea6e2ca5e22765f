package portmap

import (
	"encoding/binary"
	"fmt"
	"net/netip"
)

// PCP on the wire (RFC 6887): a 24-byte common header, then the opcode's
// fields, then options (this client sends none and ignores those it
// receives). Every address is 16 bytes; an IPv4 address is IPv4-mapped.
const (
	pcpVersion     = 2
	pcpOpAnnounce  = 0
	pcpOpMap       = 1
	pcpResponseBit = 0x80
	pcpHeaderLen   = 24
	pcpMapLen      = 36
	pcpMaxLen      = 1100
	pcpNonceLen    = 12
	ipProtoUDP     = 17
)

// pcpMapRequest is a MAP request for one UDP port of the client's.
type pcpMapRequest struct {
	Lifetime      uint32 // seconds; 0 deletes the mapping
	Client        netip.Addr
	Nonce         [pcpNonceLen]byte
	InternalPort  uint16
	SuggestedPort uint16     // 0: no preference
	SuggestedAddr netip.Addr // zero: no preference (sent as ::ffff:0.0.0.0)
}

// encode lays the request out as RFC 6887 sections 7.1 and 11.1 do: 60
// bytes.
func (r pcpMapRequest) encode() []byte {
	b := make([]byte, pcpHeaderLen+pcpMapLen)
	b[0] = pcpVersion
	b[1] = pcpOpMap
	binary.BigEndian.PutUint32(b[4:8], r.Lifetime)
	putAddr16(b[8:24], r.Client)
	m := b[pcpHeaderLen:]
	copy(m[0:12], r.Nonce[:])
	m[12] = ipProtoUDP
	binary.BigEndian.PutUint16(m[16:18], r.InternalPort)
	binary.BigEndian.PutUint16(m[18:20], r.SuggestedPort)
	suggested := r.SuggestedAddr
	if !suggested.IsValid() {
		suggested = netip.IPv4Unspecified()
	}
	putAddr16(m[20:36], suggested)
	return b
}

// encodePCPAnnounce is an ANNOUNCE request (section 14.1): the header
// alone, lifetime 0. Its answer carries the server's epoch.
func encodePCPAnnounce(client netip.Addr) []byte {
	b := make([]byte, pcpHeaderLen)
	b[0] = pcpVersion
	b[1] = pcpOpAnnounce
	putAddr16(b[8:24], client)
	return b
}

// putAddr16 writes a as 16 bytes, an IPv4 address IPv4-mapped (As16
// maps it).
func putAddr16(b []byte, a netip.Addr) {
	a16 := a.As16()
	copy(b, a16[:])
}

// pcpResponse is a decoded PCP response. The MAP fields are set for a
// MAP response only.
type pcpResponse struct {
	Version  uint8 // 2, or 0 from a NAT-PMP-only server (section 9)
	Opcode   uint8 // without the R bit
	Result   uint8
	Lifetime uint32
	Epoch    uint32

	HasMap       bool // the MAP fields below were present
	Nonce        [pcpNonceLen]byte
	Protocol     uint8
	InternalPort uint16
	ExternalPort uint16
	External     netip.Addr // unmapped: an IPv4 address is Is4
}

// decodePCPResponse reads a PCP response as sections 7.2 and 11.1 lay it
// out. A NAT-PMP-only server answers a PCP request with a version 0
// UNSUPP_VERSION (section 9): that decodes to Version 0 and its result
// code. Anything else that is not a well-formed response is an error
// wrapping ErrMalformed.
func decodePCPResponse(b []byte) (pcpResponse, error) {
	var r pcpResponse
	if len(b) >= 4 && b[0] == 0 && b[1]&pcpResponseBit != 0 {
		// NAT-PMP's layout: version, opcode, 16-bit result code.
		code := binary.BigEndian.Uint16(b[2:4])
		if code == 0 || code > 0xff {
			return r, fmt.Errorf("%w: pcp: version 0 answer with result %d", ErrMalformed, code)
		}
		return pcpResponse{Version: 0, Opcode: b[1] &^ pcpResponseBit, Result: uint8(code)}, nil
	}
	switch {
	case len(b) < pcpHeaderLen || len(b) > pcpMaxLen || len(b)%4 != 0:
		return r, fmt.Errorf("%w: pcp: %d bytes", ErrMalformed, len(b))
	case b[0] != pcpVersion:
		return r, fmt.Errorf("%w: pcp: version %d", ErrMalformed, b[0])
	case b[1]&pcpResponseBit == 0:
		return r, fmt.Errorf("%w: pcp: a request, not a response", ErrMalformed)
	}
	r.Version = b[0]
	r.Opcode = b[1] &^ pcpResponseBit
	r.Result = b[3]
	r.Lifetime = binary.BigEndian.Uint32(b[4:8])
	r.Epoch = binary.BigEndian.Uint32(b[8:12])
	if r.Opcode != pcpOpMap {
		return r, nil
	}
	if len(b) < pcpHeaderLen+pcpMapLen {
		if r.Result != pcpSuccess { // an error may come without the MAP fields
			return r, nil
		}
		return r, fmt.Errorf("%w: pcp: MAP response of %d bytes", ErrMalformed, len(b))
	}
	m := b[pcpHeaderLen:]
	r.HasMap = true
	copy(r.Nonce[:], m[0:12])
	r.Protocol = m[12]
	r.InternalPort = binary.BigEndian.Uint16(m[16:18])
	r.ExternalPort = binary.BigEndian.Uint16(m[18:20])
	r.External = netip.AddrFrom16([16]byte(m[20:36])).Unmap()
	return r, nil
}
