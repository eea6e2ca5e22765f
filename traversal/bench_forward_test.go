//go:build unix

package traversal

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"runtime"
	"runtime/debug"
	"runtime/pprof"
	"slices"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/antnode/antnode/event"
	"github.com/antnode/antnode/identity"
	"github.com/antnode/antnode/internal/testkit"
	"github.com/antnode/antnode/service"
)

// The benchmarks of carrying application traffic: a TCP connection
// forwarded through one node (service.Forwarder over DialEarly, as
// `antnode forward` does) to a service of another that joins it to a TCP
// target (as the daemon's --expose does). Both nodes, the TCP clients and
// the targets run in the benchmark process.

// BenchmarkForwardThroughput measures bulk transfers from a TCP client
// through a forward to a TCP sink (TCP -> forward -> stream -> TCP) against
// transfers on a raw stream (Node.Dial to a service that reads to the end)
// on the same peer connection, two nodes on loopback. Each iteration is
// one pair, back to back, the order alternating; each transfer is one new
// connection (or stream) that sends size bytes, ends its sending
// direction, and waits for the receiver's count of what arrived. It
// reports both throughputs and the median of the pairs' ratios
// (fwd/raw): this machine's noise moves single transfers by several per
// cent.
func BenchmarkForwardThroughput(b *testing.B) {
	const size = 16 << 20
	boot := startBootstrap(b)
	cli, srv := startNode(b, nil, boot), startNode(b, nil, boot)
	sink := benchTCPServer(b, func(c net.Conn) { drainCount(c) })
	benchExpose(b, srv, "sink", sink)
	err := srv.Services().Handle("discard", service.AllowAny, "", func(r *service.Request) {
		if s, err := r.Accept(); err == nil {
			drainCount(s)
			s.Close()
		}
	})
	if err != nil {
		b.Fatal(err)
	}
	fwd := benchForward(b, cli, srv.ID(), "sink")
	pc := benchPeerConn(b, cli, srv.ID())

	chunk := make([]byte, 32<<10)
	rand.Read(chunk)
	sides := [2]struct {
		name string
		run  func() error
	}{
		{"raw stream", func() error {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			s, err := cli.Dial(ctx, srv.ID(), "discard")
			cancel()
			if err != nil {
				return err
			}
			defer s.Close()
			return sendCounted(s, chunk, size)
		}},
		{"forward", func() error {
			c, err := net.DialTimeout("tcp", fwd, 10*time.Second)
			if err != nil {
				return err
			}
			defer c.Close()
			return sendCounted(c, chunk, size)
		}},
	}
	for _, s := range sides { // warm both paths (pools, congestion window)
		if err := s.run(); err != nil {
			b.Fatalf("%s: %v", s.name, err)
		}
	}
	var spent, cpu [2]time.Duration // raw, forward
	ratios := make([]float64, 0, b.N)
	b.SetBytes(size * 2)
	b.ResetTimer()
	for i := range b.N {
		var took [2]time.Duration
		for k := range 2 {
			j := (k + i) % 2
			start, cpu0 := time.Now(), cpuTime()
			if err := sides[j].run(); err != nil {
				b.Fatalf("%s: %v", sides[j].name, err)
			}
			took[j] = time.Since(start)
			spent[j] += took[j]
			cpu[j] += cpuTime() - cpu0
		}
		ratios = append(ratios, took[0].Seconds()/took[1].Seconds())
	}
	b.StopTimer()
	if c := cli.liveConn(srv.ID()); c != pc {
		b.Fatal("the peer connection changed during the run: the two sides did not share it")
	}
	mbps := func(i int) float64 { return float64(size) * float64(b.N) * 8 / spent[i].Seconds() / 1e6 }
	b.ReportMetric(mbps(0), "raw-Mbit/s")
	b.ReportMetric(mbps(1), "fwd-Mbit/s")
	// CPU time of the whole process (both nodes, client and sink) per
	// byte: where the machine is the bottleneck, the forward's extra TCP
	// legs show here.
	b.ReportMetric(float64(cpu[0])/float64(size)/float64(b.N), "raw-CPU-ns/B")
	b.ReportMetric(float64(cpu[1])/float64(size)/float64(b.N), "fwd-CPU-ns/B")
	slices.Sort(ratios)
	b.ReportMetric(ratios[len(ratios)/2], "fwd/raw")
}

