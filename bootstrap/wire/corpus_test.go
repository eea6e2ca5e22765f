package wire

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/quic-go/quic-go/quicvarint"
)

// outcome is what a decoder makes of a corpus input.
type outcome string

const (
	outValid     outcome = "valid"        // a message
	outMalformed outcome = "malformed"    // ErrMalformed
	outTooLarge  outcome = "too_large"    // ErrTooLarge
	outUnknown   outcome = "unknown_type" // *UnknownTypeError
	outEOF       outcome = "eof"          // Reader: a clean end of stream
	outOther     outcome = "other"        // anything else: a defect
)

func outcomeOf(err error) outcome {
	var ut *UnknownTypeError
	switch {
	case err == nil:
		return outValid
	case errors.As(err, &ut):
		return outUnknown
	case errors.Is(err, ErrTooLarge):
		return outTooLarge
	case errors.Is(err, ErrMalformed):
		return outMalformed
	case errors.Is(err, io.EOF):
		return outEOF
	}
	return outOther
}

// corpusEntry is one committed seed of a Fuzz target, kept in
// testdata/fuzz/<target>/<name> in Go's corpus file format so that
// `go test` replays it and the bootstrap's server test sends it.
type corpusEntry struct {
	target string
	name   string
	in     []byte
	// want is Parse's outcome (FuzzParse), or the outcome that ends a
	// Reader over the input (FuzzReader) after frames messages.
	want   outcome
	frames int
}

// corpusEntries is the committed seed corpus: one valid frame per message
// type, and the malformed cases each decoder check exists for.
func corpusEntries(t *testing.T) []corpusEntry {
	t.Helper()
	var out []corpusEntry
	seen := map[Type]bool{}
	for _, tc := range sampleMessages() {
		if seen[tc.msg.Type()] {
			continue
		}
		seen[tc.msg.Type()] = true
		out = append(out, corpusEntry{target: "FuzzParse", name: "valid_" + tc.msg.Type().String(), in: mustMarshal(t, tc.msg), want: outValid})
	}
	register := mustMarshal(t, &Register{Version: Version})
	pong := mustMarshal(t, &Pong{Seq: 1})
	maxVarint := quicvarint.Append(nil, quicvarint.Max) // 8 bytes, 0xff...
	addCand := func(kind byte, prio uint64) []byte {
		b := append([]byte{kind}, quicvarint.Append(nil, prio)...)
		return append(b, 4, 10, 0, 0, 1, 0, 1)
	}
	parse := []struct {
		name string
		in   []byte
		want outcome
	}{
		{"bad_version_register", mustMarshal(t, &Register{Version: 99}), outValid}, // the server refuses it, not the decoder
		// PunchRequest{ID 5, Offer false, Round 1} and two bytes a newer
		// version appends.
		{"trailing_fields", frame(TypePunchRequest, []byte{5, 0, 1, 0xaa, 0xbb}), outValid},
		// Registered with the registry size, and the same from an older
		// bootstrap (without it), and with a newer field after it.
		{"registered_peers", mustMarshal(t, &Registered{Version: Version, TTLSeconds: 60, Peers: 10000}), outValid},
		{"registered_without_peers", frame(TypeRegistered, []byte{1, 4, 10, 0, 0, 1, 0, 1, 0, 60, 0}), outValid},
		{"registered_peers_then_more", frame(TypeRegistered, append((&Registered{Version: Version, TTLSeconds: 60, Peers: 10000,
			Other: []netip.AddrPort{netip.MustParseAddrPort("[2001:db8::1]:4433")}, Token: [16]byte{1}}).appendPayload(nil), 0xaa)), outValid},
		// Found by FuzzParse: a token with no sockets of the other family
		// re-encodes (the token is sent whenever it is set).
		{"registered_token_without_sockets", []byte("\x020A0\x04000000\x00000\x00000000000000000000000000000000000000000000000000000000"), outValid},
		{"registered_other_truncated", frame(TypeRegistered, []byte{1, 4, 10, 0, 0, 1, 0, 1, 0, 60, 0, 0x67, 0x10, 0x01}), outMalformed},
		{"registered_peers_truncated", frame(TypeRegistered, []byte{1, 4, 10, 0, 0, 1, 0, 1, 0, 60, 0, 0x67}), outMalformed},
		{"pong_peers", mustMarshal(t, &Pong{Seq: 1, Peers: 10000}), outValid},
		{"pong_peers_truncated", frame(TypePong, []byte{1, 0x67}), outMalformed},
		{"empty", []byte{}, outMalformed},
		{"type_only", []byte{0x01}, outMalformed},
		{"truncated_length_varint", []byte{0x01, 0x40}, outMalformed},
		{"truncated_payload", register[:len(register)-1], outMalformed},
		{"truncated_varint_in_payload", frame(TypePong, []byte{0x80, 0x00}), outMalformed},
		{"oversized_length", append(quicvarint.Append([]byte{0x01}, MaxPayload+1), make([]byte, 8)...), outTooLarge},
		{"huge_varint_length", append([]byte{0x01}, maxVarint...), outTooLarge},
		{"huge_varint_type", append(slices.Clone(maxVarint), 0x00), outUnknown},
		{"unknown_type", frame(0x3f, []byte{1, 2, 3}), outUnknown},
		{"too_many_candidates", frame(TypeRegister, quicvarint.Append([]byte{1, 0, 0}, MaxCandidates+1)), outMalformed},
		{"bad_nat_type", frame(TypeRegister, []byte{1, 200, 0, 0}), outMalformed},
		{"bad_candidate_kind", frame(TypeAddAddress, addCand(9, 1)), outMalformed},
		{"candidate_priority_too_big", frame(TypeAddAddress, addCand(1, 1<<32)), outMalformed},
		{"bad_address_family", frame(TypeRemoveAddress, []byte{5, 1, 2, 3, 4, 0, 1}), outMalformed},
		{"bad_boolean", frame(TypePunchRequest, []byte{1, 2, 1}), outMalformed},
		{"ping_pad_too_long", frame(TypePing, quicvarint.Append([]byte{1}, MaxPad+1)), outMalformed},
	}
	for _, p := range parse {
		out = append(out, corpusEntry{target: "FuzzParse", name: p.name, in: p.in, want: p.want})
	}
	cat := func(parts ...[]byte) []byte { return bytes.Join(parts, nil) }
	stream := []struct {
		name   string
		in     []byte
		want   outcome
		frames int
	}{
		{"stream_register_then_requests", cat(register,
			mustMarshal(t, &ConnectRequest{ID: 1, Candidates: []Candidate{{Kind: KindHost, Addr: netip.MustParseAddrPort("10.0.0.1:1")}}}),
			mustMarshal(t, &PunchRequest{ID: 1, Round: 2})), outEOF, 3},
		{"stream_unknown_then_valid", cat(frame(0x3f, []byte{1, 2, 3}), pong), outEOF, 1},
		{"stream_valid_then_truncated", cat(pong, register[:len(register)-1]), outMalformed, 1},
		{"stream_valid_then_oversized", cat(pong, quicvarint.Append([]byte{0x01}, 1<<20)), outTooLarge, 1},
		{"stream_valid_then_garbage", cat(register, bytes.Repeat([]byte{0xff}, 9)), outMalformed, 1},
	}
	for _, s := range stream {
		out = append(out, corpusEntry{target: "FuzzReader", name: s.name, in: s.in, want: s.want, frames: s.frames})
	}
	return out
}

