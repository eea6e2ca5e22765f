package service

import (
	"io"
	"net"
	"sync"
)

var bufPool = sync.Pool{New: func() any { b := make([]byte, 32<<10); return &b }}

// closeWriter is a connection that can end its sending direction alone
// (*net.TCPConn, *net.UnixConn, *Conn).
type closeWriter interface{ CloseWrite() error }

// Join carries bytes between a local connection (a TCP connection a
// forward accepted, or the one a service dialled) and a stream, in both
// directions, until both have ended. An end of data on one side (a FIN)
// ends the other side's sending direction, so half-closed connections
// work; an error on one side (a reset) resets the other at once. Join
// closes both before it returns, and returns the bytes carried each way
// and the first error other than a clean end.
func Join(local net.Conn, s *Conn) (toPeer, fromPeer int64, err error) {
	var wg sync.WaitGroup
	var once sync.Once
	fail := func(e error) {
		once.Do(func() {
			err = e
			s.Reset()
			if tc, ok := local.(*net.TCPConn); ok {
				tc.SetLinger(0) // a reset comes out as a reset
			}
			local.Close()
		})
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		n, e := pump(s, local)
		toPeer = n
		if e != nil {
			fail(e)
			return
		}
		s.CloseWrite()
	}()
	n, e := pump(local, s)
	fromPeer = n
	if e != nil {
		fail(e)
	} else if cw, ok := local.(closeWriter); ok {
		cw.CloseWrite()
	} else {
		local.Close()
	}
	wg.Wait()
	s.Close()
	local.Close()
	return toPeer, fromPeer, err
}

// pump copies src to dst until src ends; a clean end is a nil error.
func pump(dst io.Writer, src io.Reader) (int64, error) {
	bp := bufPool.Get().(*[]byte)
	defer bufPool.Put(bp)
	// Hide ReaderFrom/WriterTo: the copy must go through these two
	// connections' own Read and Write, with this buffer.
	return io.CopyBuffer(struct{ io.Writer }{dst}, struct{ io.Reader }{src}, *bp)
}
