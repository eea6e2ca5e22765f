package monitor

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"sort"
	"sync"
	"time"

	"github.com/failsafe-go/failsafe-go"
	"github.com/failsafe-go/failsafe-go/circuitbreaker"
	"github.com/failsafe-go/failsafe-go/retrypolicy"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
)

// Exporting metrics to push backends (InfluxDB, CloudWatch).
//
// An Exporter snapshots a Gatherer (the node's registry) every interval
// into a batch of samples and queues it; a sender hands queued batches to
// the Sink. The two never wait on each other: the queue is bounded (the
// oldest batch is dropped, and counted, when it is full), the sink sits
// behind a failsafe-go circuit breaker, and a failing sink is retried
// with backoff up to the interval. A dead backend therefore costs the node
// one snapshot per interval and nothing else. NewExporter starts the two
// goroutines; Close stops them and returns when they have exited.

// Sample is one exported value: a counter or gauge, or a histogram's or
// summary's sum and count (Name then ends in _sum or _count).
type Sample struct {
	Name   string
	Labels []LabelPair // sorted by name
	Value  float64
	// Counter is true for monotonically increasing values.
	Counter bool
}

// LabelPair is one label of a Sample.
type LabelPair struct{ Name, Value string }

// Batch is one snapshot.
type Batch struct {
	At      time.Time
	Samples []Sample
}

// Sink delivers a batch to a backend. It must honour ctx.
type Sink interface {
	Send(ctx context.Context, b Batch) error
}

// ExporterConfig configures an Exporter.
type ExporterConfig struct {
	// Name names the exporter in metrics and logs ("influxdb",
	// "cloudwatch"). Required.
	Name string
	// Gatherer is what is exported. Required.
	Gatherer prometheus.Gatherer
	// Sink receives the batches. Required.
	Sink Sink
	// Interval between snapshots. Zero: 30 s.
	Interval time.Duration
	// Queue bounds the batches waiting for the sink. Zero: 10.
	Queue int
	// Timeout bounds one Send. Zero: 10 s.
	Timeout time.Duration
	// BreakerFailures consecutive failures open the circuit breaker for
	// BreakerDelay. Zero: 3 and 1 min.
	BreakerFailures int
	BreakerDelay    time.Duration
	// Registerer receives the exporter's own metrics. Nil: none.
	Registerer prometheus.Registerer
	// Logger receives a record when the breaker changes state. Nil: discard.
	Logger *slog.Logger
}

