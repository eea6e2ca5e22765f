package portmap

import (
	"errors"

	"github.com/prometheus/client_golang/prometheus"
)

// Request outcomes: the values of the outcome label.
const (
	outcomeOK        = "ok"
	outcomeRefused   = "refused"
	outcomeTimeout   = "timeout"
	outcomeMalformed = "malformed"
	outcomeError     = "error"
)

// Reasons an answer is ignored: the values of the reason label.
const (
	ignoredForeign    = "foreign"    // not from the gateway's address and port
	ignoredMalformed  = "malformed"  // from the gateway, but unreadable
	ignoredUnexpected = "unexpected" // readable, but not an answer to the request
)

// metrics are a Mapper's collectors. Labels are bounded: protocol is
// pcp, natpmp or upnp, outcome and reason the constants above.
type metrics struct {
	requests *prometheus.CounterVec
	active   *prometheus.GaugeVec
	ignored  *prometheus.CounterVec
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "antnode_portmap_requests_total",
			Help: "Port-mapping requests sent to the gateway, by protocol and outcome.",
		}, []string{"protocol", "outcome"}),
		active: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "antnode_portmap_active",
			Help: "1 while the gateway holds a port mapping for the node by this protocol.",
		}, []string{"protocol"}),
		ignored: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "antnode_portmap_ignored_answers_total",
			Help: "Datagrams ignored while waiting for a PCP or NAT-PMP answer, by protocol and reason.",
		}, []string{"protocol", "reason"}),
	}
	for _, p := range mappingProtocols {
		m.active.WithLabelValues(p.String()).Set(0)
	}
	if reg == nil {
		return m, nil
	}
	var err error
	m.requests, err = register(reg, m.requests)
	if err != nil {
		return nil, err
	}
	if m.active, err = register(reg, m.active); err != nil {
		return nil, err
	}
	if m.ignored, err = register(reg, m.ignored); err != nil {
		return nil, err
	}
	return m, nil
}

// register registers c, or returns the collector a Mapper before this one
// registered with reg.
func register[C prometheus.Collector](reg prometheus.Registerer, c C) (C, error) {
	err := reg.Register(c)
	if are, ok := errors.AsType[prometheus.AlreadyRegisteredError](err); ok {
		if prev, ok := are.ExistingCollector.(C); ok {
			return prev, nil
		}
	}
	return c, err
}

// request counts one request of p that ended with err.
func (m *metrics) request(p Protocol, err error) {
	m.requests.WithLabelValues(p.String(), outcome(err)).Inc()
}

// ignore counts one datagram ignored for reason.
func (m *metrics) ignore(p Protocol, reason string) {
	m.ignored.WithLabelValues(p.String(), reason).Inc()
}

// setActive sets the gauge: 1 for p, 0 for the others (p Auto: none).
func (m *metrics) setActive(p Protocol) {
	for _, q := range mappingProtocols {
		v := 0.0
		if q == p {
			v = 1
		}
		m.active.WithLabelValues(q.String()).Set(v)
	}
}

// outcome is the outcome label of a request that ended with err.
func outcome(err error) string {
	switch {
	case err == nil:
		return outcomeOK
	case errors.Is(err, ErrRefused):
		return outcomeRefused
	case errors.Is(err, ErrNoAnswer):
		return outcomeTimeout
	case errors.Is(err, ErrMalformed):
		return outcomeMalformed
	}
	return outcomeError
}

// probeResult is what err says of a probe.
func probeResult(err error) (ProbeResult, int) {
	if re, ok := errors.AsType[*ResultError](err); ok {
		return Refused, re.Code
	}
	switch outcome(err) {
	case outcomeOK:
		return Answered, 0
	case outcomeTimeout:
		return NoAnswer, 0
	case outcomeMalformed:
		return Malformed, 0
	}
	return Failed, 0
}
