package identity

import (
	"crypto/ed25519"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"strings"
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

// verifier checks the other side of a handshake: exactly one self-signed
// Ed25519 certificate, holding expect's key unless expect is zero. It is
// a VerifyConnection callback, which crypto/tls runs on every handshake,
// resumed ones too (VerifyPeerCertificate is not run on a resumption): a
// resumed session's certificate comes from the session ticket, which the
// server sealed with its ticket key after verifying that certificate in
// a full handshake, so its self-signature is not checked again; the peer
// ID is.
func verifier(expect PeerID) func(tls.ConnectionState) error {
	return func(cs tls.ConnectionState) error {
		var got PeerID
		var err error
		if cs.DidResume {
			got, err = peerFromCerts(cs.PeerCertificates)
		} else {
			got, err = peerFromRaw(rawCerts(cs.PeerCertificates))
		}
		if err != nil {
			return err
		}
		if !expect.IsZero() && got != expect {
			return &KeyMismatchError{Want: expect, Got: got}
		}
		return nil
	}
}

// peerFromCerts returns the peer ID of parsed certificates without
// checking their signatures (see verifier).
func peerFromCerts(certs []*x509.Certificate) (PeerID, error) {
	if len(certs) != 1 {
		return PeerID{}, fmt.Errorf("%w: want exactly one certificate, got %d", ErrUnauthenticated, len(certs))
	}
	pub, ok := certs[0].PublicKey.(ed25519.PublicKey)
	if !ok {
		return PeerID{}, fmt.Errorf("%w: certificate key is %T, want Ed25519", ErrUnauthenticated, certs[0].PublicKey)
	}
	return PeerIDFromPublicKey(pub)
}

func rawCerts(certs []*x509.Certificate) [][]byte {
	raw := make([][]byte, len(certs))
	for i, c := range certs {
		raw[i] = c.Raw
	}
	return raw
}

// TicketKey is the key that seals the TLS session tickets of ServerTLS
// for the protocols alpn: derived from the node's key (DeriveKey, as the
// QUIC stateless reset key is), so a restarted node still opens the
// tickets it issued before and its peers resume their sessions; another
// key cannot open them, and each protocol list has its own key, so a
// ticket of one service does not resume a session of another.
func (i *Identity) TicketKey(alpn ...string) [32]byte {
	return i.DeriveKey("tls session ticket: " + strings.Join(alpn, ","))
}

// ServerTLS returns the TLS configuration for accepting connections: the
// client must present an Ed25519 certificate; any key is accepted, and the
// handler learns it with PeerFromState. Session tickets are sealed with
// TicketKey(alpn...), which survives restarts; a resumed session skips
// the certificates and their signatures (the key exchange still runs:
// TLS 1.3 resumption in crypto/tls is psk_dhe_ke).
func (i *Identity) ServerTLS(alpn ...string) *tls.Config {
	c := &tls.Config{
		MinVersion:       tls.VersionTLS13,
		Certificates:     []tls.Certificate{i.cert},
		ClientAuth:       tls.RequireAnyClientCert,
		VerifyConnection: verifier(PeerID{}),
		NextProtos:       alpn,
	}
	c.SetSessionTicketKeys([][32]byte{i.TicketKey(alpn...)})
	return c
}

// ClientTLS returns the TLS configuration for dialling. If expect is not the
// zero PeerID, the handshake fails with a *KeyMismatchError unless the server
// holds exactly that key; a resumed session is held to that too. It keeps
// no sessions: set ClientSessionCache to resume.
func (i *Identity) ClientTLS(expect PeerID, alpn ...string) *tls.Config {
	return &tls.Config{
		MinVersion:         tls.VersionTLS13,
		Certificates:       []tls.Certificate{i.cert},
		InsecureSkipVerify: true, // chains are not used; VerifyConnection checks the key
		VerifyConnection:   verifier(expect),
		NextProtos:         alpn,
		ServerName:         "antnode",
	}
}

// PeerFromState returns the authenticated peer ID of a completed handshake.
// It reads the key from the peer's certificate and checks no signature
// again: crypto/tls has checked the peer's CertificateVerify signature
// with that key (a TLS 1.3 certificate never comes without one), or, on
// a resumption, restored the certificate from a ticket that the server
// sealed after such a check; the configurations of this package have
// also checked the certificate itself (verifier). Checking the
// certificate's self-signature here too would cost an Ed25519
// verification per connection for nothing.
func PeerFromState(cs tls.ConnectionState) (PeerID, error) {
	if !cs.HandshakeComplete {
		return PeerID{}, fmt.Errorf("%w: handshake not complete", ErrUnauthenticated)
	}
	return peerFromCerts(cs.PeerCertificates)
}
