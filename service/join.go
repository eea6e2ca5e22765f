package service

import (
	"io"
	"net"
	"sync"
)

// Buffers of the copies: every direction of every joined connection
// holds a small one while it waits, and borrows a big one only while data
// comes faster than the small one takes it (a bulk transfer), so that
// thousands of idle forwarded connections cost little memory.
const (
	smallBuf = 2 << 10
	bigBuf   = 128 << 10
)

var bigPool = sync.Pool{New: func() any { b := make([]byte, bigBuf); return &b }}

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

// pump copies src to dst until src ends; a clean end is a nil error. It
// reads into a small buffer, moves to a pooled big one when a read fills
// the small one, and gives the big one back after a read that does not
// fill it (the end of a burst: the next read may wait long).
func pump(dst io.Writer, src io.Reader) (int64, error) {
	small := make([]byte, smallBuf)
	buf := small
	var big *[]byte
	defer func() {
		if big != nil {
			bigPool.Put(big)
		}
	}()
	var total int64
	for {
		n, rerr := src.Read(buf)
		if n > 0 {
			w, werr := dst.Write(buf[:n])
			total += int64(w)
			if werr == nil && w < n {
				werr = io.ErrShortWrite
			}
			if werr != nil {
				return total, werr
			}
		}
		if rerr == io.EOF {
			return total, nil
		}
		if rerr != nil {
			return total, rerr
		}
		switch {
		case big == nil && n == len(small):
			big = bigPool.Get().(*[]byte)
			buf = *big
		case big != nil && n < len(buf)/4:
			bigPool.Put(big)
			big, buf = nil, small
		}
	}
}
