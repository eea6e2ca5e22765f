package testnet

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"time"
)

// The v6-nat64 sites' NAT64 and DNS64: Debian's tayga in each such
// router (a user-space NAT64 on a tun device, its pool masqueraded by
// the router's nftables NAT), and one dnsmasq on the servers' network
// that answers the AAAA query for ipv4only.arpa with the well-known
// addresses synthesised under NAT64Prefix (RFC 7050). Both run as the
// testbed's processes: Close stops them with the namespaces.

// hasNAT64 reports whether the plan has a router that runs tayga.
func (p *Plan) hasNAT64() bool {
	return slices.ContainsFunc(p.Routers, func(r Router) bool { return r.NAT64 })
}

// requireNAT64Tools checks for tayga and dnsmasq.
func requireNAT64Tools() error {
	for _, t := range []string{"tayga", "dnsmasq"} {
		if _, err := exec.LookPath(t); err != nil {
			return fmt.Errorf("testnet: v6-nat64 needs %s (apt-get install tayga dnsmasq-base)", t)
		}
	}
	return nil
}

// taygaConfig is the tayga.conf of a router whose data directory is dir.
func taygaConfig(dir string) string {
	return fmt.Sprintf("tun-device %s\nipv4-addr %s\nprefix %s\ndynamic-pool %s\ndata-dir %s\n",
		NAT64Dev, nat64Addr, NAT64Prefix, nat64Pool, dir)
}

// startNAT64s starts tayga in every NAT64 router: it makes the tun
// device, routes the pool and the prefix into it, and runs the daemon in
// the foreground; then the DNS64. Nothing without a NAT64 router.
func (tb *Testbed) startNAT64s(ctx context.Context) error {
	if !tb.hasNAT64() {
		return nil
	}
	dir, err := os.MkdirTemp("", "antnode-nat64-")
	if err != nil {
		return fmt.Errorf("testnet: nat64: %w", err)
	}
	tb.nat64Dir = dir
	for _, r := range tb.Routers {
		if !r.NAT64 {
			continue
		}
		if err := tb.startTayga(ctx, r, filepath.Join(dir, r.Site)); err != nil {
			return fmt.Errorf("testnet: nat64 of site %s: %w", r.Site, err)
		}
	}
	return tb.startDNS64(ctx)
}

// startTayga configures and starts router r's tayga with its files in dir.
func (tb *Testbed) startTayga(ctx context.Context, r Router, dir string) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	conf := filepath.Join(dir, "tayga.conf")
	if err := os.WriteFile(conf, []byte(taygaConfig(dir)), 0o600); err != nil {
		return err
	}
	if _, err := runIn(ctx, r.NS, "tayga", "--config", conf, "--mktun"); err != nil {
		return err
	}
	if err := nsBatch(ctx, r.NS, []string{"link set " + NAT64Dev + " up",
		"route add " + nat64Pool + " dev " + NAT64Dev, "route add " + NAT64Prefix + " dev " + NAT64Dev}); err != nil {
		return err
	}
	p, err := tb.Start(r.NS, "tayga", "--config", conf, "--nodetach")
	if err != nil {
		return err
	}
	select {
	case <-p.Done():
		return fmt.Errorf("tayga exited: %w: %s", p.Err(), tail(p.Output(), 300))
	case <-time.After(200 * time.Millisecond): // it reads its config and opens the tun at once
	}
	return nil
}

// startDNS64 starts dnsmasq on dns64Server():53 answering ipv4only.arpa.
func (tb *Testbed) startDNS64(ctx context.Context) error {
	prefix := netip.MustParsePrefix(NAT64Prefix)
	wka := prefix.Addr().As16()
	copy(wka[12:], []byte{192, 0, 0, 170})
	p, err := tb.Start(tb.Server(), "dnsmasq", "--keep-in-foreground", "--conf-file=/dev/null", "--pid-file=", "--no-resolv", "--no-hosts",
		"--port=53", "--listen-address="+dns64Server().String(), "--bind-interfaces", "--log-facility=-", "--user=root",
		"--host-record=ipv4only.arpa,"+netip.AddrFrom16(wka).String())
	if err != nil {
		return err
	}
	if err := waitOutput(ctx, p, "started", 5*time.Second); err != nil {
		return fmt.Errorf("dns64: %w: %s", err, tail(p.Output(), 300))
	}
	return nil
}
