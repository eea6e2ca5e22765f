package bootstrap

import (
	"net/netip"

	"github.com/antnode/antnode/bootstrap/wire"
)

// mapAddrs rewrites, in place, every address m tells of other hosts with
// f: peers' candidates, a peer's relayed address, the relay's sockets,
// the alternate STUN sockets. Not this node's own observed address: that
// is what it announces, as the bootstrap saw it. An invalid address stays
// invalid. It is a pure function of m and f.
func mapAddrs(m wire.Message, f func(netip.AddrPort) netip.AddrPort) {
	if f == nil {
		return
	}
	one := func(a *netip.AddrPort) {
		if a.IsValid() {
			*a = f(*a)
		}
	}
	cands := func(cs []wire.Candidate) {
		for i := range cs {
			one(&cs[i].Addr)
		}
	}
	switch m := m.(type) {
	case *wire.Registered:
		for i := range m.AltSTUN {
			one(&m.AltSTUN[i])
		}
		for i := range m.Other {
			one(&m.Other[i])
		}
	case *wire.ConnectOffer:
		cands(m.Candidates)
	case *wire.ConnectResult:
		cands(m.Candidates)
	case *wire.ConnectEarly:
		cands(m.Candidates)
	case *wire.RelayGrant:
		one(&m.UDP)
		one(&m.TCP)
	case *wire.RelayAddress:
		one(&m.Addr)
	}
}