// corpusFile is a []byte input in Go's fuzz corpus file format.
func corpusFile(in []byte) []byte {
	return fmt.Appendf(nil, "go test fuzz v1\n[]byte(%q)\n", in)
}

// readAll reads frames until an error other than a skipped unknown type
// (at most 64), and returns how many messages it read and how it ended.
func readAll(in []byte) (int, outcome) {
	r := NewReader(bytes.NewReader(in))
	frames := 0
	for range 64 {
		_, err := r.Read()
		o := outcomeOf(err)
		switch o {
		case outValid:
			frames++
		case outUnknown:
		default:
			return frames, o
		}
	}
	return frames, outOther
}

// TestFuzzCorpus pins the committed seed corpus: every entry is on disk in
// the corpus file format (run with -update to write them), nothing else is,
// and each input decodes to the outcome it was committed for.
func TestFuzzCorpus(t *testing.T) {
	entries := corpusEntries(t)
	byTarget := map[string][]string{}
	for _, e := range entries {
		byTarget[e.target] = append(byTarget[e.target], e.name)
		path := filepath.Join("testdata", "fuzz", e.target, e.name)
		if *update {
			if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(path, corpusFile(e.in), 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
	for target, names := range byTarget {
		des, err := os.ReadDir(filepath.Join("testdata", "fuzz", target))
		if err != nil {
			t.Fatalf("%v (run with -update to create)", err)
		}
		var onDisk []string
		for _, de := range des {
			onDisk = append(onDisk, de.Name())
		}
		slices.Sort(onDisk)
		slices.Sort(names)
		if !slices.Equal(onDisk, names) {
			t.Fatalf("%s corpus on disk %v, want %v", target, onDisk, names)
		}
	}
	for _, e := range entries {
		t.Run(e.target+"/"+e.name, func(t *testing.T) {
			got, err := os.ReadFile(filepath.Join("testdata", "fuzz", e.target, e.name))
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, corpusFile(e.in)) {
				t.Fatalf("file content %q, want %q", got, corpusFile(e.in))
			}
			switch e.target {
			case "FuzzParse":
				m, n, err := Parse(e.in)
				if o := outcomeOf(err); o != e.want {
					t.Fatalf("Parse: %v (%s), want %s", err, o, e.want)
				}
				if err == nil && (n > len(e.in) || m == nil) {
					t.Fatalf("Parse consumed %d of %d bytes, message %v", n, len(e.in), m)
				}
			case "FuzzReader":
				if frames, o := readAll(e.in); o != e.want || frames != e.frames {
					t.Fatalf("Reader: %d messages then %s, want %d then %s", frames, o, e.frames, e.want)
				}
			}
		})
	}
}
