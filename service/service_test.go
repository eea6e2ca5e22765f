package service

import (
	"bytes"
	"crypto/rand"
	"errors"
	"io"
	"net"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/antnode/antnode/event"
	"github.com/antnode/antnode/identity"
)

// TestRefusals: each refusal reaches the dialler as a *StreamError with
// its code, the mux counts it, and the connection carries on (an echo
// stream works after every refusal).
func TestRefusals(t *testing.T) {
	tests := []struct {
		name    string
		allow   func(client identity.PeerID) Allow
		handler Handler
		dial    string
		want    Code
		audit   bool
	}{
		{name: "unknown service", allow: func(identity.PeerID) Allow { return AllowAny }, dial: "nope", want: CodeUnknownService},
		{name: "peer not allowed", allow: func(identity.PeerID) Allow { return Allow{} }, dial: "svc", want: CodeNotAllowed, audit: true},
		{name: "another peer allowed", allow: func(identity.PeerID) Allow {
			other, _ := identity.Generate()
			return Allow{Peers: []identity.PeerID{other.ID()}}
		}, dial: "svc", want: CodeNotAllowed, audit: true},
		{name: "target unreachable", allow: func(identity.PeerID) Allow { return AllowAny },
			handler: func(r *Request) { r.Refuse(CodeTargetUnreachable) }, dial: "svc", want: CodeTargetUnreachable},
		{name: "handler that never answers", allow: func(identity.PeerID) Allow { return AllowAny },
			handler: func(r *Request) {}, dial: "svc", want: CodeShutdown},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			server, client := newNode(t, Config{}), newNode(t, Config{})
			h := tc.handler
			if h == nil {
				h = echo
			}
			if err := server.mux.Handle("svc", tc.allow(client.id.ID()), "", h); err != nil {
				t.Fatal(err)
			}
			if err := server.mux.Handle("echo", AllowAny, "", echo); err != nil {
				t.Fatal(err)
			}
			l := connect(t, client, server)
			_, err := l.dial(tc.dial)
			var se *StreamError
			if !errors.As(err, &se) || se.Code != tc.want || errors.Is(err, ErrRefused) != tc.want.Refusal() {
				t.Fatalf("got %v, want code %s", err, tc.want)
			}
			if !strings.Contains(err.Error(), tc.want.String()) {
				t.Fatalf("error %q does not name %s", err, tc.want)
			}
			if got := len(server.rec.Kind(event.KindSecurity)); (got > 0) != tc.audit {
				t.Fatalf("%d security events, want audit=%v", got, tc.audit)
			}
			if tc.audit {
				ev := server.rec.Kind(event.KindSecurity)[0]
				if ev.Reason != event.ReasonNotAllowed || ev.Peer != client.id.ID().String() {
					t.Fatalf("audit event %+v", ev)
				}
			}
			c, err := l.dial("echo")
			if err != nil {
				t.Fatalf("connection unusable after a refusal: %v", err)
			}
			defer c.Close()
			roundTrip(t, c, []byte("still here"))
			if tc.want.Refusal() {
				label := tc.dial
				if label == "nope" {
					label = UnknownLabel
				}
				if v := metricValue(t, server, MetricStreams, label, tc.want.String()); v != 1 {
					t.Fatalf("%s{%s,%s} = %v, want 1", MetricStreams, label, tc.want, v)
				}
			}
		})
	}
}

// TestBadHeaderIsRefused: a stream that does not start with a service
// header is refused with CodeBadHeader; the mux carries on.
func TestBadHeaderIsRefused(t *testing.T) {
	server, client := newNode(t, Config{}), newNode(t, Config{})
	server.mux.Handle("echo", AllowAny, "", echo)
	l := connect(t, client, server)
	str, err := l.cc.OpenStreamSync(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	str.Write([]byte("GET / HTTP/1.1\r\n\r\n"))
	_, err = io.ReadAll(str)
	if code, ok := codeOf(err); !ok || code != CodeBadHeader {
		t.Fatalf("raw stream: %v, want %s", err, CodeBadHeader)
	}
	c, err := l.dial("echo")
	if err != nil {
		t.Fatal(err)
	}
	roundTrip(t, c, []byte("ok"))
	c.Close()
}

func roundTrip(t *testing.T, c *Conn, msg []byte) {
	t.Helper()
	if _, err := c.Write(msg); err != nil {
		t.Fatal(err)
	}
	got := make([]byte, len(msg))
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.ReadFull(c, got); err != nil || !bytes.Equal(got, msg) {
		t.Fatalf("echo: %q, %v", got, err)
	}
	c.SetReadDeadline(time.Time{})
}

// metricValue reads one sample of a service metric from n's registry.
func metricValue(t *testing.T, n *node, metric, service, label2 string) float64 {
	t.Helper()
	mfs, err := n.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != metric {
			continue
		}
		for _, m := range mf.GetMetric() {
			var svc, other string
			for _, lp := range m.GetLabel() {
				if lp.GetName() == "service" {
					svc = lp.GetValue()
				} else {
					other = lp.GetValue()
				}
			}
			if svc == service && other == label2 {
				if c := m.GetCounter(); c != nil {
					return c.GetValue()
				}
				return m.GetGauge().GetValue()
			}
		}
	}
	t.Fatalf("no %s{service=%q,%q}", metric, service, label2)
	return 0
}

