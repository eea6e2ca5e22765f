package monitor

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// ErrBadSize is returned by ParseSize.
var ErrBadSize = errors.New("invalid size")

// ParseSize parses a byte count as the CLI and the API take it: a plain
// number or one with a unit (B, KB, MB, GB, KiB, MiB, GiB; K, M, G are
// binary).
func ParseSize(s string) (int64, error) {
	in := s
	s = strings.TrimSpace(s)
	units := []struct {
		suffix string
		mult   int64
	}{{"KiB", 1 << 10}, {"MiB", 1 << 20}, {"GiB", 1 << 30}, {"KB", 1e3}, {"MB", 1e6}, {"GB", 1e9}, {"K", 1 << 10}, {"M", 1 << 20}, {"G", 1 << 30}, {"B", 1}}
	mult := int64(1)
	for _, u := range units {
		if strings.HasSuffix(s, u.suffix) {
			s, mult = strings.TrimSpace(strings.TrimSuffix(s, u.suffix)), u.mult
			break
		}
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil || n < 0 || (mult > 1 && n > (1<<62)/mult) {
		return 0, fmt.Errorf("%w %q", ErrBadSize, in)
	}
	return n * mult, nil
}
