package testnet

import (
	"context"
	"fmt"
	"strings"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// Counters is what the nodes' own metrics say about the connects of the
// matrix: the sum over every daemon (responders) and both bootstraps of
// the increase of a few seed counters while the matrix ran.
type Counters struct {
	ResponderAttempts float64 `json:"responder_attempts"` // nat_attempts_total{role="responder"}
	ResponderSuccess  float64 `json:"responder_success"`  // nat_results_total{role="responder",result="success"}
	ResponderFailure  float64 `json:"responder_failure"`  // nat_results_total{role="responder",result="failure"}
	BootstrapConnects float64 `json:"bootstrap_connects"` // bootstrap_requests_total{bootstrap="server",type="connect"}
	ResponderDirect   float64 `json:"responder_direct"`   // nat_results_total{role="responder",result="success",path="direct"}
	ResponderRelay    float64 `json:"responder_relay"`    // nat_results_total{role="responder",result="success",path="relay"}
	// ResponderCanceled are the responders' failures because the
	// initiator withdrew the request: nat_results_total{role="responder",
	// result="failure",reason="canceled"} (an initiator whose bootstrap
	// did not acknowledge in time cancels there and asks another; a late
	// request still reached the responder).
	ResponderCanceled float64 `json:"responder_canceled"`
}

// Tally is the runner's own count of the matrix's connects.
type Tally struct {
	Connects  int `json:"connects"`  // connects the runner made
	Connected int `json:"connected"` // of which connected with verified bytes
	Direct    int `json:"direct"`    // of those, on a direct path
	Relay     int `json:"relay"`     // of those, through a relay
}

// CounterCheck compares Counters with the runner's own count.
type CounterCheck struct {
	Tally
	Counters Counters `json:"counters"`
	Agree    bool     `json:"agree"`
	Detail   string   `json:"detail,omitempty"`
}

// CheckCounters is the pure comparison: every connect reaches its
// responder exactly once (one responder attempt each), besides the
// requests their initiators withdrew (ResponderCanceled: each a
// responder attempt that failed as canceled), the responders' successes
// are the connects that connected, by path, and their other failures the
// rest, and the bootstraps saw at least one connect request per connect
// (an initiator whose first bootstrap does not acknowledge asks the
// other).
func CheckCounters(t Tally, c Counters) CounterCheck {
	connects, connected := t.Connects, t.Connected
	cc := CounterCheck{Tally: t, Counters: c, Agree: true}
	var bad []string
	if c.ResponderAttempts-c.ResponderCanceled != float64(connects) {
		bad = append(bad, fmt.Sprintf("nat_attempts_total{role=responder} rose by %v (%v of them withdrawn by the initiator) for %d connects",
			c.ResponderAttempts, c.ResponderCanceled, connects))
	}
	if c.ResponderSuccess != float64(connected) {
		bad = append(bad, fmt.Sprintf("nat_results_total{result=success} rose by %v for %d connected", c.ResponderSuccess, connected))
	}
	if c.ResponderFailure-c.ResponderCanceled != float64(connects-connected) {
		bad = append(bad, fmt.Sprintf("nat_results_total{result=failure} rose by %v (%v withdrawn) for %d failed",
			c.ResponderFailure, c.ResponderCanceled, connects-connected))
	}
	if c.BootstrapConnects < float64(connects) {
		bad = append(bad, fmt.Sprintf("the bootstraps counted %v connect requests for %d connects", c.BootstrapConnects, connects))
	}
	if c.ResponderDirect != float64(t.Direct) || c.ResponderRelay != float64(t.Relay) {
		bad = append(bad, fmt.Sprintf("nat_results_total{result=success} by path: %v direct and %v relay for %d and %d",
			c.ResponderDirect, c.ResponderRelay, t.Direct, t.Relay))
	}
	if len(bad) > 0 {
		cc.Agree, cc.Detail = false, strings.Join(bad, "; ")
	}
	return cc
}

// Sub returns c - o.
func (c Counters) Sub(o Counters) Counters { return c.Add(o.scale(-1)) }

// Add returns c + o.
func (c Counters) Add(o Counters) Counters {
	return Counters{c.ResponderAttempts + o.ResponderAttempts, c.ResponderSuccess + o.ResponderSuccess,
		c.ResponderFailure + o.ResponderFailure, c.BootstrapConnects + o.BootstrapConnects,
		c.ResponderDirect + o.ResponderDirect, c.ResponderRelay + o.ResponderRelay, c.ResponderCanceled + o.ResponderCanceled}
}

func (c Counters) scale(f float64) Counters {
	return Counters{c.ResponderAttempts * f, c.ResponderSuccess * f, c.ResponderFailure * f, c.BootstrapConnects * f,
		c.ResponderDirect * f, c.ResponderRelay * f, c.ResponderCanceled * f}
}

// CountersFrom sums the counters in a Prometheus text exposition.
func CountersFrom(text string) (Counters, error) {
	p := expfmt.NewTextParser(model.UTF8Validation)
	mfs, err := p.TextToMetricFamilies(strings.NewReader(text))
	if err != nil {
		return Counters{}, fmt.Errorf("testnet: parse metrics: %w", err)
	}
	var c Counters
	sum := func(name string, want map[string]string) float64 {
		mf := mfs[name]
		if mf == nil {
			return 0
		}
		total := 0.0
		for _, m := range mf.GetMetric() {
			if labelsMatch(m, want) {
				total += m.GetCounter().GetValue()
			}
		}
		return total
	}
	c.ResponderAttempts = sum("nat_attempts_total", map[string]string{"role": "responder"})
	c.ResponderSuccess = sum("nat_results_total", map[string]string{"role": "responder", "result": "success"})
	c.ResponderFailure = sum("nat_results_total", map[string]string{"role": "responder", "result": "failure"})
	c.BootstrapConnects = sum("bootstrap_requests_total", map[string]string{"bootstrap": "server", "type": "connect"})
	c.ResponderDirect = sum("nat_results_total", map[string]string{"role": "responder", "result": "success", "path": "direct"})
	c.ResponderRelay = sum("nat_results_total", map[string]string{"role": "responder", "result": "success", "path": "relay"})
	c.ResponderCanceled = sum("nat_results_total", map[string]string{"role": "responder", "result": "failure", "reason": "canceled"})
	return c, nil
}

func labelsMatch(m *dto.Metric, want map[string]string) bool {
	n := 0
	for _, lp := range m.GetLabel() {
		if v, ok := want[lp.GetName()]; ok {
			if lp.GetValue() != v {
				return false
			}
			n++
		}
	}
	return n == len(want)
}

// metricsPort is where daemons serve metrics inside their namespace;
// bootstrap i uses metricsPort+i in the server namespace.
const metricsPort = 9464

// ScrapeCounters reads /metrics of every daemon and bootstrap from inside
// their namespaces and sums the counters.
func (e *Env) ScrapeCounters(ctx context.Context) (Counters, error) {
	var total Counters
	add := func(ns string, port int) error {
		out, err := runIn(ctx, ns, append(append([]string{"curl", "-sf", "--max-time", "5"}, apiAuth()...),
			fmt.Sprintf("http://127.0.0.1:%d/metrics", port))...)
		if err != nil {
			return fmt.Errorf("testnet: scrape %s:%d: %w", ns, port, err)
		}
		c, err := CountersFrom(out)
		if err != nil {
			return fmt.Errorf("%s: %w", ns, err)
		}
		total = total.Add(c)
		return nil
	}
	for ns := range e.Daemons {
		if err := add(ns, metricsPort); err != nil {
			return total, err
		}
	}
	for i := range e.Bootstraps {
		if err := add(e.TB.Server(), metricsPort+i); err != nil {
			return total, err
		}
	}
	return total, nil
}

// checkCounters scrapes the nodes after the matrix and compares the
// increase since base with the results. Responders finish their side of
// an attempt a little after the initiator; the comparison is retried for
// a few seconds before it is reported.
func (e *Env) checkCounters(ctx context.Context, base Counters, baseErr error, results [][]ConnectResult) *CounterCheck {
	var t Tally
	for _, rs := range results {
		for _, r := range rs {
			t.Connects++
			if r.Connected && r.Error == "" {
				t.Connected++
				switch r.Path {
				case "direct":
					t.Direct++
				case "relay":
					t.Relay++
				}
			}
		}
	}
	if baseErr != nil {
		return &CounterCheck{Tally: t, Detail: baseErr.Error()}
	}
	var cc CounterCheck
	for try := range 20 {
		after, err := e.ScrapeCounters(ctx)
		if err != nil {
			return &CounterCheck{Tally: t, Detail: err.Error()}
		}
		cc = CheckCounters(t, after.Sub(base))
		if cc.Agree || try == 19 {
			break
		}
		select {
		case <-ctx.Done():
			return &cc
		case <-time.After(250 * time.Millisecond):
		}
	}
	return &cc
}

// scrapeValue sums the samples of one metric (any labels) on the node
// serving metrics at port inside ns.
func scrapeValue(ctx context.Context, ns string, port int, name string) (float64, error) {
	out, err := runIn(ctx, ns, append(append([]string{"curl", "-sf", "--max-time", "5"}, apiAuth()...),
		fmt.Sprintf("http://127.0.0.1:%d/metrics", port))...)
	if err != nil {
		return 0, fmt.Errorf("testnet: scrape %s:%d: %w", ns, port, err)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	mfs, err := p.TextToMetricFamilies(strings.NewReader(out))
	if err != nil {
		return 0, fmt.Errorf("testnet: parse metrics: %w", err)
	}
	total := 0.0
	for _, m := range mfs[name].GetMetric() {
		switch {
		case m.Gauge != nil:
			total += m.GetGauge().GetValue()
		case m.Counter != nil:
			total += m.GetCounter().GetValue()
		}
	}
	return total, nil
}
