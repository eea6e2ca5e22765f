package testnet

import (
	"context"
	"fmt"
	"time"
)

// The port-mapping scenarios: a node behind the apdm-portmap site's
// router (Debian's miniupnpd) asks it for a mapping and becomes reachable
// from a symmetric NAT, which without the mapping only the relay bridges.

// daemonPort is the UDP port of every host's daemon.
const daemonPort = 4000

// portmapListen is the port of a scenario's own connect: fixed, so that
// the router's mapping of it can be found.
const portmapListen = 4100

// scenarioPortmap returns the scenario that forces protocol proto
// (--portmap pcp|natpmp|upnp): a connect from the apdm-portmap host to an
// apdm peer goes direct; its mapping, made by proto, is on the router
// while the node runs and gone after its clean shutdown.
func scenarioPortmap(proto string) ScenarioFunc {
	return func(ctx context.Context, e *Env) (bool, string) {
		a, ok1 := e.firstHost(ClassAPDMPortmap, 0)
		b, ok2 := e.firstHost(ClassAPDM, 0)
		if !ok1 || !ok2 {
			return false, "needs an apdm-portmap and an apdm site"
		}
		args := []string{e.Bin, "connect", e.PeerIDs[b.NS], "--bootstrap-nodes", e.BootstrapAddrs, "--json",
			"--portmap", proto, "--listen", fmt.Sprintf("0.0.0.0:%d", portmapListen),
			"--send", "262144", "--idle", "3s", "--timeout", "30s", "--log-level", "info"}
		p, err := e.TB.Start(a.NS, args...)
		if err != nil {
			return false, err.Error()
		}
		defer p.Stop(time.Second)
		mine := MappingOf(a, portmapListen, proto)
		held, err := e.TB.WaitUDPMapping(ctx, a.Site, true, mine, 20*time.Second)
		if err != nil {
			p.Stop(time.Second)
			return false, fmt.Sprintf("no %s mapping of port %d on the router while the node ran: %v; node: %s",
				proto, portmapListen, err, tail(p.Output(), 300))
		}
		res, err := connectResult(ctx, p)
		if err != nil {
			return false, err.Error()
		}
		if !res.Connected || res.Path != "direct" || res.BytesVerified != 262144 {
			return false, fmt.Sprintf("apdm-portmap to apdm over %s (--portmap %s): connected %v, %d bytes verified, %s %s",
				res.Path, proto, res.Connected, res.BytesVerified, res.Reason, res.Error)
		}
		if _, err := e.TB.WaitUDPMapping(ctx, a.Site, false, MappingOf(a, portmapListen, ""), 10*time.Second); err != nil {
			return false, fmt.Sprintf("the mapping outlived the node's clean shutdown: %v", err)
		}
		return true, fmt.Sprintf("--portmap %s: router mapped %s; apdm-portmap to apdm direct in %.0f ms, %d bytes verified; mapping gone after shutdown",
			proto, firstOf(held, mine), res.TimeToConnect, res.BytesVerified)
	}
}

// scenarioPortmapRouterRestart: the router's daemon restarts and forgets
// its mappings (its rules, leases and the conntrack entries of its
// forwards are gone, its epoch starts again). The apdm-portmap site's node
// (the daemon, --portmap auto) maps again, and a new connection from an
// apdm peer still goes direct.
func scenarioPortmapRouterRestart(ctx context.Context, e *Env) (bool, string) {
	h, ok1 := e.firstHost(ClassAPDMPortmap, 0)
	b, ok2 := e.firstHost(ClassAPDM, 0)
	if !ok1 || !ok2 {
		return false, "needs an apdm-portmap and an apdm site"
	}
	daemon := MappingOf(h, daemonPort, "")
	before, err := e.TB.WaitUDPMapping(ctx, h.Site, true, daemon, 10*time.Second)
	if err != nil {
		return false, fmt.Sprintf("the daemon holds no mapping before the restart: %v", err)
	}
	start := time.Now()
	if err := e.TB.RestartPortmap(ctx, h.Site, true); err != nil {
		return false, err.Error()
	}
	after, err := e.TB.WaitUDPMapping(ctx, h.Site, true, daemon, 30*time.Second)
	if err != nil {
		return false, fmt.Sprintf("the daemon did not map again after the router's restart: %v", err)
	}
	took := time.Since(start)
	res := e.Connect(ctx, b, h, 65536, 15*time.Second)
	if !res.Connected || res.Path != "direct" {
		return false, fmt.Sprintf("after the restart apdm to apdm-portmap over %s: %s %s", res.Path, res.Reason, res.Error)
	}
	return true, fmt.Sprintf("router restarted with its mappings flushed (was %s); the daemon mapped %s again within %.1f s; apdm to apdm-portmap direct in %.0f ms",
		firstOf(before, daemon), firstOf(after, daemon), took.Seconds(), res.TimeToConnect)
}

// firstOf returns the first of ms that match describes.
func firstOf(ms []PortMapping, match func(PortMapping) bool) string {
	for _, m := range ms {
		if match(m) {
			return m.String()
		}
	}
	return "none"
}
