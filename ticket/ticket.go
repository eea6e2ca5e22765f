// Package ticket is a peer's ticket: one copy-paste-safe string that names
// a peer and its home bootstraps, so that anyone holding it can reach the
// peer without sharing a bootstrap with it beforehand.
//
// # Format
//
// A ticket is the prefix "antnode1" (the "1" is the format's version, and
// no base32 character, so the prefix never blends into the body)
// followed by lower-case base32 (RFC 4648 alphabet, no padding) of a
// binary body:
//
//	peer ID (32 bytes)
//	bootstrap count (1 byte, at most MaxBootstraps)
//	per bootstrap: its peer ID (32), address family (1: 4 or 6),
//	               address (4 or 16), port (2, big-endian)
//	checksum (4 bytes): the first bytes of SHA-256 of the prefix and
//	                    everything above
//
// The string has only lower-case letters and digits: shells, URLs, chat
// clients and double-click selection leave it whole. Parse accepts upper
// case too (some tools upper-case what they copy) and surrounding white
// space; String is the canonical form. A ticket with one IPv4 bootstrap has 130
// characters; with MaxBootstraps, at most MaxLen.
package ticket

import (
	"bytes"
	"crypto/sha256"
	"encoding/base32"
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"strings"

	"github.com/antnode/antnode/identity"
)

const (
	// Prefix starts every ticket, whatever its version.
	Prefix = "antnode"
	// Version is the format's version, the character after Prefix.
	Version = '1'
	// MaxBootstraps bounds the home bootstraps a ticket names.
	MaxBootstraps = 8
	// MaxLen is the length of the longest ticket: MaxBootstraps IPv6
	// bootstraps.
	MaxLen = len(Prefix) + 1 + (maxBody*8+4)/5

	checksumLen = 4
	maxEntry    = identity.PeerIDLen + 1 + 16 + 2
	maxBody     = identity.PeerIDLen + 1 + MaxBootstraps*maxEntry + checksumLen
)

var b32 = base32.StdEncoding.WithPadding(base32.NoPadding)

// Errors of Parse and New; every error they return matches ErrInvalid.
var (
	// ErrInvalid: the string or the values are not a valid ticket.
	ErrInvalid = errors.New("ticket: invalid")
	// ErrForeign: the string is not an antnode ticket at all.
	ErrForeign = fmt.Errorf("%w: not an antnode ticket (want %s%c...)", ErrInvalid, Prefix, Version)
	// ErrVersion: an antnode ticket of a format this build does not read.
	ErrVersion = fmt.Errorf("%w: unsupported ticket version", ErrInvalid)
	// ErrChecksum: the ticket was altered or cut (a character lost or
	// changed in copying).
	ErrChecksum = fmt.Errorf("%w: checksum mismatch (altered or cut while copying?)", ErrInvalid)
	// ErrTruncated: the body ends before its fields do.
	ErrTruncated = fmt.Errorf("%w: truncated", ErrInvalid)
)

// Bootstrap is one home bootstrap of a ticket's peer: its address and the
// key it must present.
type Bootstrap struct {
	ID   identity.PeerID
	Addr netip.AddrPort
}

// String returns "PEERID@HOST:PORT".
func (b Bootstrap) String() string { return b.ID.String() + "@" + b.Addr.String() }

// Ticket names a peer and its home bootstraps. The zero value is not a
// valid ticket; build one with New or Parse.
type Ticket struct {
	// Peer is the peer's ID.
	Peer identity.PeerID
	// Bootstraps are the peer's home bootstraps, each with its key (at
	// most MaxBootstraps; may be empty: the ticket then says no more
	// than the peer ID).
	Bootstraps []Bootstrap
}

// New returns the ticket of peer with its home bootstraps, after checking
// them: a peer and every bootstrap's ID set, unicast addresses with a
// port, no address twice, at most MaxBootstraps.
func New(peer identity.PeerID, bootstraps []Bootstrap) (Ticket, error) {
	t := Ticket{Peer: peer}
	for _, b := range bootstraps {
		t.Bootstraps = append(t.Bootstraps, Bootstrap{ID: b.ID, Addr: netip.AddrPortFrom(b.Addr.Addr().Unmap(), b.Addr.Port())})
	}
	if err := t.check(); err != nil {
		return Ticket{}, err
	}
	return t, nil
}

// check reports what makes t invalid.
func (t Ticket) check() error {
	if t.Peer.IsZero() {
		return fmt.Errorf("%w: no peer ID", ErrInvalid)
	}
	if len(t.Bootstraps) > MaxBootstraps {
		return fmt.Errorf("%w: %d bootstraps, at most %d", ErrInvalid, len(t.Bootstraps), MaxBootstraps)
	}
	for i, b := range t.Bootstraps {
		a := b.Addr.Addr()
		switch {
		case b.ID.IsZero():
			return fmt.Errorf("%w: bootstrap %d has no peer ID", ErrInvalid, i)
		case !a.IsValid() || a.Zone() != "" || a.IsUnspecified() || a.IsMulticast() || a.Is4In6():
			return fmt.Errorf("%w: bootstrap %d: %s is not a unicast address", ErrInvalid, i, a)
		case b.Addr.Port() == 0:
			return fmt.Errorf("%w: bootstrap %d has port 0", ErrInvalid, i)
		}
		for _, o := range t.Bootstraps[:i] {
			if o.Addr == b.Addr {
				return fmt.Errorf("%w: bootstrap %s named twice", ErrInvalid, b.Addr)
			}
		}
	}
	return nil
}

