package portmap

import (
	"encoding/binary"
	"fmt"
	"net/netip"
)

// NAT-PMP is spoken here rather than through github.com/jackpal/go-nat-pmp
// (v1.1.0): that client cannot be pointed at another server port (so it
// cannot be tested without binding 5351), reports a refusal as a string
// (the result code that antnode diagnose shows is lost, and matching
// error strings is not done here), takes no context (Close could not
// bound the deletion), and shares nothing with PCP, whose socket
// handling, source check and epoch logic NAT-PMP uses here.
//
// NAT-PMP on the wire (RFC 6886): version 0, an opcode (128 added in a
// response), a 16-bit result code in responses, and the seconds since
// the gateway's start of epoch.
const (
	natpmpOpAddr      = 0
	natpmpOpMapUDP    = 1
	natpmpResponseBit = 0x80
	natpmpAddrLen     = 12 // external address response
	natpmpMapLen      = 16 // mapping response
	natpmpErrorLen    = 8  // the shortest error response (header and epoch)
)

// encodeNATPMPAddr is the external address request (section 3.2).
func encodeNATPMPAddr() []byte { return []byte{0, natpmpOpAddr} }

// encodeNATPMPMap is a UDP mapping request (section 3.3): lifetime 0 and
// suggested port 0 delete the mapping of internal.
func encodeNATPMPMap(internal, suggested uint16, lifetime uint32) []byte {
	b := make([]byte, 12)
	b[1] = natpmpOpMapUDP
	binary.BigEndian.PutUint16(b[4:6], internal)
	binary.BigEndian.PutUint16(b[6:8], suggested)
	binary.BigEndian.PutUint32(b[8:12], lifetime)
	return b
}

// natpmpResponse is a decoded NAT-PMP response: External for an address
// response, the ports and lifetime for a mapping response.
type natpmpResponse struct {
	Opcode       uint8 // without the response bit
	Result       uint16
	Epoch        uint32
	External     netip.Addr
	InternalPort uint16
	ExternalPort uint16
	Lifetime     uint32
}

// decodeNATPMPResponse reads a NAT-PMP response. An error response may
// stop after the epoch; a success must have its opcode's full length.
// Anything else is an error wrapping ErrMalformed.
func decodeNATPMPResponse(b []byte) (natpmpResponse, error) {
	var r natpmpResponse
	switch {
	case len(b) < natpmpErrorLen:
		return r, fmt.Errorf("%w: nat-pmp: %d bytes", ErrMalformed, len(b))
	case b[0] != 0:
		return r, fmt.Errorf("%w: nat-pmp: version %d", ErrMalformed, b[0])
	case b[1]&natpmpResponseBit == 0:
		return r, fmt.Errorf("%w: nat-pmp: a request, not a response", ErrMalformed)
	}
	r.Opcode = b[1] &^ natpmpResponseBit
	r.Result = binary.BigEndian.Uint16(b[2:4])
	r.Epoch = binary.BigEndian.Uint32(b[4:8])
	if r.Result != 0 {
		return r, nil
	}
	switch r.Opcode {
	case natpmpOpAddr:
		if len(b) < natpmpAddrLen {
			return r, fmt.Errorf("%w: nat-pmp: address response of %d bytes", ErrMalformed, len(b))
		}
		r.External = netip.AddrFrom4([4]byte(b[8:12]))
	case natpmpOpMapUDP:
		if len(b) < natpmpMapLen {
			return r, fmt.Errorf("%w: nat-pmp: mapping response of %d bytes", ErrMalformed, len(b))
		}
		r.InternalPort = binary.BigEndian.Uint16(b[8:10])
		r.ExternalPort = binary.BigEndian.Uint16(b[10:12])
		r.Lifetime = binary.BigEndian.Uint32(b[12:16])
	default:
		return r, fmt.Errorf("%w: nat-pmp: opcode %d", ErrMalformed, r.Opcode)
	}
	return r, nil
}
