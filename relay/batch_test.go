package relay

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"runtime"
	"testing"
	"time"
)

func listenUDP(t *testing.T) *net.UDPConn {
	t.Helper()
	c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	if err := setBuffers(c); err != nil {
		t.Logf("socket buffers: %v", err)
	}
	return c
}

// datagram i of a test: its number, then filler up to size.
func datagram(i, size int) []byte {
	b := bytes.Repeat([]byte{byte(i)}, size)
	copy(b, fmt.Sprintf("%05d", i))
	return b
}

// readAll reads n datagrams from c (bounded by a deadline).
func readAll(t *testing.T, c *net.UDPConn, n int) [][]byte {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	var got [][]byte
	buf := make([]byte, 65536)
	for range n {
		k, _, err := c.ReadFromUDP(buf)
		if err != nil {
			t.Fatalf("after %d of %d datagrams: %v", len(got), n, err)
		}
		got = append(got, append([]byte(nil), buf[:k]...))
	}
	return got
}

// TestBatchListenerReadsInBatches: datagrams queued on the listener come
// out of ReadFrom one by one, whole, in order and with their source, from
// fewer reads than datagrams.
func TestBatchListenerReadsInBatches(t *testing.T) {
	uc, src := listenUDP(t), listenUDP(t)
	l := newBatchListener(uc)
	const n = 40
	for i := range n {
		if _, err := src.WriteTo(datagram(i, 100+i), uc.LocalAddr()); err != nil {
			t.Fatal(err)
		}
	}
	uc.SetReadDeadline(time.Now().Add(5 * time.Second))
	buf := make([]byte, 1600)
	for i := range n {
		k, from, err := l.ReadFrom(buf)
		if err != nil {
			t.Fatalf("datagram %d: %v", i, err)
		}
		if !bytes.Equal(buf[:k], datagram(i, 100+i)) || from.String() != src.LocalAddr().String() {
			t.Fatalf("datagram %d: %d bytes %q from %v", i, k, buf[:min(k, 5)], from)
		}
	}
	if reads := l.stats.reads.Load(); runtime.GOOS == "linux" && reads >= n {
		t.Fatalf("%d datagrams took %d reads: not batched", n, reads)
	}
	// A datagram longer than the reader's buffer is cut, as a socket cuts it.
	if _, err := src.WriteTo(datagram(99, 1500), uc.LocalAddr()); err != nil {
		t.Fatal(err)
	}
	if k, _, err := l.ReadFrom(buf[:1000]); err != nil || k != 1000 || !bytes.Equal(buf[:k], datagram(99, 1500)[:1000]) {
		t.Fatalf("long datagram: %d bytes, %v", k, err)
	}
	// A read past the deadline fails as the socket's does.
	uc.SetReadDeadline(time.Now().Add(20 * time.Millisecond))
	if _, _, err := l.ReadFrom(buf); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("read past the deadline: %v", err)
	}
}

