package migration

import "time"

// UpgradeDelay is how long a relayed connection waits before its n-th
// (from 0) attempt to go direct: base, doubling each time, at most max.
// The budget backs off so that a pair that can never go direct costs
// little, while one whose path just opened finds it soon.
func UpgradeDelay(n int, base, max time.Duration) time.Duration {
	d := base
	for range n {
		d *= 2
		if d >= max {
			return max
		}
	}
	return min(d, max)
}

// KeepaliveFor is the keepalive interval for a NAT mapping that lives
// lifetime when idle: under half of it, so that one lost keepalive does
// not cost the mapping, within [floor, ceiling]. A zero lifetime (not
// learned) gives ceiling.
func KeepaliveFor(lifetime, floor, ceiling time.Duration) time.Duration {
	if lifetime <= 0 {
		return ceiling
	}
	return min(ceiling, max(floor, lifetime*2/5))
}

// DeadAfter is how long a path may stay silent, while this side pings it,
// before it is declared dead: a few probe intervals and never less than a
// few round trips, so that a slow path is not mistaken for a dead one.
func DeadAfter(interval, rtt time.Duration, misses int) time.Duration {
	return max(time.Duration(misses)*interval, 4*rtt)
}

// Silence tells a path that went silent from one that is idle: it watches
// a connection's packet counters and reports the path dead when packets
// were sent since the last one was received (answers are due) and none
// has come back for threshold. The zero value is ready; it is not safe
// for concurrent use.
type Silence struct {
	started      bool
	recv         uint64
	sentAtRecv   uint64
	waitingSince time.Time
}

// Observe takes the counters at now and reports whether the path is dead.
func (s *Silence) Observe(now time.Time, sent, recv uint64, threshold time.Duration) bool {
	if !s.started || recv != s.recv {
		s.started, s.recv, s.sentAtRecv, s.waitingSince = true, recv, sent, time.Time{}
		return false
	}
	if sent == s.sentAtRecv {
		return false // idle: nothing is owed
	}
	if s.waitingSince.IsZero() {
		s.waitingSince = now
	}
	return now.Sub(s.waitingSince) >= threshold
}

// Reset forgets the history (after the connection moved to a new path).
func (s *Silence) Reset() { *s = Silence{} }

// Stall tells a flow that stopped coming in from one that ended in
// silence: it reports, once per flow, that packets stopped arriving for
// after, where a flow is more than stallFlow packets received since the
// last report. A path can die under a side that only receives (the
// receiver of a transfer sends nothing unless packets come in), and such a
// side owes nothing, so Silence never sees it; a ping answered keeps the
// flow going, a ping unanswered makes the silence Silence detects. The
// answer to the ping itself is no flow, so an idle connection is pinged
// once, not forever. The zero value is ready; it is not safe for
// concurrent use.
type Stall struct {
	recv     uint64    // packets received at the last look
	since    time.Time // when that count last grew
	reported uint64    // packets received at the last report
}

// stallFlow is how many packets make a flow (more than a ping's answer).
const stallFlow = 3

// Observe takes the received count at now and reports whether to ping.
func (s *Stall) Observe(now time.Time, recv uint64, after time.Duration) bool {
	if recv != s.recv || s.since.IsZero() {
		s.recv, s.since = recv, now
		return false
	}
	if now.Sub(s.since) < after || recv <= s.reported+stallFlow {
		return false
	}
	s.reported = recv
	return true
}

// StallAfter is how long packets may stop coming in before Stall asks for
// a ping: two looks, and at least two round trips (an answer to what was
// sent is due by then).
func StallAfter(check, rtt time.Duration) time.Duration {
	return max(2*check, 2*rtt)
}
