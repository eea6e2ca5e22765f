package traversal

import (
	"encoding/binary"
	"errors"
	"testing"
)

func header(magic string, version byte, size uint64) [13]byte {
	var h [13]byte
	copy(h[:4], magic)
	h[4] = version
	binary.BigEndian.PutUint64(h[5:], size)
	return h
}

func TestParseTransferHeader(t *testing.T) {
	tests := []struct {
		name string
		hdr  [13]byte
		want int64
		err  error
	}{
		{"ok", header("ANTX", 1, 4096), 4096, nil},
		{"empty transfer", header("ANTX", 1, 0), 0, nil},
		{"at limit", header("ANTX", 1, 1<<20), 1 << 20, nil},
		{"over limit", header("ANTX", 1, 1<<20+1), 0, ErrTransferTooLarge},
		{"negative as int64", header("ANTX", 1, 1<<63), 0, ErrTransferTooLarge},
		{"bad magic", header("HTTP", 1, 1), 0, errBadTransferHeader},
		{"bad version", header("ANTX", 2, 1), 0, errBadTransferHeader},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := parseTransferHeader(tc.hdr, 1<<20)
			if !errors.Is(err, tc.err) || (err == nil && got != tc.want) {
				t.Fatalf("got %d, %v; want %d, %v", got, err, tc.want, tc.err)
			}
		})
	}
}

func FuzzParseTransferHeader(f *testing.F) {
	h := header("ANTX", 1, 10)
	f.Add(h[:], int64(100))
	f.Fuzz(func(t *testing.T, b []byte, limit int64) {
		if len(b) < 13 || limit < 0 {
			return
		}
		size, err := parseTransferHeader([13]byte(b[:13]), limit)
		if err == nil && (size < 0 || size > limit) {
			t.Fatalf("accepted size %d with limit %d", size, limit)
		}
	})
}
