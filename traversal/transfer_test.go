package traversal

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"testing"
	"time"

	"github.com/antnode/antnode/internal/testkit"

	"github.com/quic-go/quic-go"

	"github.com/antnode/antnode/event"
	"github.com/antnode/antnode/service"
)

func header(magic string, version byte, size uint64) [13]byte {
	var h [13]byte
	copy(h[:4], magic)
	h[4] = version
	binary.BigEndian.PutUint64(h[5:], size)
	return h
}

func TestParseTransferHeader(t *testing.T) {
	tests := []struct {
		name string
		hdr  [13]byte
		want int64
		err  error
	}{
		{"ok", header("ANTX", 1, 4096), 4096, nil},
		{"empty transfer", header("ANTX", 1, 0), 0, nil},
		{"at limit", header("ANTX", 1, 1<<20), 1 << 20, nil},
		{"over limit", header("ANTX", 1, 1<<20+1), 0, ErrTransferTooLarge},
		{"negative as int64", header("ANTX", 1, 1<<63), 0, ErrTransferTooLarge},
		{"bad magic", header("HTTP", 1, 1), 0, errBadTransferHeader},
		{"bad version", header("ANTX", 2, 1), 0, errBadTransferHeader},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := parseTransferHeader(tc.hdr, 1<<20)
			if !errors.Is(err, tc.err) || (err == nil && got != tc.want) {
				t.Fatalf("got %d, %v; want %d, %v", got, err, tc.want, tc.err)
			}
		})
	}
}

func FuzzParseTransferHeader(f *testing.F) {
	h := header("ANTX", 1, 10)
	f.Add(h[:], int64(100))
	f.Fuzz(func(t *testing.T, b []byte, limit int64) {
		if len(b) < 13 || limit < 0 {
			return
		}
		size, err := parseTransferHeader([13]byte(b[:13]), limit)
		if err == nil && (size < 0 || size > limit) {
			t.Fatalf("accepted size %d with limit %d", size, limit)
		}
	})
}

