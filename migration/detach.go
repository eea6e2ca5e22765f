package migration

import (
	"net"
	"net/netip"
	"os"
	"sync"
	"sync/atomic"
	"time"
)

// DetachConn wraps a relayed socket so that the allocation under it can be
// released while the QUIC transport on top lives on (closing a
// quic.Transport ends every connection that ever used it, and one whose
// socket fails closes itself). After Detach, writes are dropped and reads
// block until the read deadline passes (the transport's own Close sets
// one) or Close.
type DetachConn struct {
	net.PacketConn

	// intercept maps a peer address to a handler for the QUIC packets
	// from it: the answers on a rerouted connection (see fallback), which
	// belong to a connection on the node's main socket, not to this
	// transport.
	intercept atomic.Pointer[map[netip.AddrPort]func([]byte)]
	imu       sync.Mutex

	mu       sync.Mutex
	detached bool
	deadline time.Time     // the last read deadline set
	wake     chan struct{} // closed by Close or a past read deadline
}

// NewDetachConn wraps c.
func NewDetachConn(c net.PacketConn) *DetachConn {
	return &DetachConn{PacketConn: c, wake: make(chan struct{})}
}

// Detach closes the inner socket (releasing the allocation) but not the
// wrapper.
func (d *DetachConn) Detach() {
	d.mu.Lock()
	if d.detached {
		d.mu.Unlock()
		return
	}
	d.detached = true
	d.mu.Unlock()
	d.PacketConn.Close()
}

func (d *DetachConn) isDetached() bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.detached
}

// ReadFrom reads from the inner socket, handing intercepted peers' packets
// to their handlers; once detached it blocks until the read deadline or
// Close.
func (d *DetachConn) ReadFrom(b []byte) (int, net.Addr, error) {
	for {
		n, addr, err := d.PacketConn.ReadFrom(b)
		if err != nil && d.isDetached() {
			d.waitWake()
			return 0, nil, os.ErrDeadlineExceeded
		}
		if err == nil && n > 0 && b[0]&0x40 != 0 {
			if m := d.intercept.Load(); m != nil {
				if ua, ok := addr.(*net.UDPAddr); ok {
					ap := ua.AddrPort()
					if h := (*m)[netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())]; h != nil {
						h(b[:n])
						continue
					}
				}
			}
		}
		return n, addr, err
	}
}

// Intercept hands the QUIC packets from peer to h (nil: stop).
func (d *DetachConn) Intercept(peer netip.AddrPort, h func([]byte)) {
	d.imu.Lock()
	defer d.imu.Unlock()
	m := map[netip.AddrPort]func([]byte){}
	if old := d.intercept.Load(); old != nil {
		for k, v := range *old {
			m[k] = v
		}
	}
	if h == nil {
		delete(m, peer)
	} else {
		m[peer] = h
	}
	if len(m) == 0 {
		d.intercept.Store(nil)
		return
	}
	d.intercept.Store(&m)
}

// WriteTo writes to the inner socket; once detached, writes are dropped.
func (d *DetachConn) WriteTo(b []byte, addr net.Addr) (int, error) {
	if d.isDetached() {
		return len(b), nil
	}
	n, err := d.PacketConn.WriteTo(b, addr)
	if err != nil && d.isDetached() {
		return len(b), nil // detached meanwhile: the datagram is simply lost
	}
	return n, err
}

// waitWake blocks a read on a detached socket until Close or a read
// deadline that has passed, including one set before the detach (the
// transport's Close may set it just before the socket is detached: the
// inner read fails on the deadline, and nothing would wake it later).
func (d *DetachConn) waitWake() {
	d.mu.Lock()
	dl := d.deadline
	if !dl.IsZero() && !dl.After(time.Now()) {
		d.wakeLocked()
	}
	wake := d.wake
	d.mu.Unlock()
	if dl.IsZero() {
		<-wake
		return
	}
	t := time.NewTimer(time.Until(dl))
	defer t.Stop()
	select {
	case <-wake:
	case <-t.C:
	}
}

// SetReadDeadline sets the inner socket's read deadline, and wakes a
// detached read when it has passed.
func (d *DetachConn) SetReadDeadline(t time.Time) error {
	d.mu.Lock()
	d.deadline = t
	if d.detached && !t.IsZero() && !t.After(time.Now()) {
		d.wakeLocked()
	}
	detached := d.detached
	d.mu.Unlock()
	if detached {
		return nil
	}
	return d.PacketConn.SetReadDeadline(t)
}

func (d *DetachConn) wakeLocked() {
	select {
	case <-d.wake:
	default:
		close(d.wake)
	}
}

// Close closes the inner socket and ends every read.
func (d *DetachConn) Close() error {
	d.mu.Lock()
	d.wakeLocked()
	wasDetached := d.detached
	d.mu.Unlock()
	if wasDetached {
		return nil
	}
	return d.PacketConn.Close()
}
