package ticket

import (
	"errors"
	"net/netip"
	"strings"
	"testing"

	"github.com/antnode/antnode/identity"
)

func id(b byte) identity.PeerID {
	var p identity.PeerID
	for i := range p {
		p[i] = b + byte(i)
	}
	return p
}

func mustNew(t testing.TB, peer identity.PeerID, bs ...Bootstrap) Ticket {
	t.Helper()
	tk, err := New(peer, bs)
	if err != nil {
		t.Fatal(err)
	}
	return tk
}

func TestRoundTrip(t *testing.T) {
	v4 := Bootstrap{ID: id(1), Addr: netip.MustParseAddrPort("198.51.100.7:4433")}
	v6 := Bootstrap{ID: id(2), Addr: netip.MustParseAddrPort("[2001:db8::1]:443")}
	var eight []Bootstrap
	for i := range MaxBootstraps {
		eight = append(eight, Bootstrap{ID: id(byte(10 + i)), Addr: netip.AddrPortFrom(netip.MustParseAddr("2001:db8::9").Prev(), uint16(1000+i))})
	}
	cases := []struct {
		name string
		bs   []Bootstrap
		len  int
	}{
		{"no bootstraps", nil, 68},
		{"one IPv4", []Bootstrap{v4}, 130},
		{"IPv4 and IPv6", []Bootstrap{v4, v6}, 0},
		{"the most", eight, MaxLen},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			tk := mustNew(t, id(100), c.bs...)
			s := tk.String()
			if c.len != 0 && len(s) != c.len {
				t.Errorf("length %d, want %d", len(s), c.len)
			}
			if strings.Trim(s, "abcdefghijklmnopqrstuvwxyz0123456789") != "" || !strings.HasPrefix(s, "antnode1") {
				t.Errorf("%q has characters other than lower-case letters and digits", s)
			}
			for _, in := range []string{s, strings.ToUpper(s), " " + s + "\n"} {
				got, err := Parse(in)
				if err != nil {
					t.Fatalf("Parse(%q): %v", in, err)
				}
				if !got.Equal(tk) {
					t.Fatalf("Parse(String(t)) = %+v, want %+v", got, tk)
				}
			}
		})
	}
}

func TestNewRejects(t *testing.T) {
	ok := netip.MustParseAddrPort("192.0.2.1:4433")
	cases := []struct {
		name string
		peer identity.PeerID
		bs   []Bootstrap
	}{
		{"no peer", identity.PeerID{}, nil},
		{"bootstrap without ID", id(1), []Bootstrap{{Addr: ok}}},
		{"port 0", id(1), []Bootstrap{{ID: id(2), Addr: netip.MustParseAddrPort("192.0.2.1:0")}}},
		{"unspecified", id(1), []Bootstrap{{ID: id(2), Addr: netip.MustParseAddrPort("0.0.0.0:1")}}},
		{"multicast", id(1), []Bootstrap{{ID: id(2), Addr: netip.MustParseAddrPort("224.0.0.1:1")}}},
		{"zone", id(1), []Bootstrap{{ID: id(2), Addr: netip.MustParseAddrPort("[fe80::1%eth0]:1")}}},
		{"no address", id(1), []Bootstrap{{ID: id(2)}}},
		{"twice", id(1), []Bootstrap{{ID: id(2), Addr: ok}, {ID: id(3), Addr: ok}}},
		{"too many", id(1), make([]Bootstrap, MaxBootstraps+1)},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if _, err := New(c.peer, c.bs); !errors.Is(err, ErrInvalid) {
				t.Fatalf("New: %v, want ErrInvalid", err)
			}
		})
	}
}

