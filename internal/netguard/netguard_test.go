package netguard

import (
	"errors"
	"net"
	"net/netip"
	"os"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/antnode/antnode/internal/testkit"
)

func TestTemporary(t *testing.T) {
	accept := func(e syscall.Errno) error {
		return &net.OpError{Op: "accept", Net: "tcp", Err: os.NewSyscallError("accept4", e)}
	}
	for _, e := range []syscall.Errno{syscall.EMFILE, syscall.ENFILE, syscall.ECONNABORTED, syscall.ENOBUFS, syscall.ENOMEM} {
		if !Temporary(accept(e)) {
			t.Errorf("%v is not temporary", e)
		}
	}
	for _, err := range []error{net.ErrClosed, accept(syscall.EINVAL), errors.New("boom")} {
		if Temporary(err) {
			t.Errorf("%v is temporary", err)
		}
	}
}

// TestCaps: past the per-IP cap and past the total, connections are
// closed as they are accepted (and reported); closing a held one frees
// its place; CloseConns ends all; a closed listener is not accepting.
func TestCaps(t *testing.T) {
	raw, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	refused := map[bool]int{}
	l := New(raw, Config{MaxConns: 3, MaxConnsPerIP: 2, OnRefused: func(_ netip.AddrPort, perIP bool) {
		mu.Lock()
		refused[perIP]++
		mu.Unlock()
	}})
	accepted := make(chan net.Conn, 16)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			accepted <- c
		}
	}()
	dial := func(from string) net.Conn {
		d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(from)}}
		c, err := d.Dial("tcp4", raw.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return c
	}
	count := func(perIP bool) func() bool {
		return func() bool { mu.Lock(); defer mu.Unlock(); return refused[perIP] == 1 }
	}
	dial("127.0.0.1")
	dial("127.0.0.1")
	dial("127.0.0.1")
	testkit.WaitFor(t, 5*time.Second, "the third from one IP refused", count(true))
	dial("127.0.0.2")
	dial("127.0.0.2")
	testkit.WaitFor(t, 5*time.Second, "the fourth in all refused", count(false))
	if l.Conns() != 3 || l.Err() != nil {
		t.Fatalf("%d held (want 3), err %v", l.Conns(), l.Err())
	}
	(<-accepted).Close()
	if l.Conns() != 2 {
		t.Fatalf("%d held after one closed, want 2", l.Conns())
	}
	l.CloseConns()
	if l.Conns() != 0 {
		t.Fatalf("%d held after CloseConns", l.Conns())
	}
	l.Close()
	<-done
	if err := l.Err(); !errors.Is(err, ErrNotAccepting) || !errors.Is(err, net.ErrClosed) {
		t.Fatalf("closed listener: %v, want ErrNotAccepting", err)
	}
}