// BenchmarkForwardTTFB measures the time to first byte of a new TCP
// connection through an established forward, in round trips of the peer
// connection. Loopback's round trip is tens of microseconds, less than
// the nodes' own scheduling, so the two nodes run on the in-process NAT
// model in real time (not synctest's virtual time: the TCP sides are real
// sockets), public, with 20 ms one-way delay on each access link: an
// 80 ms peer round trip. An iteration connects to the forward's local
// port, writes a 64-byte request and reads the first byte of the answer
// of a target that answers as soon as it has the request; the time runs
// from the connect to that byte. It reports the medians of the time to
// first byte, of the peer connection's smoothed RTT read right after,
// and of each connection's ratio of the two, and that ratio's 90th
// percentile.
func BenchmarkForwardTTFB(b *testing.B) {
	const oneWay = 20 * time.Millisecond
	req, resp := make([]byte, 64), make([]byte, 64)
	rand.Read(req)
	rand.Read(resp)
	mn := newModelNet(b)
	cli, srv := mn.peer(1, public, oneWay), mn.peer(2, public, oneWay)
	target := benchTCPServer(b, func(c net.Conn) {
		got := make([]byte, len(req))
		if _, err := io.ReadFull(c, got); err != nil || string(got) != string(req) {
			return
		}
		c.Write(resp)
		io.Copy(io.Discard, c)
	})
	benchExpose(b, srv, "web", target)
	fwd := benchForward(b, cli, srv.ID(), "web")
	pc := benchPeerConn(b, cli, srv.ID())
	if p := pc.Path(); p != event.PathDirect {
		b.Fatalf("path %v, want direct", p)
	}
	once := func() (time.Duration, error) {
		start := time.Now()
		c, err := net.DialTimeout("tcp", fwd, 10*time.Second)
		if err != nil {
			return 0, err
		}
		defer c.Close()
		c.SetDeadline(start.Add(10 * time.Second))
		if _, err := c.Write(req); err != nil {
			return 0, err
		}
		got := make([]byte, len(resp))
		if _, err := io.ReadFull(c, got[:1]); err != nil {
			return 0, err
		}
		ttfb := time.Since(start)
		if _, err := io.ReadFull(c, got[1:]); err != nil {
			return 0, err
		}
		if string(got) != string(resp) {
			return 0, errors.New("wrong answer")
		}
		return ttfb, nil
	}
	// The forward is established: a first connection has gone through.
	if _, err := once(); err != nil {
		b.Fatal(err)
	}
	ttfbs, rtts, ratios := make([]float64, 0, b.N), make([]float64, 0, b.N), make([]float64, 0, b.N)
	b.ResetTimer()
	for range b.N {
		ttfb, err := once()
		if err != nil {
			b.Fatal(err)
		}
		rtt := pc.RTT()
		ttfbs, rtts, ratios = append(ttfbs, ms(ttfb)), append(rtts, ms(rtt)), append(ratios, ttfb.Seconds()/rtt.Seconds())
	}
	b.StopTimer()
	if c := cli.liveConn(srv.ID()); c != pc {
		b.Fatal("the peer connection changed during the run")
	}
	minRTT := pc.QUIC().ConnectionStats().MinRTT
	b.ReportMetric(quantile(ttfbs, 0.5), "ttfb-ms")
	b.ReportMetric(quantile(rtts, 0.5), "rtt-ms")
	b.ReportMetric(ms(minRTT), "min-rtt-ms")
	b.ReportMetric(quantile(ttfbs, 0.5)/ms(minRTT), "ttfb/min-rtt")
	b.ReportMetric(quantile(ratios, 0.5), "ttfb/rtt")
	b.ReportMetric(quantile(ratios, 0.9), "p90-ttfb/rtt")
}

