package endpoint

import (
	"errors"
	"net/netip"

	"github.com/pion/stun/v3"
)

// The STUN messages every part of antnode builds and reads, on pion/stun:
// a Binding success response carrying the address a request came from,
// and that address read back from a response.

// ErrNoMappedAddress is returned for a STUN message without a usable
// XOR-MAPPED-ADDRESS.
var ErrNoMappedAddress = errors.New("endpoint: no XOR-MAPPED-ADDRESS")

// MappedAddress returns the XOR-MAPPED-ADDRESS of m (IPv4-mapped IPv6
// addresses unmapped).
func MappedAddress(m *stun.Message) (netip.AddrPort, error) {
	var x stun.XORMappedAddress
	if err := x.GetFrom(m); err != nil {
		return netip.AddrPort{}, errors.Join(ErrNoMappedAddress, err)
	}
	a, ok := netip.AddrFromSlice(x.IP)
	if !ok {
		return netip.AddrPort{}, ErrNoMappedAddress
	}
	return netip.AddrPortFrom(a.Unmap(), uint16(x.Port)), nil
}

// BindingSuccess builds the success response to the Binding request req
// that came from from: its transaction ID, from as XOR-MAPPED-ADDRESS,
// then extra (integrity, software, fingerprint: in the order given, as
// STUN requires FINGERPRINT last).
func BindingSuccess(req *stun.Message, from netip.AddrPort, extra ...stun.Setter) (*stun.Message, error) {
	setters := make([]stun.Setter, 0, 3+len(extra))
	setters = append(setters, stun.NewTransactionIDSetter(req.TransactionID), stun.BindingSuccess,
		&stun.XORMappedAddress{IP: from.Addr().AsSlice(), Port: int(from.Port())})
	return stun.Build(append(setters, extra...)...)
}
