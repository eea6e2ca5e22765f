package portmap

import (
	"context"
	"net/netip"
	"time"
)

// target is where a mapping is asked for: the gateway, and the node's
// address on the gateway's LAN.
type target struct {
	gateway netip.Addr
	local   netip.Addr
}

// mapping is what a gateway granted.
type mapping struct {
	external netip.AddrPort
	lease    time.Duration // as granted
	epoch    uint32        // the server's seconds since its start of epoch
	hasEpoch bool          // PCP and NAT-PMP: epoch is set
}

// checkResult is what a check of the gateway found.
type checkResult struct {
	epoch    uint32
	hasEpoch bool
	external netip.Addr // the gateway's external address; zero: not known
	gone     bool       // the gateway no longer holds the mapping
}

// client is one protocol's conversation with the gateway: the seam
// between the Mapper's loop, which schedules, and the protocols, which
// talk. Each call is bounded by its context and the request timeout.
type client interface {
	// Map asks for the mapping of the node's port, or renews it, for
	// lease; prev is the external address and port held before (invalid:
	// none), which the client suggests.
	Map(ctx context.Context, lease time.Duration, prev netip.AddrPort) (mapping, error)
	// Check asks the gateway for its state without changing the mapping.
	Check(ctx context.Context, cur mapping) (checkResult, error)
	// Delete gives the mapping back.
	Delete(ctx context.Context, cur mapping) error
}

// leaseSeconds is d in whole seconds, bounded by MaxLease.
func leaseSeconds(d time.Duration) uint32 {
	return uint32(min(d, MaxLease) / time.Second)
}

// grantedLease is a lease the gateway granted, in seconds, bounded by
// what was asked for: a longer grant is renewed as if it were the asked.
func grantedLease(seconds uint32, asked time.Duration) time.Duration {
	return min(time.Duration(seconds)*time.Second, asked)
}
