package testnet

import (
	"net/netip"
	"testing"
)

func TestClassify(t *testing.T) {
	ap := netip.MustParseAddrPort
	local := ap("192.168.1.10:5000")
	m1, m2 := ap("198.51.100.5:5000"), ap("198.51.100.5:6000")
	m3 := ap("198.51.100.5:7000")
	yes := true
	tests := []struct {
		name      string
		o         Observation
		mapping   string
		filtering string
	}{
		{"public", Observation{Local: ap("198.51.100.5:5000"), Mapped: [3]netip.AddrPort{m1, m1, m1}, FromOtherAddr: true, FromOtherPort: true}, "none", "none"},
		{"full cone", Observation{Local: local, Mapped: [3]netip.AddrPort{m1, m1, m1}, FromOtherAddr: true, FromOtherPort: true}, "EIM", "EIF"},
		{"restricted", Observation{Local: local, Mapped: [3]netip.AddrPort{m1, m1, m1}, FromOtherPort: true}, "EIM", "ADF"},
		{"port restricted", Observation{Local: local, Mapped: [3]netip.AddrPort{m1, m1, m1}}, "EIM", "APDF"},
		{"address dependent", Observation{Local: local, Mapped: [3]netip.AddrPort{m1, m1, m2}}, "ADM", "APDF"},
		{"symmetric", Observation{Local: local, Mapped: [3]netip.AddrPort{m1, m2, m3}}, "APDM", "APDF"},
		{"udp blocked, tcp ok", Observation{Local: local, TCP: true}, "-", "blocked"},
		{"nothing works", Observation{Local: local}, "-", "unreachable"},
		{"partial answers", Observation{Local: local, Mapped: [3]netip.AddrPort{m1, {}, m1}, Hairpin: &yes}, "inconsistent", "inconsistent"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			m, f := Classify(tc.o)
			if m != tc.mapping || f != tc.filtering {
				t.Fatalf("Classify = %s/%s, want %s/%s", m, f, tc.mapping, tc.filtering)
			}
		})
	}
	// Every class's expected behaviour is one Classify can produce.
	for _, c := range Classes() {
		m, f := c.Behaviour()
		if m == "" || f == "" {
			t.Fatalf("class %s has no behaviour", c)
		}
	}
}

func TestExpectations(t *testing.T) {
	x, err := ParseExpectations([]byte(`{"default": "direct", "pairs": {"apdm/apdm": "relay", "apdm/eim-apdf": "direct>=0.9", "cgnat/cgnat@same-carrier-nat": "connect"}}`))
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		key                       string
		runs, conn, direct, relay int
		met                       bool
	}{
		{"eim-eif/apdm", 3, 3, 3, 0, true},
		{"eim-eif/apdm", 3, 3, 2, 1, false},
		{"apdm/apdm", 3, 3, 0, 3, true},
		{"apdm/apdm", 3, 2, 0, 2, false},
		{"apdm/eim-apdf", 10, 10, 9, 1, true},
		{"apdm/eim-apdf", 10, 10, 8, 2, false},
		{"cgnat/cgnat@same-carrier-nat", 3, 3, 0, 3, true},
		{"cgnat/cgnat", 3, 3, 0, 3, false},
	}
	for _, tc := range tests {
		if got := x.For(tc.key).Met(tc.runs, tc.conn, tc.direct, tc.relay); got != tc.met {
			t.Errorf("%s %d/%d/%d/%d: met %v, want %v", tc.key, tc.runs, tc.conn, tc.direct, tc.relay, got, tc.met)
		}
	}
	for _, bad := range []string{
		`{"pairs": {"x/y": "direct"}}`, `{"pairs": {"apdm/apdm": "fast"}}`, `{"pairs": {"apdm/apdm": "direct>=2"}}`, `not json`,
	} {
		if _, err := ParseExpectations([]byte(bad)); err == nil {
			t.Errorf("accepted %s", bad)
		}
	}
	// The table in the repository parses.
	if _, err := LoadExpectations("expectations.json"); err != nil {
		t.Fatal(err)
	}
}
