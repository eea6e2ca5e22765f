package testnet

import (
	"net/netip"
	"testing"
	"time"
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

func TestSoakBounds(t *testing.T) {
	const mib = 1 << 20
	run := 9 * time.Minute
	series := func(rss0, rss1, g0, g1 float64) []soakSample {
		return []soakSample{{0, rss0 * mib, g0}, {2 * time.Minute, rss0 * mib, g0}, {5 * time.Minute, (rss0 + rss1) / 2 * mib, g0},
			{7 * time.Minute, rss1 * mib, g1}, {run, rss1 * mib, g1}}
	}
	tests := []struct {
		name    string
		samples map[string][]soakSample
		want    bool
	}{
		{"flat", map[string][]soakSample{"a": series(20, 20, 30, 30)}, true},
		{"growth within a quarter plus 16 MiB", map[string][]soakSample{"a": series(20, 40, 30, 60)}, true},
		{"memory leak", map[string][]soakSample{"a": series(20, 60, 30, 30)}, false},
		{"goroutine leak", map[string][]soakSample{"a": series(20, 20, 30, 200)}, false},
		{"one leaking daemon among good ones", map[string][]soakSample{"a": series(20, 20, 30, 30), "b": series(20, 90, 30, 30)}, false},
		{"no readings", map[string][]soakSample{}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			detail, ok := soakBounds(tt.samples, run)
			if ok != tt.want {
				t.Fatalf("bounded=%v, want %v (%s)", ok, tt.want, detail)
			}
		})
	}
}

func TestParseTxBytes(t *testing.T) {
	const text = `Inter-|   Receive                                                |  Transmit
 face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed
    lo:       0       0    0    0    0     0          0         0        0       0    0    0    0     0       0          0
  eth0: 1234567    890    0    0    0     0          0         0  7654321     432    0    0    0     0       0          0
`
	if n, err := parseTxBytes(text, "eth0"); err != nil || n != 7654321 {
		t.Fatalf("eth0: %d, %v; want 7654321", n, err)
	}
	if n, err := parseTxBytes(text, "lo"); err != nil || n != 0 {
		t.Fatalf("lo: %d, %v; want 0", n, err)
	}
	if _, err := parseTxBytes(text, "eth1"); err == nil {
		t.Fatal("eth1: no error")
	}
	if _, err := parseTxBytes("  eth0: 1 2 3\n", "eth0"); err == nil {
		t.Fatal("short line: no error")
	}
}
