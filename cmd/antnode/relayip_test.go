package main

import (
	"errors"
	"net/netip"
	"testing"
)

func TestChooseRelayIP(t *testing.T) {
	addrs := func(ss ...string) []netip.Addr {
		var out []netip.Addr
		for _, s := range ss {
			out = append(out, netip.MustParseAddr(s))
		}
		return out
	}
	v4, v6 := netip.IPv4Unspecified(), netip.IPv6Unspecified()
	tests := []struct {
		name    string
		listen  netip.Addr
		host    []netip.Addr
		want    string
		wantErr error
	}{
		{"one address besides loopback", v4, addrs("127.0.0.1", "203.0.113.1", "::1", "fe80::1"), "203.0.113.1", nil},
		{"one private address", v4, addrs("127.0.0.1", "10.0.0.5"), "10.0.0.5", nil},
		{"a public address wins over private ones", v4, addrs("10.0.0.5", "172.17.0.1", "198.51.100.4"), "198.51.100.4", nil},
		{"two private addresses", v4, addrs("10.0.0.5", "172.17.0.1"), "", ErrAmbiguousRelayIP},
		{"two public addresses", v4, addrs("203.0.113.1", "198.51.100.4"), "", ErrAmbiguousRelayIP},
		{"loopback only", v4, addrs("127.0.0.1", "::1"), "", ErrNoRelayIP},
		{"IPv6 listen takes IPv6", v6, addrs("203.0.113.1", "2001:db8::1", "fe80::1"), "2001:db8::1", nil},
		{"IPv6 with only IPv4", v6, addrs("203.0.113.1"), "", ErrNoRelayIP},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := chooseRelayIP(tc.listen, tc.host)
			if !errors.Is(err, tc.wantErr) || (err == nil && got.String() != tc.want) {
				t.Fatalf("chooseRelayIP = %v, %v; want %s, %v", got, err, tc.want, tc.wantErr)
			}
		})
	}
}
