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
	accepted, done := acceptAll(l)
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

// TestAcceptingAgainAfterExhaustion: a listener that ran the process out
// of descriptors reports it (EMFILE) and, once descriptors are free again,
// accepting, before any new connection comes (it stayed "not accepting"
// until the next one, and /readyz with it: a CI attack run). It runs the
// test process out of descriptors for real, under a lowered soft limit.
func TestAcceptingAgainAfterExhaustion(t *testing.T) {
	raw, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	l := New(raw, Config{})
	accepted, done := acceptAll(l)
	t.Cleanup(func() { l.Close(); <-done; l.CloseConns() })
	fillers := exhaustDescriptors(t, 2)
	c, err := net.Dial("tcp4", raw.Addr().String()) // the last descriptor but one
	if err != nil {
		t.Fatalf("dial with two descriptors left: %v", err)
	}
	defer c.Close()
	got := <-accepted // the last one; the next accept fails at once
	defer got.Close()
	testkit.WaitFor(t, 5*time.Second, "EMFILE reported", func() bool { return errors.Is(l.Err(), syscall.EMFILE) })
	for _, f := range fillers {
		f.Close()
	}
	testkit.WaitFor(t, 5*time.Second, "accepting again with no connection coming", func() bool { return l.Err() == nil })
	c2, err := net.Dial("tcp4", raw.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c2.Close()
	select {
	case g := <-accepted:
		g.Close()
	case <-time.After(5 * time.Second):
		t.Fatal("no connection accepted after the exhaustion")
	}
}

// exhaustDescriptors lowers the process's soft descriptor limit (restored
// at cleanup) and opens files until leave descriptors are left; closing
// the files returns them.
func exhaustDescriptors(t *testing.T, leave int) []*os.File {
	t.Helper()
	var old syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &old); err != nil {
		t.Fatal(err)
	}
	open, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	lim := old
	lim.Cur = uint64(len(open) + 64)
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		t.Fatal(err)
	}
	var files []*os.File
	t.Cleanup(func() {
		for _, f := range files {
			f.Close()
		}
		syscall.Setrlimit(syscall.RLIMIT_NOFILE, &old)
	})
	for range 256 {
		f, err := os.Open(os.DevNull)
		if errors.Is(err, syscall.EMFILE) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		files = append(files, f)
	}
	if len(files) < leave {
		t.Fatalf("only %d descriptors under the limit", len(files))
	}
	for _, f := range files[len(files)-leave:] {
		f.Close()
	}
	files = files[:len(files)-leave]
	return files
}

// acceptAll accepts l's connections on a goroutine, onto accepted, until
// Accept fails (the listener closed); done is closed then.
func acceptAll(l *Listener) (accepted chan net.Conn, done chan struct{}) {
	accepted, done = make(chan net.Conn, 16), make(chan struct{})
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
	return accepted, done
}
