package migration

import (
	"errors"
	"fmt"
	"time"

	"github.com/quic-go/quic-go"
	"github.com/quic-go/quic-go/quicvarint"

	"github.com/antnode/antnode/event"
)

// PathNotice is what the side that moved a connection tells the other:
// the new path, why it moved and how long the move took. On the wire: the
// path byte, the reason byte, and a QUIC varint of microseconds; a notice
// of an older peer ends after the path.
type PathNotice struct {
	Path     event.Path
	Reason   event.Reason
	Duration time.Duration
}

// MaxNotice bounds what a reader takes of one notice.
const MaxNotice = 16

// ErrBadNotice is returned for a path notice that does not parse.
var ErrBadNotice = errors.New("migration: malformed path notice")

// Encode returns the notice's wire form.
func (p PathNotice) Encode() []byte {
	return quicvarint.Append([]byte{byte(p.Path), byte(p.Reason)}, uint64(p.Duration.Microseconds()))
}

// DecodePathNotice parses a notice; a missing reason or duration is zero,
// an unknown reason is none.
func DecodePathNotice(b []byte) (PathNotice, error) {
	if len(b) == 0 {
		return PathNotice{}, ErrBadNotice
	}
	p := PathNotice{Path: event.Path(b[0])}
	if p.Path != event.PathDirect && p.Path != event.PathRelay {
		return PathNotice{}, ErrBadNotice
	}
	if len(b) == 1 {
		return p, nil
	}
	if r := event.Reason(b[1]); int(r) < event.NumReasons {
		p.Reason = r
	}
	if len(b) > 2 {
		us, _, err := quicvarint.Parse(b[2:])
		if err != nil || us > uint64(time.Hour/time.Microsecond) {
			return PathNotice{}, ErrBadNotice
		}
		p.Duration = time.Duration(us) * time.Microsecond
	}
	return p, nil
}

// Notices are one-way messages between the two ends of a connection, one
// per unidirectional stream: a type byte and its payload.
const (
	NoticeNominate byte = 'N' // the dialler keeps this connection: its path byte (older peers: none)
	NoticePath     byte = 'P' // the dialler moved the connection: a PathNotice
	NoticePing     byte = 'K' // a keepalive: no payload, nothing to do
)

// SendNotice sends one notice of type typ on a stream of its own.
func SendNotice(qc *quic.Conn, typ byte, payload ...byte) error {
	str, err := qc.OpenUniStream()
	if err != nil {
		return fmt.Errorf("migration: notice: %w", err)
	}
	if _, err := str.Write(append([]byte{typ}, payload...)); err != nil {
		return fmt.Errorf("migration: notice: %w", err)
	}
	return str.Close()
}
