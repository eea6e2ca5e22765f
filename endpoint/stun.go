package endpoint

import (
	"errors"
	"net/netip"
	"time"

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

// ErrNoResponse is returned by Transact when every transmission of a
// request went unanswered.
var ErrNoResponse = errors.New("endpoint: no STUN response")

// RetransmitSchedule is RFC 5389's retransmission schedule (section
// 7.2.1) for count transmissions: the wait after each transmission,
// starting at rto and doubling, each capped at maxRTO (zero: no cap).
// The wait after the last one is the time allowed for its answer. It is
// a pure function; count below 1 is 1, rto below 1 ms is 1 ms.
func RetransmitSchedule(rto time.Duration, count int, maxRTO time.Duration) []time.Duration {
	count = max(count, 1)
	rto = max(rto, time.Millisecond)
	out := make([]time.Duration, count)
	for i := range out {
		if maxRTO > 0 {
			rto = min(rto, maxRTO)
		}
		out[i] = rto
		rto *= 2
	}
	return out
}
