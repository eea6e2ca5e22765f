package relay

import (
	"errors"
	"net"
	"sync"
	"sync/atomic"

	"golang.org/x/net/ipv4"
	"golang.org/x/net/ipv6"
)

// Batched socket I/O on the relay's UDP data path.
//
// pion reads the relay's UDP listener in one goroutine and writes each
// ChannelData payload (or Send indication) to the allocation's relayed
// socket at once: two system calls per datagram, each crossing the
// network stack once. Here the listener is read in batches (recvmmsg),
// and the writes to relayed sockets that pion makes while it handles a
// batch wait for the batch's end: a run of datagrams of one size to one
// peer then leaves in one GSO send (UDP_SEGMENT), which the kernel cuts
// into the same datagrams. A write made while the listener waits for
// datagrams (no batch in hand) leaves at once; so does one that would
// not fit the run waiting (after the run), so the order is kept.

const (
	batchSize    = 32      // datagrams per recvmmsg
	batchBufSize = 2048    // bytes per datagram (pion drops any of 1600 or more)
	maxSegments  = 64      // UDP_MAX_SEGMENTS (Linux)
	maxGSOBytes  = 65000   // one GSO send: under the 64 KiB of a UDP datagram
	socketBuffer = 4 << 20 // SO_RCVBUF and SO_SNDBUF asked for (the kernel caps them at rmem_max/wmem_max)
)

// batchStats counts the batched path's work (tests and diagnostics).
type batchStats struct {
	reads     atomic.Uint64 // recvmmsg calls that returned datagrams
	datagrams atomic.Uint64 // datagrams read in them
	sends     atomic.Uint64 // writes of relayed sockets' waiting runs (one system call each, GSO or not)
	sent      atomic.Uint64 // datagrams in those writes
}

// batchReader is ipv4.PacketConn or ipv6.PacketConn (their Message is
// the same type).
type batchReader interface {
	ReadBatch(ms []ipv4.Message, flags int) (int, error)
}

// batchListener is the relay's UDP listener, read in batches. Only
// pion's read loop calls ReadFrom.
type batchListener struct {
	net.PacketConn // the *net.UDPConn: writes, deadlines, Close
	reader         batchReader
	msgs           []ipv4.Message
	n, next        int // datagrams in msgs, the next to hand out (read loop only)
	stats          batchStats

	mu    sync.Mutex
	idle  bool           // in a read: relayed writes leave at once
	dirty []*batchSocket // relayed sockets with a run waiting for the batch's end
	runs  sync.Pool      // *[]byte of maxGSOBytes: a socket holds one only while its run waits
}

func newBatchListener(c *net.UDPConn) *batchListener {
	var r batchReader = ipv6.NewPacketConn(c)
	if ua, ok := c.LocalAddr().(*net.UDPAddr); ok && ua.IP.To4() != nil {
		r = ipv4.NewPacketConn(c)
	}
	l := &batchListener{PacketConn: c, reader: r, msgs: make([]ipv4.Message, batchSize), idle: true}
	l.runs.New = func() any {
		b := make([]byte, 0, maxGSOBytes)
		return &b
	}
	for i := range l.msgs {
		l.msgs[i].Buffers = [][]byte{make([]byte, batchBufSize)}
	}
	return l
}

// ReadFrom hands out the next datagram of the batch, reading the next
// batch (after sending what the last one left waiting) when it is done.
// A datagram longer than b is cut, as a socket's ReadFrom cuts it.
func (l *batchListener) ReadFrom(b []byte) (int, net.Addr, error) {
	if l.next >= l.n {
		if err := l.fill(); err != nil {
			return 0, nil, err
		}
		if l.n == 0 { // recvmmsg returns a datagram or an error; in case
			return l.PacketConn.ReadFrom(b)
		}
	}
	m := &l.msgs[l.next]
	l.next++
	return copy(b, m.Buffers[0][:m.N]), m.Addr, nil
}

// fill sends the runs the last batch left waiting, then reads a batch.
func (l *batchListener) fill() error {
	l.mu.Lock()
	for _, s := range l.dirty {
		s.queued = false
		s.flushLocked()
	}
	clear(l.dirty)
	l.dirty = l.dirty[:0]
	l.idle = true
	l.mu.Unlock()
	n, err := l.reader.ReadBatch(l.msgs, 0)
	l.mu.Lock()
	l.idle = false
	l.mu.Unlock()
	l.n, l.next = 0, 0
	if err != nil {
		return err
	}
	l.n = n
	if n > 0 {
		l.stats.reads.Add(1)
		l.stats.datagrams.Add(uint64(n))
	}
	return nil
}

