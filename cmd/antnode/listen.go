package main

import (
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"slices"
	"strings"

	"github.com/antnode/antnode/bootstrap"
	"github.com/antnode/antnode/endpoint"
	"github.com/antnode/antnode/identity"
)

// ErrPeerDualStack: a peer's --listen names two addresses that one
// dual-stack socket cannot serve. A peer's two addresses are the
// unspecified ones of both families on one port ("0.0.0.0:4433,[::]:4433"):
// it runs one socket for both (see endpoint.ListenDualStack).
var ErrPeerDualStack = errors.New("a peer's two --listen addresses are 0.0.0.0 and [::] on one port")

// dualPort returns the port of a peer's two --listen addresses (parts, as
// splitListen returns them), which must be the unspecified addresses of
// both families on one port.
func dualPort(parts []string) (uint16, error) {
	var port uint16
	for i, p := range parts {
		ap, err := netip.ParseAddrPort(p)
		if err != nil || !ap.Addr().IsUnspecified() || (i > 0 && ap.Port() != port) {
			return 0, fmt.Errorf("--listen %s: %w", strings.Join(parts, ","), ErrPeerDualStack)
		}
		port = ap.Port()
	}
	return port, nil
}

// dualListen is the --listen of one dual-stack socket on any port.
const dualListen = "0.0.0.0:0,[::]:0"

// defaultPeerListen is a peer's --listen when none is given, from the
// host's interface addresses: one dual-stack socket (dualListen) where
// the host has an IPv4 address and a global IPv6 one (not loopback,
// link-local or unique local fc00::/7: those reach no IPv6 internet),
// else 0.0.0.0:0. It is a pure function.
func defaultPeerListen(addrs []netip.Addr) string {
	var v4, v6 bool
	for _, a := range addrs {
		switch {
		case a.Is4() || a.Is4In6():
			v4 = v4 || (!a.IsLoopback() && !a.IsLinkLocalUnicast() && !a.IsUnspecified())
		default:
			v6 = v6 || (a.IsGlobalUnicast() && !a.IsPrivate())
		}
	}
	if v4 && v6 {
		return dualListen
	}
	return "0.0.0.0:0"
}

// defaultListenHere is defaultPeerListen of this host's addresses (none
// known: 0.0.0.0:0).
func defaultListenHere() string {
	addrs, _ := hostAddrs()
	return defaultPeerListen(addrs)
}

// isDual reports whether a peer's --listen asks for a dual-stack socket.
func isDual(listen string) bool { return strings.Contains(listen, ",") }

// listenPeer opens a peer's socket on its --listen: one address, a socket
// of its family; two, one dual-stack socket (see dualPort).
func listenPeer(listen string, cfg endpoint.Config) (*endpoint.Endpoint, error) {
	parts, err := splitListen(listen)
	if err != nil {
		return nil, err
	}
	if len(parts) == 1 {
		return endpoint.Listen(udpNetwork(parts[0]), parts[0], cfg)
	}
	port, err := dualPort(parts)
	if err != nil {
		return nil, err
	}
	c, err := endpoint.ListenDualStack(port)
	if err != nil {
		return nil, fmt.Errorf("--listen %s: %w", listen, err)
	}
	cfg.Conn = c
	ep, err := endpoint.New(cfg)
	if err != nil {
		c.Close()
		return nil, err
	}
	return ep, nil
}

// splitListen parses --listen: one HOST:PORT, or one per address family
// separated by a comma ("0.0.0.0:4433,[::]:4433"). It returns them in
// the order given; the first is the node's primary socket.
func splitListen(s string) ([]string, error) {
	parts := strings.Split(s, ",")
	if len(parts) > 2 {
		return nil, fmt.Errorf("--listen %q: at most two addresses, one per family", s)
	}
	seen := map[string]bool{}
	for i, p := range parts {
		p = strings.TrimSpace(p)
		if _, _, err := net.SplitHostPort(p); err != nil {
			return nil, fmt.Errorf("--listen %q: %w", s, err)
		}
		fam := family(p)
		if seen[fam] {
			return nil, fmt.Errorf("--listen %q: two IPv%s addresses; give one per family", s, fam)
		}
		seen[fam] = true
		parts[i] = p
	}
	return parts, nil
}