func TestParseRejects(t *testing.T) {
	good := mustNew(t, id(100), Bootstrap{ID: id(1), Addr: netip.MustParseAddrPort("198.51.100.7:4433")}).String()
	flip := []byte(good)
	flip[40] = map[bool]byte{true: 'b', false: 'a'}[flip[40] == 'a']
	cases := []struct {
		name string
		in   string
		want error
	}{
		{"empty", "", ErrForeign},
		{"peer ID", id(1).String(), ErrForeign},
		{"URL", "https://example.com/", ErrForeign},
		{"prefix only", "antnode", ErrForeign},
		{"version only", "antnode1", ErrTruncated},
		{"other version", "antnode2" + good[8:], ErrVersion},
		{"prefix then letters", "antnodexyz", ErrForeign},
		{"truncated by one", good[:len(good)-1], ErrInvalid},
		{"truncated by eight", good[:len(good)-8], ErrInvalid},
		{"half", good[:len(good)/2], ErrInvalid},
		{"altered", string(flip), ErrChecksum},
		{"space inside", good[:50] + " " + good[50:], ErrInvalid},
		{"not base32", good[:50] + "1" + good[51:], ErrInvalid},
		{"padding", good + "=", ErrInvalid},
		{"too long", "antnode1" + strings.Repeat("a", MaxLen), ErrInvalid},
		{"twice pasted", good + good, ErrInvalid},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := Parse(c.in)
			if !errors.Is(err, c.want) || !errors.Is(err, ErrInvalid) {
				t.Fatalf("Parse: %v, want %v", err, c.want)
			}
			if strings.Contains(err.Error(), "\n") {
				t.Fatalf("error is not one line: %q", err)
			}
		})
	}
}

func TestLooks(t *testing.T) {
	tk := mustNew(t, id(3)).String()
	for s, want := range map[string]bool{tk: true, strings.ToUpper(tk): true, id(1).String(): false, "antnode": false, "antnodeq": true, "": false} {
		if got := Looks(s); got != want {
			t.Errorf("Looks(%q) = %v, want %v", s, got, want)
		}
	}
}

func TestText(t *testing.T) {
	tk := mustNew(t, id(7), Bootstrap{ID: id(8), Addr: netip.MustParseAddrPort("[2001:db8::2]:9")})
	b, err := tk.MarshalText()
	if err != nil {
		t.Fatal(err)
	}
	var got Ticket
	if err := got.UnmarshalText(b); err != nil || !got.Equal(tk) {
		t.Fatalf("UnmarshalText: %+v, %v", got, err)
	}
	if err := got.UnmarshalText([]byte("nope")); !errors.Is(err, ErrForeign) {
		t.Fatalf("UnmarshalText(nope): %v", err)
	}
}

// FuzzParse: Parse never panics; what it accepts is a valid ticket whose
// String is the input's canonical form and parses back to the same ticket.
func FuzzParse(f *testing.F) {
	f.Add(mustNew(f, id(1)).String())
	f.Add(mustNew(f, id(1), Bootstrap{ID: id(2), Addr: netip.MustParseAddrPort("192.0.2.1:4433")},
		Bootstrap{ID: id(3), Addr: netip.MustParseAddrPort("[2001:db8::1]:1")}).String())
	f.Add("antnode1")
	f.Add("antnode2aaaa")
	f.Add(id(5).String())
	f.Fuzz(func(t *testing.T, s string) {
		tk, err := Parse(s)
		if err != nil {
			if !errors.Is(err, ErrInvalid) || strings.Contains(err.Error(), "\n") {
				t.Fatalf("Parse(%q): %v", s, err)
			}
			return
		}
		if _, err := New(tk.Peer, tk.Bootstraps); err != nil {
			t.Fatalf("Parse accepted an invalid ticket: %v", err)
		}
		out := tk.String()
		if out != strings.ToLower(strings.TrimSpace(s)) {
			t.Fatalf("String() = %q, input %q", out, s)
		}
		again, err := Parse(out)
		if err != nil || !again.Equal(tk) {
			t.Fatalf("Parse(String(t)) = %+v, %v; want %+v", again, err, tk)
		}
	})
}

// FuzzParseBody reaches past the checksum: any body, checksummed and
// encoded, either parses to a ticket that round-trips or fails with
// ErrInvalid; it never panics.
func FuzzParseBody(f *testing.F) {
	tk := mustNew(f, id(1), Bootstrap{ID: id(2), Addr: netip.MustParseAddrPort("192.0.2.1:4433")})
	body, _ := b32.DecodeString(strings.ToUpper(tk.String()[len(Prefix)+1:]))
	f.Add(body[:len(body)-checksumLen])
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, payload []byte) {
		if len(payload) > maxBody {
			return
		}
		s := Prefix + string(Version) + strings.ToLower(b32.EncodeToString(append(payload, checksum(payload)...)))
		got, err := Parse(s)
		if err != nil {
			if !errors.Is(err, ErrInvalid) {
				t.Fatalf("Parse: %v", err)
			}
			return
		}
		if got.String() != s {
			t.Fatalf("String() = %q, want %q", got.String(), s)
		}
	})
}
