package service

import (
	"sort"
	"sync"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"
)

// UnknownLabel is the service label of streams to names this node neither
// serves nor was configured to dial: labels stay a bounded set.
const UnknownLabel = "unknown"

// stats are one service label's counters. They are exact; the metrics and
// the API read them.
type stats struct {
	refused     [numRefusals]atomic.Uint64 // incoming streams refused, by code
	accepted    atomic.Uint64              // incoming streams taken by the service
	opened      atomic.Uint64              // streams this node opened to a peer
	peerRefused atomic.Uint64              // of those, refused by the peer
	idle        atomic.Uint64              // streams ended by the idle timeout
	active      atomic.Int64
	bytesIn     atomic.Uint64
	bytesOut    atomic.Uint64
}

// The refusal codes in order, as indices of stats.refused.
var refusals = [...]Code{CodeUnknownService, CodeNotAllowed, CodeTargetUnreachable, CodeStreamLimit, CodeBadHeader}

const numRefusals = len(refusals)

func refusalIndex(c Code) int { return int(c - CodeUnknownService) }

// Stats is a snapshot of one service label's counters.
type Stats struct {
	Service string `json:"service"`
	// Served says whether this node serves the service (else it is a
	// name it dials, or UnknownLabel).
	Served   bool   `json:"served"`
	Target   string `json:"target,omitempty"`
	Allow    string `json:"allow,omitempty"`
	Accepted uint64 `json:"accepted"`
	// Refused counts incoming streams refused, by code name.
	Refused     map[string]uint64 `json:"refused,omitempty"`
	Opened      uint64            `json:"opened"`
	PeerRefused uint64            `json:"peer_refused"`
	IdleEnded   uint64            `json:"idle_ended"`
	Active      int64             `json:"active"`
	BytesIn     uint64            `json:"bytes_in"`
	BytesOut    uint64            `json:"bytes_out"`
}

func (s *stats) snapshot(name string) Stats {
	out := Stats{Service: name, Accepted: s.accepted.Load(), Opened: s.opened.Load(),
		PeerRefused: s.peerRefused.Load(), IdleEnded: s.idle.Load(), Active: s.active.Load(),
		BytesIn: s.bytesIn.Load(), BytesOut: s.bytesOut.Load()}
	for i, c := range refusals {
		if v := s.refused[i].Load(); v > 0 {
			if out.Refused == nil {
				out.Refused = map[string]uint64{}
			}
			out.Refused[c.String()] = v
		}
	}
	return out
}

// labels holds the stats of every label: the configured names and
// UnknownLabel. Labels are only ever added, by configuration.
type labels struct {
	mu sync.RWMutex
	m  map[string]*stats
}

func newLabels(names []string) *labels {
	l := &labels{m: map[string]*stats{UnknownLabel: {}}}
	for _, n := range names {
		l.add(n)
	}
	return l
}

func (l *labels) add(name string) *stats {
	l.mu.Lock()
	defer l.mu.Unlock()
	s := l.m[name]
	if s == nil {
		s = &stats{}
		l.m[name] = s
	}
	return s
}

// get returns name's stats, or UnknownLabel's.
func (l *labels) get(name string) (*stats, string) {
	l.mu.RLock()
	defer l.mu.RUnlock()
	if s := l.m[name]; s != nil {
		return s, name
	}
	return l.m[UnknownLabel], UnknownLabel
}

func (l *labels) each(f func(name string, s *stats)) {
	l.mu.RLock()
	names := make([]string, 0, len(l.m))
	for n := range l.m {
		names = append(names, n)
	}
	l.mu.RUnlock()
	sort.Strings(names)
	for _, n := range names {
		s, _ := l.get(n)
		f(n, s)
	}
}

// Metric names.
const (
	MetricStreams = "antnode_service_streams_total"
	MetricBytes   = "antnode_service_bytes_total"
	MetricActive  = "antnode_service_active_streams"
)

var (
	descStreams = prometheus.NewDesc(MetricStreams,
		"Service streams by outcome: accepted or the refusal's code (incoming), opened or peer_refused (dialled by this node), idle_timeout (ended by the idle timeout).",
		[]string{"service", "outcome"}, nil)
	descBytes = prometheus.NewDesc(MetricBytes,
		"Bytes carried by service streams, by direction (in: from the peer, out: to it).",
		[]string{"service", "direction"}, nil)
	descActive = prometheus.NewDesc(MetricActive,
		"Service streams open now, both directions.", []string{"service"}, nil)
)

// collector exports the labels' counters.
type collector struct{ l *labels }

func (c collector) Describe(ch chan<- *prometheus.Desc) {
	ch <- descStreams
	ch <- descBytes
	ch <- descActive
}

func (c collector) Collect(ch chan<- prometheus.Metric) {
	c.l.each(func(name string, s *stats) {
		counter := func(v uint64, outcome string) {
			ch <- prometheus.MustNewConstMetric(descStreams, prometheus.CounterValue, float64(v), name, outcome)
		}
		counter(s.accepted.Load(), "accepted")
		for i, code := range refusals {
			counter(s.refused[i].Load(), code.String())
		}
		counter(s.opened.Load(), "opened")
		counter(s.peerRefused.Load(), "peer_refused")
		counter(s.idle.Load(), CodeIdle.String())
		ch <- prometheus.MustNewConstMetric(descBytes, prometheus.CounterValue, float64(s.bytesIn.Load()), name, "in")
		ch <- prometheus.MustNewConstMetric(descBytes, prometheus.CounterValue, float64(s.bytesOut.Load()), name, "out")
		ch <- prometheus.MustNewConstMetric(descActive, prometheus.GaugeValue, float64(s.active.Load()), name)
	})
}
