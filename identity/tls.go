package identity

import (
	"crypto/ed25519"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
)

// ErrUnauthenticated is returned when the other side of a handshake presents
// no usable Ed25519 certificate.
var ErrUnauthenticated = errors.New("identity: peer not authenticated")

// KeyMismatchError is returned when the other side of a handshake holds a
// different key than the peer ID that was dialled.
type KeyMismatchError struct {
	Want, Got PeerID
}

func (e *KeyMismatchError) Error() string {
	return fmt.Sprintf("identity: peer key mismatch: want %s, got %s", e.Want.Short(), e.Got.Short())
}

// ErrKeyMismatch matches any *KeyMismatchError with errors.Is.
var ErrKeyMismatch = errors.New("identity: peer key mismatch")

// Is makes errors.Is(err, ErrKeyMismatch) true.
func (e *KeyMismatchError) Is(target error) bool { return target == ErrKeyMismatch }

// peerFromRaw extracts the peer ID from the raw certificates of a handshake.
func peerFromRaw(raw [][]byte) (PeerID, error) {
	if len(raw) != 1 {
		return PeerID{}, fmt.Errorf("%w: want exactly one certificate, got %d", ErrUnauthenticated, len(raw))
	}
	cert, err := x509.ParseCertificate(raw[0])
	if err != nil {
		return PeerID{}, fmt.Errorf("%w: %w", ErrUnauthenticated, err)
	}
	pub, ok := cert.PublicKey.(ed25519.PublicKey)
	if !ok {
		return PeerID{}, fmt.Errorf("%w: certificate key is %T, want Ed25519", ErrUnauthenticated, cert.PublicKey)
	}
	if err := cert.CheckSignature(cert.SignatureAlgorithm, cert.RawTBSCertificate, cert.Signature); err != nil {
		return PeerID{}, fmt.Errorf("%w: certificate is not self-signed by its key: %w", ErrUnauthenticated, err)
	}
	return PeerIDFromPublicKey(pub)
}

func verifier(expect PeerID) func([][]byte, [][]*x509.Certificate) error {
	return func(raw [][]byte, _ [][]*x509.Certificate) error {
		got, err := peerFromRaw(raw)
		if err != nil {
			return err
		}
		if !expect.IsZero() && got != expect {
			return &KeyMismatchError{Want: expect, Got: got}
		}
		return nil
	}
}

// ServerTLS returns the TLS configuration for accepting connections: the
// client must present an Ed25519 certificate; any key is accepted, and the
// handler learns it with PeerFromState.
func (i *Identity) ServerTLS(alpn ...string) *tls.Config {
	return &tls.Config{
		MinVersion:            tls.VersionTLS13,
		Certificates:          []tls.Certificate{i.cert},
		ClientAuth:            tls.RequireAnyClientCert,
		InsecureSkipVerify:    true, // chains are not used; VerifyPeerCertificate checks the key
		VerifyPeerCertificate: verifier(PeerID{}),
		NextProtos:            alpn,
	}
}

// ClientTLS returns the TLS configuration for dialling. If expect is not the
// zero PeerID, the handshake fails with a *KeyMismatchError unless the server
// holds exactly that key.
func (i *Identity) ClientTLS(expect PeerID, alpn ...string) *tls.Config {
	return &tls.Config{
		MinVersion:            tls.VersionTLS13,
		Certificates:          []tls.Certificate{i.cert},
		InsecureSkipVerify:    true, // chains are not used; VerifyPeerCertificate checks the key
		VerifyPeerCertificate: verifier(expect),
		NextProtos:            alpn,
		ServerName:            "antnode",
	}
}

// PeerFromState returns the authenticated peer ID of a completed handshake.
func PeerFromState(cs tls.ConnectionState) (PeerID, error) {
	if !cs.HandshakeComplete {
		return PeerID{}, fmt.Errorf("%w: handshake not complete", ErrUnauthenticated)
	}
	raw := make([][]byte, len(cs.PeerCertificates))
	for i, c := range cs.PeerCertificates {
		raw[i] = c.Raw
	}
	return peerFromRaw(raw)
}
