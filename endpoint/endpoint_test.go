package endpoint

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"os"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/pion/stun/v3"
)

func listen(t *testing.T) *Endpoint {
	t.Helper()
	ep, err := Listen("udp4", "127.0.0.1:0", Config{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ep.Close() })
	return ep
}

// echoBinding answers Binding requests with the source address.
func echoBinding(ep *Endpoint) {
	ep.HandleRequests(func(m *stun.Message, from netip.AddrPort) {
		resp := stun.MustBuild(stun.NewTransactionIDSetter(m.TransactionID), stun.BindingSuccess,
			&stun.XORMappedAddress{IP: from.Addr().AsSlice(), Port: int(from.Port())})
		ep.WriteTo(resp.Raw, from)
	})
}

func TestRoundTripAndDemux(t *testing.T) {
	a, b := listen(t), listen(t)
	echoBinding(b)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	req := stun.MustBuild(stun.TransactionID, stun.BindingRequest)
	resp, rtt, re, err := a.RoundTrip(ctx, req, b.LocalAddr(), nil)
	if err != nil {
		t.Fatal(err)
	}
	var xor stun.XORMappedAddress
	if err := xor.GetFrom(resp.Msg); err != nil {
		t.Fatal(err)
	}
	if xor.Port != int(a.LocalAddr().Port()) || resp.From != b.LocalAddr() || rtt <= 0 || re != 0 {
		t.Fatalf("mapped %v from %v rtt %v retransmits %d", xor, resp.From, rtt, re)
	}
	// Non-STUN garbage and unsolicited responses are counted, not crashes.
	raw, _ := net.DialUDP("udp4", nil, net.UDPAddrFromAddrPort(a.LocalAddr()))
	defer raw.Close()
	raw.Write([]byte{0x01, 0x02, 0x03, 0x04})
	raw.Write(stun.MustBuild(stun.TransactionID, stun.BindingSuccess).Raw)
	deadline := time.Now().Add(2 * time.Second)
	for time.Now().Before(deadline) && (a.Stats().NonSTUN == 0 || a.Stats().STUNUnmatched == 0) {
		time.Sleep(5 * time.Millisecond)
	}
	st := a.Stats()
	if st.NonSTUN != 1 || st.STUNUnmatched != 1 || st.STUNResponses != 1 {
		t.Fatalf("stats %+v", st)
	}
}

func TestRoundTripRetransmitsAndTimesOut(t *testing.T) {
	a, b := listen(t), listen(t) // b has no handler: silence
	ctx, cancel := context.WithTimeout(context.Background(), 120*time.Millisecond)
	defer cancel()
	req := stun.MustBuild(stun.TransactionID, stun.BindingRequest)
	_, _, re, err := a.RoundTrip(ctx, req, b.LocalAddr(), []time.Duration{20 * time.Millisecond})
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("got %v", err)
	}
	if re < 3 {
		t.Fatalf("%d retransmits in 120 ms at 20 ms RTO", re)
	}
	if b.Stats().HandlerAbsent == 0 {
		t.Fatal("requests without a handler were not counted")
	}
}

func TestTransactionBounds(t *testing.T) {
	ep, err := Listen("udp4", "127.0.0.1:0", Config{MaxTransactions: 2})
	if err != nil {
		t.Fatal(err)
	}
	defer ep.Close()
	var ids [3][stun.TransactionIDSize]byte
	for i := range ids {
		ids[i][0] = byte(i + 1)
	}
	_, r1, err := ep.Expect(ids[0])
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := ep.Expect(ids[0]); !errors.Is(err, ErrDuplicateID) {
		t.Fatalf("duplicate: %v", err)
	}
	_, r2, _ := ep.Expect(ids[1])
	if _, _, err := ep.Expect(ids[2]); !errors.Is(err, ErrTooManyTransactions) {
		t.Fatalf("over the bound: %v", err)
	}
	r1()
	r2()
	if _, _, err := ep.Expect(ids[2]); err != nil {
		t.Fatalf("after release: %v", err)
	}
}

func TestCloseIsIdempotent(t *testing.T) {
	ep, err := Listen("udp4", "127.0.0.1:0", Config{})
	if err != nil {
		t.Fatal(err)
	}
	if err := ep.Close(); err != nil {
		t.Fatal(err)
	}
	ep.Close()
	if _, _, err := ep.Expect([stun.TransactionIDSize]byte{1}); !errors.Is(err, ErrClosed) {
		t.Fatalf("after close: %v", err)
	}
}

