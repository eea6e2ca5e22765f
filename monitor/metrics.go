package monitor

import (
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// The eight metric names of the monitoring specification are a contract and
// are spelled exactly as there (milliseconds and Mbit/s); every other metric
// uses the antnode_ prefix and base units. No label ever carries a peer ID or
// an address.
const (
	MetricNATAttempts        = "nat_attempts_total"
	MetricNATResults         = "nat_results_total"
	MetricNATDuration        = "nat_duration_ms"
	MetricBootstrapRequests  = "bootstrap_requests_total"
	MetricBootstrapResponse  = "bootstrap_response_time_ms"
	MetricNATTraversalByType = "nat_traversal_by_type_total"
	MetricConnectionLatency  = "connection_latency_ms"
	MetricConnectionThru     = "connection_throughput_mbps"
)

// cache holds the children of a metric vector by a comparable key, so that
// the hot path is a read-locked map lookup without allocation.
type cache[K comparable, T any] struct {
	mu sync.RWMutex
	m  map[K]T
	mk func(K) T
}

func newCache[K comparable, T any](mk func(K) T) *cache[K, T] {
	return &cache[K, T]{m: make(map[K]T), mk: mk}
}

func (c *cache[K, T]) get(k K) T {
	c.mu.RLock()
	v, ok := c.m[k]
	c.mu.RUnlock()
	if ok {
		return v
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if v, ok := c.m[k]; ok {
		return v
	}
	v = c.mk(k)
	c.m[k] = v
	return v
}

// enumCache holds the children of a metric vector for a small dense key
// (an enum): a lock-free array lookup on the hot path, created on first
// use so that only series that happened are exported.
type enumCache[T any] struct {
	slots []atomic.Pointer[T]
	mu    sync.Mutex
	mk    func(int) T
}

func newEnumCache[T any](n int, mk func(int) T) *enumCache[T] {
	return &enumCache[T]{slots: make([]atomic.Pointer[T], n), mk: mk}
}

func (c *enumCache[T]) get(k int) T {
	if k < 0 || k >= len(c.slots) {
		k = 0 // out-of-range values are a bug upstream; count them as "none"
	}
	if p := c.slots[k].Load(); p != nil {
		return *p
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if p := c.slots[k].Load(); p != nil {
		return *p
	}
	v := c.mk(k)
	c.slots[k].Store(&v)
	return v
}

type resultKey struct {
	role, result string
	reason       Reason
	path         Path
	family       string
}

type roleKey struct{ role, family string }

type latencyKey struct {
	path   Path
	family string
}

// familyLabel is an event's Family as a bounded label: ipv4, ipv6,
// dual-stack or unknown.
func familyLabel(f string) string {
	switch f {
	case "ipv4", "ipv6", "dual-stack":
		return f
	}
	return "unknown"
}

type durKey struct {
	result string
	path   Path
}

type bsKey struct{ bootstrap, typ, result string }

type bsTypeKey struct{ bootstrap, typ string }

type natKey struct{ local, peer, result string }

type migKey struct {
	reason  Reason
	outcome Outcome
}

type recKey struct {
	strategy string
	outcome  Outcome
}

type metrics struct {
	collectors []prometheus.Collector

	attempts     *cache[roleKey, prometheus.Counter]
	results      *cache[resultKey, prometheus.Counter]
	duration     *cache[durKey, prometheus.Observer]
	bsRequests   *cache[bsKey, prometheus.Counter]
	bsResponse   *cache[bsTypeKey, prometheus.Observer]
	byType       *cache[natKey, prometheus.Counter]
	latency      *cache[latencyKey, prometheus.Observer]
	throughput   *enumCache[prometheus.Observer]
	phase        *enumCache[prometheus.Observer] // phase*NumOutcomes + outcome
	events       *enumCache[prometheus.Counter]
	candidates   *cache[string, prometheus.Counter]
	checkSent    prometheus.Counter
	checkAnswer  prometheus.Counter
	fallbacks    *enumCache[prometheus.Counter]
	migrations   *cache[migKey, prometheus.Counter]
	recovery     *cache[recKey, prometheus.Counter]
	security     *enumCache[prometheus.Counter]
	bootstrapUp  *cache[string, prometheus.Gauge]
	registered   prometheus.Gauge
	registration *cache[Outcome, prometheus.Counter]
	relayOps     *cache[bsTypeKey, prometheus.Counter]
	natInfo      *prometheus.GaugeVec
	breaker      *cache[string, prometheus.Gauge]
}

func msBuckets() []float64 {
	return []float64{1, 2.5, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000}
}

func newMetrics(st *Store, lag func() time.Duration) *metrics {
	m := &metrics{}
	add := func(c prometheus.Collector) { m.collectors = append(m.collectors, c) }
	m.addSeed(add)
	m.addPhases(add)
	m.addNode(add, st, lag)
	return m
}

// addSeed makes the eight metrics the monitoring specification names.
func (m *metrics) addSeed(add func(prometheus.Collector)) {
	attempts := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: MetricNATAttempts,
		Help: "NAT traversal (connection) attempts started, by role (initiator or responder) and the address families the node's socket serves (ipv4, ipv6, dual-stack).",
	}, []string{"role", "family"})
	add(attempts)
	m.attempts = newCache(func(k roleKey) prometheus.Counter { return attempts.WithLabelValues(k.role, k.family) })

	results := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: MetricNATResults,
		Help: "NAT traversal attempts ended, by role, result (success or failure), reason, path type and the address family of the path (ipv4, ipv6; unknown for a failure).",
	}, []string{"role", "result", "reason", "path", "family"})
	add(results)
	m.results = newCache(func(k resultKey) prometheus.Counter {
		return results.WithLabelValues(k.role, k.result, k.reason.String(), k.path.String(), k.family)
	})

	duration := prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    MetricNATDuration,
		Help:    "Time to establish a connection (or to fail), in milliseconds, by result and path type.",
		Buckets: msBuckets(),
	}, []string{"result", "path"})
	add(duration)
	m.duration = newCache(func(k durKey) prometheus.Observer {
		return duration.WithLabelValues(k.result, k.path.String())
	})

	bsReq := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: MetricBootstrapRequests,
		Help: "Requests to bootstrap nodes, by bootstrap (index in the configured list), request type and result.",
	}, []string{"bootstrap", "type", "result"})
	add(bsReq)
	m.bsRequests = newCache(func(k bsKey) prometheus.Counter {
		return bsReq.WithLabelValues(k.bootstrap, k.typ, k.result)
	})

	bsResp := prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    MetricBootstrapResponse,
		Help:    "Bootstrap node response time in milliseconds, by bootstrap and request type.",
		Buckets: msBuckets(),
	}, []string{"bootstrap", "type"})
	add(bsResp)
	m.bsResponse = newCache(func(k bsTypeKey) prometheus.Observer {
		return bsResp.WithLabelValues(k.bootstrap, k.typ)
	})

	byType := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: MetricNATTraversalByType,
		Help: "Ended NAT traversal attempts by local NAT class, peer NAT class and result.",
	}, []string{"local_nat", "peer_nat", "result"})
	add(byType)
	m.byType = newCache(func(k natKey) prometheus.Counter { return byType.WithLabelValues(k.local, k.peer, k.result) })

	latency := prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    MetricConnectionLatency,
		Help:    "Connection round-trip time in milliseconds (QUIC's smoothed RTT), by path type and address family (ipv4, ipv6).",
		Buckets: []float64{0.5, 1, 2, 5, 10, 20, 40, 80, 150, 300, 600, 1200},
	}, []string{"path", "family"})
	add(latency)
	m.latency = newCache(func(k latencyKey) prometheus.Observer { return latency.WithLabelValues(k.path.String(), k.family) })

	thru := prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    MetricConnectionThru,
		Help:    "Throughput of verified transfers in Mbit/s, by path type.",
		Buckets: []float64{0.5, 1, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000},
	}, []string{"path"})
	add(thru)
	m.throughput = newEnumCache(NumPaths, func(p int) prometheus.Observer { return thru.WithLabelValues(Path(p).String()) })
}

