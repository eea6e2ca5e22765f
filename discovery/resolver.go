package discovery

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"time"

	"github.com/miekg/dns"

	"github.com/antnode/antnode/nat64"
	"github.com/antnode/antnode/traversal"
)

// The queries: SRV at _antnode._udp.NAME, then TXT, A and AAAA at each
// target, each bounded by Resolver.Timeout.

// ErrDNS is the error of a query the server answered with a failure
// (SERVFAIL, REFUSED, NXDOMAIN...).
var ErrDNS = errors.New("discovery: DNS query failed")

// Resolver queries one DNS server (or the system's) for bootstraps.
type Resolver struct {
	// Server is the DNS server, HOST:PORT. Empty: the first nameservers
	// of /etc/resolv.conf (at most 3, each tried in turn).
	Server string
	// Timeout bounds each exchange of a query (retried once over TCP
	// when the answer was truncated); a query that gets no answer is
	// sent queryTries times in all. Zero: 2 s.
	Timeout time.Duration
}

// Result is the bootstraps one name resolved to.
type Result struct {
	Bootstraps []traversal.Bootstrap
	// TTL is the smallest TTL of the records used.
	TTL time.Duration
	// Problems name the targets left out (see Entries).
	Problems []error
}

// Resolve resolves name (without "dns:") to bootstraps: its SRV records,
// then each target's TXT, A and AAAA records.
func (r *Resolver) Resolve(ctx context.Context, name string) (Result, error) {
	servers, err := r.servers()
	if err != nil {
		return Result{}, err
	}
	srv, err := r.query(ctx, servers, SRVName(name), dns.TypeSRV)
	if err != nil {
		return Result{}, err
	}
	rrs := srv
	for _, s := range srvRecords(name, srv) {
		for _, t := range []uint16{dns.TypeTXT, dns.TypeA, dns.TypeAAAA} {
			more, err := r.query(ctx, servers, s.Target, t)
			if err != nil && ctx.Err() != nil {
				return Result{}, err
			}
			rrs = append(rrs, more...) // a failed one: the target lacks it (see Problems)
		}
	}
	bs, ttl, problems, err := Entries(name, rrs)
	if err != nil {
		return Result{}, err
	}
	return Result{Bootstraps: bs, TTL: ttl, Problems: problems}, nil
}

// servers returns the servers to ask, in order.
func (r *Resolver) servers() ([]string, error) {
	if r.Server != "" {
		return []string{r.Server}, nil
	}
	conf, err := dns.ClientConfigFromFile("/etc/resolv.conf")
	if err != nil {
		return nil, fmt.Errorf("discovery: system resolver: %w", err)
	}
	var out []string
	for _, s := range conf.Servers[:min(len(conf.Servers), 3)] {
		out = append(out, net.JoinHostPort(s, conf.Port))
	}
	if len(out) == 0 {
		return nil, errors.New("discovery: system resolver: no nameserver in /etc/resolv.conf")
	}
	return out, nil
}

// query asks the servers in turn for the records of type t at name and
// returns the answer and additional sections of the first that answers.
func (r *Resolver) query(ctx context.Context, servers []string, name string, t uint16) ([]dns.RR, error) {
	m := new(dns.Msg)
	m.SetQuestion(dns.Fqdn(name), t)
	timeout := r.Timeout
	if timeout <= 0 {
		timeout = 2 * time.Second
	}
	var errs []error
	for try := range queryTries {
		answered := false
		for _, s := range servers {
			resp, err := exchange(ctx, m, s, timeout)
			if err == nil && resp.Rcode != dns.RcodeSuccess {
				answered = true // an answer, if a failure: asking again changes nothing
				err = fmt.Errorf("%w: %s %s: %s", ErrDNS, dns.TypeToString[t], name, dns.RcodeToString[resp.Rcode])
			}
			if err == nil {
				return append(resp.Answer, resp.Extra...), nil
			}
			errs = append(errs, fmt.Errorf("server %s (try %d): %w", s, try+1, err))
			if ctx.Err() != nil {
				return nil, errors.Join(errs...)
			}
		}
		if answered {
			break
		}
	}
	return nil, errors.Join(errs...)
}

// queryTries is how many times a query goes to the servers that do not
// answer: a UDP query or its answer can be lost (the testbed's lossy
// pass lost a daemon's first SRV query once, and the daemon, which
// cannot start without its bootstraps, exited).
const queryTries = 3

// exchange sends m to server over UDP, and again over TCP when the
// answer was truncated, each bounded by timeout.
func exchange(ctx context.Context, m *dns.Msg, server string, timeout time.Duration) (*dns.Msg, error) {
	var resp *dns.Msg
	for _, network := range []string{"udp", "tcp"} {
		qctx, cancel := context.WithTimeout(ctx, timeout)
		c := &dns.Client{Net: network, Timeout: timeout}
		r, _, err := c.ExchangeContext(qctx, m, server)
		cancel()
		if err != nil {
			return nil, fmt.Errorf("discovery: %s query %s: %w", network, m.Question[0].Name, err)
		}
		if resp = r; !r.Truncated {
			break
		}
	}
	return resp, nil
}

// NAT64Prefixes finds the network's NAT64 prefixes from its DNS64 (RFC
// 7050): the AAAA records of ipv4only.arpa, which a DNS64 synthesises
// from the name's well-known IPv4 addresses. A network without DNS64
// answers no AAAA record (or NXDOMAIN): the error is nat64.ErrNoPrefix
// or ErrDNS.
func (r *Resolver) NAT64Prefixes(ctx context.Context) ([]nat64.Prefix, error) {
	servers, err := r.servers()
	if err != nil {
		return nil, err
	}
	rrs, err := r.query(ctx, servers, nat64.WKAName, dns.TypeAAAA)
	if err != nil {
		return nil, fmt.Errorf("discovery: NAT64 prefix: %w", err)
	}
	var addrs []netip.Addr
	for _, rr := range rrs {
		if aaaa, ok := rr.(*dns.AAAA); ok && strings.EqualFold(aaaa.Hdr.Name, nat64.WKAName) {
			if a, ok := netip.AddrFromSlice(aaaa.AAAA); ok {
				addrs = append(addrs, a)
			}
		}
	}
	ps, err := nat64.PrefixesFrom(addrs)
	if err != nil {
		return nil, fmt.Errorf("discovery: NAT64 prefix: %w", err)
	}
	return ps, nil
}