// probeAddrFor is the --probe-addr address of local's family, if any.
func (o *nodeOptions) probeAddrFor(local netip.AddrPort) netip.Addr {
	for _, f := range strings.Split(o.probeAddr, ",") {
		a, err := netip.ParseAddr(strings.TrimSpace(f))
		if err == nil && endpoint.Family(a) == endpoint.Family(local.Addr()) {
			return a
		}
	}
	return netip.Addr{}
}

// altSTUN opens a bootstrap's alternate STUN socket next to local (on
// --stun-alt-port, or the port after local's); nil with --stun-alt-port -1.
func (o *nodeOptions) altSTUN(local netip.AddrPort) (net.PacketConn, error) {
	if o.stunAltPort < 0 {
		return nil, nil
	}
	port := uint16(o.stunAltPort) // validated: 1..65535
	if o.stunAltPort == 0 {
		var err error
		if port, err = derivePort(local.Port(), 1, "second STUN", "--stun-alt-port"); err != nil {
			return nil, badInput(err)
		}
	}
	alt, err := net.ListenUDP(udpNetwork(local.String()), net.UDPAddrFromAddrPort(netip.AddrPortFrom(local.Addr(), port)))
	if err != nil {
		return nil, fmt.Errorf("--stun-alt-port %d: %w", port, err)
	}
	return alt, nil
}

// alsoSockets opens a bootstrap's sockets in its other family (the second
// --listen address, if any): its endpoint and alternate STUN socket. It
// returns them and what closes them.
func (o *nodeOptions) alsoSockets(id *identity.Identity, cfg endpoint.Config) ([]bootstrap.Sockets, []io.Closer, error) {
	var out []bootstrap.Sockets
	var closers []io.Closer
	for _, l := range o.alsoListen {
		ep, err := endpoint.Listen(udpNetwork(l), l, cfg)
		if err != nil {
			return out, closers, err
		}
		closers = append(closers, ep)
		alt, err := o.altSTUN(ep.LocalAddr())
		if err != nil {
			return out, closers, err
		}
		if alt != nil {
			closers = append(closers, alt)
		}
		out = append(out, bootstrap.Sockets{Endpoint: ep, AltSTUN: alt, ProbeAddr: o.probeAddrFor(ep.LocalAddr())})
	}
	return out, closers, nil
}

// checkProbeAddr parses --probe-addr (one address per family, comma-
// separated) and requires each in the family of a --listen address:
// filtering probes go to that family's peers.
func (o *nodeOptions) checkProbeAddr() error {
	if o.probeAddr == "" {
		return nil
	}
	seen := map[string]bool{}
	for _, f := range strings.Split(o.probeAddr, ",") {
		a, err := netip.ParseAddr(strings.TrimSpace(f))
		if err != nil {
			return fmt.Errorf("--probe-addr: %w", err)
		}
		fam := endpoint.Family(a)
		if seen[fam] {
			return fmt.Errorf("--probe-addr %s: two IPv%s addresses; give one per family", o.probeAddr, fam)
		}
		seen[fam] = true
		if !slices.ContainsFunc(append([]string{o.listen}, o.alsoListen...), func(l string) bool { return family(l) == fam }) {
			return fmt.Errorf("--probe-addr %s: %w: no --listen address is IPv%s", a, ErrFamilyMismatch, fam)
		}
	}
	return nil
}

// listening names a bootstrap's sockets: "0.0.0.0:4433 and [::]:4433".
func listening(local netip.AddrPort, also []bootstrap.Sockets) string {
	names := []string{local.String()}
	for _, s := range also {
		names = append(names, s.Endpoint.LocalAddr().String())
	}
	return strings.Join(names, " and ")
}
