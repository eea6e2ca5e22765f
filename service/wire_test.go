package service

import (
	"bytes"
	"errors"
	"strings"
	"testing"
)

func TestHeaderRoundTrip(t *testing.T) {
	for _, name := range []string{"web", "a", "ssh-22", "my.service_v2", strings.Repeat("x", MaxNameLen)} {
		b, err := AppendHeader(nil, name)
		if err != nil {
			t.Fatalf("%q: %v", name, err)
		}
		r := bytes.NewReader(append(b, "payload"...))
		got, err := ReadHeader(r)
		if err != nil || got != name {
			t.Fatalf("%q: got %q, %v", name, got, err)
		}
		if r.Len() != len("payload") {
			t.Fatalf("%q: ReadHeader read %d bytes past the header", name, len("payload")-r.Len())
		}
	}
}

func TestReadHeaderRejects(t *testing.T) {
	tests := []struct {
		name string
		in   []byte
		want error // nil: any error
	}{
		{"empty", nil, nil},
		{"magic only", []byte("ANTS"), nil},
		{"wrong magic", []byte("ANTX\x01\x03web"), ErrBadHeader},
		{"the transfer's old header", []byte("ANTX\x01\x00\x00\x00\x00\x00\x00\x00\x10"), ErrBadHeader},
		{"version 2", []byte("ANTS\x02\x03web"), ErrBadHeader},
		{"zero length", []byte("ANTS\x01\x00"), ErrBadHeader},
		{"length over the limit", append([]byte("ANTS\x01\x41"), bytes.Repeat([]byte("a"), 65)...), ErrBadHeader},
		{"name cut short", []byte("ANTS\x01\x05web"), nil},
		{"space in name", []byte("ANTS\x01\x03w b"), ErrBadHeader},
		{"slash in name", []byte("ANTS\x01\x03w/b"), ErrBadHeader},
		{"NUL in name", []byte("ANTS\x01\x03w\x00b"), ErrBadHeader},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			name, err := ReadHeader(bytes.NewReader(tc.in))
			if err == nil {
				t.Fatalf("accepted %q as %q", tc.in, name)
			}
			if tc.want != nil && !errors.Is(err, tc.want) {
				t.Fatalf("got %v, want %v", err, tc.want)
			}
		})
	}
}

func TestValidName(t *testing.T) {
	tests := []struct {
		name string
		ok   bool
	}{
		{"web", true}, {"Web-1.2_x", true}, {"", false}, {strings.Repeat("a", 65), false},
		{"a b", false}, {"a/b", false}, {"é", false}, {"a:b", false},
	}
	for _, tc := range tests {
		if err := ValidName(tc.name); (err == nil) != tc.ok {
			t.Errorf("ValidName(%q) = %v, want ok=%v", tc.name, err, tc.ok)
		}
	}
}

func TestCodeNames(t *testing.T) {
	seen := map[string]bool{}
	for c, n := range codeNames {
		if seen[n] {
			t.Fatalf("name %q twice", n)
		}
		seen[n] = true
		if c.Refusal() != (c >= CodeUnknownService && c <= CodeBadHeader) {
			t.Fatalf("%s: Refusal() = %v", n, c.Refusal())
		}
	}
	if got := Code(0x999).String(); got != "code_0x999" {
		t.Fatalf("unknown code prints %q", got)
	}
	for _, c := range refusals {
		if !c.Refusal() || refusals[refusalIndex(c)] != c {
			t.Fatalf("refusal table broken at %s", c)
		}
	}
}

// FuzzReadHeader: no input crashes the decoder, and what it accepts is a
// valid name that encodes back to the bytes it read.
func FuzzReadHeader(f *testing.F) {
	for _, s := range []string{"ANTS\x01\x03web", "ANTS\x01\x00", "ANTX\x01", "", "ANTS\x02\x01a", "ANTS\x01\x40" + strings.Repeat("z", 64)} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		r := bytes.NewReader(in)
		name, err := ReadHeader(r)
		if err != nil {
			return
		}
		if ValidName(name) != nil {
			t.Fatalf("accepted invalid name %q", name)
		}
		enc, err := AppendHeader(nil, name)
		if err != nil || !bytes.Equal(enc, in[:len(in)-r.Len()]) {
			t.Fatalf("re-encoding %q gives %q, read %q", name, enc, in[:len(in)-r.Len()])
		}
	})
}
