package service

import (
	"sync"
	"time"

	"github.com/antnode/antnode/event"
	"github.com/antnode/antnode/identity"
)

// eventsPerSecond bounds the refusal events a Mux records: a peer that
// floods refused streams is counted exactly in the metrics, but fills
// neither the log nor the audit trail. Events past the bound are
// suppressed and their number rides on the next recorded event.
const eventsPerSecond = 20

// gate lets at most eventsPerSecond events through each second.
type gate struct {
	mu         sync.Mutex
	second     int64
	n          int
	suppressed int
}

// pass says whether an event may be recorded now, and how many were
// suppressed before it.
func (g *gate) pass(now time.Time) (bool, int) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if s := now.Unix(); s != g.second {
		g.second, g.n = s, 0
	}
	if g.n >= eventsPerSecond {
		g.suppressed++
		return false, 0
	}
	g.n++
	sup := g.suppressed
	g.suppressed = 0
	return true, sup
}

// reasonOf is the monitor's reason for a refusal code.
func reasonOf(c Code) event.Reason {
	switch c {
	case CodeUnknownService:
		return event.ReasonUnknownService
	case CodeNotAllowed:
		return event.ReasonNotAllowed
	case CodeTargetUnreachable:
		return event.ReasonTargetUnreachable
	case CodeStreamLimit:
		return event.ReasonStreamLimit
	case CodeBadHeader:
		return event.ReasonProtocolError
	case CodeIdle:
		return event.ReasonTimeout
	}
	return event.ReasonRefused
}

// Reason is the monitor's reason for a stream error: the refusal's or
// reset's code as a reason from the closed set.
func (e *StreamError) Reason() event.Reason { return reasonOf(e.Code) }

// recordRefusal records a refusal: one this node made of a peer's stream
// (incoming), or one a peer made of this node's (not incoming). A peer
// that is not allowed is a security event, for the audit trail.
func (m *Mux) recordRefusal(peer identity.PeerID, service string, code Code, incoming bool) {
	ok, suppressed := m.gate.pass(time.Now())
	if !ok {
		return
	}
	ev := event.Event{Kind: event.KindStream, Reason: reasonOf(code), Peer: peer.String(),
		Detail: service, Value: float64(suppressed)}
	switch {
	case !incoming:
		ev.Outcome = event.OutcomeFail // this node's stream, refused by the peer
	case code == CodeNotAllowed:
		ev.Kind, ev.Detail = event.KindSecurity, "service "+service+": peer not allowed"
	}
	m.cfg.Recorder.Record(ev)
}
