package discovery

import (
	"context"
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/antnode/antnode/internal/testkit"
	"github.com/antnode/antnode/nat64"
)

// dns64 is a real DNS server on loopback that answers the AAAA query for
// ipv4only.arpa with records, and with rcode when records is empty.
func dns64(t *testing.T, rcode int, records ...string) string {
	return testkit.DNS(t, func(w dns.ResponseWriter, r *dns.Msg) {
		m := new(dns.Msg)
		m.SetRcode(r, rcode)
		q := r.Question[0]
		if q.Qtype == dns.TypeAAAA && q.Name == nat64.WKAName {
			for _, rec := range records {
				rr, err := dns.NewRR(rec)
				if err != nil {
					t.Error(err)
					return
				}
				m.Answer = append(m.Answer, rr)
			}
		}
		w.WriteMsg(m)
	})
}

// TestNAT64Prefixes: the prefix is read from a DNS64's synthesised
// answers for ipv4only.arpa (RFC 7050), and a network without DNS64
// says so with an error.
func TestNAT64Prefixes(t *testing.T) {
	tests := []struct {
		name    string
		rcode   int
		records []string
		want    []string
		is      error
	}{
		{"well-known prefix", dns.RcodeSuccess, []string{
			"ipv4only.arpa. 60 IN AAAA 64:ff9b::192.0.0.170",
			"ipv4only.arpa. 60 IN AAAA 64:ff9b::192.0.0.171"}, []string{"64:ff9b::/96"}, nil},
		{"network-specific /48", dns.RcodeSuccess, []string{
			"ipv4only.arpa. 60 IN AAAA 2001:db8:122:c000:0:aa00::"}, []string{"2001:db8:122::/48"}, nil},
		{"no DNS64: no AAAA", dns.RcodeSuccess, nil, nil, nat64.ErrNoPrefix},
		{"no DNS64: NXDOMAIN", dns.RcodeNameError, nil, nil, ErrDNS},
		{"an unrelated AAAA", dns.RcodeSuccess, []string{
			"ipv4only.arpa. 60 IN AAAA 2001:db8::1"}, nil, nat64.ErrNoPrefix},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := &Resolver{Server: dns64(t, tc.rcode, tc.records...), Timeout: time.Second}
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			got, err := r.NAT64Prefixes(ctx)
			if tc.is != nil {
				if !errors.Is(err, tc.is) {
					t.Fatalf("got %v, %v; want %v", got, err, tc.is)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			var names []string
			for _, p := range got {
				names = append(names, p.String())
			}
			if !slices.Equal(names, tc.want) {
				t.Fatalf("prefixes %v, want %v", names, tc.want)
			}
		})
	}
}
