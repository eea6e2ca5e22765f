package traversal

import (
	"bufio"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	mrand "math/rand/v2"
	"time"

	"github.com/quic-go/quic-go"

	"github.com/antnode/antnode/service"
)

// The verified-transfer protocol on a peer stream:
//
//	sender:   "ANTX" version(1) size(8, big endian) then size bytes, then FIN
//	receiver: sha256(32) count(8, big endian) of what it read, then FIN
//
// The sender compares the digest with its own. Data is pseudo-random
// (ChaCha8 from a random seed), so no content is predictable.
var transferMagic = [4]byte{'A', 'N', 'T', 'X'}

const transferVersion = 1

// Transfer errors.
var (
	// ErrTransferMismatch: the receiver's digest or count differs from
	// what was sent.
	ErrTransferMismatch = errors.New("traversal: transfer not verified: digest mismatch")
	// ErrTransferTooLarge: the receiver refuses the announced size.
	ErrTransferTooLarge  = errors.New("traversal: transfer larger than the receiver accepts")
	errBadTransferHeader = errors.New("traversal: bad transfer header")
)

// TransferResult is the outcome of a verified transfer.
type TransferResult struct {
	Bytes    int64
	Duration time.Duration
	Mbps     float64
}

// sendVerified sends size pseudo-random bytes on str, a stream opened to
// the peer's transfer service, and waits for the receiver's digest. It
// closes str.
func sendVerified(ctx context.Context, str *service.Conn, size int64) (TransferResult, error) {
	defer str.Close()
	stop := context.AfterFunc(ctx, func() { str.Abort(1) })
	defer stop()
	start := time.Now()
	var hdr [13]byte
	copy(hdr[:4], transferMagic[:])
	hdr[4] = transferVersion
	binary.BigEndian.PutUint64(hdr[5:], uint64(size))
	if _, err := str.Write(hdr[:]); err != nil {
		return TransferResult{}, sendErr(ctx, err)
	}
	var seed [32]byte
	rand.Read(seed[:])
	src := mrand.NewChaCha8(seed)
	h := sha256.New()
	buf := make([]byte, 64<<10)
	for left := size; left > 0; {
		n := int(min(int64(len(buf)), left))
		src.Read(buf[:n])
		h.Write(buf[:n])
		if _, err := str.Write(buf[:n]); err != nil {
			return TransferResult{}, sendErr(ctx, err)
		}
		left -= int64(n)
	}
	// The receiver stops reading once it has the announced bytes: its
	// STOP_SENDING may beat this side's FIN, and then the close fails
	// although everything was delivered. The digest decides.
	closeErr := str.CloseWrite()
	var reply [40]byte
	if _, err := io.ReadFull(str, reply[:]); err != nil {
		// A reply cut short says more than the close: the receiver
		// answered, wrongly.
		if closeErr != nil && !errors.Is(err, io.ErrUnexpectedEOF) {
			return TransferResult{}, fmt.Errorf("traversal: transfer: %w", closeErr)
		}
		if size > 0 {
			var se *quic.StreamError
			if errors.As(err, &se) && se.ErrorCode == streamTooLarge {
				return TransferResult{}, ErrTransferTooLarge
			}
		}
		return TransferResult{}, fmt.Errorf("traversal: transfer reply: %w", ctxErr(ctx, err))
	}
	d := time.Since(start)
	var want [32]byte
	h.Sum(want[:0])
	if [32]byte(reply[:32]) != want || int64(binary.BigEndian.Uint64(reply[32:])) != size {
		return TransferResult{}, ErrTransferMismatch
	}
	res := TransferResult{Bytes: size, Duration: d}
	if d > 0 {
		res.Mbps = float64(size) * 8 / d.Seconds() / 1e6
	}
	return res, nil
}

// sendErr is the error of a failed write of a transfer. A receiver that
// refuses the announced size stops the stream with streamTooLarge, which
// the sender of a large transfer sees while it is still writing.
func sendErr(ctx context.Context, err error) error {
	var se *quic.StreamError
	if errors.As(err, &se) && se.Remote && se.ErrorCode == streamTooLarge {
		return ErrTransferTooLarge
	}
	return fmt.Errorf("traversal: transfer: %w", ctxErr(ctx, err))
}

func ctxErr(ctx context.Context, err error) error {
	if ctx.Err() != nil {
		return context.Cause(ctx)
	}
	return err
}

const streamTooLarge quic.StreamErrorCode = 0x10

// parseTransferHeader decodes a transfer header and checks the announced
// size against maxSize.
func parseTransferHeader(hdr [13]byte, maxSize int64) (int64, error) {
	if [4]byte(hdr[:4]) != transferMagic || hdr[4] != transferVersion {
		return 0, errBadTransferHeader
	}
	size := int64(binary.BigEndian.Uint64(hdr[5:]))
	if size < 0 || size > maxSize {
		return 0, fmt.Errorf("%w: %d bytes announced, limit %d", ErrTransferTooLarge, size, maxSize)
	}
	return size, nil
}

// receiveVerified serves one transfer stream: it reads the announced bytes,
// hashes them and replies with the digest and count. It closes str.
func receiveVerified(str *service.Conn, maxSize int64, idle time.Duration) (int64, error) {
	defer str.Close()
	br := bufio.NewReaderSize(str, 64<<10)
	str.SetReadDeadline(time.Now().Add(idle))
	var hdr [13]byte
	if _, err := io.ReadFull(br, hdr[:]); err != nil {
		str.Abort(1)
		return 0, fmt.Errorf("traversal: transfer header: %w", err)
	}
	size, err := parseTransferHeader(hdr, maxSize)
	if err != nil {
		code := quic.StreamErrorCode(1)
		if errors.Is(err, ErrTransferTooLarge) {
			code = streamTooLarge
		}
		str.Abort(code)
		return 0, err
	}
	h := sha256.New()
	buf := make([]byte, 64<<10)
	var n int64
	for n < size {
		// The deadline moves with progress: a slow but live sender is
		// fine, a stalled one is dropped.
		str.SetReadDeadline(time.Now().Add(idle))
		k, err := br.Read(buf[:min(int64(len(buf)), size-n)])
		h.Write(buf[:k])
		n += int64(k)
		if err != nil {
			if n == size && errors.Is(err, io.EOF) {
				break
			}
			str.Abort(1)
			return n, fmt.Errorf("traversal: transfer body: %w", err)
		}
	}
	var reply [40]byte
	h.Sum(reply[:0])
	binary.BigEndian.PutUint64(reply[32:], uint64(n))
	str.SetWriteDeadline(time.Now().Add(idle))
	if _, err := str.Write(reply[:]); err != nil {
		return n, fmt.Errorf("traversal: transfer reply: %w", err)
	}
	if err := str.CloseWrite(); err != nil {
		return n, fmt.Errorf("traversal: transfer reply: %w", err)
	}
	return n, nil
}
