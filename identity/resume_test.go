package identity

import (
	"context"
	"crypto/tls"
	"errors"
	"net"
	"testing"
	"time"
)

// tlsResult is what each side of a TLS handshake over TCP saw.
type tlsResult struct {
	client, server tls.ConnectionState
	err            error // the client's
}

// tlsHandshake runs a TLS handshake over loopback TCP between a server
// with config sconf and a client with cconf, and reads one byte the
// server sends after it (the client takes in the session ticket that
// comes before it).
func tlsHandshake(t *testing.T, sconf, cconf *tls.Config) tlsResult {
	t.Helper()
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	srv := make(chan tls.ConnectionState, 1)
	go func() {
		defer close(srv)
		raw, err := ln.Accept()
		if err != nil {
			return
		}
		defer raw.Close()
		c := tls.Server(raw, sconf)
		if c.HandshakeContext(ctx) != nil {
			return
		}
		c.Write([]byte{1})
		srv <- c.ConnectionState()
		c.Read(make([]byte, 1)) // until the client closes
	}()
	raw, err := net.Dial("tcp4", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	c := tls.Client(raw, cconf)
	var res tlsResult
	if res.err = c.HandshakeContext(ctx); res.err != nil {
		return res
	}
	if _, res.err = c.Read(make([]byte, 1)); res.err != nil {
		return res
	}
	res.client = c.ConnectionState()
	c.Close()
	res.server = <-srv
	return res
}

// TestSessionResumption: a client that keeps a session cache resumes
// its session with a server of the same key, across a restart of the
// server (a new configuration from the same identity: the ticket key is
// derived from it); a resumed session is still held to the peer ID the
// client expects, and both sides still learn who the other is; a server
// with another key, or the same key serving another protocol, cannot
// resume it. Resumption still runs the key exchange (psk_dhe_ke): the
// curve of a resumed handshake is X25519MLKEM768, as a full one's.
func TestSessionResumption(t *testing.T) {
	server, client, other := mustGenerate(t), mustGenerate(t), mustGenerate(t)
	tests := []struct {
		name   string
		server *Identity
		alpn   string
		expect PeerID
		resume bool  // DidResume wanted
		err    error // the client's error wanted
	}{
		{"restarted server resumes", server, "test", server.ID(), true, nil},
		{"resumed session still checks the peer ID", server, "test", other.ID(), false, ErrKeyMismatch},
		{"resumed session when any key is expected", server, "test", PeerID{}, true, nil},
		{"another key cannot resume", other, "test", server.ID(), false, ErrKeyMismatch},
		{"another key, any key expected: full handshake", other, "test", PeerID{}, false, nil},
		{"another protocol of the same key: full handshake", server, "other", server.ID(), false, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cache := tls.NewLRUClientSessionCache(4)
			cconf := client.ClientTLS(server.ID(), "test", "other")
			cconf.ClientSessionCache = cache
			first := tlsHandshake(t, server.ServerTLS("test"), cconf)
			if first.err != nil || first.client.DidResume {
				t.Fatalf("first handshake: %v, resumed %v", first.err, first.client.DidResume)
			}
			// The server restarts: a fresh configuration from its identity.
			cconf = client.ClientTLS(tc.expect, "test", "other")
			cconf.ClientSessionCache = cache
			got := tlsHandshake(t, tc.server.ServerTLS(tc.alpn), cconf)
			if tc.err != nil {
				if !errors.Is(got.err, tc.err) {
					t.Fatalf("err %v, want %v", got.err, tc.err)
				}
				return
			}
			if got.err != nil {
				t.Fatal(got.err)
			}
			if got.client.DidResume != tc.resume || got.server.DidResume != tc.resume {
				t.Fatalf("resumed: client %v, server %v; want %v", got.client.DidResume, got.server.DidResume, tc.resume)
			}
			if got.client.CurveID != tls.X25519MLKEM768 {
				t.Fatalf("key exchange %v, want X25519MLKEM768", got.client.CurveID)
			}
			if id, err := PeerFromState(got.client); err != nil || id != tc.server.ID() {
				t.Fatalf("client sees %v (%v), want %s", id, err, tc.server.ID().Short())
			}
			if id, err := PeerFromState(got.server); err != nil || id != client.ID() {
				t.Fatalf("server sees %v (%v), want %s", id, err, client.ID().Short())
			}
		})
	}
}

// TestTicketKey: the ticket key is stable for an identity and a protocol
// list, and differs across identities and protocol lists.
func TestTicketKey(t *testing.T) {
	a, b := mustGenerate(t), mustGenerate(t)
	tests := []struct {
		name string
		x, y [32]byte
		same bool
	}{
		{"stable", a.TicketKey("p"), a.TicketKey("p"), true},
		{"per identity", a.TicketKey("p"), b.TicketKey("p"), false},
		{"per protocol", a.TicketKey("p"), a.TicketKey("q"), false},
		{"not the reset key", a.TicketKey("p"), a.DeriveKey("quic stateless reset"), false},
	}
	for _, tc := range tests {
		if (tc.x == tc.y) != tc.same {
			t.Errorf("%s: equal %v, want %v", tc.name, tc.x == tc.y, tc.same)
		}
	}
}