// batchSocket is a relayed socket of an allocation made over the batch
// listener: its writes during a batch wait for the batch's end.
type batchSocket struct {
	*net.UDPConn
	l *batchListener

	// Under l.mu.
	gso    bool // the socket sends GSO runs (off after a GSO error)
	closed bool
	queued bool         // in l.dirty
	run    *[]byte      // the waiting datagrams, back to back (from l.runs; nil without a run)
	to     *net.UDPAddr // where they go
	seg    int          // the first's size: every one but the last has it
	count  int
	oob    []byte
}

func newBatchSocket(c *net.UDPConn, l *batchListener) *batchSocket {
	return &batchSocket{UDPConn: c, l: l, gso: gsoSupported(c)}
}

// WriteTo sends b to addr, or adds it to the run that waits for the end
// of the listener's batch. An error of a run's send is not reported (as
// a datagram lost on the way).
func (s *batchSocket) WriteTo(b []byte, addr net.Addr) (int, error) {
	ua, ok := addr.(*net.UDPAddr)
	s.l.mu.Lock()
	defer s.l.mu.Unlock()
	if s.count > 0 && (!ok || s.l.idle || !s.joins(b, ua)) {
		s.flushLocked()
	}
	if !ok || s.l.idle || !s.gso || s.closed || len(b) > maxGSOBytes/2 {
		return s.UDPConn.WriteTo(b, addr)
	}
	if s.count == 0 {
		s.to, s.seg = ua, len(b)
		s.run = s.l.runs.Get().(*[]byte) //nolint:forcetypeassert // the pool holds nothing else
		if !s.queued {
			s.queued = true
			s.l.dirty = append(s.l.dirty, s)
		}
	}
	*s.run = append(*s.run, b...)
	s.count++
	if len(b) < s.seg || s.count == maxSegments || len(*s.run)+s.seg > maxGSOBytes {
		s.flushLocked() // the run cannot grow
	}
	return len(b), nil
}

// joins says whether b to addr can end the waiting run.
func (s *batchSocket) joins(b []byte, to *net.UDPAddr) bool {
	return len(b) <= s.seg && to.Port == s.to.Port && to.IP.Equal(s.to.IP) && to.Zone == s.to.Zone
}

// flushLocked sends the waiting run.
func (s *batchSocket) flushLocked() {
	run, count, to, seg := s.run, s.count, s.to, s.seg
	s.run, s.count, s.to = nil, 0, nil
	if run == nil {
		return
	}
	defer func() {
		*run = (*run)[:0]
		s.l.runs.Put(run)
	}()
	if s.closed {
		return
	}
	s.l.stats.sends.Add(1)
	s.l.stats.sent.Add(uint64(count))
	if !sendRun(s.UDPConn, *run, seg, count, to, &s.oob) {
		s.gso = false
	}
}

// sendRun sends count datagrams, back to back in run, all of size seg
// but the last (which may be shorter), to the same address: one as it
// is, several as one GSO send, or one by one if that fails (false: GSO
// is refused for good, by a device without checksum offload). Errors are
// not reported: the datagrams are lost. oob is scratch space.
func sendRun(c *net.UDPConn, run []byte, seg, count int, to *net.UDPAddr, oob *[]byte) (gsoOK bool) {
	if count == 1 {
		c.WriteTo(run, to) //nolint:errcheck // a lost datagram
		return true
	}
	*oob = gsoControl((*oob)[:0], seg)
	_, _, err := c.WriteMsgUDP(run, *oob, to)
	if err == nil {
		return true
	}
	// Nothing of a failed GSO send left (EIO; or EINVAL for segments
	// over the path's MTU, which one by one the kernel fragments).
	for off := 0; off < len(run); off += seg {
		c.WriteTo(run[off:min(off+seg, len(run))], to) //nolint:errcheck // a lost datagram
	}
	return !isGSOError(err)
}

// Close closes the socket; a run still waiting is dropped.
func (s *batchSocket) Close() error {
	s.l.mu.Lock()
	s.closed = true
	s.flushLocked() // drops the run, returns its buffer
	s.l.mu.Unlock()
	return s.UDPConn.Close()
}

// setBuffers asks for large socket buffers: a GSO run or a batch of a
// fast sender arrives all at once, and the default buffer (208 KiB)
// drops part of a burst the reader has not yet caught up with. An error
// leaves the default.
func setBuffers(c *net.UDPConn) error {
	return errors.Join(c.SetReadBuffer(socketBuffer), c.SetWriteBuffer(socketBuffer))
}
