// Package boundedfile reads local files that the user names (a config, a
// key, a token) through a size limit, so that a wrong path (/dev/zero, a
// log file) is an error instead of the node's memory. It starts no
// goroutines and keeps no state.
package boundedfile

import (
	"errors"
	"fmt"
	"io"
	"os"
)

// ErrTooLarge is returned for a file longer than its limit.
var ErrTooLarge = errors.New("file too large")

// Limits of the files the node reads.
const (
	// MaxConfig bounds a --config file.
	MaxConfig = 1 << 20
	// MaxKey bounds a key file (a PEM Ed25519 key is about 120 bytes).
	MaxKey = 16 << 10
	// MaxSecret bounds a token, password or shared-secret file.
	MaxSecret = 4 << 10
)

// Read reads the file at path, or fails with ErrTooLarge when it holds
// more than limit bytes. It reads at most limit+1 bytes whatever the file
// is (a device, a pipe, a file that grows). Errors of opening the file
// wrap the os error (fs.ErrNotExist, ...).
func Read(path string, limit int64) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	if fi, err := f.Stat(); err == nil && fi.Mode().IsRegular() && fi.Size() > limit {
		return nil, fmt.Errorf("%w: %s has %d bytes, at most %d are read", ErrTooLarge, path, fi.Size(), limit)
	}
	b, err := io.ReadAll(io.LimitReader(f, limit+1))
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", path, err)
	}
	if int64(len(b)) > limit {
		return nil, fmt.Errorf("%w: %s has more than %d bytes", ErrTooLarge, path, limit)
	}
	return b, nil
}