// addPhases makes the metrics of the phases: their durations, events,
// candidates, checks, fallbacks, migrations, recovery and security.
func (m *metrics) addPhases(add func(prometheus.Collector)) {
	phase := prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "antnode_phase_duration_seconds",
		Help:    "Duration of each connection phase, by phase and outcome.",
		Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30},
	}, []string{"phase", "outcome"})
	add(phase)
	m.phase = newEnumCache(NumPhases*NumOutcomes, func(k int) prometheus.Observer {
		return phase.WithLabelValues(Phase(k/NumOutcomes).String(), Outcome(k%NumOutcomes).String())
	})

	events := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "antnode_events_total",
		Help: "Monitoring events reported, by kind.",
	}, []string{"kind"})
	add(events)
	m.events = newEnumCache(NumKinds, func(k int) prometheus.Counter { return events.WithLabelValues(Kind(k).String()) })

	cands := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "antnode_candidates_total",
		Help: "Candidate addresses found, by candidate kind (host, srflx, prflx, relay).",
	}, []string{"kind"})
	add(cands)
	m.candidates = newCache(func(k string) prometheus.Counter { return cands.WithLabelValues(k) })

	checks := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "antnode_connectivity_checks_total",
		Help: "Connectivity checks, by result (sent, answered).",
	}, []string{"result"})
	add(checks)
	m.checkSent, m.checkAnswer = checks.WithLabelValues("sent"), checks.WithLabelValues("answered")

	fb := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "antnode_fallbacks_total",
		Help: "Fallbacks taken (e.g. direct to relay), by reason.",
	}, []string{"reason"})
	add(fb)
	m.fallbacks = newEnumCache(NumReasons, func(r int) prometheus.Counter { return fb.WithLabelValues(Reason(r).String()) })

	mig := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "antnode_migrations_total",
		Help: "Connection migrations and path upgrades, by reason and outcome.",
	}, []string{"reason", "outcome"})
	add(mig)
	m.migrations = newCache(func(k migKey) prometheus.Counter {
		return mig.WithLabelValues(k.reason.String(), k.outcome.String())
	})

	rec := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "antnode_recovery_actions_total",
		Help: "Recovery actions taken, by strategy and outcome.",
	}, []string{"strategy", "outcome"})
	add(rec)
	m.recovery = newCache(func(k recKey) prometheus.Counter {
		return rec.WithLabelValues(k.strategy, k.outcome.String())
	})

	sec := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "antnode_security_events_total",
		Help: "Security events (authentication failures, rate limits, refused requests), by reason.",
	}, []string{"reason"})
	add(sec)
	m.security = newEnumCache(NumReasons, func(r int) prometheus.Counter { return sec.WithLabelValues(Reason(r).String()) })
}

