package identity

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/quic-go/quic-go"
)

func TestPeerIDRoundTrip(t *testing.T) {
	id, err := Generate()
	if err != nil {
		t.Fatal(err)
	}
	s := id.ID().String()
	if len(s) != 52 || strings.ToLower(s) != s {
		t.Fatalf("printable form %q", s)
	}
	got, err := ParsePeerID(s)
	if err != nil {
		t.Fatal(err)
	}
	if got != id.ID() {
		t.Fatal("round trip changed the ID")
	}
	up, err := ParsePeerID(strings.ToUpper(s))
	if err != nil || up != id.ID() {
		t.Fatalf("upper case form: %v", err)
	}
}

func TestParsePeerIDRejects(t *testing.T) {
	valid := mustGenerate(t).ID().String()
	tests := []struct{ name, in string }{
		{"empty", ""},
		{"short", valid[:51]},
		{"long", valid + "a"},
		{"not base32", strings.Repeat("1", 52)},
		{"padding", valid[:48] + "===="},
		// The last character carries one bit: only "a" and "q" are canonical.
		{"non-canonical tail", valid[:51] + "b"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := ParsePeerID(tc.in); !errors.Is(err, ErrInvalidPeerID) {
				t.Fatalf("ParsePeerID(%q) = %v, want ErrInvalidPeerID", tc.in, err)
			}
		})
	}
}

func mustGenerate(t testing.TB) *Identity {
	t.Helper()
	id, err := Generate()
	if err != nil {
		t.Fatal(err)
	}
	return id
}

func TestLoadOrCreate(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "node.key")
	a, created, err := LoadOrCreate(path)
	if err != nil || !created {
		t.Fatalf("first load: created=%v err=%v", created, err)
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if perm := fi.Mode().Perm(); perm != 0o600 {
		t.Fatalf("key file mode %v, want 0600", perm)
	}
	b, created, err := LoadOrCreate(path)
	if err != nil || created {
		t.Fatalf("second load: created=%v err=%v", created, err)
	}
	if a.ID() != b.ID() {
		t.Fatal("reloaded key has another peer ID")
	}
}

// TestLoadOrCreateNeverCreatesDirectories: a missing file in an existing
// directory is created; a missing directory is an error, and nothing is
// created.
func TestLoadOrCreateNeverCreatesDirectories(t *testing.T) {
	tests := []struct {
		name    string
		path    func(dir string) string
		wantErr error
	}{
		{"file in existing directory", func(dir string) string { return filepath.Join(dir, "node.key") }, nil},
		{"missing directory", func(dir string) string { return filepath.Join(dir, "typo", "node.key") }, ErrNoKeyDir},
		{"missing nested directories", func(dir string) string { return filepath.Join(dir, "a", "b", "node.key") }, ErrNoKeyDir},
		{"parent is a file", func(dir string) string {
			f := filepath.Join(dir, "file")
			os.WriteFile(f, nil, 0o600)
			return filepath.Join(f, "node.key")
		}, ErrNoKeyDir},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			path := tc.path(dir)
			_, created, err := LoadOrCreate(path)
			if !errors.Is(err, tc.wantErr) || (err == nil) != created {
				t.Fatalf("LoadOrCreate(%s): created %v, err %v; want err %v", path, created, err, tc.wantErr)
			}
			if tc.wantErr != nil {
				if !strings.Contains(err.Error(), filepath.Dir(path)) {
					t.Fatalf("error %q does not name the directory", err)
				}
				if _, err := os.Stat(filepath.Dir(path)); err == nil && filepath.Base(filepath.Dir(path)) != "file" {
					t.Fatalf("%s was created", filepath.Dir(path))
				}
			}
		})
	}
}

func TestLoadRejectsBadFiles(t *testing.T) {
	rsaLike := pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: []byte{1, 2, 3}})
	_, ecKey, _ := ed25519.GenerateKey(rand.Reader)
	der, _ := x509.MarshalPKCS8PrivateKey(ecKey)
	good := pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})
	tests := []struct {
		name    string
		content []byte
	}{
		{"empty", nil},
		{"garbage", []byte("not a key at all")},
		{"wrong PEM type", rsaLike},
		{"bad DER", pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: []byte{0x30, 0x03, 1, 2, 3}})},
		{"trailing data", append(append([]byte{}, good...), []byte("extra")...)},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "k")
			if err := os.WriteFile(path, tc.content, 0o600); err != nil {
				t.Fatal(err)
			}
			_, _, err := LoadOrCreate(path)
			if !errors.Is(err, ErrMalformedKey) {
				t.Fatalf("got %v, want ErrMalformedKey", err)
			}
			if !strings.Contains(err.Error(), path) {
				t.Fatalf("error %q does not name the file", err)
			}
			// The malformed file must be left alone, not replaced.
			if b, _ := os.ReadFile(path); string(b) != string(tc.content) {
				t.Fatal("malformed key file was overwritten")
			}
		})
	}
	t.Run("unreadable", func(t *testing.T) {
		dir := t.TempDir()
		path := filepath.Join(dir, "k")
		if err := os.Mkdir(path, 0o700); err != nil { // a directory cannot be read as a file
			t.Fatal(err)
		}
		if _, _, err := LoadOrCreate(path); err == nil || errors.Is(err, ErrMalformedKey) {
			t.Fatalf("got %v, want a read error", err)
		}
	})
}

