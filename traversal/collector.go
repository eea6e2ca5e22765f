package traversal

import (
	"slices"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/antnode/antnode/event"
	"github.com/antnode/antnode/holepunch"
)

// Collector returns the node's gauges for a Prometheus registry, computed
// at scrape time from the state machines and connections: peers by state
// and connections by path type and address family. Every state, and every
// path in each family the node's socket serves, is reported, zeros
// included, so dashboards see the whole set.
func (n *Node) Collector() prometheus.Collector { return nodeCollector{n} }

type nodeCollector struct{ n *Node }

var (
	peersDesc = prometheus.NewDesc("antnode_peers",
		"Peers this node knows, by the state of their connection state machine.", []string{"state"}, nil)
	connsDesc = prometheus.NewDesc("antnode_connections",
		"Open peer connections, by path type and the address family their packets travel in (ipv4, ipv6).", []string{"path", "family"}, nil)
)

func (c nodeCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- peersDesc
	ch <- connsDesc
}

func (c nodeCollector) Collect(ch chan<- prometheus.Metric) {
	machines := c.n.machineList()
	type key struct {
		path event.Path
		fam  holepunch.Family
	}
	conns := map[key]int{}
	fams := holepunch.SocketFamilies(c.n.cfg.Endpoint)
	for _, conn := range c.n.Conns() {
		k := key{conn.Path(), conn.Family()}
		conns[k]++
		if !slices.Contains(fams, k.fam) {
			fams = append(fams, k.fam)
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
		for _, f := range fams {
			ch <- gauge(connsDesc, float64(conns[key{p, f}]), p.String(), f.String())
		}
	}
}

func gauge(d *prometheus.Desc, v float64, labels ...string) prometheus.Metric {
	m, err := prometheus.NewConstMetric(d, prometheus.GaugeValue, v, labels...)
	if err != nil {
		return prometheus.NewInvalidMetric(d, err)
	}
	return m
}
