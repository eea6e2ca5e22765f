package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"

	"github.com/antnode/antnode/discovery"
	"github.com/antnode/antnode/traversal"
)

// Bootstrap discovery through DNS: --bootstrap-nodes dns:NAME and
// --dns-server (see package discovery).

// dnsServerFlag registers --dns-server into s.
func dnsServerFlag(fs *flag.FlagSet, s *string) {
	fs.StringVar(s, "dns-server", "", "DNS server HOST:PORT for --bootstrap-nodes dns:NAME and, on an IPv6 node with IPv4 bootstraps, the NAT64 prefix (ipv4only.arpa) (empty: the system's, /etc/resolv.conf)")
}

// checkDNSServer checks --dns-server: empty or HOST:PORT.
func checkDNSServer(s string) error {
	if s == "" {
		return nil
	}
	if _, _, err := net.SplitHostPort(s); err != nil {
		return fmt.Errorf("--dns-server: %w", err)
	}
	return nil
}

// resolveBootstraps resolves a --bootstrap-nodes list: its
// [PEERID@]HOST:PORT entries, then the bootstraps its dns:NAME entries
// name (through dnsServer). w is nil when the list has no dns: entry;
// otherwise followDNS keeps the node's bootstraps current with it.
func resolveBootstraps(ctx context.Context, nodes, dnsServer string, log *slog.Logger) (bs []traversal.Bootstrap, w *discovery.Watcher, err error) {
	names, _ := discovery.Split(nodes)
	static, err := parseBootstraps(nodes)
	if err != nil || len(names) == 0 {
		return static, nil, err
	}
	r := &discovery.Resolver{Server: dnsServer}
	w, err = discovery.New(ctx, discovery.Config{Names: names, Static: static, Resolve: r.Resolve, Logger: log})
	if err != nil {
		return nil, nil, fmt.Errorf("--bootstrap-nodes: %w", err)
	}
	if bs = w.Bootstraps(); len(bs) == 0 {
		return nil, nil, errors.New("--bootstrap-nodes: the dns: names resolved to no bootstrap")
	}
	log.Info("bootstraps resolved through DNS", "names", names, "bootstraps", len(bs))
	return bs, w, nil
}

// followDNS starts w (nil: none) keeping node's bootstraps current until
// the returned stop is called or ctx ends.
func followDNS(ctx context.Context, w *discovery.Watcher, node *traversal.Node) (stop func()) {
	if w == nil {
		return func() {}
	}
	w.Run(ctx, node.SetBootstraps, func() bool { return discovery.Failing(node.Bootstraps()) })
	return w.Close
}
