package nat64

import (
	"errors"
	"net/netip"
	"slices"
	"testing"
)

// TestRFC6052Vectors: the examples of RFC 6052 section 2.4, both ways.
func TestRFC6052Vectors(t *testing.T) {
	v4 := netip.MustParseAddr("192.0.2.33")
	for _, tc := range []struct{ prefix, want string }{
		{"2001:db8::/32", "2001:db8:c000:221::"},
		{"2001:db8:100::/40", "2001:db8:1c0:2:21::"},
		{"2001:db8:122::/48", "2001:db8:122:c000:2:2100::"},
		{"2001:db8:122:300::/56", "2001:db8:122:3c0:0:221::"},
		{"2001:db8:122:344::/64", "2001:db8:122:344:c0:2:2100:0"},
		{"2001:db8:122:344::/96", "2001:db8:122:344::192.0.2.33"},
		{"64:ff9b::/96", "64:ff9b::192.0.2.33"},
	} {
		t.Run(tc.prefix, func(t *testing.T) {
			p, err := ParsePrefix(tc.prefix)
			if err != nil {
				t.Fatal(err)
			}
			got, err := p.Synthesize(v4)
			if err != nil {
				t.Fatal(err)
			}
			if want := netip.MustParseAddr(tc.want); got != want {
				t.Fatalf("Synthesize(%s) = %s, want %s", v4, got, want)
			}
			back, err := p.Extract(got)
			if err != nil || back != v4 {
				t.Fatalf("Extract(%s) = %s, %v; want %s", got, back, err, v4)
			}
		})
	}
}

func TestSynthesizeErrors(t *testing.T) {
	p32, _ := ParsePrefix("2001:db8::/32")
	for _, tc := range []struct {
		name   string
		prefix Prefix
		v4     string
		want   error
	}{
		{"ipv6 input", p32, "2001:db8::1", ErrNotIPv4},
		{"private with the well-known prefix", WellKnown, "192.168.1.10", ErrLocalWithWKP},
		{"shared with the well-known prefix", WellKnown, "100.64.0.2", ErrLocalWithWKP},
		{"loopback with the well-known prefix", WellKnown, "127.0.0.1", ErrLocalWithWKP},
		{"zero prefix", Prefix{}, "192.0.2.1", ErrPrefixLength},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := tc.prefix.Synthesize(netip.MustParseAddr(tc.v4))
			if !errors.Is(err, tc.want) {
				t.Fatalf("err = %v, want %v", err, tc.want)
			}
		})
	}
	// A private address under a network-specific prefix is allowed.
	if _, err := p32.Synthesize(netip.MustParseAddr("10.0.0.1")); err != nil {
		t.Fatalf("network-specific prefix, private address: %v", err)
	}
	// An IPv4-mapped IPv6 input is its IPv4 address.
	got, err := WellKnown.Synthesize(netip.MustParseAddr("::ffff:203.0.113.7"))
	if err != nil || got != netip.MustParseAddr("64:ff9b::203.0.113.7") {
		t.Fatalf("mapped input: %s, %v", got, err)
	}
}

func TestExtractErrors(t *testing.T) {
	p64, _ := ParsePrefix("2001:db8:122:344::/64")
	for _, tc := range []struct {
		name string
		addr string
	}{
		{"outside the prefix", "2001:db8:999::c0:2:2100:0"},
		{"u octet set", "2001:db8:122:344:1c0:2:2100:0"},
		{"suffix set", "2001:db8:122:344:c0:2:2100:1"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := p64.Extract(netip.MustParseAddr(tc.addr)); !errors.Is(err, ErrNotInPrefix) {
				t.Fatalf("err = %v, want ErrNotInPrefix", err)
			}
		})
	}
}

func TestParsePrefix(t *testing.T) {
	for _, tc := range []struct {
		in      string
		want    string
		wantErr bool
	}{
		{"64:ff9b::/96", "64:ff9b::/96", false},
		{"2001:db8:122:344:ffff::/64", "2001:db8:122:344::/64", false}, // masked
		{"2001:db8::/33", "", true},
		{"192.0.2.0/24", "", true},
		{"::ffff:192.0.2.0/120", "", true},
		{"nonsense", "", true},
	} {
		t.Run(tc.in, func(t *testing.T) {
			p, err := ParsePrefix(tc.in)
			if (err != nil) != tc.wantErr {
				t.Fatalf("err = %v, want error %v", err, tc.wantErr)
			}
			if err == nil && p.String() != tc.want {
				t.Fatalf("prefix = %s, want %s", p, tc.want)
			}
		})
	}
}

