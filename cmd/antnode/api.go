package main

import (
	"context"
	"errors"
	"slices"
	"time"

	"github.com/antnode/antnode/bootstrap"
	"github.com/antnode/antnode/identity"
	"github.com/antnode/antnode/monitor"
	"github.com/antnode/antnode/relay"
	"github.com/antnode/antnode/ticket"
	"github.com/antnode/antnode/traversal"
)

// bootstrapJSON is one bootstrap registration in a peer's status.
type bootstrapJSON struct {
	Label      string  `json:"label"`
	Addr       string  `json:"addr"`
	ID         string  `json:"id,omitempty"`
	Registered bool    `json:"registered"`
	Transport  string  `json:"transport,omitempty"`
	RTTMS      float64 `json:"rtt_ms,omitempty"`
	Observed   string  `json:"observed,omitempty"`
	Breaker    string  `json:"breaker"`
	LastError  string  `json:"last_error,omitempty"`
	// OnDemand: registered for a ticket's peer, for as long as it is used.
	OnDemand bool `json:"on_demand,omitempty"`
}

// peerStatusJSON is /api/v1/status of a peer.
type peerStatusJSON struct {
	ID string `json:"id"`
	// Ticket is the node's ticket: its ID and the configured bootstraps
	// whose key is known (given, or pinned once registered).
	Ticket  string  `json:"ticket"`
	Role    string  `json:"role"`
	UptimeS float64 `json:"uptime_s"`
	NAT     string  `json:"nat"`
	// NATFamilies is the NAT class in each family the node's socket
	// serves ("ipv4", "ipv6"); NAT is the registration family's.
	NATFamilies map[string]string `json:"nat_families"`
	Mapping     string            `json:"mapping"`
	Filtering   string            `json:"filtering"`
	Bootstraps  []bootstrapJSON   `json:"bootstraps"`
	Peers       int               `json:"peers"`
	Conns       int               `json:"connections"`
	// PortMap is the port mapping the router granted (--portmap).
	PortMap *portMapJSON `json:"portmap,omitempty"`
	// WarmRelay is the relay allocation kept ready (--warm-relay).
	WarmRelay warmRelayJSON `json:"warm_relay"`
}

// warmRelayJSON is the warm relay in a peer's status.
type warmRelayJSON struct {
	State       string  `json:"state"` // off, ready or retrying
	Bootstrap   string  `json:"bootstrap,omitempty"`
	Relayed     string  `json:"relayed,omitempty"`
	Transport   string  `json:"transport,omitempty"` // udp or tcp, to the relay
	Expires     string  `json:"expires,omitempty"`   // the credentials' expiry (RFC 3339)
	ExpiresInS  float64 `json:"expires_in_s,omitempty"`
	Refreshes   int     `json:"refreshes"`
	LastRefresh string  `json:"last_refresh,omitempty"`
	LastError   string  `json:"last_error,omitempty"`
}

// warmRelayState is the warm relay's status as JSON.
func warmRelayState(st traversal.WarmRelayStatus, san *monitor.Sanitizer) warmRelayJSON {
	j := warmRelayJSON{State: st.State, Bootstrap: st.Bootstrap, Refreshes: st.Refreshes}
	if st.Relayed.IsValid() {
		j.Relayed, j.Transport = san.AddrPort(st.Relayed), "udp"
		if st.TCP {
			j.Transport = "tcp"
		}
	}
	if !st.Expires.IsZero() {
		j.Expires, j.ExpiresInS = st.Expires.UTC().Format(time.RFC3339), max(time.Until(st.Expires).Seconds(), 0)
	}
	if !st.LastRefresh.IsZero() {
		j.LastRefresh = st.LastRefresh.UTC().Format(time.RFC3339Nano)
	}
	if st.LastError != nil {
		j.LastError = st.LastError.Error()
	}
	return j
}

// errNotReady is /readyz's answer while no bootstrap is registered.
var errNotReady = errors.New("not registered with any bootstrap")

func peerAPI(n *traversal.Node, pm *portMapping, mon *monitor.Monitor, started time.Time) surfaceAPI {
	san := mon.Sanitizer()
	bootstraps := func() ([]bootstrapJSON, bool) {
		var out []bootstrapJSON
		up := false
		for _, b := range n.Bootstraps() {
			// The node's own configuration: the addresses as the user
			// typed them (like its flags), not hashed.
			j := bootstrapJSON{Label: b.Label, Addr: b.Addr.String(), Registered: b.Registered,
				Transport: b.Transport, Breaker: b.Breaker, OnDemand: b.OnDemand}
			if !b.ID.IsZero() {
				j.ID = b.ID.String()
			}
			if b.RTT > 0 {
				j.RTTMS = float64(b.RTT.Microseconds()) / 1000
			}
			if b.Observed.IsValid() {
				j.Observed = san.AddrPort(b.Observed)
			}
			if b.LastError != nil {
				j.LastError = b.LastError.Error()
			}
			up = up || b.Registered
			out = append(out, j)
		}
		return out, up
	}
	return surfaceAPI{
		node: n.ID().String(),
		status: func() any {
			nat := n.NAT()
			bs, _ := bootstraps()
			tk, err := n.Ticket()
			if err != nil { // not expected: the node's own bootstraps were checked
				tk = ticket.Ticket{Peer: n.ID()}
			}
			return peerStatusJSON{ID: n.ID().String(), Ticket: tk.String(), Role: "peer", UptimeS: time.Since(started).Seconds(),
				NAT: nat.Class(), NATFamilies: natFamilies(n), Mapping: nat.Mapping.String(), Filtering: nat.Filtering.String(),
				Bootstraps: bs, Peers: len(n.Peers()), Conns: len(n.Conns()), PortMap: portMapState(pm.m.Status(), san),
				WarmRelay: warmRelayState(n.WarmRelay(), san)}
		},
		peers:    func() any { return map[string]any{"peers": n.Peers(), "transitions": transitionsJSON()} },
		services: func() any { return servicesJSON(n) },
		facts:    func() monitor.NodeFacts { return peerFacts(n) },
		connect: func(ctx context.Context, peer string, send int64) (any, error) {
			p, err := parsePeerArg(peer)
			if err != nil {
				return nil, &monitor.BadRequestError{Err: err}
			}
			return apiConnect(ctx, n, pm, mon, p, send), nil
		},
		ready: func() error {
			if _, ok := bootstraps(); !ok {
				return errNotReady
			}
			return nil
		},
	}
}

