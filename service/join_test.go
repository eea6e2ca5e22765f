package service

import (
	"errors"
	"io"
	"net"
	"syscall"
	"testing"
	"time"
)

// tcpPair returns the two ends of a loopback TCP connection.
func tcpPair(t *testing.T) (*net.TCPConn, *net.TCPConn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	acc := make(chan net.Conn, 1)
	go func() {
		c, _ := ln.Accept()
		acc <- c
	}()
	d, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	a := <-acc
	if a == nil {
		t.Fatal("accept failed")
	}
	t.Cleanup(func() { d.Close(); a.Close() })
	return d.(*net.TCPConn), a.(*net.TCPConn)
}

// TestJoinCarriesFINAndRST: through client TCP -> Join -> stream ->
// Join -> target TCP, a FIN arrives as an end of data after every byte,
// and a reset arrives as a reset, in both directions.
func TestJoinCarriesFINAndRST(t *testing.T) {
	tests := []struct {
		name      string
		fromPeer  bool // the target side ends (else the client side)
		reset     bool
		wantReset bool
	}{
		{"client FIN", false, false, false},
		{"client RST", false, true, true},
		{"target FIN", true, false, false},
		{"target RST", true, true, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			server, client := newNode(t, Config{}), newNode(t, Config{})
			targetApp := make(chan *net.TCPConn, 1)
			server.mux.Handle("svc", AllowAny, "", func(r *Request) {
				inner, outer := tcpPair(t) // inner: Join's side; outer: the target app
				s, err := r.Accept()
				if err != nil {
					return
				}
				targetApp <- outer
				Join(inner, s)
			})
			l := connect(t, client, server)
			user, inner := tcpPair(t) // user: the client app; inner: Join's side
			s := l.open(t, "svc")
			joined := make(chan struct{})
			go func() { defer close(joined); Join(inner, s) }()
			target := <-targetApp

			ender, reader := user, target
			if tc.fromPeer {
				ender, reader = target, user
			}
			msg := []byte("last words")
			ender.Write(msg)
			if tc.reset {
				time.Sleep(100 * time.Millisecond) // let the bytes leave first
				ender.SetLinger(0)
				ender.Close()
			} else {
				ender.CloseWrite()
			}
			reader.SetReadDeadline(time.Now().Add(5 * time.Second))
			got, err := io.ReadAll(reader)
			reset := errors.Is(err, syscall.ECONNRESET)
			if reset != tc.wantReset || (!tc.wantReset && (err != nil || string(got) != string(msg))) {
				t.Fatalf("read %q, %v; want reset=%v", got, err, tc.wantReset)
			}
			if !tc.reset {
				// Half-closed: the other direction still works.
				reader.Write([]byte("reply"))
				reader.CloseWrite()
				ender.SetReadDeadline(time.Now().Add(5 * time.Second))
				if b, err := io.ReadAll(ender); err != nil || string(b) != "reply" {
					t.Fatalf("reply after half-close: %q, %v", b, err)
				}
			}
			select {
			case <-joined:
			case <-time.After(5 * time.Second):
				t.Fatal("Join did not return")
			}
		})
	}
}

// TestTCPTarget: a stream to a TCP target reaches it (a request half-closed,
// the answer after it); a target that refuses the connection refuses the
// stream with CodeTargetUnreachable, and the link carries on.
func TestTCPTarget(t *testing.T) {
	server, client := newNode(t, Config{}), newNode(t, Config{})
	echoLn, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer echoLn.Close()
	go func() {
		for {
			c, err := echoLn.Accept()
			if err != nil {
				return
			}
			go func() { io.Copy(c, c); c.Close() }()
		}
	}()
	dead, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	deadAddr := dead.Addr().String()
	dead.Close() // nothing listens there now
	server.mux.Handle("echo", AllowAny, echoLn.Addr().String(), TCPTarget(echoLn.Addr().String(), nil))
	server.mux.Handle("dead", AllowAny, deadAddr, TCPTarget(deadAddr, nil))
	l := connect(t, client, server)

	var se *StreamError
	if _, err := l.dial("dead"); !errors.As(err, &se) || se.Code != CodeTargetUnreachable {
		t.Fatalf("dead target: %v, want %s", err, CodeTargetUnreachable)
	}
	c, err := l.dial("echo")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.Write([]byte("through the target"))
	c.CloseWrite()
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if got, err := io.ReadAll(c); err != nil || string(got) != "through the target" {
		t.Fatalf("echo: %q, %v", got, err)
	}
}
