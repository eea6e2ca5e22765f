package service

import (
	"context"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/quic-go/quic-go"

	"github.com/antnode/antnode/identity"
	"github.com/antnode/antnode/internal/testkit"
)

const testALPN = "antnode-service-test"

// node is one side of the test kit: an identity, a QUIC transport on
// loopback, a Mux, and the events it recorded.
type node struct {
	id  *identity.Identity
	tr  *quic.Transport
	ln  *quic.Listener
	mux *Mux
	reg *prometheus.Registry
	rec *events
}

// events is a Recorder that keeps what it is given.
type events = testkit.Recorder

func newNode(t testing.TB, cfg Config) *node {
	t.Helper()
	id, err := identity.Generate()
	if err != nil {
		t.Fatal(err)
	}
	pc, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	tr := &quic.Transport{Conn: pc}
	t.Cleanup(func() { tr.Close(); pc.Close() })
	n := &node{id: id, tr: tr, reg: prometheus.NewRegistry(), rec: &events{}}
	cfg.Local, cfg.Registerer, cfg.Recorder = id.ID(), n.reg, n.rec
	if n.mux, err = New(cfg); err != nil {
		t.Fatal(err)
	}
	if n.ln, err = tr.Listen(id.ServerTLS(testALPN), n.quicConfig()); err != nil {
		t.Fatal(err)
	}
	return n
}

func (n *node) quicConfig() *quic.Config {
	return &quic.Config{MaxIncomingStreams: int64(n.mux.MaxStreamsPerPeer()) + 16, MaxIdleTimeout: 10 * time.Second}
}

// link is an authenticated QUIC connection from a client node to a server
// node whose incoming streams the server's Mux serves (and the client's,
// for streams the server opens).
type link struct {
	client, server *node
	cc, sc         *quic.Conn // the client's and the server's side
	wg             sync.WaitGroup
}

func connect(t testing.TB, client, server *node) *link {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	accepted := make(chan *quic.Conn, 1)
	go func() {
		c, err := server.ln.Accept(ctx)
		if err == nil {
			accepted <- c
		}
		close(accepted)
	}()
	cc, err := client.tr.Dial(ctx, server.tr.Conn.LocalAddr(), client.id.ClientTLS(server.id.ID(), testALPN), client.quicConfig())
	if err != nil {
		t.Fatal(err)
	}
	sc := <-accepted
	if sc == nil {
		t.Fatal("no connection accepted")
	}
	l := &link{client: client, server: server, cc: cc, sc: sc}
	l.serve(sc, server.mux, client.id.ID())
	l.serve(cc, client.mux, server.id.ID())
	t.Cleanup(func() {
		cc.CloseWithError(0, "")
		sc.CloseWithError(0, "")
		l.wg.Wait()
	})
	return l
}

// serve runs mux.Serve for every stream peer opens on qc, as a node does.
func (l *link) serve(qc *quic.Conn, mux *Mux, peer identity.PeerID) {
	l.wg.Add(1)
	go func() {
		defer l.wg.Done()
		for {
			str, err := qc.AcceptStream(context.Background())
			if err != nil {
				return
			}
			l.wg.Add(1)
			go func() {
				defer l.wg.Done()
				mux.Serve(qc.Context(), peer, str)
			}()
		}
	}()
}

// open opens a stream from the client to the server's service name.
func (l *link) open(t testing.TB, name string) *Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, err := l.client.mux.Open(ctx, l.cc, l.server.id.ID(), name)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// dial opens a stream and waits for the service's answer.
func (l *link) dial(name string) (*Conn, error) { return l.dialWithin(name, 5*time.Second) }

// dialWithin is dial bounded by d: a flood of thousands of streams waits
// its turn for QUIC's stream credit, which a loaded machine gives slowly.
func (l *link) dialWithin(name string, d time.Duration) (*Conn, error) {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	c, err := l.client.mux.Open(ctx, l.cc, l.server.id.ID(), name)
	if err != nil {
		return nil, err
	}
	if err := c.Accepted(ctx); err != nil {
		c.Close()
		return nil, err
	}
	return c, nil
}

// echo is a Handler that accepts and sends back what it reads, then
// closes its sending side when the peer has closed its own.
func echo(r *Request) {
	c, err := r.Accept()
	if err != nil {
		return
	}
	defer c.Close()
	buf := make([]byte, 4096)
	for {
		n, err := c.Read(buf)
		if n > 0 {
			if _, werr := c.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			c.CloseWrite()
			return
		}
	}
}
