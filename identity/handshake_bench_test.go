package identity

import (
	"crypto/tls"
	"net"
	"syscall"
	"testing"
	"time"
)

// cpuTime is the CPU time this process has used, user and system.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// pipeHandshake runs one TLS handshake over net.Pipe between a server
// with sconf and a client with cconf, and reads the byte the server sends
// after it (so the client takes in the session ticket). It returns the
// client's connection state.
func pipeHandshake(tb testing.TB, sconf, cconf *tls.Config) tls.ConnectionState {
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	errc := make(chan error, 1)
	go func() {
		s := tls.Server(a, sconf)
		if err := s.Handshake(); err != nil {
			errc <- err
			return
		}
		_, err := s.Write([]byte{1})
		errc <- err
	}()
	c := tls.Client(b, cconf)
	if err := c.Handshake(); err != nil {
		tb.Fatal(err)
	}
	if _, err := c.Read(make([]byte, 1)); err != nil {
		tb.Fatal(err)
	}
	if err := <-errc; err != nil {
		tb.Fatal(err)
	}
	return c.ConnectionState()
}

// BenchmarkHandshake measures the CPU of a mutually authenticated TLS
// handshake between two identities (both sides, in this process, over
// net.Pipe), full and resumed. Resumption skips both certificates, both
// CertificateVerify signatures and their verification; the key exchange
// (X25519MLKEM768, psk_dhe_ke) runs in both.
func BenchmarkHandshake(b *testing.B) {
	server, client := mustGenerate(b), mustGenerate(b)
	sconf := server.ServerTLS("bench")
	tests := []struct {
		name   string
		resume bool
	}{
		{"full", false},
		{"resumed", true},
	}
	for _, tc := range tests {
		b.Run(tc.name, func(b *testing.B) {
			cconf := client.ClientTLS(server.ID(), "bench")
			if tc.resume {
				cconf.ClientSessionCache = tls.NewLRUClientSessionCache(1)
				pipeHandshake(b, sconf, cconf)
			}
			cpu0 := cpuTime()
			for b.Loop() {
				cs := pipeHandshake(b, sconf, cconf)
				if cs.DidResume != tc.resume || cs.CurveID != tls.X25519MLKEM768 {
					b.Fatalf("resumed %v, curve %v", cs.DidResume, cs.CurveID)
				}
			}
			b.ReportMetric(float64((cpuTime()-cpu0).Microseconds())/float64(b.N), "CPU-µs/op")
		})
	}
}
