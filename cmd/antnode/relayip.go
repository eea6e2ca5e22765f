package main

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strings"

	"github.com/antnode/antnode/endpoint"
)

// A bootstrap on a wildcard --listen address must still tell peers one
// concrete address for their relay allocations (the address the other
// peer sends to). Without --relay-ip it takes the host's one global
// address of the listen address's family; only when that is ambiguous
// does it refuse, naming the candidates.

var (
	// ErrNoRelayIP: the host has no global address of the family.
	ErrNoRelayIP = errors.New("no global address on this host for the relay to advertise")
	// ErrAmbiguousRelayIP: the host has several and none stands out.
	ErrAmbiguousRelayIP = errors.New("several addresses on this host could be the relay's")
)

// chooseRelayIP picks the address a relay advertises from the host's
// addresses: of the family of listen (a wildcard), global unicast (not
// loopback, link-local, multicast). One public address wins over private
// ones (RFC 1918, ULA); failing that, the one address there is.
func chooseRelayIP(listen netip.Addr, host []netip.Addr) (netip.Addr, error) {
	fam := endpoint.Family(listen)
	var all, public []netip.Addr
	for _, a := range host {
		a = a.Unmap()
		if endpoint.Family(a) != fam || !a.IsGlobalUnicast() {
			continue
		}
		all = append(all, a)
		if !a.IsPrivate() {
			public = append(public, a)
		}
	}
	switch {
	case len(public) == 1:
		return public[0], nil
	case len(all) == 1:
		return all[0], nil
	case len(all) == 0:
		return netip.Addr{}, fmt.Errorf("%w (IPv%s): set --relay-ip, or --listen on the address peers reach", ErrNoRelayIP, fam)
	}
	names := make([]string, len(all))
	for i, a := range all {
		names[i] = a.String()
	}
	return netip.Addr{}, fmt.Errorf("%w (%s): set --relay-ip to the one peers reach this bootstrap at, or --listen on it",
		ErrAmbiguousRelayIP, strings.Join(names, ", "))
}

// hostAddrs returns the addresses of the host's interfaces.
func hostAddrs() ([]netip.Addr, error) {
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		return nil, err
	}
	var out []netip.Addr
	for _, a := range addrs {
		if p, err := netip.ParsePrefix(a.String()); err == nil {
			out = append(out, p.Addr())
		}
	}
	return out, nil
}
