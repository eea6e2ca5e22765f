package main

import (
	"errors"
	"fmt"
	"time"
)

// Every numeric flag has an upper bound, documented in its help text and
// enforced when the flags are validated: a typo (an extra zero, a
// negative) or a value from an untrusted config file is an error naming
// the flag, not a node that allocates gigabytes.

// ErrOutOfRange is returned for a numeric flag outside its bounds.
var ErrOutOfRange = errors.New("out of range")

// ErrPortOverflow is returned when a port derived from the listen port
// (listen+1 for STUN, listen+2 for the relay) would pass 65535.
var ErrPortOverflow = errors.New("derived port past 65535")

// Upper bounds of the numeric flags (see each flag's help).
const (
	maxMaxPeers       = 10_000_000 // --max-peers
	maxRelayMbps      = 10_000     // --relay-bandwidth-mbps: 10 Gbit/s
	maxRelayAllocs    = 64         // --relay-max-allocations, per peer
	maxBreakerFails   = 1000       // --breaker-threshold
	maxBreakerTimeout = 24 * time.Hour
	maxServiceStreams = 65_536             // --max-streams
	maxStreamIdle     = 7 * 24 * time.Hour // --stream-idle
	maxStoreSize      = 1_000_000          // --store-size: about 1.1 GB of summaries
	maxRetention      = 30 * 24 * time.Hour
	maxExportInterval = 24 * time.Hour
	maxCmdTimeout     = 24 * time.Hour // --timeout of connect, forward, pipe
	maxPause          = time.Hour      // connect --interval, --idle
	maxDiagTimeout    = 10 * time.Minute
	minRelayLifetime  = 2 * time.Second // --relay-lifetime (0: the defaults)
	maxRelayLifetime  = 24 * time.Hour
)

// relayLifetimeInRange checks --relay-lifetime: zero (the defaults) or
// within its bounds.
func relayLifetimeInRange(d time.Duration) error {
	if d == 0 {
		return nil
	}
	return inRange("relay-lifetime", d, minRelayLifetime, maxRelayLifetime)
}

// inRange checks that flag name's value v is within [lo, hi] (a NaN is
// not).
func inRange[T int | float64 | time.Duration](name string, v, lo, hi T) error {
	if v >= lo && v <= hi {
		return nil
	}
	return fmt.Errorf("--%s %v: %w: want %v to %v", name, v, ErrOutOfRange, lo, hi)
}

// firstErr returns the first non-nil error of errs.
func firstErr(errs ...error) error {
	for _, err := range errs {
		if err != nil {
			return err
		}
	}
	return nil
}

// derivePort is base+off as a port, or ErrPortOverflow naming what the
// port is for and the flag that sets it instead.
func derivePort(base uint16, off int, what, flag string) (uint16, error) {
	p := int(base) + off
	if p > 65535 {
		return 0, fmt.Errorf("%w: the %s port is the listen port %d + %d; listen lower or set %s", ErrPortOverflow, what, base, off, flag)
	}
	return uint16(p), nil
}
