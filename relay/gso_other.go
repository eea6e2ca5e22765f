//go:build !linux

package relay

import "net"

// GSO (UDP_SEGMENT) is Linux's: elsewhere every datagram is its own send.
func gsoSupported(*net.UDPConn) bool { return false }

func gsoControl(b []byte, _ int) []byte { return b }

func isGSOError(error) bool { return false }
