package discovery

import (
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/antnode/antnode/internal/testkit"
)

// lossyDNS is a real DNS server on loopback that drops the first drop
// queries it gets and answers the rest with rcode (an A record when
// rcode is success).
func lossyDNS(t *testing.T, drop int32, rcode int) (addr string, queries *atomic.Int32) {
	t.Helper()
	queries = new(atomic.Int32)
	addr = testkit.DNS(t, func(w dns.ResponseWriter, r *dns.Msg) {
		if queries.Add(1) <= drop {
			return // lost
		}
		m := new(dns.Msg)
		m.SetRcode(r, rcode)
		if rcode == dns.RcodeSuccess {
			rr, _ := dns.NewRR(r.Question[0].Name + " 30 IN A 203.0.113.1")
			m.Answer = append(m.Answer, rr)
		}
		w.WriteMsg(m)
	})
	return addr, queries
}

// TestQueryRetries: a query whose packet (or answer) is lost is sent
// again, queryTries times in all (CI's lossy testbed lost a daemon's
// first SRV query, and the daemon, which resolved once, exited); a
// server that answers with a failure is not asked again.
func TestQueryRetries(t *testing.T) {
	tests := []struct {
		name  string
		drop  int32
		rcode int
		fails bool  // the query returns an error
		is    error // which, if set
		want  int32 // queries the server saw
	}{
		{"answered at once", 0, dns.RcodeSuccess, false, nil, 1},
		{"first lost", 1, dns.RcodeSuccess, false, nil, 2},
		{"two lost", 2, dns.RcodeSuccess, false, nil, 3},
		{"all lost", queryTries, dns.RcodeSuccess, true, nil, queryTries},
		{"a failure answer is not asked again", 0, dns.RcodeNameError, true, ErrDNS, 1},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			addr, queries := lossyDNS(t, tc.drop, tc.rcode)
			r := &Resolver{Server: addr, Timeout: 200 * time.Millisecond}
			rrs, err := r.query(t.Context(), []string{addr}, "fleet.test", dns.TypeA)
			switch {
			case !tc.fails && (err != nil || len(rrs) != 1):
				t.Fatalf("query: %d records, %v; want the A record", len(rrs), err)
			case tc.fails && err == nil:
				t.Fatalf("query: %d records, want an error", len(rrs))
			case tc.is != nil && !errors.Is(err, tc.is):
				t.Fatalf("query: %v, want %v", err, tc.is)
			}
			if got := queries.Load(); got != tc.want {
				t.Fatalf("the server saw %d queries, want %d", got, tc.want)
			}
		})
	}
}