// String returns the ticket's canonical form (see the package comment).
func (t Ticket) String() string {
	body := make([]byte, 0, maxBody)
	body = append(body, t.Peer[:]...)
	body = append(body, byte(len(t.Bootstraps)))
	for _, b := range t.Bootstraps {
		body = append(body, b.ID[:]...)
		a := b.Addr.Addr()
		if a.Is4() {
			body = append(body, 4)
		} else {
			body = append(body, 6)
		}
		body = append(body, a.AsSlice()...)
		body = binary.BigEndian.AppendUint16(body, b.Addr.Port())
	}
	body = append(body, checksum(body)...)
	return Prefix + string(Version) + strings.ToLower(b32.EncodeToString(body))
}

// MarshalText implements encoding.TextMarshaler.
func (t Ticket) MarshalText() ([]byte, error) { return []byte(t.String()), nil }

// UnmarshalText implements encoding.TextUnmarshaler.
func (t *Ticket) UnmarshalText(b []byte) error {
	p, err := Parse(string(b))
	if err != nil {
		return err
	}
	*t = p
	return nil
}

// Equal reports whether t and o name the same peer and bootstraps, in the
// same order.
func (t Ticket) Equal(o Ticket) bool {
	if t.Peer != o.Peer || len(t.Bootstraps) != len(o.Bootstraps) {
		return false
	}
	for i := range t.Bootstraps {
		if t.Bootstraps[i] != o.Bootstraps[i] {
			return false
		}
	}
	return true
}

func checksum(body []byte) []byte {
	h := sha256.New()
	h.Write([]byte{'a', 'n', 't', 'n', 'o', 'd', 'e', Version})
	h.Write(body)
	return h.Sum(nil)[:checksumLen]
}

// Looks reports whether s has a ticket's prefix: whether it is meant as a
// ticket (and Parse says what is wrong with it) rather than, say, a peer
// ID (whose 52 characters never hold a ticket).
func Looks(s string) bool {
	s = strings.TrimSpace(s)
	return len(s) > len(Prefix) && strings.EqualFold(s[:len(Prefix)], Prefix) && len(s) != 52
}

// Parse parses a ticket. Its errors are one line, match ErrInvalid and
// say what is wrong: a foreign string (ErrForeign), another version
// (ErrVersion), a cut one (ErrTruncated), an altered one (ErrChecksum).
func Parse(s string) (Ticket, error) {
	s = strings.ToLower(strings.TrimSpace(s))
	if len(s) > MaxLen {
		return Ticket{}, fmt.Errorf("%w: %d characters, at most %d", ErrInvalid, len(s), MaxLen)
	}
	rest, ok := strings.CutPrefix(s, Prefix)
	switch {
	case !ok || rest == "":
		return Ticket{}, ErrForeign
	case rest[0] >= '0' && rest[0] <= '9' && rest[0] != Version:
		return Ticket{}, fmt.Errorf("%w %q (this build reads %c)", ErrVersion, rest[0], Version)
	case rest[0] != Version:
		return Ticket{}, ErrForeign
	}
	enc := strings.ToUpper(rest[1:])
	body, err := b32.DecodeString(enc)
	if err != nil {
		var ce base32.CorruptInputError
		if errors.As(err, &ce) {
			return Ticket{}, fmt.Errorf("%w: not base32 at character %d", ErrInvalid, len(Prefix)+1+int(ce))
		}
		return Ticket{}, fmt.Errorf("%w: not base32", ErrInvalid)
	}
	if b32.EncodeToString(body) != enc {
		// Trailing bits set, or a length no byte count encodes to: a
		// character lost or added.
		return Ticket{}, fmt.Errorf("%w: not canonical base32 (a character lost or added?)", ErrInvalid)
	}
	if len(body) < identity.PeerIDLen+1+checksumLen {
		return Ticket{}, ErrTruncated
	}
	payload, sum := body[:len(body)-checksumLen], body[len(body)-checksumLen:]
	if !bytes.Equal(checksum(payload), sum) {
		return Ticket{}, ErrChecksum
	}
	return decode(payload)
}

// decode reads a checksummed body.
func decode(b []byte) (Ticket, error) {
	var t Ticket
	copy(t.Peer[:], b)
	b = b[identity.PeerIDLen:]
	n := int(b[0])
	b = b[1:]
	if n > MaxBootstraps {
		return Ticket{}, fmt.Errorf("%w: %d bootstraps, at most %d", ErrInvalid, n, MaxBootstraps)
	}
	for i := range n {
		if len(b) < identity.PeerIDLen+1 {
			return Ticket{}, fmt.Errorf("%w (bootstrap %d)", ErrTruncated, i)
		}
		var bs Bootstrap
		copy(bs.ID[:], b)
		fam := b[identity.PeerIDLen]
		b = b[identity.PeerIDLen+1:]
		size := map[byte]int{4: 4, 6: 16}[fam]
		if size == 0 {
			return Ticket{}, fmt.Errorf("%w: bootstrap %d: unknown address family %d", ErrInvalid, i, fam)
		}
		if len(b) < size+2 {
			return Ticket{}, fmt.Errorf("%w (bootstrap %d)", ErrTruncated, i)
		}
		a, _ := netip.AddrFromSlice(b[:size])
		bs.Addr = netip.AddrPortFrom(a, binary.BigEndian.Uint16(b[size:]))
		b = b[size+2:]
		t.Bootstraps = append(t.Bootstraps, bs)
	}
	if len(b) != 0 {
		return Ticket{}, fmt.Errorf("%w: %d bytes after the last bootstrap", ErrInvalid, len(b))
	}
	if err := t.check(); err != nil {
		return Ticket{}, err
	}
	return t, nil
}