// loopbackStream returns a stream to the transfer service over a real
// authenticated QUIC connection on loopback, whose accepting side's
// service mux hands it to serve.
func loopbackStream(t *testing.T, serve func(*service.Conn)) *service.Conn {
	t.Helper()
	server, client := testkit.Identity(t), testkit.Identity(t)
	ln, err := testkit.Endpoint(t).Transport().Listen(server.ServerTLS(PeerALPN), &quic.Config{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	mux, err := service.New(service.Config{Local: server.ID()})
	if err != nil {
		t.Fatal(err)
	}
	err = mux.Handle(TransferService, service.AllowAny, "", func(r *service.Request) {
		if s, err := r.Accept(); err == nil {
			serve(s)
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		qc, err := ln.Accept(t.Context())
		if err != nil {
			return
		}
		defer qc.CloseWithError(0, "")
		for range 4 { // the tests open one stream each
			str, err := qc.AcceptStream(t.Context())
			if err != nil {
				return
			}
			mux.Serve(t.Context(), client.ID(), str)
		}
	}()
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	qc, err := testkit.Endpoint(t).Transport().Dial(ctx, net.UDPAddrFromAddrPort(ln.Addr().(*net.UDPAddr).AddrPort()),
		client.ClientTLS(server.ID(), PeerALPN), &quic.Config{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		qc.CloseWithError(0, "")
		<-done
	})
	cmux, err := service.New(service.Config{Local: client.ID()})
	if err != nil {
		t.Fatal(err)
	}
	str, err := cmux.Open(ctx, qc, server.ID(), TransferService)
	if err != nil {
		t.Fatal(err)
	}
	return str
}

// lyingReceiver reads a transfer like receiveVerified but answers with
// what reply makes of the true digest and count.
func lyingReceiver(reply func(digest [32]byte, n int64) []byte) func(*service.Conn) {
	return func(str *service.Conn) {
		defer str.Close()
		var hdr [13]byte
		if _, err := io.ReadFull(str, hdr[:]); err != nil {
			return
		}
		size, err := parseTransferHeader(hdr, 1<<20)
		if err != nil {
			return
		}
		h := sha256.New()
		n, _ := io.CopyN(h, str, size)
		str.Write(reply([32]byte(h.Sum(nil)), n))
		str.CloseWrite()
	}
}

func encodeReply(digest [32]byte, n int64) []byte {
	return binary.BigEndian.AppendUint64(digest[:], uint64(n))
}

// TestSendVerifiedDetectsAWrongReply: over a real QUIC connection, a
// receiver whose digest or count differs from what was sent makes the
// sender fail with ErrTransferMismatch; a cut reply is an error but not a
// mismatch; a receiver that refuses the size is ErrTransferTooLarge
// whenever the sender notices; an honest receiver verifies.
func TestSendVerifiedDetectsAWrongReply(t *testing.T) {
	tests := []struct {
		name     string
		size     int64
		receiver func(*service.Conn)
		want     error // nil: verified
	}{
		{"honest receiver", 100_000, func(str *service.Conn) { receiveVerified(str, 1<<20, 5*time.Second) }, nil},
		{"honest receiver, empty", 0, func(str *service.Conn) { receiveVerified(str, 1<<20, 5*time.Second) }, nil},
		{"digest bit flipped", 100_000, lyingReceiver(func(d [32]byte, n int64) []byte {
			d[31] ^= 1
			return encodeReply(d, n)
		}), ErrTransferMismatch},
		{"digest of nothing", 100_000, lyingReceiver(func(_ [32]byte, n int64) []byte {
			return encodeReply(sha256.Sum256(nil), n)
		}), ErrTransferMismatch},
		{"count one short", 100_000, lyingReceiver(func(d [32]byte, n int64) []byte { return encodeReply(d, n-1) }), ErrTransferMismatch},
		{"count one over", 100_000, lyingReceiver(func(d [32]byte, n int64) []byte { return encodeReply(d, n+1) }), ErrTransferMismatch},
		{"empty, count one", 0, lyingReceiver(func(d [32]byte, n int64) []byte { return encodeReply(d, n+1) }), ErrTransferMismatch},
		{"empty, zero digest", 0, lyingReceiver(func(_ [32]byte, n int64) []byte { return encodeReply([32]byte{}, n) }), ErrTransferMismatch},
		{"reply cut short", 100_000, lyingReceiver(func(d [32]byte, n int64) []byte { return encodeReply(d, n)[:20] }), io.ErrUnexpectedEOF},
		// The receiver stops the stream when it reads the header; the
		// sender sees that while writing (a large transfer) or when it
		// reads the reply (a small one).
		{"size refused while writing", 8 << 20, func(str *service.Conn) { receiveVerified(str, 1000, 5*time.Second) }, ErrTransferTooLarge},
		{"size refused, one over", 1001, func(str *service.Conn) { receiveVerified(str, 1000, 5*time.Second) }, ErrTransferTooLarge},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			str := loopbackStream(t, tc.receiver)
			ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
			defer cancel()
			res, err := sendVerified(ctx, str, tc.size)
			if tc.want == nil {
				if err != nil || res.Bytes != tc.size {
					t.Fatalf("got %+v, %v; want %d bytes verified", res, err, tc.size)
				}
				return
			}
			if !errors.Is(err, tc.want) || res != (TransferResult{}) {
				t.Fatalf("got %+v, %v; want %v", res, err, tc.want)
			}
			mismatch := errors.Is(err, ErrTransferMismatch)
			if mismatch != errors.Is(tc.want, ErrTransferMismatch) || mismatch != (Reason(err) == event.ReasonTransferMismatch) {
				t.Fatalf("%v: mismatch %v, reason %s", err, mismatch, Reason(err))
			}
		})
	}
}