// TestPrefixesFrom: RFC 7050 section 3 on the answers a DNS64 gives for
// ipv4only.arpa under each prefix length, and on answers that reveal none.
func TestPrefixesFrom(t *testing.T) {
	answersUnder := func(prefix string) []netip.Addr {
		p, err := ParsePrefix(prefix)
		if err != nil {
			t.Fatal(err)
		}
		var out []netip.Addr
		for _, w := range wellKnownAddrs {
			a, err := p.Synthesize(w)
			if err != nil {
				t.Fatal(err)
			}
			out = append(out, a)
		}
		return out
	}
	for _, tc := range []struct {
		name    string
		answers []netip.Addr
		want    []string
	}{
		{"well-known", answersUnder("64:ff9b::/96"), []string{"64:ff9b::/96"}},
		{"/32", answersUnder("2001:db8::/32"), []string{"2001:db8::/32"}},
		{"/40", answersUnder("2001:db8:100::/40"), []string{"2001:db8:100::/40"}},
		{"/48", answersUnder("2001:db8:122::/48"), []string{"2001:db8:122::/48"}},
		{"/56", answersUnder("2001:db8:122:300::/56"), []string{"2001:db8:122:300::/56"}},
		{"/64", answersUnder("2001:db8:122:344::/64"), []string{"2001:db8:122:344::/64"}},
		{"two prefixes", append(answersUnder("64:ff9b::/96"), answersUnder("2001:db8:64::/96")...), []string{"64:ff9b::/96", "2001:db8:64::/96"}},
		{"an A record among them", append([]netip.Addr{netip.MustParseAddr("192.0.0.170")}, answersUnder("64:ff9b::/96")...), []string{"64:ff9b::/96"}},
		{"no synthesis", []netip.Addr{netip.MustParseAddr("2001:db8::1")}, nil},
		{"other IPv4 embedded", []netip.Addr{netip.MustParseAddr("64:ff9b::192.0.2.1")}, nil},
		{"empty", nil, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := PrefixesFrom(tc.answers)
			if tc.want == nil {
				if !errors.Is(err, ErrNoPrefix) {
					t.Fatalf("got %v, %v; want ErrNoPrefix", got, err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			var names []string
			for _, p := range got {
				names = append(names, p.String())
			}
			if !slices.Equal(names, tc.want) {
				t.Fatalf("prefixes = %v, want %v", names, tc.want)
			}
		})
	}
}

// FuzzExtract: Extract never panics, and what it extracts synthesises
// back to the same address.
func FuzzExtract(f *testing.F) {
	f.Add([]byte(netip.MustParseAddr("2001:db8:122:344:c0:2:2100:0").AsSlice()), 64)
	f.Add([]byte(netip.MustParseAddr("64:ff9b::192.0.2.33").AsSlice()), 96)
	f.Fuzz(func(t *testing.T, raw []byte, bits int) {
		a, ok := netip.AddrFromSlice(raw)
		if !ok || !a.Is6() {
			return
		}
		p, err := NewPrefix(netip.PrefixFrom(a, bits))
		if err != nil {
			return
		}
		v4, err := p.Extract(a)
		if err != nil {
			return
		}
		back, err := p.Synthesize(v4)
		if err == nil && back != a {
			t.Fatalf("Extract(%s) = %s, which synthesises to %s", a, v4, back)
		}
		if _, err := PrefixesFrom([]netip.Addr{a}); err != nil && !errors.Is(err, ErrNoPrefix) {
			t.Fatal(err)
		}
	})
}

func TestMap(t *testing.T) {
	p, _ := ParsePrefix("2001:db8:64::/96")
	for _, tc := range []struct {
		name   string
		prefix Prefix
		in     string
		want   string
	}{
		{"IPv4", p, "203.0.113.1:4433", "[2001:db8:64::cb00:7101]:4433"},
		{"IPv4-mapped", p, "[::ffff:203.0.113.1]:4433", "[2001:db8:64::cb00:7101]:4433"},
		{"IPv6 unchanged", p, "[2001:db8::1]:4433", "[2001:db8::1]:4433"},
		{"no prefix", Prefix{}, "203.0.113.1:4433", "203.0.113.1:4433"},
		{"private under the well-known prefix unchanged", WellKnown, "192.168.1.10:4000", "192.168.1.10:4000"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := tc.prefix.Map(netip.MustParseAddrPort(tc.in)); got != netip.MustParseAddrPort(tc.want) {
				t.Fatalf("Map(%s) = %s, want %s", tc.in, got, tc.want)
			}
		})
	}
}
