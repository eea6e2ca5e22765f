package portmap

import (
	"context"
	"crypto/rand"
	"fmt"
	"log/slog"
	"net/netip"
	"sync"
	"time"
)

// Status is the state of a Mapper's port mapping, and what it observed of
// the gateway.
type Status struct {
	// Mode is Config.Protocol: auto, a forced protocol, or off.
	Mode Protocol
	// Active: the gateway holds a mapping for the node now.
	Active bool
	// Protocol is the protocol of the active mapping (or of the last one).
	Protocol Protocol
	// Gateway is the router asked, once known.
	Gateway netip.Addr
	// Internal is the node's LAN address and port, the mapping's inside.
	Internal netip.AddrPort
	// External is the mapped address and port on the gateway's outside:
	// the node's candidate while Active.
	External netip.AddrPort
	// Lease is the lease granted (bounded by what was asked for).
	Lease time.Duration
	// GrantedAt is when the mapping was (last) created; RenewedAt when it
	// was last renewed (zero: not yet).
	GrantedAt, RenewedAt time.Time
	// Probes are the protocols' last outcomes, PCP, NAT-PMP and UPnP in
	// this order.
	Probes [3]Probe
	// LastError is the error of the last failed attempt to map or renew;
	// empty once one succeeds.
	LastError string
}

// Probe is what a protocol's last attempt observed.
type Probe struct {
	Protocol Protocol
	Result   ProbeResult
	// Code is the gateway's result (PCP, NAT-PMP) or UPnP error code when
	// Result is Refused.
	Code int
	// At is when the attempt ended (zero: NotTried).
	At time.Time
}

// Mapper keeps one port mapping on the gateway for the node.
type Mapper struct {
	cfg   Config
	log   *slog.Logger
	met   *metrics
	nonce [pcpNonceLen]byte
	dial  dialFunc

	remap   chan struct{} // Remap's signal to the loop
	notice  chan struct{} // the gateway announced something
	failing bool          // the loop's: the last round failed (logged)

	mu      sync.Mutex
	status  Status
	started bool
	closed  bool
	cancel  context.CancelFunc // ends the loop
	kick    context.CancelFunc // ends the loop's current wait to map
	done    chan struct{}      // closed when the loop has ended
	relErr  error              // the loop's deletion of the mapping
	annAddr netip.AddrPort     // the announcement listener's address (tests)
}

// New validates a copy of cfg, fills its defaults, and registers the
// metrics. The Mapper does nothing before Start.
func New(cfg Config) (*Mapper, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	m := &Mapper{
		cfg:    cfg,
		log:    cfg.Logger,
		remap:  make(chan struct{}, 1),
		notice: make(chan struct{}, 1),
		done:   make(chan struct{}),
	}
	m.status.Mode = cfg.Protocol
	for i, p := range mappingProtocols {
		m.status.Probes[i].Protocol = p
	}
	if cfg.Protocol == Off {
		close(m.done)
		return m, nil
	}
	if m.log == nil {
		m.log = slog.New(slog.DiscardHandler)
	}
	var err error
	if m.met, err = newMetrics(cfg.Registerer); err != nil {
		return nil, fmt.Errorf("portmap: metrics: %w", err)
	}
	// The PCP mapping nonce (RFC 6887, section 11.1): one per Mapper, the
	// same in every request, so that renewals and the deletion are the
	// owner's.
	_, _ = rand.Read(m.nonce[:])
	m.dial = cfg.dial
	if m.dial == nil {
		m.dial = m.dialProtocol
	}
	return m, nil
}

// Start starts the Mapper's loop: it maps the port now, and keeps the
// mapping until Close or until ctx is done. With Protocol Off it does
// nothing. A second Start returns ErrStarted, a Start after Close
// ErrClosed.
func (m *Mapper) Start(ctx context.Context) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	switch {
	case m.closed:
		return ErrClosed
	case m.started:
		return ErrStarted
	}
	m.started = true
	if m.cfg.Protocol == Off {
		return nil
	}
	ctx, m.cancel = context.WithCancel(ctx)
	go m.run(ctx)
	return nil
}

// Remap makes the Mapper find the gateway and its own address again and
// map anew at once: call it after a network change. It does not block.
func (m *Mapper) Remap() {
	select {
	case m.remap <- struct{}{}:
	default:
	}
	m.mu.Lock()
	if m.kick != nil {
		m.kick()
	}
	m.mu.Unlock()
}

// Status returns the current state of the mapping.
func (m *Mapper) Status() Status {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.status
}

// Close stops the loop, deletes the mapping (within DeleteTimeout), and
// returns once the Mapper's goroutines have ended. It returns the
// deletion's error, if any; a second Close returns nil.
func (m *Mapper) Close() error {
	m.mu.Lock()
	if m.closed {
		m.mu.Unlock()
		return nil
	}
	m.closed = true
	started := m.started && m.cancel != nil
	if started {
		m.cancel()
	}
	m.mu.Unlock()
	if !started {
		return nil
	}
	<-m.done
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.relErr
}

// update changes the status under the lock and, if notify, calls
// OnChange with the result.
func (m *Mapper) update(notify bool, f func(*Status)) {
	m.mu.Lock()
	f(&m.status)
	s := m.status
	m.mu.Unlock()
	if notify && m.cfg.OnChange != nil {
		m.cfg.OnChange(s)
	}
}

// probed records the outcome of p's attempt.
func (m *Mapper) probed(p Protocol, err error) {
	res, code := probeResult(err)
	now := time.Now()
	m.update(false, func(s *Status) {
		for i := range s.Probes {
			if s.Probes[i].Protocol == p {
				s.Probes[i] = Probe{Protocol: p, Result: res, Code: code, At: now}
			}
		}
	})
}

// dialProtocol makes the real client of p for t.
func (m *Mapper) dialProtocol(ctx context.Context, p Protocol, t target) (client, error) {
	ex := &udpExchanger{
		proto:   p,
		local:   t.local,
		server:  netip.AddrPortFrom(t.gateway, m.cfg.serverPort),
		timeout: m.cfg.timeout,
		rto:     m.cfg.rto,
		met:     m.met,
	}
	switch p {
	case PCP:
		return &pcpClient{ex: ex, local: t.local, port: m.cfg.Port, nonce: m.nonce}, nil
	case NATPMP:
		return &natpmpClient{ex: ex, port: m.cfg.Port}, nil
	case UPnP:
		d := upnpDialer{t: t, port: m.cfg.Port, description: m.cfg.UPnPDescription, timeout: m.cfg.timeout, met: m.met}
		c, err := d.dial(ctx)
		if err != nil {
			return nil, err
		}
		m.log.Debug("portmap: UPnP IGD found", "service", c.kind)
		return c, nil
	}
	return nil, fmt.Errorf("%w: cannot map by %s", ErrConfig, p)
}