// TestBatchSocketSendsRunsInOrder plays pion's read loop: for each
// datagram read from the listener it writes one on a relayed socket, to
// two peers in turn and in mixed sizes. Each peer gets its datagrams
// whole and in order; runs of equal size to one peer went out together;
// the writes of a batch left once the reader came back for more.
func TestBatchSocketSendsRunsInOrder(t *testing.T) {
	uc, src, relayed := listenUDP(t), listenUDP(t), listenUDP(t)
	peers := []*net.UDPConn{listenUDP(t), listenUDP(t)}
	l := newBatchListener(uc)
	s := newBatchSocket(relayed, l)
	const n = 90
	size := func(i int) int { // runs of 1200, a short one now and then
		if i%13 == 12 {
			return 300 + i
		}
		return 1200
	}
	to := func(i int) int { return i / 30 % 2 } // 30 to one peer, 30 to the other, ...
	for i := range n {
		if _, err := src.WriteTo(datagram(i, 64), uc.LocalAddr()); err != nil {
			t.Fatal(err)
		}
	}
	uc.SetReadDeadline(time.Now().Add(5 * time.Second))
	buf := make([]byte, 1600)
	for range n {
		k, _, err := l.ReadFrom(buf)
		if err != nil {
			t.Fatal(err)
		}
		var i int
		if _, err := fmt.Sscanf(string(buf[:5]), "%05d", &i); err != nil || k != 64 {
			t.Fatalf("read %q: %v", buf[:k], err)
		}
		if _, err := s.WriteTo(datagram(i, size(i)), peers[to(i)].LocalAddr()); err != nil {
			t.Fatal(err)
		}
	}
	// The reader comes back: the batch's writes leave before it waits.
	uc.SetReadDeadline(time.Now().Add(20 * time.Millisecond))
	if _, _, err := l.ReadFrom(buf); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("read with nothing queued: %v", err)
	}
	for p, peer := range peers {
		var want [][]byte
		for i := range n {
			if to(i) == p {
				want = append(want, datagram(i, size(i)))
			}
		}
		got := readAll(t, peer, len(want))
		for i := range want {
			if !bytes.Equal(got[i], want[i]) {
				t.Fatalf("peer %d, datagram %d: got %q (%d bytes), want %q (%d bytes)", p, i, got[i][:5], len(got[i]), want[i][:5], len(want[i]))
			}
		}
	}
	sends, sent := l.stats.sends.Load(), l.stats.sent.Load()
	if sent != n || (s.gso && sends > n/4) {
		t.Fatalf("%d datagrams in %d sends (GSO %v)", sent, sends, s.gso)
	}

	// With the listener waiting (no batch in hand), a write leaves at once.
	done := make(chan error, 1)
	go func() {
		uc.SetReadDeadline(time.Now().Add(5 * time.Second))
		_, _, err := l.ReadFrom(buf)
		done <- err
	}()
	for range 100 { // until the reader waits (bounded)
		l.mu.Lock()
		idle := l.idle
		l.mu.Unlock()
		if idle {
			break
		}
		time.Sleep(5 * time.Millisecond)
	}
	if _, err := s.WriteTo(datagram(7, 1200), peers[0].LocalAddr()); err != nil {
		t.Fatal(err)
	}
	if got := readAll(t, peers[0], 1); !bytes.Equal(got[0], datagram(7, 1200)) {
		t.Fatalf("write while idle: got %q", got[0][:5])
	}
	src.WriteTo([]byte("wake"), uc.LocalAddr())
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

// TestRelayForwardsBurstsWhole: a burst of datagrams from a client
// through the relay (batched read, runs to the peer) arrives at the peer
// whole and in order, in fewer sends than datagrams.
func TestRelayForwardsBurstsWhole(t *testing.T) {
	r := startRelay(t, ServerConfig{}, allowLoopback)
	if r.batch == nil {
		t.Fatal("the relay's UDP listener is not read in batches")
	}
	a, err := allocate(t, r, r.Credentials(peerID(t), time.Minute), false)
	if err != nil {
		t.Fatal(err)
	}
	peer := listenUDP(t)
	peerAddr := peer.LocalAddr().(*net.UDPAddr).AddrPort()
	if err := a.Permit(peerAddr); err != nil {
		t.Fatal(err)
	}
	to := net.UDPAddrFromAddrPort(peerAddr)
	// The first writes go as Send indications until pion's channel is
	// bound; then ChannelData. Carry one (bounded), then drain.
	buf := make([]byte, 2048)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	for received := false; !received && ctx.Err() == nil; {
		a.Conn.WriteTo(datagram(0, 1200), to)
		peer.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
		_, _, err := peer.ReadFromUDP(buf)
		received = err == nil
	}
	for range 100 {
		peer.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
		if _, _, err := peer.ReadFromUDP(buf); err != nil {
			break
		}
	}
	sends0, sent0 := r.batch.stats.sends.Load(), r.batch.stats.sent.Load()
	const n, chunk = 200, 25
	peer.SetReadDeadline(time.Now().Add(5 * time.Second))
	for i := 0; i < n; i += chunk { // in chunks that the peer reads in full: nothing dropped
		for j := i; j < i+chunk; j++ {
			if _, err := a.Conn.WriteTo(datagram(j, 1200-4*(j%chunk/(chunk-1))), to); err != nil {
				t.Fatal(err)
			}
		}
		got := readAll(t, peer, chunk)
		for j := range got {
			if want := datagram(i+j, 1200-4*(j/(chunk-1))); !bytes.Equal(got[j], want) {
				t.Fatalf("datagram %d: got %q (%d bytes), want %d bytes", i+j, got[j][:5], len(got[j]), len(want))
			}
		}
	}
	if sends, sent := r.batch.stats.sends.Load()-sends0, r.batch.stats.sent.Load()-sent0; sent != n || sends >= sent {
		t.Fatalf("%d datagrams relayed in %d sends", sent, sends)
	}
}