// addNode makes the metrics of the node as a whole: its bootstraps, its
// registry (a bootstrap node), its relay, the monitor's own store and
// scheduler, and its NAT class.
func (m *metrics) addNode(add func(prometheus.Collector), st *Store, lag func() time.Duration) {
	up := prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "antnode_bootstrap_up",
		Help: "Whether the node is registered with a bootstrap (1) or not (0), by bootstrap.",
	}, []string{"bootstrap"})
	add(up)
	m.bootstrapUp = newCache(func(b string) prometheus.Gauge { return up.WithLabelValues(b) })

	m.registered = prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "antnode_registered_peers",
		Help: "Peers currently registered with this bootstrap node.",
	})
	add(m.registered)
	reg := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "antnode_registrations_total",
		Help: "Peer registrations at this bootstrap node, by event (joined, left).",
	}, []string{"event"})
	add(reg)
	m.registration = newCache(func(o Outcome) prometheus.Counter {
		if o == OutcomeOK {
			return reg.WithLabelValues("joined")
		}
		return reg.WithLabelValues("left")
	})

	relayOps := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "antnode_relay_operations_total",
		Help: "Relay operations (allocate, refresh, release, permission), by operation and result.",
	}, []string{"operation", "result"})
	add(relayOps)
	m.relayOps = newCache(func(k bsTypeKey) prometheus.Counter { return relayOps.WithLabelValues(k.bootstrap, k.typ) })

	br := prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "antnode_bootstrap_breaker_state",
		Help: "Circuit breaker of each bootstrap: 0 closed, 1 half-open, 2 open.",
	}, []string{"bootstrap"})
	add(br)
	m.breaker = newCache(func(b string) prometheus.Gauge { return br.WithLabelValues(b) })

	add(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "antnode_sampler_rate",
		Help: "Fraction of successful attempts whose full event detail the store keeps (failures: all).",
	}, func() float64 { return st.Sampler().Rate() }))
	add(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "antnode_store_attempts",
		Help: "Ended attempts held in the monitoring store.",
	}, func() float64 { return float64(st.Stats().Attempts) }))
	add(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "antnode_store_open_attempts",
		Help: "Attempts in progress tracked by the monitoring store.",
	}, func() float64 { return float64(st.Stats().Open) }))
	add(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "antnode_scheduler_lag_seconds",
		Help: "Worst lateness of a 100 ms timer over the last 10 s: how long runnable goroutines wait (measured while the HTTP surface runs).",
	}, func() float64 { return lag().Seconds() }))
	add(prometheus.NewCounterFunc(prometheus.CounterOpts{
		Name: "antnode_events_dropped_total",
		Help: "Events the monitoring store did not keep because of its limits (metrics still counted them).",
	}, func() float64 { return float64(st.Dropped()) }))

	m.natInfo = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "antnode_nat_type_info",
		Help: "The node's measured NAT class (value 1 on the current class).",
	}, []string{"class"})
	add(m.natInfo)
}

