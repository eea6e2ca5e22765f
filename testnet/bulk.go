package testnet

import (
	"context"
	"fmt"
	"time"
)

// Bulk transfers under faults, sized to the links. On clean links the
// scenarios move tens of MiB and land their faults a fixed time into the
// transfer. At 2 % loss on each access link and an 80 ms round trip a
// loss-based congestion controller (QUIC's, like TCP's CUBIC) gets about
// 1 Mbit/s, at which 64 MiB takes over 8 minutes: on lossy links the
// scenarios move what takes seconds at that rate, and land their faults by
// progress (the sender's link counter, TxBytes), a quarter of the way in,
// so that the fault still lands while bytes are flowing.
const (
	// lossyBulkSize is the transfer of network-change, nat-rebinding,
	// birthday-rebinding, blackhole and diag-blackhole on lossy links:
	// about 8 s at 1 Mbit/s.
	lossyBulkSize = 1 << 20
	// lossyUpgradeSize is relay-upgrade's: the direct path opens a
	// quarter in, and the move and the relay's release must happen
	// before the end (at 2 MiB, 1 of 2 lossy passes ended the transfer
	// first).
	lossyUpgradeSize = 4 << 20
	// familyReturnSize is family-return's on clean links: about 10 s,
	// time for the move to IPv4, IPv6's return 2 s after the fault and
	// the move back (paced 1 s, then 2 s, after the first move), with the
	// transfer still running; lossyFamilyReturnSize on lossy links.
	familyReturnSize      = 256 << 20
	lossyFamilyReturnSize = lossyUpgradeSize
	// lossyCoturnSize is relay-coturn's, within its 15 s connect.
	lossyCoturnSize = 256 << 10
	// lossyFaultAt is the share of the size sent when the fault lands.
	lossyFaultAt = 0.25
	// faultProgressWait bounds the wait for that progress.
	faultProgressWait = 30 * time.Second
)

// faultPlan is a bulk transfer with a fault in it: Size bytes, the fault
// After the connection is up (or the transfer's start) and, when Sent is
// above zero, once the sender has put Sent × Size bytes on its link.
type faultPlan struct {
	Size  int64
	After time.Duration
	Sent  float64
}

// lossy reports whether any access link of the testbed loses packets.
func (e *Env) lossy() bool {
	if e.Spec.Link.Loss > 0 {
		return true
	}
	for _, s := range e.Spec.Sites {
		if s.Link != nil && s.Link.Loss > 0 {
			return true
		}
	}
	return false
}

// bulkPlan returns a fault scenario's plan: on clean links size bytes
// with the fault after; on lossy ones lossySize with the fault at
// lossyFaultAt of it.
func (e *Env) bulkPlan(size int64, after time.Duration, lossySize int64) faultPlan {
	if e.lossy() {
		return faultPlan{Size: lossySize, Sent: lossyFaultAt}
	}
	return faultPlan{Size: size, After: after}
}

// awaitFault waits, while p runs, for the plan's moment: After, then (if
// Sent) until the host in ns has sent Sent × Size bytes since its
// counter read base, at most faultProgressWait. It returns the bytes sent
// since base at that moment.
func awaitFault(ctx context.Context, p *Proc, ns string, base int64, plan faultPlan) (int64, error) {
	select {
	case <-time.After(plan.After):
	case <-p.Done():
		return 0, fmt.Errorf("the transfer ended before the fault: %s", tail(p.Output(), 300))
	case <-ctx.Done():
		return 0, ctx.Err()
	}
	want := int64(plan.Sent * float64(plan.Size))
	var sent int64
	var rerr error
	ended := false
	reached := waitUntil(ctx, faultProgressWait, func() bool {
		n, err := TxBytes(ns)
		if err != nil {
			rerr = err
			return true
		}
		sent = n - base
		select {
		case <-p.Done():
			ended = true
			return true
		default:
		}
		return sent >= want
	})
	switch {
	case rerr != nil:
		return 0, rerr
	case ended:
		return sent, fmt.Errorf("the transfer ended before the fault (%d bytes sent): %s", sent, tail(p.Output(), 300))
	case !reached:
		if err := ctx.Err(); err != nil {
			return sent, fmt.Errorf("waiting for %d bytes sent: %w", want, err)
		}
		return sent, fmt.Errorf("%d of the %d bytes the fault waits for were sent in %v", sent, want, faultProgressWait)
	}
	return sent, nil
}

// midTransfer judges when a fault landed in a transfer of size bytes:
// the sender had put fewer than size bytes (headers and retransmissions
// included) on its link, so payload was still to come.
func midTransfer(sent, size int64) (bool, string) {
	note := fmt.Sprintf("the fault landed with %d KiB of %d KiB sent (%.0f %%)", sent>>10, size>>10, 100*float64(sent)/float64(size))
	if sent >= size {
		return false, note + ", NOT mid-transfer"
	}
	return true, note
}
