package testkit

import (
	"net"
	"testing"

	"github.com/miekg/dns"
)

// DNS runs a real DNS server (miekg/dns) on a loopback UDP port with
// handler, shut down when the test ends, and returns its HOST:PORT.
func DNS(t testing.TB, handler dns.HandlerFunc) string {
	t.Helper()
	pc, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &dns.Server{PacketConn: pc, Handler: handler}
	started := make(chan struct{})
	srv.NotifyStartedFunc = func() { close(started) }
	go srv.ActivateAndServe()
	<-started
	t.Cleanup(func() { srv.Shutdown() })
	return pc.LocalAddr().String()
}

// DNS64 runs DNS (above) answering the AAAA query for ipv4only.arpa with
// the records aaaa (RFC 7050; none: an empty answer, a network without
// DNS64) and every other query with an empty answer.
func DNS64(t testing.TB, aaaa ...string) string {
	return DNS(t, func(w dns.ResponseWriter, r *dns.Msg) {
		m := new(dns.Msg)
		m.SetReply(r)
		if q := r.Question[0]; q.Qtype == dns.TypeAAAA && q.Name == "ipv4only.arpa." {
			for _, a := range aaaa {
				rr, err := dns.NewRR("ipv4only.arpa. 60 IN AAAA " + a)
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
