package relay

import (
	"net"
	"sync"
)

const (
	// maxPending bounds the datagrams (and bytes) a batchWriter holds:
	// past it the writing goroutine sends them itself.
	maxPending      = 2 * maxSegments
	maxPendingBytes = 2 * maxGSOBytes
)

// batchWriter is a TURN client's UDP socket whose writes leave in runs:
// WriteTo queues the datagram and a goroutine of the writer's sends what
// has queued meanwhile, a run of datagrams of one size to one address
// as one GSO send. QUIC over the allocation writes one packet at a time
// (its relayed socket is no *net.UDPConn, so quic-go does no GSO of its
// own), and each write framed as ChannelData would otherwise cross the
// network stack on its own. The order of the datagrams is kept.
//
// A write is reported sent once queued; an error of the send is not
// reported (the datagram is lost, as on the way). Close sends what is
// queued and stops the goroutine.
type batchWriter struct {
	*net.UDPConn
	wake   chan struct{} // a datagram queued while none was
	done   chan struct{} // Close: the goroutine ends
	exited chan struct{}
	once   sync.Once

	mu     sync.Mutex
	q      queue
	closed bool

	sendMu sync.Mutex // held while a queue is sent: sends keep the order of the queue
	spare  queue      // under sendMu: the buffers of the queue sent last
	oob    []byte     // under sendMu
	noGSO  bool       // under sendMu: a GSO send failed, send one by one
	stats  batchStats
}

// queue is datagrams back to back in buf, with their sizes and
// addresses.
type queue struct {
	buf   []byte
	sizes []int
	to    []*net.UDPAddr
}

func newBatchWriter(c *net.UDPConn) *batchWriter {
	w := &batchWriter{UDPConn: c, wake: make(chan struct{}, 1), done: make(chan struct{}), exited: make(chan struct{})}
	go w.run()
	return w
}

func (w *batchWriter) run() {
	defer close(w.exited)
	for {
		select {
		case <-w.wake:
			w.flush()
		case <-w.done:
			return
		}
	}
}

// WriteTo queues b for addr.
func (w *batchWriter) WriteTo(b []byte, addr net.Addr) (int, error) {
	ua, ok := addr.(*net.UDPAddr)
	if !ok {
		w.flush()
		return w.UDPConn.WriteTo(b, addr)
	}
	w.mu.Lock()
	if w.closed {
		w.mu.Unlock()
		return 0, net.ErrClosed
	}
	first := len(w.q.sizes) == 0
	w.q.buf = append(w.q.buf, b...)
	w.q.sizes = append(w.q.sizes, len(b))
	w.q.to = append(w.q.to, ua)
	full := len(w.q.sizes) >= maxPending || len(w.q.buf) >= maxPendingBytes
	w.mu.Unlock()
	switch {
	case full:
		w.flush()
	case first:
		select {
		case w.wake <- struct{}{}:
		default:
		}
	}
	return len(b), nil
}

// flush sends what is queued, in runs.
func (w *batchWriter) flush() {
	w.sendMu.Lock()
	defer w.sendMu.Unlock()
	w.mu.Lock()
	q := w.q
	w.q = queue{buf: w.spare.buf[:0], sizes: w.spare.sizes[:0], to: w.spare.to[:0]}
	w.mu.Unlock()
	for i, off := 0, 0; i < len(q.sizes); {
		j, n := runOf(q, i)
		if w.noGSO {
			j, n = i+1, q.sizes[i]
		}
		w.stats.sends.Add(1)
		w.stats.sent.Add(uint64(j - i))
		if !sendRun(w.UDPConn, q.buf[off:off+n], q.sizes[i], j-i, q.to[i], &w.oob) {
			w.noGSO = true
		}
		i, off = j, off+n
	}
	clear(q.to)
	w.spare = q
}

// runOf returns the end of the run that starts at datagram i of q (the
// index after its last) and its bytes: datagrams to one address, all of
// the first's size but the last, which may be shorter, within one GSO
// send.
func runOf(q queue, i int) (end, bytes int) {
	seg, to := q.sizes[i], q.to[i]
	end, bytes = i+1, seg
	for end < len(q.sizes) && end-i < maxSegments && q.sizes[end-1] == seg && q.sizes[end] <= seg &&
		bytes+q.sizes[end] <= maxGSOBytes && sameAddr(q.to[end], to) {
		bytes += q.sizes[end]
		end++
	}
	return end, bytes
}

func sameAddr(a, b *net.UDPAddr) bool {
	return a == b || (a.Port == b.Port && a.IP.Equal(b.IP) && a.Zone == b.Zone)
}

// Close sends what is queued, stops the goroutine and closes the socket.
// It is idempotent.
func (w *batchWriter) Close() error {
	var err error
	w.once.Do(func() {
		w.mu.Lock()
		w.closed = true
		w.mu.Unlock()
		w.flush()
		close(w.done)
		<-w.exited
		err = w.UDPConn.Close()
	})
	return err
}