func (c *ExporterConfig) validate() error {
	switch {
	case c.Name == "":
		return errors.New("monitor: ExporterConfig.Name is required")
	case c.Gatherer == nil || c.Sink == nil:
		return errors.New("monitor: ExporterConfig.Gatherer and Sink are required")
	case c.Interval < 0, c.Queue < 0, c.Timeout < 0, c.BreakerFailures < 0, c.BreakerDelay < 0:
		return errors.New("monitor: ExporterConfig has a negative value")
	}
	if c.Interval == 0 {
		c.Interval = 30 * time.Second
	}
	if c.Queue == 0 {
		c.Queue = 10
	}
	if c.Timeout == 0 {
		c.Timeout = 10 * time.Second
	}
	if c.BreakerFailures == 0 {
		c.BreakerFailures = 3
	}
	if c.BreakerDelay == 0 {
		c.BreakerDelay = time.Minute
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	return nil
}

// Exporter pushes snapshots of a Gatherer to a Sink.
type Exporter struct {
	cfg     ExporterConfig
	breaker circuitbreaker.CircuitBreaker[any]

	mu    sync.Mutex
	queue []Batch
	wake  chan struct{} // a batch was queued

	sent, failed, dropped prometheus.Counter
	queued                prometheus.GaugeFunc
	state                 prometheus.GaugeFunc

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
	once   sync.Once
}

// NewExporter validates a copy of cfg and starts exporting.
func NewExporter(cfg ExporterConfig) (*Exporter, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	e := &Exporter{cfg: cfg, wake: make(chan struct{}, 1)}
	e.breaker = circuitbreaker.NewBuilder[any]().
		WithFailureThreshold(uint(cfg.BreakerFailures)).
		WithDelay(cfg.BreakerDelay).
		WithSuccessThreshold(1).
		OnStateChanged(func(ev circuitbreaker.StateChangedEvent) {
			cfg.Logger.Warn("export breaker", "exporter", cfg.Name, "state", BreakerStateName(ev.NewState))
		}).
		Build()
	labels := prometheus.Labels{"exporter": cfg.Name}
	e.sent = prometheus.NewCounter(prometheus.CounterOpts{Name: "antnode_export_batches_total",
		Help: "Metric batches delivered to a push backend, by exporter and result.", ConstLabels: prometheus.Labels{"exporter": cfg.Name, "result": "ok"}})
	e.failed = prometheus.NewCounter(prometheus.CounterOpts{Name: "antnode_export_batches_total",
		Help: "Metric batches delivered to a push backend, by exporter and result.", ConstLabels: prometheus.Labels{"exporter": cfg.Name, "result": "fail"}})
	e.dropped = prometheus.NewCounter(prometheus.CounterOpts{Name: "antnode_export_dropped_total",
		Help: "Metric batches dropped because the backend's queue was full, by exporter.", ConstLabels: labels})
	e.queued = prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "antnode_export_queue",
		Help: "Metric batches waiting for the backend, by exporter.", ConstLabels: labels}, func() float64 { return float64(e.Queued()) })
	e.state = prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "antnode_export_breaker_state",
		Help: "Circuit breaker of each exporter: 0 closed, 1 half-open, 2 open.", ConstLabels: labels}, func() float64 {
		return map[circuitbreaker.State]float64{circuitbreaker.HalfOpenState: 1, circuitbreaker.OpenState: 2}[e.breaker.State()]
	})
	if cfg.Registerer != nil {
		for _, c := range []prometheus.Collector{e.sent, e.failed, e.dropped, e.queued, e.state} {
			if err := cfg.Registerer.Register(c); err != nil {
				return nil, fmt.Errorf("monitor: exporter %s metrics: %w", cfg.Name, err)
			}
		}
	}
	e.ctx, e.cancel = context.WithCancel(context.Background())
	e.wg.Add(2)
	go e.snapshotLoop()
	go e.sendLoop()
	return e, nil
}

// BreakerStateName names a failsafe-go circuit breaker state as the
// metrics, logs and API do: closed, half-open or open.
func BreakerStateName(s circuitbreaker.State) string {
	switch s {
	case circuitbreaker.OpenState:
		return "open"
	case circuitbreaker.HalfOpenState:
		return "half-open"
	}
	return "closed"
}

// Close stops exporting (batches still queued are dropped) and returns
// once both goroutines have exited. It is idempotent.
func (e *Exporter) Close() error {
	e.once.Do(func() {
		e.cancel()
		e.wg.Wait()
	})
	return nil
}

// Queued returns how many batches wait for the sink.
func (e *Exporter) Queued() int {
	e.mu.Lock()
	defer e.mu.Unlock()
	return len(e.queue)
}

// Dropped returns how many batches were dropped on a full queue.
func (e *Exporter) Dropped() float64 { return counterValue(e.dropped) }

// Sent returns how many batches the sink took.
func (e *Exporter) Sent() float64 { return counterValue(e.sent) }

// BreakerOpen reports whether the sink's circuit breaker is open.
func (e *Exporter) BreakerOpen() bool { return e.breaker.IsOpen() }

func counterValue(c prometheus.Counter) float64 {
	var m dto.Metric
	if c.Write(&m) != nil {
		return math.NaN()
	}
	return m.GetCounter().GetValue()
}

func (e *Exporter) snapshotLoop() {
	defer e.wg.Done()
	t := time.NewTicker(e.cfg.Interval)
	defer t.Stop()
	for {
		select {
		case <-e.ctx.Done():
			return
		case now := <-t.C:
			b, err := Snapshot(e.cfg.Gatherer, now)
			if err != nil {
				e.cfg.Logger.Warn("export snapshot", "exporter", e.cfg.Name, "err", err)
				continue
			}
			e.enqueue(b)
		}
	}
}