func TestTransientSend(t *testing.T) {
	wrap := func(errno syscall.Errno) error {
		return &net.OpError{Op: "write", Net: "udp4", Err: os.NewSyscallError("sendmsg", errno)}
	}
	tests := []struct {
		name string
		err  error
		want bool
	}{
		{"network unreachable", wrap(syscall.ENETUNREACH), true},
		{"host unreachable", wrap(syscall.EHOSTUNREACH), true},
		{"source address gone", wrap(syscall.EADDRNOTAVAIL), true},
		{"the packet-info source address gone", wrap(syscall.EINVAL), true},
		{"local firewall", wrap(syscall.EPERM), true},
		{"message too long stays fatal for MTU discovery", wrap(syscall.EMSGSIZE), false},
		{"closed socket", net.ErrClosed, false},
		{"bad descriptor", wrap(syscall.EBADF), false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := transientSend(tt.err); got != tt.want {
				t.Fatalf("transientSend(%v) = %v, want %v", tt.err, got, tt.want)
			}
		})
	}
}

func TestTransientSendIsALoss(t *testing.T) {
	var r router
	quicPkt := []byte{0x40, 1, 2}
	stunPkt := []byte{0x00, 1, 2}
	unreach := &net.OpError{Op: "write", Err: os.NewSyscallError("sendmsg", syscall.ENETUNREACH)}
	if err := r.sent(quicPkt, unreach); err != nil {
		t.Fatalf("QUIC packet: %v, want a silent loss", err)
	}
	if err := r.sent(stunPkt, unreach); !errors.Is(err, syscall.ENETUNREACH) {
		t.Fatalf("STUN packet: %v, want the error back (its caller retries)", err)
	}
	if got := r.lost.Load(); got != 1 {
		t.Fatalf("lost = %d, want 1", got)
	}
}

func TestRetransmitSchedule(t *testing.T) {
	ms := time.Millisecond
	tests := []struct {
		name   string
		rto    time.Duration
		count  int
		maxRTO time.Duration
		want   []time.Duration
	}{
		{"doubling", 100 * ms, 4, 0, []time.Duration{100 * ms, 200 * ms, 400 * ms, 800 * ms}},
		{"capped", 100 * ms, 5, 300 * ms, []time.Duration{100 * ms, 200 * ms, 300 * ms, 300 * ms, 300 * ms}},
		{"one transmission", 500 * ms, 1, 0, []time.Duration{500 * ms}},
		{"count below one is one", 50 * ms, 0, 0, []time.Duration{50 * ms}},
		{"rto below a millisecond", 0, 2, 0, []time.Duration{ms, 2 * ms}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := RetransmitSchedule(tc.rto, tc.count, tc.maxRTO)
			if len(got) != len(tc.want) {
				t.Fatalf("got %v, want %v", got, tc.want)
			}
			for i := range got {
				if got[i] != tc.want[i] {
					t.Fatalf("got %v, want %v", got, tc.want)
				}
			}
		})
	}
}

// TestTransact checks the bounded transaction: an answer after lost
// requests is found by a retransmission, and silence ends with
// ErrNoResponse after exactly the scheduled transmissions.
func TestTransact(t *testing.T) {
	tests := []struct {
		name    string
		drop    int // requests the server ignores before it answers (-1: all)
		sends   int
		wantErr error
		wantRe  int
	}{
		{"answered at once", 0, 4, nil, 0},
		{"first two requests lost", 2, 4, nil, 2},
		{"every request lost", -1, 3, ErrNoResponse, 2},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			a, b := listen(t), listen(t)
			var seen atomic.Int64
			b.HandleRequests(func(m *stun.Message, from netip.AddrPort) {
				n := seen.Add(1)
				if tc.drop < 0 || n <= int64(tc.drop) {
					return
				}
				resp := stun.MustBuild(stun.NewTransactionIDSetter(m.TransactionID), stun.BindingSuccess,
					&stun.XORMappedAddress{IP: from.Addr().AsSlice(), Port: int(from.Port())})
				b.WriteTo(resp.Raw, from)
			})
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			req := stun.MustBuild(stun.TransactionID, stun.BindingRequest)
			_, re, err := a.Transact(ctx, req, b.LocalAddr(), RetransmitSchedule(30*time.Millisecond, tc.sends, 0))
			if !errors.Is(err, tc.wantErr) || (tc.wantErr == nil && err != nil) {
				t.Fatalf("err %v, want %v", err, tc.wantErr)
			}
			if re != tc.wantRe {
				t.Fatalf("%d retransmits, want %d", re, tc.wantRe)
			}
			if tc.wantErr != nil && seen.Load() != int64(tc.sends) {
				t.Fatalf("server saw %d requests, want exactly %d", seen.Load(), tc.sends)
			}
		})
	}
}
