package service

import (
	"errors"
	"fmt"
	"io"
	"strconv"

	"github.com/quic-go/quic-go"
)

// The stream header, sent by the side that opens a stream before any of
// its own bytes:
//
//	"ANTS" version(1) length(1) name(length)
//
// The accepting side answers with one status byte (statusAccepted) before
// any of its bytes, or refuses the stream: it resets both directions with
// a Code as the QUIC stream error code, so the opener reads the code as a
// *RefusedError.
var headerMagic = [4]byte{'A', 'N', 'T', 'S'}

const (
	headerVersion = 1
	// MaxNameLen is the longest service name.
	MaxNameLen     = 64
	statusAccepted = 0
)

// ErrBadHeader is returned for a stream that did not start with a valid
// service header.
var ErrBadHeader = errors.New("service: bad stream header")

// ErrBadName is returned for a service name that is empty, too long or has a character
// outside [A-Za-z0-9._-].
var ErrBadName = errors.New("service: bad service name")

// ValidName checks a service name.
func ValidName(name string) error {
	if name == "" || len(name) > MaxNameLen {
		return fmt.Errorf("%w: %q: want 1 to %d characters", ErrBadName, name, MaxNameLen)
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '_' || c == '-') {
			return fmt.Errorf("%w: %q: character %q", ErrBadName, name, c)
		}
	}
	return nil
}

// AppendHeader appends the header that opens a stream to name.
func AppendHeader(b []byte, name string) ([]byte, error) {
	if err := ValidName(name); err != nil {
		return b, err
	}
	b = append(b, headerMagic[:]...)
	b = append(b, headerVersion, byte(len(name)))
	return append(b, name...), nil
}

// ReadHeader reads a stream header from r, exactly: it reads no byte past
// the header, so what follows is the service's.
func ReadHeader(r io.Reader) (string, error) {
	var fixed [6]byte
	if _, err := io.ReadFull(r, fixed[:]); err != nil {
		return "", fmt.Errorf("service: read header: %w", err)
	}
	if [4]byte(fixed[:4]) != headerMagic {
		return "", fmt.Errorf("%w: magic %q", ErrBadHeader, fixed[:4])
	}
	if fixed[4] != headerVersion {
		return "", fmt.Errorf("%w: version %d", ErrBadHeader, fixed[4])
	}
	n := int(fixed[5])
	if n == 0 || n > MaxNameLen {
		return "", fmt.Errorf("%w: name length %d", ErrBadHeader, n)
	}
	name := make([]byte, n)
	if _, err := io.ReadFull(r, name); err != nil {
		return "", fmt.Errorf("service: read header: %w", err)
	}
	if err := ValidName(string(name)); err != nil {
		return "", fmt.Errorf("%w: %w", ErrBadHeader, err)
	}
	return string(name), nil
}

// Code is why a stream was refused or reset: a QUIC stream error code.
type Code quic.StreamErrorCode

// Codes. The refusals (CodeUnknownService .. CodeStreamLimit) are sent
// instead of the status byte; the others end a stream that was accepted.
const (
	CodeUnknownService    Code = 0x100 // no service of that name
	CodeNotAllowed        Code = 0x101 // the peer is not on the service's allow list
	CodeTargetUnreachable Code = 0x102 // the service's local target refused or did not answer
	CodeStreamLimit       Code = 0x103 // the peer has as many streams open as it may
	CodeBadHeader         Code = 0x104 // the stream did not start with a valid header
	CodeReset             Code = 0x110 // the other end was reset (a TCP RST)
	CodeIdle              Code = 0x111 // nothing moved for the idle timeout
	CodeClosed            Code = 0x112 // the stream was closed before the other side finished
	CodeShutdown          Code = 0x113 // the node or listener is shutting down
)

var codeNames = map[Code]string{
	CodeUnknownService: "unknown_service", CodeNotAllowed: "not_allowed",
	CodeTargetUnreachable: "target_unreachable", CodeStreamLimit: "stream_limit",
	CodeBadHeader: "bad_header", CodeReset: "reset", CodeIdle: "idle_timeout",
	CodeClosed: "closed", CodeShutdown: "shutdown",
}

// String is the code's name, as the CLI, the logs and metrics print it.
func (c Code) String() string {
	if s, ok := codeNames[c]; ok {
		return s
	}
	return "code_0x" + strconv.FormatUint(uint64(c), 16)
}

// Refusal says whether c refuses a stream (rather than ending one).
func (c Code) Refusal() bool { return c >= CodeUnknownService && c <= CodeBadHeader }

// codeOf returns the code of a stream error the peer sent, if it is one
// of this package's.
func codeOf(err error) (Code, bool) {
	var se *quic.StreamError
	if errors.As(err, &se) && se.Remote {
		c := Code(se.ErrorCode)
		if _, ok := codeNames[c]; ok {
			return c, true
		}
	}
	return 0, false
}
