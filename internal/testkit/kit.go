package testkit

import (
	"context"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/quic-go/quic-go"

	"github.com/antnode/antnode/endpoint"
	"github.com/antnode/antnode/event"
	"github.com/antnode/antnode/identity"
)

// Identity returns a fresh peer identity.
func Identity(t testing.TB) *identity.Identity {
	t.Helper()
	id, err := identity.Generate()
	if err != nil {
		t.Fatal(err)
	}
	return id
}

// Endpoint returns a node socket on 127.0.0.1, closed when t ends.
func Endpoint(t testing.TB) *endpoint.Endpoint {
	t.Helper()
	ep, err := endpoint.Listen("udp4", "127.0.0.1:0", endpoint.Config{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ep.Close() })
	return ep
}

// DualStackEndpoint returns a dual-stack node socket (an IPv6 socket on
// [::] with IPV6_V6ONLY off, an ephemeral port), closed when t ends. It
// needs IPv6 (NeedIPv6Loopback).
func DualStackEndpoint(t testing.TB) *endpoint.Endpoint {
	t.Helper()
	NeedIPv6Loopback(t)
	c, err := endpoint.ListenDualStack(0)
	if err != nil {
		t.Fatal(err)
	}
	return EndpointOn(t, c)
}

// EndpointOn returns a node socket on c (a model's, say), closed when t
// ends.
func EndpointOn(t testing.TB, c net.PacketConn) *endpoint.Endpoint {
	t.Helper()
	ep, err := endpoint.New(endpoint.Config{Conn: c})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ep.Close() })
	return ep
}

// QUICPair is a QUIC connection between two transports on loopback.
type QUICPair struct {
	// Dialer and Listener are the two ends; DialerID and ListenerID the
	// identities they authenticated with.
	Dialer, Listener     *quic.Conn
	DialerID, ListenerID *identity.Identity
	// DialerTransport and ListenerTransport carry them.
	DialerTransport, ListenerTransport *quic.Transport
}

// NewQUICPair dials a QUIC connection between two fresh transports on
// 127.0.0.1, with conf (nil: quic-go's defaults plus keepalives and
// unidirectional streams), and closes everything when t ends.
func NewQUICPair(t testing.TB, conf *quic.Config) QUICPair {
	t.Helper()
	if conf == nil {
		conf = &quic.Config{KeepAlivePeriod: time.Second, MaxIncomingUniStreams: 16}
	}
	p := QUICPair{DialerID: Identity(t), ListenerID: Identity(t)}
	p.DialerTransport, p.ListenerTransport = transport(t), transport(t)
	ln, err := p.ListenerTransport.Listen(p.ListenerID.ServerTLS("testkit"), conf)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	p.Dialer, err = p.DialerTransport.Dial(ctx, p.ListenerTransport.Conn.LocalAddr(), p.DialerID.ClientTLS(p.ListenerID.ID(), "testkit"), conf)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Dialer.CloseWithError(0, "") })
	if p.Listener, err = ln.Accept(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Listener.CloseWithError(0, "") })
	return p
}

func transport(t testing.TB) *quic.Transport {
	t.Helper()
	pc, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	tr := &quic.Transport{Conn: pc}
	t.Cleanup(func() { tr.Close() })
	return tr
}

// Recorder is an event.Recorder that keeps every event, for assertions.
// It is safe for concurrent use.
type Recorder struct {
	mu     sync.Mutex
	events []event.Event
}

// Record implements event.Recorder.
func (r *Recorder) Record(ev event.Event) {
	r.mu.Lock()
	r.events = append(r.events, ev)
	r.mu.Unlock()
}

// Events returns the events recorded so far that match accepts (nil: all).
func (r *Recorder) Events(match func(event.Event) bool) []event.Event {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []event.Event
	for _, ev := range r.events {
		if match == nil || match(ev) {
			out = append(out, ev)
		}
	}
	return out
}

// Kind returns the events of kind k.
func (r *Recorder) Kind(k event.Kind) []event.Event {
	return r.Events(func(ev event.Event) bool { return ev.Kind == k })
}

// Find returns the first event that match accepts.
func (r *Recorder) Find(match func(event.Event) bool) (event.Event, bool) {
	if evs := r.Events(match); len(evs) > 0 {
		return evs[0], true
	}
	return event.Event{}, false
}
