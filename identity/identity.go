// Package identity owns a node's Ed25519 key, the peer ID derived from it and
// the mutually authenticated TLS configurations that every QUIC handshake of
// antnode uses (peer to bootstrap and peer to peer).
//
// A peer ID is the node's Ed25519 public key, printed in lower-case base32
// without padding. Certificates are self-signed and regenerated at every
// start; what is authenticated is the key, not a certificate chain: TLS 1.3's
// CertificateVerify proves that the other side holds the private key of the
// public key in its certificate.
//
// The package starts no goroutines.
package identity

import (
	"bytes"
	"crypto/ed25519"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base32"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"math/big"
	"os"
	"path/filepath"
	"syscall"
	"time"

	"github.com/antnode/antnode/internal/boundedfile"
)

// PeerIDLen is the length in bytes of a peer ID.
const PeerIDLen = ed25519.PublicKeySize

// PeerID identifies a node: its Ed25519 public key.
type PeerID [PeerIDLen]byte

var b32 = base32.StdEncoding.WithPadding(base32.NoPadding)

// String returns the printable form: 52 lower-case base32 characters.
func (id PeerID) String() string {
	var buf [52]byte
	b32.Encode(buf[:], id[:])
	return string(bytes.ToLower(buf[:]))
}

// Short returns the first 10 characters of the printable form, for logs.
func (id PeerID) Short() string { return id.String()[:10] }

// IsZero reports whether id is the zero value (no peer).
func (id PeerID) IsZero() bool { return id == PeerID{} }

// MarshalText implements encoding.TextMarshaler.
func (id PeerID) MarshalText() ([]byte, error) { return []byte(id.String()), nil }

// UnmarshalText implements encoding.TextUnmarshaler.
func (id *PeerID) UnmarshalText(b []byte) error {
	p, err := ParsePeerID(string(b))
	if err != nil {
		return err
	}
	*id = p
	return nil
}

// ErrInvalidPeerID is returned for a string that is not a peer ID.
var ErrInvalidPeerID = errors.New("identity: invalid peer ID")

// ParsePeerID parses the printable form of a peer ID.
func ParsePeerID(s string) (PeerID, error) {
	var id PeerID
	if len(s) != 52 {
		return id, fmt.Errorf("%w: want 52 base32 characters, got %d", ErrInvalidPeerID, len(s))
	}
	n, err := b32.Decode(id[:], bytes.ToUpper([]byte(s)))
	if err != nil || n != PeerIDLen {
		return PeerID{}, fmt.Errorf("%w: %q is not base32", ErrInvalidPeerID, s)
	}
	if id.String() != string(bytes.ToLower([]byte(s))) { // non-canonical trailing bits
		return PeerID{}, fmt.Errorf("%w: %q is not canonical", ErrInvalidPeerID, s)
	}
	return id, nil
}

// PeerIDFromPublicKey returns the peer ID of an Ed25519 public key.
func PeerIDFromPublicKey(pub ed25519.PublicKey) (PeerID, error) {
	var id PeerID
	if len(pub) != ed25519.PublicKeySize {
		return id, fmt.Errorf("%w: public key has %d bytes", ErrInvalidPeerID, len(pub))
	}
	copy(id[:], pub)
	return id, nil
}

// Identity is a node's key pair and its TLS certificate.
type Identity struct {
	key  ed25519.PrivateKey
	id   PeerID
	cert tls.Certificate
}

// ID returns the node's peer ID.
func (i *Identity) ID() PeerID { return i.id }

// Generate creates a fresh, unsaved identity (for one-shot commands and tests).
func Generate() (*Identity, error) {
	_, key, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("identity: generate key: %w", err)
	}
	return FromKey(key)
}

// FromKey builds an identity from an existing private key.
func FromKey(key ed25519.PrivateKey) (*Identity, error) {
	if len(key) != ed25519.PrivateKeySize {
		return nil, fmt.Errorf("%w: private key has %d bytes", ErrMalformedKey, len(key))
	}
	id, err := PeerIDFromPublicKey(key.Public().(ed25519.PublicKey))
	if err != nil {
		return nil, err
	}
	cert, err := selfSigned(key)
	if err != nil {
		return nil, err
	}
	return &Identity{key: key, id: id, cert: cert}, nil
}

