package testnet

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"
)

// delayLine forwards Ethernet frames between two interfaces of a wire
// namespace in both directions, each frame held for the link's one-way
// delay and, if it carries IP, dropped with the link's loss probability.
// (This kernel has no netem; rate limiting is tbf on the wire's
// interfaces.)
type delayLine struct {
	wire    Wire
	a, b    *os.File
	wg      sync.WaitGroup
	dropped atomic.Uint64 // by loss
	overrun atomic.Uint64 // queue full
	moved   atomic.Uint64
}

const (
	ethPAll          = 0x0003
	delayQueueFrames = 8192
)

func htons(v uint16) uint16 { return v<<8 | v>>8 }

// openPacketSocket opens a raw packet socket bound to ifname in ns, as an
// *os.File on the runtime poller (so Close unblocks a Read).
func openPacketSocket(ns, ifname string) (*os.File, error) {
	var f *os.File
	err := InNS(ns, func() error {
		ifc, err := net.InterfaceByName(ifname)
		if err != nil {
			return err
		}
		fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, int(htons(ethPAll)))
		if err != nil {
			return fmt.Errorf("packet socket: %w", err)
		}
		// Frames this socket writes are not read back by it.
		if err := unix.SetsockoptInt(fd, unix.SOL_PACKET, unix.PACKET_IGNORE_OUTGOING, 1); err != nil {
			unix.Close(fd)
			return fmt.Errorf("PACKET_IGNORE_OUTGOING: %w", err)
		}
		if err := unix.Bind(fd, &unix.SockaddrLinklayer{Protocol: htons(ethPAll), Ifindex: ifc.Index}); err != nil {
			unix.Close(fd)
			return fmt.Errorf("bind %s: %w", ifname, err)
		}
		unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUF, 4<<20)
		unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_SNDBUF, 4<<20)
		f = os.NewFile(uintptr(fd), ns+"/"+ifname)
		return nil
	})
	return f, err
}

func startDelayLine(w Wire) (*delayLine, error) {
	a, err := openPacketSocket(w.NS, w.IfA)
	if err != nil {
		return nil, err
	}
	b, err := openPacketSocket(w.NS, w.IfB)
	if err != nil {
		a.Close()
		return nil, err
	}
	d := &delayLine{wire: w, a: a, b: b}
	d.pipe(a, b)
	d.pipe(b, a)
	return d, nil
}

// isIP reports whether an Ethernet frame carries IPv4 or IPv6.
func isIP(f []byte) bool {
	if len(f) < 14 {
		return false
	}
	et := uint16(f[12])<<8 | uint16(f[13])
	return et == 0x0800 || et == 0x86dd
}

type frame struct {
	due  time.Time
	data []byte
}

// pipe moves frames from src to dst: a reader goroutine stamps each frame
// with its due time, a writer goroutine sends it when due. Both end when
// the sockets are closed.
func (d *delayLine) pipe(src, dst *os.File) {
	q := make(chan frame, delayQueueFrames)
	d.wg.Add(2)
	go func() {
		defer d.wg.Done()
		defer close(q)
		buf := make([]byte, 65536)
		for {
			n, err := src.Read(buf)
			if err != nil {
				if errors.Is(err, os.ErrClosed) {
					return
				}
				continue // transient (e.g. ENETDOWN while the link comes up)
			}
			// Loss applies to IP packets only: a lost ARP exchange would
			// stall the link for seconds and confound what a test
			// measures.
			if d.wire.Impair.Loss > 0 && isIP(buf[:n]) && rand.Float64()*100 < d.wire.Impair.Loss {
				d.dropped.Add(1)
				continue
			}
			select {
			case q <- frame{due: time.Now().Add(d.wire.Impair.Delay), data: append([]byte(nil), buf[:n]...)}:
			default:
				d.overrun.Add(1)
			}
		}
	}()
	go func() {
		defer d.wg.Done()
		t := time.NewTimer(time.Hour)
		defer t.Stop()
		for f := range q {
			if wait := time.Until(f.due); wait > 0 {
				t.Reset(wait)
				<-t.C
			}
			if _, err := dst.Write(f.data); err == nil {
				d.moved.Add(1)
			}
		}
	}()
}

// close stops the line and waits for its goroutines.
func (d *delayLine) close() {
	d.a.Close()
	d.b.Close()
	d.wg.Wait()
}