// BenchmarkForwardConnections holds 1 000 forwarded TCP connections open
// at once through one forward between two nodes on loopback, to a TCP echo
// target; each sends 16 KiB of random bytes and checks the SHA-256 of
// what comes back. With all of them open and verified it measures the
// process's growth (Go heap and stacks after collections, and RSS) and
// goroutines, over 1 000. *floor* is the same 1 000 connections made to
// the echo target directly: the test client and the target's own cost;
// *over floor* is what the two nodes add per forwarded connection, both
// ends together. After closing them it waits for the serving node's
// streams to end and reports the goroutines left behind.
func BenchmarkForwardConnections(b *testing.B) {
	const (
		conns   = 1000
		payload = 16 << 10
	)
	if os.Getenv("ANTNODE_FORWARD_HEAP_PROFILE") != "" {
		runtime.MemProfileRate = 512 // finer than the default, at some cost
	}
	boot := startBootstrap(b)
	cli, srv := startNode(b, nil, boot), startNode(b, nil, boot)
	echo := benchTCPServer(b, func(c net.Conn) {
		// Through a small buffer of its own (no splice): the floor's
		// target costs what the forward's does.
		io.CopyBuffer(struct{ io.Writer }{c}, struct{ io.Reader }{c}, make([]byte, 4<<10))
	})
	benchExpose(b, srv, "echo", echo)
	fwd := benchForward(b, cli, srv.ID(), "echo")
	benchPeerConn(b, cli, srv.ID())
	if held, ok, err := holdVerified(fwd, 1, payload); ok != 1 { // warm up
		b.Fatalf("first forwarded connection: %v", err)
	} else {
		closeAll(held)
	}
	active := func() int64 {
		for _, st := range srv.Services().Services() {
			if st.Service == "echo" {
				return st.Active
			}
		}
		return 0
	}
	var (
		fwdLive, floorLive, fwdRSS, fwdG, floorG, leftG, openS float64
		verified                                               = conns
	)
	b.ResetTimer()
	for range b.N {
		// Through the forward.
		base := sampleMem()
		start := time.Now()
		held, ok, err := holdVerified(fwd, conns, payload)
		openS += time.Since(start).Seconds()
		full := sampleMem()
		if p := os.Getenv("ANTNODE_FORWARD_HEAP_PROFILE"); p != "" {
			writeHeapProfile(b, p)
		}
		if ok < conns {
			b.Logf("%d of %d forwarded connections verified; first failure: %v", ok, conns, err)
		}
		verified = min(verified, ok)
		closeAll(held)
		deadline := time.Now().Add(15 * time.Second)
		for (active() > 0 || runtime.NumGoroutine() > base.goroutines) && time.Now().Before(deadline) {
			time.Sleep(20 * time.Millisecond)
		}
		after := sampleMem()
		fwdLive += float64(full.live) - float64(base.live)
		fwdRSS += float64(full.rss) - float64(base.rss)
		fwdG += float64(full.goroutines - base.goroutines)
		leftG += float64(after.goroutines - base.goroutines)

		// The floor: the same connections to the target directly.
		base = sampleMem()
		held, ok, err = holdVerified(echo, conns, payload)
		full = sampleMem()
		if ok < conns {
			b.Fatalf("direct connections: %d of %d verified: %v", ok, conns, err)
		}
		closeAll(held)
		floorLive += float64(full.live) - float64(base.live)
		floorG += float64(full.goroutines - base.goroutines)
		deadline = time.Now().Add(15 * time.Second)
		for runtime.NumGoroutine() > base.goroutines && time.Now().Before(deadline) {
			time.Sleep(20 * time.Millisecond)
		}
	}
	b.StopTimer()
	per := func(v float64) float64 { return v / float64(b.N) / conns }
	b.ReportMetric(float64(verified), "verified-conns")
	b.ReportMetric(per(fwdLive), "B/conn")
	b.ReportMetric(per(fwdRSS), "RSS-B/conn")
	b.ReportMetric(per(floorLive), "floor-B/conn")
	b.ReportMetric(per(fwdLive-floorLive), "over-floor-B/conn")
	b.ReportMetric(per(fwdG), "goroutines/conn")
	b.ReportMetric(per(floorG), "floor-goroutines/conn")
	b.ReportMetric(leftG/float64(b.N), "goroutines-left")
	b.ReportMetric(openS/float64(b.N)*1000, "open-all-ms")
}

// benchPeerConn connects n to peer, the connection every Dial to peer
// then shares.
func benchPeerConn(tb testing.TB, n *Node, peer identity.PeerID) *Conn {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	c, err := n.PeerConn(ctx, peer)
	if err != nil {
		tb.Fatal(err)
	}
	return c
}

// benchTCPServer serves TCP on loopback, each connection on a goroutine
// of its own that runs handle and then closes it. At cleanup it stops,
// closes what is still open, and waits for every handler.
func benchTCPServer(tb testing.TB, handle func(net.Conn)) string {
	tb.Helper()
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	var (
		wg   sync.WaitGroup
		mu   sync.Mutex
		open = map[net.Conn]struct{}{}
	)
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			open[c] = struct{}{}
			mu.Unlock()
			wg.Add(1)
			go func() {
				defer wg.Done()
				handle(c)
				c.Close()
				mu.Lock()
				delete(open, c)
				mu.Unlock()
			}()
		}
	}()
	tb.Cleanup(func() {
		ln.Close()
		mu.Lock()
		for c := range open {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	return ln.Addr().String()
}

// benchExpose serves name on n to every peer as the daemon's --expose
// does: it dials the TCP target, refuses the stream when that fails, and
// otherwise joins the two.
func benchExpose(tb testing.TB, n *Node, name, target string) {
	tb.Helper()
	err := n.Services().Handle(name, service.AllowAny, target, service.TCPTarget(target, nil))
	if err != nil {
		tb.Fatal(err)
	}
}

// benchForward forwards a new loopback TCP port through n to peer's
// service name (service.Forwarder over DialEarly, as `antnode forward`)
// until cleanup, and returns the port's address.
func benchForward(tb testing.TB, n *Node, peer identity.PeerID, name string) string {
	tb.Helper()
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	f := &service.Forwarder{Listener: ln, Grace: 100 * time.Millisecond,
		Dial: func(ctx context.Context) (*service.Conn, error) { return n.DialEarly(ctx, peer, name) }}
	done := make(chan error, 1)
	go func() { done <- f.Serve(ctx) }()
	tb.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			tb.Errorf("forward: %v", err)
		}
	})
	return ln.Addr().String()
}