// servicesJSON is /api/v1/services: every service label with its
// counters (served ones with their target and allow list; the names this
// node dials; "unknown" for the rest) and the per-peer stream limit.
func servicesJSON(n *traversal.Node) any {
	return map[string]any{"services": n.Services().Services(), "max_streams_per_peer": n.Services().MaxStreamsPerPeer()}
}

// transitionsJSON is the state machine as data, for the API's readers.
func transitionsJSON() map[string][]string {
	out := map[string][]string{}
	for from, tos := range traversal.Transitions() {
		for _, to := range tos {
			out[from.String()] = append(out[from.String()], to.String())
		}
	}
	return out
}

// bootstrapStatusJSON is /api/v1/status of a bootstrap node.
type bootstrapStatusJSON struct {
	ID               string  `json:"id"`
	Role             string  `json:"role"`
	UptimeS          float64 `json:"uptime_s"`
	RegisteredPeers  int     `json:"registered_peers"`
	Relay            bool    `json:"relay"`
	RelayAllocations int     `json:"relay_allocations"`
	RelayBytes       uint64  `json:"relay_bytes"`
}

func bootstrapAPI(id *identity.Identity, srv *bootstrap.Server, rs *relay.Server, started time.Time) surfaceAPI {
	return surfaceAPI{
		node: id.ID().String(),
		status: func() any {
			st := bootstrapStatusJSON{ID: id.ID().String(), Role: "bootstrap", UptimeS: time.Since(started).Seconds(),
				RegisteredPeers: srv.NumPeers(), Relay: rs != nil}
			if rs != nil {
				st.RelayAllocations, st.RelayBytes = rs.Allocations(), rs.BytesRelayed()
			}
			return st
		},
		ready: func() error { return bootstrapReady(srv, rs) }, // every listener accepting
		// A bootstrap does not measure its own NAT: what it is behind, if
		// anything, was not observed.
		facts: func() monitor.NodeFacts { return monitor.NodeFacts{Role: "bootstrap", NAT: "unknown"} },
	}
}

// peerFacts are the facts diagnosis takes from a peer node.
func peerFacts(n *traversal.Node) monitor.NodeFacts {
	f := monitor.NodeFacts{Role: "peer", NAT: n.NAT().Class()}
	for _, b := range n.Bootstraps() {
		bf := monitor.BootstrapFact{Label: b.Label, Registered: b.Registered, Transport: b.Transport}
		if b.LastError != nil {
			bf.LastError = b.LastError.Error()
			bf.KeyMismatch = errors.Is(b.LastError, identity.ErrKeyMismatch)
		}
		f.Bootstraps = append(f.Bootstraps, bf)
	}
	return f
}

// apiConnectResult is POST /api/v1/connect's answer: the fields of
// `antnode connect --json`, and the diagnosis if it failed.
type apiConnectResult struct {
	connectResult
	Diagnosis []monitor.Finding `json:"diagnosis,omitempty"`
}

// apiConnectTimeout bounds an API connect's attempt (the request's own
// deadline bounds the transfer too).
const apiConnectTimeout = 20 * time.Second

// apiConnect connects the daemon to peer, verifies a transfer and, if it
// failed, diagnoses the attempt. Errors are sanitised: they may name the
// peer's addresses, and the answer leaves the host.
func apiConnect(ctx context.Context, n *traversal.Node, pm *portMapping, mon *monitor.Monitor, peer peerArg, send int64) apiConnectResult {
	res := apiConnectResult{connectResult: connectOnce(ctx, n, connectOptions{peer: peer.id, target: peer, send: send, timeout: apiConnectTimeout})}
	res.NAT = n.NAT().Class()
	res.NATFamilies = natFamilies(n)
	res.Error = mon.Sanitizer().Text(res.Error)
	res.NextStep = nextStep(res.Reason)
	for _, b := range n.Bootstraps() {
		res.Bootstraps = append(res.Bootstraps, bootstrapState{Label: b.Label, Registered: b.Registered,
			Transport: b.Transport, Breaker: b.Breaker})
	}
	res.MappingLifetimeMS, res.KeepaliveMS = ms(n.MappingLifetime()), ms(n.Keepalive())
	res.PortMap = portMapState(pm.m.Status(), mon.Sanitizer())
	if id, err := monitor.ParseAttemptID(res.Attempt); err == nil {
		if rec, ok := mon.Store().Attempt(id); ok {
			res.PeerNAT = rec.PeerNAT
		}
	}
	if res.Reason == "" {
		return res
	}
	rep := mon.Diagnostics(peerFacts(n), time.Now())
	for _, f := range rep.Findings {
		if res.Attempt != "" && slices.Contains(f.Attempts, res.Attempt) {
			res.Diagnosis = append(res.Diagnosis, f)
		}
	}
	return res
}
