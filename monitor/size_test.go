package monitor

import (
	"errors"
	"testing"
)

func TestParseSize(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want int64
		err  bool
	}{
		{"zero", "0", 0, false},
		{"bytes", "1048576", 1 << 20, false},
		{"MiB", "4MiB", 4 << 20, false},
		{"MB", "10MB", 10e6, false},
		{"K", "2K", 2048, false},
		{"GiB", "1GiB", 1 << 30, false},
		{"space before unit", "3 KiB", 3 << 10, false},
		{"negative", "-1", 0, true},
		{"words", "lots", 0, true},
		{"overflow", "99999999999GiB", 0, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ParseSize(tc.in)
			if (err != nil) != tc.err || got != tc.want || (err != nil && !errors.Is(err, ErrBadSize)) {
				t.Fatalf("ParseSize(%q) = %d, %v", tc.in, got, err)
			}
		})
	}
}