// enqueue adds b, dropping the oldest batch if the queue is full; it never
// blocks.
func (e *Exporter) enqueue(b Batch) {
	e.mu.Lock()
	if len(e.queue) >= e.cfg.Queue {
		e.queue = e.queue[1:]
		e.dropped.Inc()
	}
	e.queue = append(e.queue, b)
	e.mu.Unlock()
	select {
	case e.wake <- struct{}{}:
	default:
	}
}

func (e *Exporter) sendLoop() {
	defer e.wg.Done()
	// A failing sink is retried with failsafe-go's backoff (doubling from
	// a tenth of the interval up to the interval, jittered), each try on
	// the queue's head as it is then: the bounded queue may have dropped
	// the batch the previous try failed on.
	retry := retrypolicy.NewBuilder[any]().
		WithMaxRetries(-1).
		WithBackoff(e.cfg.Interval/10, e.cfg.Interval).
		WithJitterFactor(0.1).
		Build()
	for {
		err := failsafe.With[any](retry, e.breaker).WithContext(e.ctx).Run(e.sendHead)
		if err != nil { // only the end of the exporter ends the retries
			return
		}
		select {
		case <-e.ctx.Done():
			return
		case <-e.wake:
		}
	}
}

// sendHead sends the batch at the head of the queue, and dequeues it
// once the sink took it. With an empty queue there is nothing to do.
func (e *Exporter) sendHead() error {
	e.mu.Lock()
	if len(e.queue) == 0 {
		e.mu.Unlock()
		return nil
	}
	b := e.queue[0]
	e.mu.Unlock()
	ctx, cancel := context.WithTimeout(e.ctx, e.cfg.Timeout)
	defer cancel()
	if err := e.cfg.Sink.Send(ctx, b); err != nil {
		e.failed.Inc()
		return err
	}
	e.sent.Inc()
	e.mu.Lock()
	if len(e.queue) > 0 && e.queue[0].At.Equal(b.At) {
		e.queue = e.queue[1:]
	}
	more := len(e.queue) > 0
	e.mu.Unlock()
	if more {
		select { // the rest of the queue next
		case e.wake <- struct{}{}:
		default:
		}
	}
	return nil
}

// Snapshot flattens what g gathers into a batch taken at at.
func Snapshot(g prometheus.Gatherer, at time.Time) (Batch, error) {
	mfs, err := g.Gather()
	if err != nil && len(mfs) == 0 {
		return Batch{}, fmt.Errorf("monitor: gather: %w", err)
	}
	b := Batch{At: at}
	for _, mf := range mfs {
		name := mf.GetName()
		for _, m := range mf.GetMetric() {
			labels := make([]LabelPair, 0, len(m.GetLabel()))
			for _, l := range m.GetLabel() {
				labels = append(labels, LabelPair{l.GetName(), l.GetValue()})
			}
			sort.Slice(labels, func(i, j int) bool { return labels[i].Name < labels[j].Name })
			add := func(n string, v float64, counter bool) {
				if math.IsNaN(v) || math.IsInf(v, 0) {
					return // no backend takes them
				}
				b.Samples = append(b.Samples, Sample{Name: n, Labels: labels, Value: v, Counter: counter})
			}
			switch mf.GetType() {
			case dto.MetricType_COUNTER:
				add(name, m.GetCounter().GetValue(), true)
			case dto.MetricType_GAUGE:
				add(name, m.GetGauge().GetValue(), false)
			case dto.MetricType_UNTYPED:
				add(name, m.GetUntyped().GetValue(), false)
			case dto.MetricType_HISTOGRAM:
				add(name+"_sum", m.GetHistogram().GetSampleSum(), true)
				add(name+"_count", float64(m.GetHistogram().GetSampleCount()), true)
			case dto.MetricType_SUMMARY:
				add(name+"_sum", m.GetSummary().GetSampleSum(), true)
				add(name+"_count", float64(m.GetSummary().GetSampleCount()), true)
			}
		}
	}
	return b, nil
}
