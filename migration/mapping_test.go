package migration

import (
	"net/netip"
	"testing"
	"time"
)

// TestMappingObserver: a rebinding is a new address under the same local
// addresses; its lifetime bound is the longest heartbeat since the last
// observation, not one another observer shortened a moment ago.
func TestMappingObserver(t *testing.T) {
	a := netip.MustParseAddrPort("203.0.113.5:4000")
	b := netip.MustParseAddrPort("203.0.113.5:4001")
	c := netip.MustParseAddrPort("203.0.113.5:4002")
	type step struct {
		addr     netip.AddrPort
		gen      uint64
		hb       time.Duration
		rebound  bool
		lifetime time.Duration // checked when rebound
	}
	tests := []struct {
		name  string
		steps []step
	}{
		{"first observation", []step{{a, 0, 10 * time.Second, false, 0}}},
		{"same address", []step{{a, 0, 10 * time.Second, false, 0}, {a, 0, 10 * time.Second, false, 0}}},
		{"rebound", []step{{a, 0, 10 * time.Second, false, 0}, {b, 0, 10 * time.Second, true, 10 * time.Second}}},
		{"new address after a local change", []step{{a, 0, 10 * time.Second, false, 0}, {b, 1, 10 * time.Second, false, 0}}},
		{"heartbeat shortened by another bootstrap meanwhile", []step{
			{a, 0, 10 * time.Second, false, 0}, {b, 0, 4 * time.Second, true, 10 * time.Second}}},
		{"then a real expiry at the short pace", []step{
			{a, 0, 10 * time.Second, false, 0}, {b, 0, 4 * time.Second, true, 10 * time.Second},
			{c, 0, 4 * time.Second, true, 4 * time.Second}}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var o Observer
			for i, s := range tc.steps {
				rebound, lifetime := o.observe(s.addr, s.gen, s.hb)
				if rebound != s.rebound || (rebound && lifetime != s.lifetime) {
					t.Fatalf("step %d: rebound %v lifetime %v, want %v %v", i, rebound, lifetime, s.rebound, s.lifetime)
				}
			}
		})
	}
}
