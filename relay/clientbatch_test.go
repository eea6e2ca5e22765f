package relay

import (
	"bytes"
	"errors"
	"net"
	"testing"
	"time"
)

// TestBatchWriterKeepsOrder: a client socket's writes, queued and sent
// in runs by its goroutine, arrive whole and in order; Close sends what
// is queued, and a write after it fails.
func TestBatchWriterKeepsOrder(t *testing.T) {
	sink := listenUDP(t)
	c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	w := newBatchWriter(c)
	const n = 300
	size := func(i int) int { return 1256 - 4*(i%50/49) } // 49 of 1256, then one of 1252
	done := make(chan [][]byte, 1)
	go func() { done <- readAll(t, sink, n) }()
	for i := range n {
		if _, err := w.WriteTo(datagram(i, size(i)), sink.LocalAddr()); err != nil {
			t.Fatal(err)
		}
		if i%50 == 49 {
			time.Sleep(time.Millisecond) // let the reader keep up: a small buffer drops
		}
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	got := <-done
	for i := range got {
		if !bytes.Equal(got[i], datagram(i, size(i))) {
			t.Fatalf("datagram %d: got %q (%d bytes)", i, got[i][:5], len(got[i]))
		}
	}
	if sends := w.stats.sends.Load(); sends == 0 || w.stats.sent.Load() != n {
		t.Fatalf("%d datagrams in %d sends", w.stats.sent.Load(), sends)
	}
	if _, err := w.WriteTo([]byte("late"), sink.LocalAddr()); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("write after Close: %v", err)
	}
	if err := w.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
}
