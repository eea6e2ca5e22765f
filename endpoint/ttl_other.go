//go:build !linux

package endpoint

import "net/netip"

// ttlControl is only implemented on Linux; elsewhere WriteTTL reports
// ErrTTLUnsupported (a priming packet with the default TTL would reach the
// far NAT, which is what priming must not do).
func ttlControl(netip.AddrPort, int) []byte { return nil }

// gsoSegment: only Linux has UDP_SEGMENT (GSO).
func gsoSegment([]byte) int { return 0 }
