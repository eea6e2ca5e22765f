package testnet

import (
	"context"
	"strings"
	"time"
)

// relayLine is one allocation event a bootstrap's relay logged: an
// allocate or a release, by peer and relayed address.
type relayLine struct {
	At   time.Time
	Op   string // allocate or release
	Peer string
	Addr string
}

// parseRelayLines returns the successful allocations and releases in a
// bootstrap's log (the relay event lines, not their audit copies), in
// order. It is a pure function.
func parseRelayLines(out string) []relayLine {
	var lines []relayLine
	for _, l := range strings.Split(out, "\n") {
		if !strings.Contains(l, " msg=relay event=relay outcome=ok ") {
			continue
		}
		var r relayLine
		for _, f := range strings.Fields(l) {
			k, v, ok := strings.Cut(f, "=")
			if !ok {
				continue
			}
			switch k {
			case "time":
				r.At, _ = time.Parse(time.RFC3339Nano, v)
			case "detail":
				r.Op = v
			case "peer":
				r.Peer = v
			case "addr":
				r.Addr = v
			}
		}
		if (r.Op == "allocate" || r.Op == "release") && !r.At.IsZero() && r.Peer != "" {
			lines = append(lines, r)
		}
	}
	return lines
}

// firstRelayLine returns the first of lines after since that match.
func firstRelayLine(lines []relayLine, since time.Time, match func(relayLine) bool) (relayLine, bool) {
	for _, r := range lines {
		if !r.At.Before(since) && match(r) {
			return r, true
		}
	}
	return relayLine{}, false
}

// waitRelayLine waits, at most d, for the first line after since of the
// bootstraps' relay logs that matches, checking every 100 ms. Counting a
// relay's allocations cannot tell one connection's from those other nodes
// hold (a warm relay, an idle shared allocation): the log names the peer.
func (e *Env) waitRelayLine(ctx context.Context, since time.Time, match func(relayLine) bool, d time.Duration) (relayLine, bool) {
	deadline := time.Now().Add(d)
	for {
		for _, b := range e.Bootstraps {
			if r, ok := firstRelayLine(parseRelayLines(b.Output()), since, match); ok {
				return r, true
			}
		}
		if time.Now().After(deadline) {
			return relayLine{}, false
		}
		select {
		case <-ctx.Done():
			return relayLine{}, false
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// closedAt returns when a connect's log says its connection closed (the
// state machine's move to closed), if it does.
func closedAt(out string) (time.Time, bool) {
	for _, l := range strings.Split(out, "\n") {
		if !strings.Contains(l, "event=state_change") || !strings.Contains(l, " to=closed") {
			continue
		}
		if v, ok := strings.CutPrefix(strings.Fields(l)[0], "time="); ok {
			if t, err := time.Parse(time.RFC3339Nano, v); err == nil {
				return t, true
			}
		}
	}
	return time.Time{}, false
}
