package monitor

import (
	"errors"
	"fmt"
	"strconv"
	"time"
)

// AttemptJSON is an attempt as the API, diagnostics and the dashboard see
// it. Addresses are rendered by the monitor's sanitiser.
type AttemptJSON struct {
	ID         string      `json:"id"`
	Peer       string      `json:"peer,omitempty"`
	Role       string      `json:"role"`
	NAT        string      `json:"nat,omitempty"`
	PeerNAT    string      `json:"peer_nat,omitempty"`
	Start      time.Time   `json:"start"`
	End        *time.Time  `json:"end,omitempty"`
	DurationMS float64     `json:"duration_ms"`
	Outcome    string      `json:"outcome"`
	Reason     string      `json:"reason,omitempty"`
	Path       string      `json:"path,omitempty"`
	Family     string      `json:"family,omitempty"` // the path's: ipv4, ipv6
	Sampled    bool        `json:"sampled"`
	Phases     []PhaseJSON `json:"phases"`
	Events     []EventJSON `json:"events,omitempty"`
	Dropped    int         `json:"events_dropped,omitempty"`
}

// PhaseJSON is one phase of an attempt's timeline.
type PhaseJSON struct {
	Phase      string  `json:"phase"`
	StartMS    float64 `json:"start_ms"`
	DurationMS float64 `json:"duration_ms"`
	Outcome    string  `json:"outcome"`
	Reason     string  `json:"reason,omitempty"`
}

// EventJSON is one event.
type EventJSON struct {
	Time       time.Time `json:"time"`
	Kind       string    `json:"kind"`
	Attempt    string    `json:"attempt,omitempty"`
	Phase      string    `json:"phase,omitempty"`
	Outcome    string    `json:"outcome,omitempty"`
	Reason     string    `json:"reason,omitempty"`
	Path       string    `json:"path,omitempty"`
	Family     string    `json:"family,omitempty"`
	DurationMS float64   `json:"duration_ms,omitempty"`
	Value      float64   `json:"value,omitempty"`
	Bootstrap  string    `json:"bootstrap,omitempty"`
	Peer       string    `json:"peer,omitempty"`
	NAT        string    `json:"nat,omitempty"`
	PeerNAT    string    `json:"peer_nat,omitempty"`
	Addr       string    `json:"addr,omitempty"`
	Detail     string    `json:"detail,omitempty"`
	To         string    `json:"to,omitempty"`
	Err        string    `json:"error,omitempty"`
}

func msOf(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

// AttemptJSON renders a stored attempt; withEvents includes its events
// (when it kept them).
func (m *Monitor) AttemptJSON(r *AttemptRecord, withEvents bool) AttemptJSON {
	out := AttemptJSON{ID: r.ID.String(), Peer: r.Peer, Role: r.Role, NAT: r.NAT, PeerNAT: r.PeerNAT, Family: r.Family,
		Start: r.Start, DurationMS: msOf(r.Duration), Outcome: r.Outcome.String(), Sampled: r.Sampled,
		Phases: make([]PhaseJSON, len(r.Phases)), Dropped: r.Dropped}
	if !r.End.IsZero() {
		end := r.End
		out.End = &end
	} else {
		out.Outcome = "running"
		out.DurationMS = msOf(time.Since(r.Start))
	}
	if r.Reason != ReasonNone {
		out.Reason = r.Reason.String()
	}
	if r.Path != PathNone {
		out.Path = r.Path.String()
	}
	for i, p := range r.Phases {
		out.Phases[i] = PhaseJSON{Phase: p.Phase.String(), StartMS: msOf(p.Start), DurationMS: msOf(p.Duration),
			Outcome: p.Outcome.String()}
		if p.Reason != ReasonNone {
			out.Phases[i].Reason = p.Reason.String()
		}
	}
	if withEvents {
		out.Events = make([]EventJSON, len(r.Events))
		for i := range r.Events {
			out.Events[i] = m.EventJSON(&r.Events[i])
		}
	}
	return out
}

// EventJSON renders an event.
func (m *Monitor) EventJSON(ev *Event) EventJSON {
	out := EventJSON{Time: ev.Time, Kind: ev.Kind.String(), DurationMS: msOf(ev.Duration), Value: ev.Value,
		Bootstrap: ev.Bootstrap, Peer: ev.Peer, NAT: ev.NAT, PeerNAT: ev.PeerNAT, Detail: ev.Detail, To: ev.To, Family: ev.Family}
	if ev.Attempt != 0 {
		out.Attempt = ev.Attempt.String()
	}
	if ev.Phase != PhaseNone {
		out.Phase = ev.Phase.String()
	}
	if ev.Outcome != OutcomeNone {
		out.Outcome = ev.Outcome.String()
	}
	if ev.Reason != ReasonNone {
		out.Reason = ev.Reason.String()
	}
	if ev.Path != PathNone {
		out.Path = ev.Path.String()
	}
	if ev.Addr.IsValid() {
		out.Addr = m.san.AddrPort(ev.Addr)
	}
	if ev.Err != nil {
		out.Err = m.san.Text(ev.Err.Error())
	}
	return out
}

// ErrBadAttemptID is returned for a malformed attempt ID.
var ErrBadAttemptID = errors.New("monitor: bad attempt ID")

// ParseAttemptID parses the 16 hex digits of AttemptID.String.
func ParseAttemptID(s string) (AttemptID, error) {
	if len(s) != 16 {
		return 0, fmt.Errorf("%w: %q: want 16 hex digits", ErrBadAttemptID, s)
	}
	v, err := strconv.ParseUint(s, 16, 64)
	if err != nil || v == 0 {
		return 0, fmt.Errorf("%w: %q: want 16 hex digits", ErrBadAttemptID, s)
	}
	return AttemptID(v), nil
}
