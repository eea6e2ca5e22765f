package traversal

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/antnode/antnode/event"
)

// Collector returns the node's gauges for a Prometheus registry, computed
// at scrape time from the state machines and connections: peers by state
// and connections by path type. Every state and path is reported, zeros
// included, so dashboards see the whole set.
func (n *Node) Collector() prometheus.Collector { return nodeCollector{n} }

type nodeCollector struct{ n *Node }

var (
	peersDesc = prometheus.NewDesc("antnode_peers",
		"Peers this node knows, by the state of their connection state machine.", []string{"state"}, nil)
	connsDesc = prometheus.NewDesc("antnode_connections",
		"Open peer connections, by path type.", []string{"path"}, nil)
)

func (c nodeCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- peersDesc
	ch <- connsDesc
}

func (c nodeCollector) Collect(ch chan<- prometheus.Metric) {
	machines := c.n.machineList()
	var paths [3]int
	for _, conn := range c.n.Conns() {
		if p := conn.Path(); int(p) < len(paths) {
			paths[p]++
		}
	}
	var states [stateEnd]int
	for _, m := range machines { // outside n.mu: machines lock on their own
		st, _ := m.State()
		states[st]++
	}
	for s, v := range states {
		ch <- gauge(peersDesc, float64(v), State(s).String())
	}
	for _, p := range []event.Path{event.PathDirect, event.PathRelay} {
		ch <- gauge(connsDesc, float64(paths[p]), p.String())
	}
}

func gauge(d *prometheus.Desc, v float64, labels ...string) prometheus.Metric {
	m, err := prometheus.NewConstMetric(d, prometheus.GaugeValue, v, labels...)
	if err != nil {
		return prometheus.NewInvalidMetric(d, err)
	}
	return m
}