// drainCount reads c to its end and answers the number of bytes read
// (8 bytes, big-endian).
func drainCount(c io.ReadWriter) {
	buf := make([]byte, 32<<10)
	var n int64
	for {
		k, err := c.Read(buf)
		n += int64(k)
		if err != nil {
			break
		}
	}
	c.Write(binary.BigEndian.AppendUint64(nil, uint64(n)))
}

// sendCounted writes size bytes (chunk after chunk) to c, ends its
// sending direction, and checks the receiver's count of what arrived.
func sendCounted(c net.Conn, chunk []byte, size int64) error {
	c.SetDeadline(time.Now().Add(time.Minute))
	for sent := int64(0); sent < size; {
		k, err := c.Write(chunk[:min(int64(len(chunk)), size-sent)])
		sent += int64(k)
		if err != nil {
			return err
		}
	}
	if err := c.(interface{ CloseWrite() error }).CloseWrite(); err != nil {
		return err
	}
	var got [8]byte
	if _, err := io.ReadFull(c, got[:]); err != nil {
		return fmt.Errorf("reading the count: %w", err)
	}
	if n := binary.BigEndian.Uint64(got[:]); n != uint64(size) {
		return fmt.Errorf("%d bytes arrived of %d", n, size)
	}
	return nil
}

// holdVerified opens n TCP connections to addr, 64 at a time, and on each
// sends size random bytes and checks the SHA-256 of the echo. It returns
// the connections, still open (nil where a dial failed), how many echoed
// correctly, and the first failure.
func holdVerified(addr string, n, size int) (held []net.Conn, verified int, first error) {
	held = make([]net.Conn, n)
	var (
		ok, next atomic.Int64
		once     sync.Once
		wg       sync.WaitGroup
	)
	fail := func(i int, err error) { once.Do(func() { first = fmt.Errorf("connection %d: %w", i, err) }) }
	for range min(n, 64) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			sent, got := make([]byte, size), make([]byte, size)
			for {
				i := int(next.Add(1)) - 1
				if i >= n {
					return
				}
				c, err := net.DialTimeout("tcp", addr, 10*time.Second)
				if err != nil {
					fail(i, err)
					continue
				}
				held[i] = c
				rand.Read(sent)
				c.SetDeadline(time.Now().Add(30 * time.Second))
				if _, err := c.Write(sent); err != nil {
					fail(i, err)
					continue
				}
				if _, err := io.ReadFull(c, got); err != nil {
					fail(i, err)
					continue
				}
				c.SetDeadline(time.Time{})
				if sha256.Sum256(got) != sha256.Sum256(sent) {
					fail(i, errors.New("the echo's SHA-256 differs"))
					continue
				}
				ok.Add(1)
			}
		}()
	}
	wg.Wait()
	return held, int(ok.Load()), first
}

func closeAll(cs []net.Conn) {
	for _, c := range cs {
		if c != nil {
			c.Close()
		}
	}
}

// memSample is the process's memory after collections.
type memSample struct {
	live       uint64 // Go heap in use by live objects, and stacks
	rss        uint64
	goroutines int
}

func sampleMem() memSample {
	runtime.GC()         // sync.Pool keeps its contents for one more cycle
	debug.FreeOSMemory() // collects again and returns freed pages: RSS follows
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return memSample{live: ms.HeapAlloc + ms.StackInuse, rss: testkit.RSS(), goroutines: runtime.NumGoroutine()}
}

// writeHeapProfile writes the heap's live objects to path.
func writeHeapProfile(tb testing.TB, path string) {
	f, err := os.Create(path)
	if err != nil {
		tb.Fatal(err)
	}
	defer f.Close()
	if err := pprof.Lookup("heap").WriteTo(f, 0); err != nil {
		tb.Fatal(err)
	}
}

// quantile is the q-quantile of xs (nearest rank; xs is sorted in place).
func quantile(xs []float64, q float64) float64 {
	slices.Sort(xs)
	return xs[min(len(xs)-1, int(q*float64(len(xs))))]
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// cpuTime is the process's CPU time so far, user and system.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
