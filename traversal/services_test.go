package traversal

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/antnode/antnode/identity"
	"github.com/antnode/antnode/service"
)

// TestHTTPOverServices: net/http serves on a node's service listener and
// an http.Client on another node reaches it by peer ID; the server sees
// the client's authenticated ID; concurrent requests share one peer
// connection.
func TestHTTPOverServices(t *testing.T) {
	b := startBootstrap(t)
	client, server := startNode(t, nil, b), startNode(t, nil, b)
	ln, err := server.Listen("web", service.Allow{Peers: []identity.PeerID{client.ID()}})
	if err != nil {
		t.Fatal(err)
	}
	body := make([]byte, 1<<20)
	rand.Read(body)
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Remote", r.RemoteAddr)
		w.Write(body)
	})}
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ln) }()
	t.Cleanup(func() {
		srv.Close()
		if err := <-done; !errors.Is(err, http.ErrServerClosed) {
			t.Errorf("Serve: %v", err)
		}
	})
	hc := &http.Client{Transport: &http.Transport{DialContext: client.HTTPDialer("web")}, Timeout: 10 * time.Second}
	defer hc.CloseIdleConnections()
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for i := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			resp, err := hc.Get(fmt.Sprintf("http://%s/file/%d", server.ID(), i))
			if err != nil {
				errs <- err
				return
			}
			defer resp.Body.Close()
			got, err := io.ReadAll(resp.Body)
			switch {
			case err != nil:
				errs <- err
			case sha256.Sum256(got) != sha256.Sum256(body):
				errs <- fmt.Errorf("request %d: body of %d bytes differs", i, len(got))
			case resp.Header.Get("X-Remote") != client.ID().String()+"/web":
				errs <- fmt.Errorf("server saw remote %q", resp.Header.Get("X-Remote"))
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	if n := conns(client, server.ID()); n != 1 {
		t.Fatalf("%d connections to the server, want 1 shared by every request", n)
	}
}

// conns counts n's open connections to peer.
func conns(n *Node, peer identity.PeerID) int {
	k := 0
	for _, c := range n.Conns() {
		if c.Peer() == peer && c.QUIC().Context().Err() == nil {
			k++
		}
	}
	return k
}

// TestDialRefusals: at the node level, a refusal is a *service.StreamError
// with the code, and a refused peer's connection stays usable.
func TestDialRefusals(t *testing.T) {
	b := startBootstrap(t)
	a, srv, other := startNode(t, nil, b), startNode(t, nil, b), startNode(t, nil, b)
	ln, err := srv.Listen("only-other", service.Allow{Peers: []identity.PeerID{other.ID()}})
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	tests := []struct {
		name, service string
		want          service.Code
	}{
		{"unknown service", "nothing-here", service.CodeUnknownService},
		{"not allowed", "only-other", service.CodeNotAllowed},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := a.Dial(ctx, srv.ID(), tc.service)
			var se *service.StreamError
			if !errors.As(err, &se) || se.Code != tc.want || !errors.Is(err, service.ErrRefused) {
				t.Fatalf("got %v, want %s", err, tc.want)
			}
		})
	}
	c, err := a.PeerConn(ctx, srv.ID())
	if err != nil {
		t.Fatal(err)
	}
	if res, err := c.SendVerified(ctx, 64<<10); err != nil || res.Bytes != 64<<10 {
		t.Fatalf("transfer after refusals: %+v, %v", res, err)
	}
}

// TestDialEarlySendsWithTheHeader: bytes written before the service has
// answered reach it, and the answer comes back on the same stream.
func TestDialEarlySendsWithTheHeader(t *testing.T) {
	b := startBootstrap(t)
	a, srv := startNode(t, nil, b), startNode(t, nil, b)
	ln, err := srv.Listen("echo", service.AllowAny)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				io.Copy(c, c)
			}()
		}
	}()
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	s, err := a.DialEarly(ctx, srv.ID(), "echo")
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	msg := []byte("first bytes, sent before the answer")
	if _, err := s.Write(msg); err != nil {
		t.Fatal(err)
	}
	s.CloseWrite()
	got, err := io.ReadAll(s)
	if err != nil || !bytes.Equal(got, msg) {
		t.Fatalf("echo: %q, %v", got, err)
	}
	if _, ok := s.RemoteAddr().(service.Addr); !ok || s.Peer() != srv.ID() {
		t.Fatalf("remote %v", s.RemoteAddr())
	}
}

// TestForwardThroughNodes: a TCP client reaches a TCP server on another
// node through service.Forwarder and an exposed target; a half-closed
// request still gets its whole response.
func TestForwardThroughNodes(t *testing.T) {
	b := startBootstrap(t)
	a, srv := startNode(t, nil, b), startNode(t, nil, b)
	target, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer target.Close()
	go func() {
		for {
			c, err := target.Accept()
			if err != nil {
				return
			}
			go func() { // reads the request to its end, then answers its digest
				defer c.Close()
				h := sha256.New()
				io.Copy(h, c)
				c.Write(h.Sum(nil))
			}()
		}
	}()
	err = srv.Services().Handle("digest", service.AllowAny, target.Addr().String(), service.TCPTarget(target.Addr().String(), nil))
	if err != nil {
		t.Fatal(err)
	}
	local, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	f := &service.Forwarder{Listener: local, Dial: func(ctx context.Context) (*service.Conn, error) {
		return a.DialEarly(ctx, srv.ID(), "digest")
	}}
	served := make(chan error, 1)
	go func() { served <- f.Serve(ctx) }()
	digest := func(i int) {
		t.Helper()
		c, err := net.Dial("tcp", local.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		req := make([]byte, 10_000*(i%10+1))
		rand.Read(req)
		c.Write(req)
		c.(*net.TCPConn).CloseWrite()
		c.SetReadDeadline(time.Now().Add(10 * time.Second))
		got, err := io.ReadAll(c)
		c.Close()
		want := sha256.Sum256(req)
		if err != nil || !bytes.Equal(got, want[:]) {
			t.Fatalf("connection %d: %x, %v", i, got, err)
		}
	}
	digest(0)
	before := runtime.NumGoroutine()
	for i := range 200 {
		digest(i)
	}
	// Finished connections leave no goroutine behind (a few may still be
	// winding down: wait, bounded).
	deadline := time.Now().Add(5 * time.Second)
	for runtime.NumGoroutine() > before && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if g := runtime.NumGoroutine(); g > before {
		t.Fatalf("goroutines %d after 200 forwarded connections, %d before", g, before)
	}
	// The peer connection goes away: the next connection makes a new one.
	for _, c := range srv.Conns() {
		c.Close()
	}
	waitGone := time.Now().Add(5 * time.Second)
	for conns(a, srv.ID()) > 0 && time.Now().Before(waitGone) {
		time.Sleep(20 * time.Millisecond)
	}
	digest(1)
	if n := conns(a, srv.ID()); n != 1 {
		t.Fatalf("%d connections after the reconnect, want 1", n)
	}
	cancel()
	if err := <-served; err != nil {
		t.Fatalf("Serve: %v", err)
	}
}
