package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"

	"github.com/antnode/antnode/discovery"
	"github.com/antnode/antnode/endpoint"
	"github.com/antnode/antnode/nat64"
	"github.com/antnode/antnode/traversal"
)

// ErrFamilyMismatch: a bootstrap is of another address family than the
// node's --listen address, and no NAT64 carries the node to it. A node
// runs in one family; its socket cannot reach the bootstrap, which would
// otherwise look like blocked UDP.
var ErrFamilyMismatch = errors.New("address family mismatch")

// checkFamilies requires every bootstrap to be of listen's family, or
// listen to be IPv6 and the bootstrap IPv4: a NAT64 may carry that
// (nat64For finds out once the node runs).
func checkFamilies(listen string, bs []traversal.Bootstrap) error {
	if isDual(listen) {
		return nil // a dual-stack socket reaches both families
	}
	fam := family(listen)
	for _, b := range bs {
		if bf := endpoint.Family(b.Addr.Addr()); bf != fam && !(fam == "6" && bf == "4") {
			return fmt.Errorf("--bootstrap-nodes: %w: bootstrap %s is IPv%s but --listen %s is IPv%s; a node runs in one family: use --listen [::]:0, or a bootstrap address of the listen family",
				ErrFamilyMismatch, b.Addr, bf, listen, fam)
		}
	}
	return nil
}

// nat64For returns the NAT64 prefix an IPv6 node on listen needs to reach
// IPv4 bootstraps among bs: the one its network's DNS64 reveals (RFC
// 7050, asked of dnsServer, or the system's resolver when empty). The
// zero Prefix when every bootstrap is of listen's family. An IPv6 node
// whose network has no DNS64 gets ErrFamilyMismatch, with what the DNS
// said.
func nat64For(ctx context.Context, listen string, bs []traversal.Bootstrap, dnsServer string, log *slog.Logger) (nat64.Prefix, error) {
	if err := checkFamilies(listen, bs); err != nil {
		return nat64.Prefix{}, err
	}
	var v4 *traversal.Bootstrap
	for i, b := range bs {
		if !isDual(listen) && family(listen) == "6" && endpoint.Family(b.Addr.Addr()) == "4" {
			v4 = &bs[i]
			break
		}
	}
	if v4 == nil {
		return nat64.Prefix{}, nil
	}
	r := &discovery.Resolver{Server: dnsServer}
	ps, err := r.NAT64Prefixes(ctx)
	if err != nil {
		return nat64.Prefix{}, fmt.Errorf("--bootstrap-nodes: %w: bootstrap %s is IPv4 but --listen %s is IPv6, and this network shows no NAT64 (%w): use --listen 0.0.0.0:0, or an IPv6 bootstrap address",
			ErrFamilyMismatch, v4.Addr, listen, err)
	}
	log.Info("NAT64 found: IPv4 addresses are reached through it", "prefix", ps[0].String(), "prefixes", len(ps))
	return ps[0], nil
}