func selfSigned(key ed25519.PrivateKey) (tls.Certificate, error) {
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 62))
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("identity: certificate serial: %w", err)
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: "antnode"},
		// Validity is not checked by antnode (the key is what is
		// authenticated); a wide window keeps other TLS stacks content.
		NotBefore:   now.Add(-24 * time.Hour),
		NotAfter:    now.Add(10 * 365 * 24 * time.Hour),
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("identity: create certificate: %w", err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}, nil
}

// DeriveKey derives a 32-byte secret for label from the node's private
// key (HMAC-SHA256 of the label under the key's seed): stable across
// restarts, different per label, and revealing nothing of the key.
func (i *Identity) DeriveKey(label string) [32]byte {
	mac := hmac.New(sha256.New, i.key.Seed())
	mac.Write([]byte("antnode derive: " + label))
	var out [32]byte
	copy(out[:], mac.Sum(nil))
	return out
}

// ErrMalformedKey is returned when a key file does not hold an Ed25519
// private key.
var ErrMalformedKey = errors.New("identity: malformed key")

// ErrNoKeyDir is returned by LoadOrCreate when the key file is missing and
// so is the directory it would be created in.
var ErrNoKeyDir = errors.New("identity: the key file's directory does not exist")

const pemType = "PRIVATE KEY"

// LoadOrCreate reads the key at path, or creates a new one there (mode 0600,
// parent directory created with mode 0700) if the file does not exist.
// created reports whether a new key was written.
func LoadOrCreate(path string) (id *Identity, created bool, err error) {
	b, err := boundedfile.Read(path, boundedfile.MaxKey)
	switch {
	case err == nil:
		id, err := Parse(b)
		if err != nil {
			return nil, false, fmt.Errorf("identity: key file %s: %w", path, err)
		}
		return id, false, nil
	case errors.Is(err, syscall.ENOTDIR):
		return nil, false, fmt.Errorf("%w: %s is not a directory", ErrNoKeyDir, filepath.Dir(path))
	case errors.Is(err, boundedfile.ErrTooLarge):
		return nil, false, fmt.Errorf("%w: %w", ErrMalformedKey, err)
	case !errors.Is(err, fs.ErrNotExist):
		return nil, false, fmt.Errorf("identity: read key file: %w", err)
	}
	id, err = Generate()
	if err != nil {
		return nil, false, err
	}
	if err := id.save(path); err != nil {
		return nil, false, err
	}
	return id, true, nil
}

// Parse decodes a PEM-encoded PKCS#8 Ed25519 private key.
func Parse(b []byte) (*Identity, error) {
	blk, rest := pem.Decode(b)
	if blk == nil {
		return nil, fmt.Errorf("%w: no PEM block", ErrMalformedKey)
	}
	if blk.Type != pemType {
		return nil, fmt.Errorf("%w: PEM block is %q, want %q", ErrMalformedKey, blk.Type, pemType)
	}
	if len(bytes.TrimSpace(rest)) != 0 {
		return nil, fmt.Errorf("%w: trailing data after the PEM block", ErrMalformedKey)
	}
	k, err := x509.ParsePKCS8PrivateKey(blk.Bytes)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrMalformedKey, err)
	}
	key, ok := k.(ed25519.PrivateKey)
	if !ok {
		return nil, fmt.Errorf("%w: key is %T, want Ed25519", ErrMalformedKey, k)
	}
	return FromKey(key)
}

// Marshal encodes the private key as PEM (PKCS#8).
func (i *Identity) Marshal() ([]byte, error) {
	der, err := x509.MarshalPKCS8PrivateKey(i.key)
	if err != nil {
		return nil, fmt.Errorf("identity: marshal key: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: pemType, Bytes: der}), nil
}

func (i *Identity) save(path string) error {
	b, err := i.Marshal()
	if err != nil {
		return err
	}
	// A missing directory is a mistyped path far more often than a wish
	// for a new tree: never create one.
	if fi, err := os.Stat(filepath.Dir(path)); err != nil || !fi.IsDir() {
		return fmt.Errorf("%w: %s (create it first, or fix --key)", ErrNoKeyDir, filepath.Dir(path))
	}
	// O_EXCL: never overwrite a key another process created meanwhile.
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return fmt.Errorf("identity: create key file: %w", err)
	}
	if _, err := f.Write(b); err != nil {
		f.Close()
		os.Remove(path)
		return fmt.Errorf("identity: write key file: %w", err)
	}
	if err := f.Close(); err != nil {
		os.Remove(path)
		return fmt.Errorf("identity: write key file: %w", err)
	}
	return nil
}