func FuzzParse(f *testing.F) {
	b, _ := mustGenerate(f).Marshal()
	f.Add(b)
	f.Add([]byte("-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		id, err := Parse(b)
		if err != nil {
			return
		}
		again, err := id.Marshal()
		if err != nil {
			t.Fatal(err)
		}
		id2, err := Parse(again)
		if err != nil || id2.ID() != id.ID() {
			t.Fatalf("re-marshalled key does not parse to the same ID: %v", err)
		}
	})
}

func FuzzParsePeerID(f *testing.F) {
	f.Add(mustGenerate(f).ID().String())
	f.Add("")
	f.Fuzz(func(t *testing.T, s string) {
		id, err := ParsePeerID(s)
		if err != nil {
			return
		}
		if !strings.EqualFold(id.String(), s) {
			t.Fatalf("ParsePeerID(%q).String() = %q", s, id.String())
		}
	})
}

// handshake runs a real QUIC handshake over loopback between server and a
// client that expects the peer ID expect.
func handshake(t *testing.T, server, client *Identity, expect PeerID) (*quic.Conn, PeerID, error) {
	t.Helper()
	sc, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	cc, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	str, ctr := &quic.Transport{Conn: sc}, &quic.Transport{Conn: cc}
	t.Cleanup(func() { str.Close(); ctr.Close(); sc.Close(); cc.Close() })
	ln, err := str.Listen(server.ServerTLS("test"), nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	accepted := make(chan PeerID, 1)
	go func() {
		c, err := ln.Accept(ctx)
		if err != nil {
			accepted <- PeerID{}
			return
		}
		id, _ := PeerFromState(c.ConnectionState().TLS)
		accepted <- id
	}()
	conn, err := ctr.Dial(ctx, sc.LocalAddr(), client.ClientTLS(expect, "test"), nil)
	if err != nil {
		return nil, PeerID{}, err
	}
	return conn, <-accepted, nil
}

func TestMutualAuthentication(t *testing.T) {
	server, client, other := mustGenerate(t), mustGenerate(t), mustGenerate(t)
	t.Run("expected key accepted, server learns client", func(t *testing.T) {
		conn, seen, err := handshake(t, server, client, server.ID())
		if err != nil {
			t.Fatal(err)
		}
		if seen != client.ID() {
			t.Fatalf("server saw %s, want %s", seen.Short(), client.ID().Short())
		}
		got, err := PeerFromState(conn.ConnectionState().TLS)
		if err != nil || got != server.ID() {
			t.Fatalf("client saw %v (%v)", got, err)
		}
	})
	t.Run("wrong key rejected", func(t *testing.T) {
		_, _, err := handshake(t, server, client, other.ID())
		if !errors.Is(err, ErrKeyMismatch) {
			t.Fatalf("dialling %s at a node holding another key: %v, want ErrKeyMismatch", other.ID().Short(), err)
		}
		var km *KeyMismatchError
		if !errors.As(err, &km) || km.Want != other.ID() || km.Got != server.ID() {
			t.Fatalf("KeyMismatchError = %+v", km)
		}
	})
	t.Run("any key when none expected", func(t *testing.T) {
		if _, _, err := handshake(t, server, client, PeerID{}); err != nil {
			t.Fatal(err)
		}
	})
}

func TestDeriveKey(t *testing.T) {
	a, b := mustGenerate(t), mustGenerate(t)
	if a.DeriveKey("x") != a.DeriveKey("x") {
		t.Fatal("not stable")
	}
	if a.DeriveKey("x") == a.DeriveKey("y") || a.DeriveKey("x") == b.DeriveKey("x") {
		t.Fatal("not separated by label or key")
	}
	raw, _ := a.Marshal()
	again, _ := Parse(raw)
	if again.DeriveKey("x") != a.DeriveKey("x") {
		t.Fatal("differs after a reload")
	}
}
