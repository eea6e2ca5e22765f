package main

import (
	"context"
	"log/slog"
	"net/netip"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/antnode/antnode/endpoint"
	"github.com/antnode/antnode/monitor"
	"github.com/antnode/antnode/portmap"
	"github.com/antnode/antnode/traversal"
)

// portmapWait bounds how long a one-shot command waits for its first port
// mapping after the NAT was measured: a PCP or NAT-PMP gateway answers in
// milliseconds. UPnP IGD's discovery (SSDP) collects answers for 2 s, so
// --portmap upnp waits longer. In auto mode a gateway that answers only
// UPnP is mapped after PCP and NAT-PMP went unanswered (seconds): a
// one-shot command goes without it, a daemon announces it when it comes.
const (
	portmapWait     = time.Second
	portmapWaitUPnP = 3 * time.Second
)

// portMapJSON is the port-mapping state in connect's JSON and the status
// API: what the node asked for and what the router granted.
type portMapJSON struct {
	Mode      string  `json:"mode"`
	Active    bool    `json:"active"`
	Protocol  string  `json:"protocol,omitempty"`
	External  string  `json:"external,omitempty"`
	LeaseS    float64 `json:"lease_s,omitempty"`
	GrantedAt string  `json:"granted_at,omitempty"`
	RenewedAt string  `json:"renewed_at,omitempty"`
	// Probes says, per protocol tried, what the router did: ok,
	// refused (with its code), no-answer, malformed or error.
	Probes    []portMapProbe `json:"probes,omitempty"`
	LastError string         `json:"last_error,omitempty"`
}

type portMapProbe struct {
	Protocol string `json:"protocol"`
	Result   string `json:"result"`
	Code     int    `json:"code,omitempty"`
}

// portMapState renders a mapper's status (addresses sanitised).
func portMapState(st portmap.Status, san *monitor.Sanitizer) *portMapJSON {
	out := &portMapJSON{Mode: st.Mode.String(), Active: st.Active, LastError: st.LastError}
	if st.Active {
		out.Protocol, out.External, out.LeaseS = st.Protocol.String(), san.AddrPort(st.External), st.Lease.Seconds()
	}
	stamp := func(t time.Time) string {
		if t.IsZero() {
			return ""
		}
		return t.UTC().Format(time.RFC3339)
	}
	out.GrantedAt, out.RenewedAt = stamp(st.GrantedAt), stamp(st.RenewedAt)
	for _, p := range st.Probes {
		if p.Result != portmap.NotTried {
			out.Probes = append(out.Probes, portMapProbe{Protocol: p.Protocol.String(), Result: p.Result.String(), Code: p.Code})
		}
	}
	return out
}

// portMapping is a node's port mapping (package portmap) wired to the
// node: the node announces the mapped address as a candidate, a network
// change maps anew, and every change of the mapping is announced. It
// starts one goroutine (announcing changes off the mapper's goroutine),
// which Close stops, after the mapper has deleted its mapping.
type portMapping struct {
	m       *portmap.Mapper
	changed chan struct{} // a change to announce
	first   chan struct{} // closed at the first mapping
	gotOne  atomic.Bool
	cancel  context.CancelFunc
	done    chan struct{}
}

// newPortMapping makes the mapping for the node's socket ep. In auto mode
// a node whose bootstraps are all on loopback maps nothing: it runs on
// one machine (a demo, a test) with no router between its peers. It sets
// cfg's hooks; start it once the node exists.
func newPortMapping(mode portmap.Protocol, ep *endpoint.Endpoint, bs []traversal.Bootstrap, reg prometheus.Registerer,
	log *slog.Logger, san *monitor.Sanitizer, cfg *traversal.Config) (*portMapping, error) {
	if mode == portmap.Auto && allLoopback(bs) {
		mode = portmap.Off
	}
	p := &portMapping{changed: make(chan struct{}, 1), first: make(chan struct{}), done: make(chan struct{})}
	m, err := portmap.New(portmap.Config{Protocol: mode, Port: ep.LocalAddr().Port(), Logger: log, Registerer: reg,
		AddrString: san.AddrPort, OnChange: p.onChange})
	if err != nil {
		return nil, err
	}
	p.m = m
	cfg.PortMapped = p.external
	cfg.OnNetworkChange = m.Remap
	return p, nil
}

// allLoopback reports whether every bootstrap is on loopback (true for
// none).
func allLoopback(bs []traversal.Bootstrap) bool {
	for _, b := range bs {
		if !b.Addr.Addr().IsLoopback() {
			return false
		}
	}
	return true
}

// external is the mapped address while the gateway holds the mapping.
func (p *portMapping) external() netip.AddrPort {
	if st := p.m.Status(); st.Active {
		return st.External
	}
	return netip.AddrPort{}
}

// onChange runs on the mapper's goroutine: it must not block.
func (p *portMapping) onChange(st portmap.Status) {
	if st.Active && p.gotOne.CompareAndSwap(false, true) {
		close(p.first)
	}
	select {
	case p.changed <- struct{}{}:
	default:
	}
}

// start starts the mapper and the announcing goroutine for node.
func (p *portMapping) start(ctx context.Context, node *traversal.Node) error {
	ctx, p.cancel = context.WithCancel(ctx)
	go func() {
		defer close(p.done)
		for {
			select {
			case <-p.changed:
				node.PortMapChanged()
			case <-ctx.Done():
				return
			}
		}
	}()
	return p.m.Start(ctx)
}

// wait waits, a bounded time (portmapWait), for the first mapping: a one-shot command
// (connect, forward, pipe) announces its candidates once, with its
// request.
func (p *portMapping) wait(ctx context.Context) {
	limit := portmapWait
	switch p.m.Status().Mode {
	case portmap.Off:
		return
	case portmap.UPnP:
		limit = portmapWaitUPnP
	}
	t := time.NewTimer(limit)
	defer t.Stop()
	select {
	case <-p.first:
	case <-t.C:
	case <-ctx.Done():
	}
}

// Close deletes the mapping (bounded by portmap.DeleteTimeout) and stops
// the goroutines. It is idempotent.
func (p *portMapping) Close() error {
	err := p.m.Close()
	if p.cancel != nil {
		p.cancel()
		<-p.done
	}
	return err
}
