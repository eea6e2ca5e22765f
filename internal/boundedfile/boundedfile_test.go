package boundedfile

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"testing"
)

func TestRead(t *testing.T) {
	dir := t.TempDir()
	write := func(name string, n int) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, make([]byte, n), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	tests := []struct {
		name    string
		path    string
		limit   int64
		wantLen int
		wantErr error
	}{
		{"under the limit", write("small", 10), 16, 10, nil},
		{"at the limit", write("exact", 16), 16, 16, nil},
		{"over the limit", write("big", 17), 16, 0, ErrTooLarge},
		{"an endless device", "/dev/zero", 1 << 20, 0, ErrTooLarge},
		{"missing", filepath.Join(dir, "none"), 16, 0, fs.ErrNotExist},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			b, err := Read(tc.path, tc.limit)
			if !errors.Is(err, tc.wantErr) || len(b) != tc.wantLen {
				t.Fatalf("%d bytes, %v; want %d, %v", len(b), err, tc.wantLen, tc.wantErr)
			}
		})
	}
}