// TestHalfClose: each side can end its sending direction alone and keep
// reading what the other still sends, both ways round.
func TestHalfClose(t *testing.T) {
	server, client := newNode(t, Config{}), newNode(t, Config{})
	// "upload": reads to EOF, then answers the byte count.
	server.mux.Handle("upload", AllowAny, "", func(r *Request) {
		c, err := r.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		n, _ := io.Copy(io.Discard, c)
		c.Write([]byte(strings.Repeat("x", int(n%100))))
		c.CloseWrite()
	})
	// "download": sends, closes its side, then reads what the client
	// sends after that.
	gotAfter := make(chan string, 1)
	server.mux.Handle("download", AllowAny, "", func(r *Request) {
		c, err := r.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		c.Write([]byte("data"))
		c.CloseWrite()
		b, _ := io.ReadAll(c)
		gotAfter <- string(b)
	})
	l := connect(t, client, server)

	up, err := l.dial("upload")
	if err != nil {
		t.Fatal(err)
	}
	up.Write(make([]byte, 1234))
	up.CloseWrite()
	b, err := io.ReadAll(up)
	if err != nil || len(b) != 34 {
		t.Fatalf("upload: read %d bytes after our FIN, %v; want 34", len(b), err)
	}
	up.Close()

	down, err := l.dial("download")
	if err != nil {
		t.Fatal(err)
	}
	b, err = io.ReadAll(down)
	if err != nil || string(b) != "data" {
		t.Fatalf("download: %q, %v", b, err)
	}
	down.Write([]byte("after the server's FIN"))
	down.CloseWrite()
	select {
	case s := <-gotAfter:
		if s != "after the server's FIN" {
			t.Fatalf("server read %q after its FIN", s)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("server never read the client's bytes after its own FIN")
	}
	down.Close()
}

// TestResetReachesThePeer: a Reset on one side is a CodeReset on the other,
// not an end of data.
func TestResetReachesThePeer(t *testing.T) {
	server, client := newNode(t, Config{}), newNode(t, Config{})
	readErr := make(chan error, 1)
	server.mux.Handle("svc", AllowAny, "", func(r *Request) {
		c, err := r.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		_, err = io.ReadAll(c)
		readErr <- err
	})
	l := connect(t, client, server)
	c, err := l.dial("svc")
	if err != nil {
		t.Fatal(err)
	}
	c.Write([]byte("partial"))
	c.Reset()
	select {
	case err := <-readErr:
		var se *StreamError
		if !errors.As(err, &se) || se.Code != CodeReset {
			t.Fatalf("server read %v, want a reset", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("reset never reached the server")
	}
}

// TestStreamLimitUnderFlood: a peer that opens far more streams than its
// limit gets refusals for the excess, while its own accepted streams and
// another peer's streams keep flowing.
func TestStreamLimitUnderFlood(t *testing.T) {
	const limit, flood = 8, 2000
	server := newNode(t, Config{MaxStreamsPerPeer: limit})
	hold := make(chan struct{})
	server.mux.Handle("hold", AllowAny, "", func(r *Request) {
		c, err := r.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		<-hold
	})
	server.mux.Handle("echo", AllowAny, "", echo)
	flooder, other := newNode(t, Config{}), newNode(t, Config{})
	fl, ol := connect(t, flooder, server), connect(t, other, server)
	defer close(hold)

	var held []*Conn
	for range limit - 1 {
		c, err := fl.dial("hold")
		if err != nil {
			t.Fatal(err)
		}
		held = append(held, c)
	}
	echoConn, err := fl.dial("echo") // the flooder's last slot
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	refused := 0
	start := time.Now()
	for range flood {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, err := fl.dialWithin("hold", time.Minute)
			var se *StreamError
			if errors.As(err, &se) && se.Code == CodeStreamLimit {
				mu.Lock()
				refused++
				mu.Unlock()
			}
		}()
	}
	// While the flood runs, the flooder's accepted stream and the other
	// peer's streams keep working.
	for i := range 20 {
		roundTrip(t, echoConn, []byte{byte(i)})
		c, err := ol.dial("echo")
		if err != nil {
			t.Fatalf("other peer refused during the flood: %v", err)
		}
		roundTrip(t, c, []byte("other"))
		c.Close()
	}
	wg.Wait()
	if refused != flood {
		t.Fatalf("%d of %d flood streams refused with %s", refused, flood, CodeStreamLimit)
	}
	// Counted exactly, recorded within the event bound.
	if v := metricValue(t, server, MetricStreams, "hold", CodeStreamLimit.String()); v != flood {
		t.Fatalf("stream_limit refusals counted %v, want %d", v, flood)
	}
	events := 0
	for _, ev := range server.rec.Events(nil) {
		if ev.Kind == event.KindStream && ev.Reason == event.ReasonStreamLimit {
			events++
		}
	}
	if bound := eventsPerSecond * (int(time.Since(start).Seconds()) + 2); events == 0 || events > bound {
		t.Fatalf("%d stream_limit events recorded for %d refusals, want 1..%d", events, flood, bound)
	}
	roundTrip(t, echoConn, []byte("after"))
	for _, c := range held {
		c.Close()
	}
	echoConn.Close()
}

// TestIdleTimeout: a stream on which nothing moves is reset with CodeIdle;
// one that moves a byte now and then is not.
func TestIdleTimeout(t *testing.T) {
	server, client := newNode(t, Config{IdleTimeout: 300 * time.Millisecond}), newNode(t, Config{})
	server.mux.Handle("echo", AllowAny, "", echo)
	l := connect(t, client, server)
	quiet, err := l.dial("echo")
	if err != nil {
		t.Fatal(err)
	}
	busy, err := l.dial("echo")
	if err != nil {
		t.Fatal(err)
	}
	for range 8 { // 8 x 100 ms: past the idle timeout, never idle that long
		roundTrip(t, busy, []byte("."))
		time.Sleep(100 * time.Millisecond)
	}
	quiet.SetReadDeadline(time.Now().Add(5 * time.Second))
	_, err = quiet.Read(make([]byte, 1))
	var se *StreamError
	if !errors.As(err, &se) || se.Code != CodeIdle {
		t.Fatalf("quiet stream: %v, want %s", err, CodeIdle)
	}
	roundTrip(t, busy, []byte("alive"))
	busy.Close()
	if st := server.mux.labels.m["echo"]; st.idle.Load() != 1 {
		t.Fatalf("idle endings counted %d, want 1", st.idle.Load())
	}
}

// TestFinishedStreamsLeaveNothing: 1000 streams that ran and ended leave
// no goroutine, no stream slot and no active stream behind.
func TestFinishedStreamsLeaveNothing(t *testing.T) {
	server, client := newNode(t, Config{MaxStreamsPerPeer: 64}), newNode(t, Config{})
	server.mux.Handle("echo", AllowAny, "", echo)
	l := connect(t, client, server)
	warm, err := l.dial("echo")
	if err != nil {
		t.Fatal(err)
	}
	roundTrip(t, warm, []byte("warm"))
	warm.Close()
	settle()
	before := runtime.NumGoroutine()
	payload := make([]byte, 2048)
	rand.Read(payload)
	for i := range 1000 {
		c, err := l.dial("echo")
		if err != nil {
			t.Fatalf("stream %d: %v", i, err)
		}
		c.Write(payload)
		c.CloseWrite()
		got, err := io.ReadAll(c)
		if err != nil || !bytes.Equal(got, payload) {
			t.Fatalf("stream %d: %d bytes, %v", i, len(got), err)
		}
		c.Close()
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		settle()
		server.mux.mu.Lock()
		slots := len(server.mux.perPeer)
		server.mux.mu.Unlock()
		active := server.mux.labels.m["echo"].active.Load() + client.mux.labels.m[UnknownLabel].active.Load()
		g := runtime.NumGoroutine()
		if slots == 0 && active == 0 && g <= before {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after 1000 streams: %d peers hold slots, %d active, goroutines %d (before %d)", slots, active, g, before)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if got := server.mux.labels.m["echo"].accepted.Load(); got != 1001 {
		t.Fatalf("accepted %d, want 1001", got)
	}
}

func settle() {
	runtime.GC()
	time.Sleep(20 * time.Millisecond)
}

// TestMetricsLint: the service metrics pass client_golang's linter and
// carry only configured names and UnknownLabel.
func TestMetricsLint(t *testing.T) {
	server, client := newNode(t, Config{Names: []string{"dialled"}}), newNode(t, Config{})
	server.mux.Handle("echo", AllowAny, "", echo)
	l := connect(t, client, server)
	for _, name := range []string{"echo", "random-1", "random-2"} {
		if c, err := l.dial(name); err == nil {
			c.Close()
		}
	}
	problems, err := testutil.GatherAndLint(server.reg)
	if err != nil || len(problems) > 0 {
		t.Fatalf("lint: %v %v", err, problems)
	}
	mfs, err := server.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	labels := map[string]bool{}
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			for _, lp := range m.GetLabel() {
				if lp.GetName() == "service" {
					labels[lp.GetValue()] = true
				}
			}
		}
	}
	want := map[string]bool{"echo": true, "dialled": true, UnknownLabel: true}
	if len(labels) != len(want) {
		t.Fatalf("service labels %v, want %v", labels, want)
	}
	for l := range want {
		if !labels[l] {
			t.Fatalf("service labels %v, want %v", labels, want)
		}
	}
	var unknown Stats
	for _, s := range server.mux.Services() {
		if s.Service == UnknownLabel {
			unknown = s
		}
	}
	if unknown.Refused[CodeUnknownService.String()] != 2 {
		t.Fatalf("unknown label: %+v, want 2 unknown_service refusals", unknown)
	}
}

// TestListener: Accept returns streams as net.Conns naming the peer; a
// stream that Accept does not take within the header timeout is refused
// with CodeStreamLimit; Close refuses what waits and ends Accept.
func TestListener(t *testing.T) {
	server, client := newNode(t, Config{HeaderTimeout: 300 * time.Millisecond}), newNode(t, Config{})
	ln, err := server.mux.Listen("web", AllowAny)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := server.mux.Listen("web", AllowAny); !errors.Is(err, ErrServiceExists) {
		t.Fatalf("second Listen: %v", err)
	}
	l := connect(t, client, server)

	// Not accepted in time: refused.
	_, err = l.dial("web")
	var se *StreamError
	if !errors.As(err, &se) || se.Code != CodeStreamLimit {
		t.Fatalf("unaccepted stream: %v, want %s", err, CodeStreamLimit)
	}

	// Accepted: the conn names the peer, and bytes flow.
	accepted := make(chan *Conn, 1)
	go func() {
		c, err := ln.Accept()
		if err == nil {
			accepted <- c.(*Conn)
		}
		close(accepted)
	}()
	c, err := l.dial("web")
	if err != nil {
		t.Fatal(err)
	}
	sc := <-accepted
	if sc == nil || sc.Peer() != client.id.ID() || sc.RemoteAddr().String() != client.id.ID().String()+"/web" {
		t.Fatalf("accepted %v", sc)
	}
	c.Write([]byte("hi"))
	b := make([]byte, 2)
	if _, err := io.ReadFull(sc, b); err != nil || string(b) != "hi" {
		t.Fatalf("read %q, %v", b, err)
	}
	sc.Close()
	c.Close()

	// Closed: Accept ends, new streams are refused as unknown.
	acceptErr := make(chan error, 1)
	go func() { _, err := ln.Accept(); acceptErr <- err }()
	ln.Close()
	if err := <-acceptErr; !errors.Is(err, net.ErrClosed) {
		t.Fatalf("Accept after Close: %v", err)
	}
	if _, err := l.dial("web"); !errors.As(err, &se) || se.Code != CodeUnknownService {
		t.Fatalf("after Close: %v, want %s", err, CodeUnknownService)
	}
}

// TestGate: at most eventsPerSecond events pass each second; the next
// that passes carries how many were suppressed.
func TestGate(t *testing.T) {
	var g gate
	t0 := time.Unix(1000, 0)
	passed := 0
	for i := range eventsPerSecond + 5 {
		if ok, _ := g.pass(t0.Add(time.Duration(i) * time.Millisecond)); ok {
			passed++
		}
	}
	if passed != eventsPerSecond {
		t.Fatalf("%d passed in one second, want %d", passed, eventsPerSecond)
	}
	ok, sup := g.pass(t0.Add(time.Second))
	if !ok || sup != 5 {
		t.Fatalf("next second: ok=%v suppressed=%d, want true, 5", ok, sup)
	}
	if ok, sup := g.pass(t0.Add(time.Second)); !ok || sup != 0 {
		t.Fatalf("then: ok=%v suppressed=%d", ok, sup)
	}
}
