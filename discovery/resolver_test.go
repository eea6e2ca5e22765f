package discovery

import (
	"context"
	"errors"
	"net"
	"sync/atomic"
	"testing"
	"time"

	"github.com/miekg/dns"
)

// lossyDNS is a real DNS server on loopback that drops the first drop
// queries it gets and answers the rest with rcode (an A record when
// rcode is success).
func lossyDNS(t *testing.T, drop int32, rcode int) (addr string, queries *atomic.Int32) {
	t.Helper()
	pc, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	queries = new(atomic.Int32)
	srv := &dns.Server{PacketConn: pc, Handler: dns.HandlerFunc(func(w dns.ResponseWriter, r *dns.Msg) {
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
	})}
	started := make(chan struct{})
	srv.NotifyStartedFunc = func() { close(started) }
	go srv.ActivateAndServe()
	<-started
	t.Cleanup(func() { srv.Shutdown() })
	return pc.LocalAddr().String(), queries
}

// TestQueryRetries: a query whose packet (or answer) is lost is sent
// again, queryTries times in all (CI's lossy testbed lost a daemon's
// first SRV query, and the daemon, which resolved once, exited); a
// server that answers with a failure is not asked again.
func TestQueryRetries(t *testing.T) {
	tests := []struct {
		name    string
		drop    int32
		rcode   int
		wantErr error
		want    int32 // queries the server saw
	}{
		{"answered at once", 0, dns.RcodeSuccess, nil, 1},
		{"first lost", 1, dns.RcodeSuccess, nil, 2},
		{"two lost", 2, dns.RcodeSuccess, nil, 3},
		{"all lost", queryTries, dns.RcodeSuccess, context.DeadlineExceeded, queryTries},
		{"a failure answer is not asked again", 0, dns.RcodeNameError, ErrDNS, 1},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			addr, queries := lossyDNS(t, tc.drop, tc.rcode)
			r := &Resolver{Server: addr, Timeout: 200 * time.Millisecond}
			rrs, err := r.query(t.Context(), []string{addr}, "fleet.test", dns.TypeA)
			switch {
			case tc.wantErr == nil && (err != nil || len(rrs) != 1):
				t.Fatalf("query: %d records, %v; want the A record", len(rrs), err)
			case tc.wantErr != nil && err == nil:
				t.Fatalf("query: %d records, want an error", len(rrs))
			case errors.Is(tc.wantErr, ErrDNS) && !errors.Is(err, ErrDNS):
				t.Fatalf("query: %v, want ErrDNS", err)
			}
			if got := queries.Load(); got != tc.want {
				t.Fatalf("the server saw %d queries, want %d", got, tc.want)
			}
		})
	}
}