func (m *metrics) register(r prometheus.Registerer) error {
	for _, c := range m.collectors {
		if err := r.Register(c); err != nil {
			return err
		}
	}
	return nil
}

func result(o Outcome) string {
	if o == OutcomeOK {
		return "success"
	}
	return "failure"
}

func ms(ev *Event) float64 { return float64(ev.Duration.Nanoseconds()) / 1e6 }

func (m *metrics) observe(ev *Event) {
	m.events.get(int(ev.Kind)).Inc()
	switch ev.Kind {
	case KindAttemptStart:
		m.attempts.get(roleKey{role: ev.Detail, family: familyLabel(ev.Family)}).Inc()
	case KindAttemptEnd:
		r := result(ev.Outcome)
		m.results.get(resultKey{role: ev.Detail, result: r, reason: ev.Reason, path: ev.Path, family: familyLabel(ev.Family)}).Inc()
		m.duration.get(durKey{result: r, path: ev.Path}).Observe(ms(ev))
		local, peer := ev.NAT, ev.PeerNAT
		if local == "" {
			local = "unknown"
		}
		if peer == "" {
			peer = "unknown"
		}
		m.byType.get(natKey{local: local, peer: peer, result: r}).Inc()
	case KindPhaseEnd:
		m.phase.get(int(ev.Phase)*NumOutcomes + int(ev.Outcome)).Observe(ev.Duration.Seconds())
	case KindBootstrapRequest:
		r := result(ev.Outcome)
		m.bsRequests.get(bsKey{bootstrap: ev.Bootstrap, typ: ev.Detail, result: r}).Inc()
		if ev.Outcome == OutcomeOK {
			m.bsResponse.get(bsTypeKey{bootstrap: ev.Bootstrap, typ: ev.Detail}).Observe(ms(ev))
		}
	case KindBootstrapState:
		v := 0.0
		if ev.Outcome == OutcomeOK {
			v = 1
		}
		m.bootstrapUp.get(ev.Bootstrap).Set(v)
	case KindLatency:
		m.latency.get(latencyKey{path: ev.Path, family: familyLabel(ev.Family)}).Observe(ms(ev))
	case KindThroughput:
		m.throughput.get(int(ev.Path)).Observe(ev.Value)
	case KindCandidate:
		m.candidates.get(ev.Detail).Inc()
	case KindCheckSent:
		m.checkSent.Inc()
	case KindCheckAnswered:
		m.checkAnswer.Inc()
	case KindFallback:
		m.fallbacks.get(int(ev.Reason)).Inc()
	case KindMigration:
		m.migrations.get(migKey{reason: ev.Reason, outcome: ev.Outcome}).Inc()
	case KindRecovery:
		m.recovery.get(recKey{strategy: ev.Detail, outcome: ev.Outcome}).Inc()
	case KindSecurity:
		// An aggregated record stands for itself and the repeats its
		// Value counts (event.Aggregator).
		m.security.get(int(ev.Reason)).Add(1 + max(ev.Value, 0))
	case KindRegistration:
		m.registration.get(ev.Outcome).Inc()
		if ev.Outcome == OutcomeOK {
			m.registered.Inc()
		} else {
			m.registered.Dec()
		}
	case KindRelay:
		m.relayOps.get(bsTypeKey{bootstrap: ev.Detail, typ: result(ev.Outcome)}).Inc()
	case KindBreaker:
		v := 0.0
		switch ev.Detail {
		case "half-open":
			v = 1
		case "open":
			v = 2
		}
		m.breaker.get(ev.Bootstrap).Set(v)
	case KindNATType:
		m.natInfo.Reset()
		m.natInfo.WithLabelValues(ev.NAT).Set(1)
	}
}
