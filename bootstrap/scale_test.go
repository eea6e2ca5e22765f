package bootstrap

// The bootstrap at scale. One bootstrap runs in a child process (this test
// binary executed again, see TestMain) so that its memory is its own and
// can be read after a garbage collection; thousands of registered peers
// run in this process, a hundred to a socket, each with its own key and
// its own authenticated QUIC control connection. A coordination request
// is a whole introduction: request, offer to the target, answer, result.

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"runtime"
	"runtime/debug"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/quic-go/quic-go"

	"github.com/antnode/antnode/bootstrap/wire"
	"github.com/antnode/antnode/endpoint"
	"github.com/antnode/antnode/identity"
	"github.com/antnode/antnode/internal/testkit"
	"github.com/antnode/antnode/monitor"
)

// scaleChildEnv makes the test binary a bootstrap server (see scaleChild).
const scaleChildEnv = "ANTNODE_BOOTSTRAP_SCALE_CHILD"

func TestMain(m *testing.M) {
	switch os.Getenv(scaleChildEnv) {
	case "bootstrap":
		os.Exit(scaleChild(os.Stdin, os.Stdout, false))
	case "bare":
		os.Exit(scaleChild(os.Stdin, os.Stdout, true))
	}
	os.Exit(m.Run())
}

// childMem is what the child reports about itself after a collection.
type childMem struct {
	Peers      int    `json:"peers"`
	HeapInuse  uint64 `json:"heap_inuse"`
	StackInuse uint64 `json:"stack_inuse"`
	RSS        uint64 `json:"rss"`
	Goroutines int    `json:"goroutines"`
}

// live is the Go memory the child holds: heap objects and stacks.
func (m childMem) live() uint64 { return m.HeapInuse + m.StackInuse }

// scaleChild is the child: a bootstrap with the production defaults and a
// real monitor on 127.0.0.1, or (bare) the floor under it: a quic-go
// listener with the bootstrap's TLS and QUIC settings that accepts each
// connection's stream and reads it, and does nothing else. It prints
// "ready ADDR ID", then answers each "mem" line on in with a childMem in
// JSON; it exits when in closes.
func scaleChild(in io.Reader, out io.Writer, bare bool) int {
	fail := func(err error) int {
		fmt.Fprintln(os.Stderr, "scale child:", err)
		return 1
	}
	if os.Getenv("ANTNODE_SCALE_HEAP_PROFILE") != "" {
		runtime.MemProfileRate = 64 // an exact profile, at some cost
	}
	id, err := identity.Generate()
	if err != nil {
		return fail(err)
	}
	start := startBootstrapChild
	if bare {
		start = startBareChild
	}
	cs, err := start(id, out)
	if err != nil {
		return fail(err)
	}
	defer cs.close()
	fmt.Fprintf(out, "ready %s %s\n", cs.addr, id.ID())
	sc := bufio.NewScanner(in)
	for sc.Scan() {
		if err := cs.command(sc.Text(), out); err != nil {
			return fail(err)
		}
	}
	return 0
}

// childServer is the child's server: a bootstrap, or the bare floor.
type childServer struct {
	addr     netip.AddrPort
	numPeers func() int
	restart  func() error // nil: the bare server does not restart
	close    func()
}

// startBareChild starts the floor: a quic-go listener with the
// bootstrap's TLS and QUIC settings that reads each connection's stream.
func startBareChild(id *identity.Identity, _ io.Writer) (*childServer, error) {
	ep, err := endpoint.Listen("udp4", "127.0.0.1:0", endpoint.Config{})
	if err != nil {
		return nil, err
	}
	ln, err := ep.Transport().Listen(id.ServerTLS(wire.ALPN), &quic.Config{MaxIdleTimeout: time.Minute,
		MaxIncomingStreams: 1, MaxIncomingUniStreams: -1})
	if err != nil {
		ep.Close()
		return nil, err
	}
	var conns atomic.Int64
	go func() {
		for {
			conn, err := ln.Accept(context.Background())
			if err != nil {
				return
			}
			go func() {
				str, err := conn.AcceptStream(context.Background())
				if err != nil {
					return
				}
				conns.Add(1)
				io.Copy(io.Discard, str)
				conns.Add(-1)
			}()
		}
	}()
	return &childServer{addr: ep.LocalAddr(), numPeers: func() int { return int(conns.Load()) },
		close: func() { ln.Close(); ep.Close() }}, nil
}

// startBootstrapChild starts a bootstrap with the production defaults
// and a real monitor, which "restart" closes and starts again on the same
// address with the same identity.
func startBootstrapChild(id *identity.Identity, out io.Writer) (*childServer, error) {
	mon, err := monitor.New(monitor.Config{Registerer: prometheus.NewRegistry(), Role: "bootstrap"})
	if err != nil {
		return nil, err
	}
	b, err := startChildBootstrap(id, "127.0.0.1:0", mon)
	if err != nil {
		return nil, err
	}
	addr := b.ep.LocalAddr()
	return &childServer{addr: addr, numPeers: func() int { return b.srv.NumPeers() },
		close: func() { b.close() },
		restart: func() error {
			b.close()
			// The old registry's garbage is collected here, charged to
			// the close: a restarted process would not have it.
			runtime.GC()
			fmt.Fprintln(out, "closed", cpuNow())
			nb, err := startChildBootstrap(id, addr.String(), mon)
			if err != nil {
				return err
			}
			b = nb
			return nil
		}}, nil
}

// command carries out one line of the parent's.
func (cs *childServer) command(line string, out io.Writer) error {
	switch {
	case line == "restart" && cs.restart != nil:
		// Close the bootstrap (its peers are told it shuts down) and
		// start it again on the same address with the same identity.
		if err := cs.restart(); err != nil {
			return err
		}
		fmt.Fprintln(out, "restarted")
	case line == "peers":
		fmt.Fprintln(out, cs.numPeers())
	case strings.HasPrefix(line, "cpu "):
		// A CPU profile of the load alone, until "cpu-stop".
		if f, err := os.Create(strings.TrimPrefix(line, "cpu ")); err == nil {
			pprof.StartCPUProfile(f) // the file is closed when the child exits
		}
	case line == "cpu-stop":
		pprof.StopCPUProfile()
	case line == "cputime":
		fmt.Fprintln(out, cpuNow())
	case strings.HasPrefix(line, "heap "):
		writeHeapProfile(strings.TrimPrefix(line, "heap "))
	case line == "mem":
		return json.NewEncoder(out).Encode(cs.mem())
	}
	return nil
}

// writeHeapProfile writes a heap profile, for finding what a registered
// peer costs, and the goroutines beside it.
func writeHeapProfile(path string) {
	if f, err := os.Create(path); err == nil {
		runtime.GC()
		pprof.WriteHeapProfile(f)
		f.Close()
	}
	if f, err := os.Create(path + ".goroutines"); err == nil {
		pprof.Lookup("goroutine").WriteTo(f, 1)
		f.Close()
	}
}

// mem is the child's memory in the steady state of an idle bootstrap: Go
// collects at least every two minutes, and each collection halves a
// goroutine stack that uses under a quarter of it, so idle stacks shrink
// over a few cycles; FreeOSMemory returns what the heap no longer needs.
func (cs *childServer) mem() childMem {
	for range 4 {
		runtime.GC()
	}
	debug.FreeOSMemory()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return childMem{Peers: cs.numPeers(), HeapInuse: ms.HeapInuse, StackInuse: ms.StackInuse,
		RSS: testkit.RSS(), Goroutines: runtime.NumGoroutine()}
}

// cpuNow is the CPU time this process has used, user and system, in ns.
func cpuNow() int64 {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return ru.Utime.Nano() + ru.Stime.Nano()
}

// childBootstrap is the child's bootstrap and its socket.
type childBootstrap struct {
	ep  *endpoint.Endpoint
	srv *Server
}

// startChildBootstrap starts a bootstrap with the production defaults on
// addr: its stateless reset key and its session ticket key derived from
// id, as cmd/antnode derives them, so that a restart with the same id is
// what a restarted antnode bootstrap is.
func startChildBootstrap(id *identity.Identity, addr string, mon *monitor.Monitor) (*childBootstrap, error) {
	key := quic.StatelessResetKey(id.DeriveKey("quic stateless reset"))
	ep, err := endpoint.Listen("udp4", addr, endpoint.Config{StatelessResetKey: &key})
	if err != nil {
		return nil, err
	}
	srv, err := NewServer(ServerConfig{Identity: id, Endpoint: ep, Recorder: mon})
	if err != nil {
		ep.Close()
		return nil, err
	}
	return &childBootstrap{ep: ep, srv: srv}, nil
}

func (b *childBootstrap) close() {
	b.srv.Close()
	b.ep.Close()
}

// scaleServer is the parent's handle on the child.
type scaleServer struct {
	addr  netip.AddrPort
	id    identity.PeerID
	in    io.WriteCloser
	lines chan string
}

func startScaleServer(tb testing.TB, kind string) *scaleServer {
	tb.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), scaleChildEnv+"="+kind)
	cmd.Stderr = os.Stderr
	in, err := cmd.StdinPipe()
	if err != nil {
		tb.Fatal(err)
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		tb.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		tb.Fatal(err)
	}
	s := &scaleServer{in: in, lines: make(chan string, 4)}
	go func() {
		defer close(s.lines)
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			s.lines <- sc.Text()
		}
	}()
	tb.Cleanup(func() {
		in.Close() // the child exits when its stdin closes
		done := make(chan struct{})
		go func() { cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			cmd.Process.Kill()
			<-done
		}
	})
	line, err := s.next()
	if err != nil {
		tb.Fatal(err)
	}
	f := strings.Fields(line)
	if len(f) != 3 || f[0] != "ready" {
		tb.Fatalf("scale child said %q", line)
	}
	if s.addr, err = netip.ParseAddrPort(f[1]); err != nil {
		tb.Fatal(err)
	}
	if s.id, err = identity.ParsePeerID(f[2]); err != nil {
		tb.Fatal(err)
	}
	return s
}

func (s *scaleServer) next() (string, error) {
	select {
	case l, ok := <-s.lines:
		if !ok {
			return "", errors.New("scale child exited")
		}
		return l, nil
	case <-time.After(60 * time.Second):
		return "", errors.New("scale child silent for 60 s")
	}
}

// cpuTime returns the CPU time the child has used.
func (s *scaleServer) cpuTime() (time.Duration, error) {
	if _, err := io.WriteString(s.in, "cputime\n"); err != nil {
		return 0, err
	}
	l, err := s.next()
	if err != nil {
		return 0, err
	}
	ns, err := strconv.ParseInt(l, 10, 64)
	return time.Duration(ns), err
}

func (s *scaleServer) mem() (childMem, error) {
	var m childMem
	if _, err := io.WriteString(s.in, "mem\n"); err != nil {
		return m, err
	}
	l, err := s.next()
	if err != nil {
		return m, err
	}
	return m, json.Unmarshal([]byte(l), &m)
}

// fleet is the registered peers, peersPerSocket to a socket.
type fleet struct {
	srv     *scaleServer
	eps     []*endpoint.Endpoint
	clients []*Client
	ids     []identity.PeerID
	offers  atomic.Int64
	tickets atomic.Int64 // TLS session tickets the peers have received
	// returnRate and returnSpread are the peers' ReturnRate and
	// MaxReturnSpread (zero: the defaults).
	returnRate   float64
	returnSpread time.Duration
}

const peersPerSocket = 100

func (f *fleet) close() {
	var wg sync.WaitGroup
	for _, c := range f.clients {
		wg.Go(func() { c.Close() })
	}
	wg.Wait()
	for _, ep := range f.eps {
		ep.Close()
	}
}

// grow registers peers until there are n, 256 registrations at a time.
func (f *fleet) grow(ctx context.Context, n int) error {
	start := len(f.clients)
	for i := start; i < n; i++ {
		if i%peersPerSocket == 0 {
			ep, err := endpoint.Listen("udp4", "127.0.0.1:0", endpoint.Config{})
			if err != nil {
				return err
			}
			f.eps = append(f.eps, ep)
		}
		id, err := identity.Generate()
		if err != nil {
			return err
		}
		c, err := NewClient(ClientConfig{Identity: id, Endpoint: f.eps[len(f.eps)-1], Addr: f.srv.addr, ID: f.srv.id,
			// The load generator shares the cores (and, under -race, is
			// slow): a late acknowledgement is load, not a dead bootstrap.
			Label: "0", DialTimeout: 20 * time.Second, MinAckWait: 10 * time.Second,
			ReturnRate: f.returnRate, MaxReturnSpread: f.returnSpread,
			SessionCache: &countingCache{ClientSessionCache: tls.NewLRUClientSessionCache(sessionCacheSize), puts: &f.tickets},
			OnOffer: func(o *Offer) {
				f.offers.Add(1)
				if s, err := o.Accept(Intro{}); err == nil {
					s.Close()
				}
			}})
		if err != nil {
			return err
		}
		f.clients = append(f.clients, c)
		f.ids = append(f.ids, id.ID())
	}
	sem := make(chan struct{}, 256)
	errs := make(chan error, 1)
	var wg sync.WaitGroup
	for _, c := range f.clients[start:] {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			wctx, cancel := context.WithTimeout(ctx, 60*time.Second)
			defer cancel()
			if err := c.WaitReady(wctx); err != nil {
				select {
				case errs <- fmt.Errorf("registration: %w", err):
				default:
				}
			}
		})
	}
	wg.Wait()
	select {
	case err := <-errs:
		return err
	default:
		return nil
	}
}

// load is the outcome of a coordination run.
type load struct {
	ok, failed int
	elapsed    time.Duration
	lat        []time.Duration // of the successful requests
	firstErr   error
}

func (l load) perSecond() float64 { return float64(l.ok) / l.elapsed.Seconds() }

// percentile returns the p-th percentile of the latencies (sorted in place).
func (l load) percentile(p float64) time.Duration {
	if len(l.lat) == 0 {
		return 0
	}
	slices.Sort(l.lat)
	return l.lat[min(len(l.lat)-1, int(float64(len(l.lat))*p/100))]
}

// coordinate runs total introductions between random distinct pairs among
// the first n peers, workers at a time (a closed loop).
// answered waits for the target's answer to an early introduction (see
// wire.ConnectEarly): Connect returns before it.
func answered(ctx context.Context, s *Session) error {
	if s.Early == nil {
		return nil
	}
	select {
	case <-s.Answered():
		return nil
	case <-s.Done():
		return s.Err()
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (f *fleet) coordinate(ctx context.Context, n, total, workers int) load {
	var (
		mu   sync.Mutex
		res  load
		next atomic.Int64
		wg   sync.WaitGroup
	)
	start := time.Now()
	for w := range workers {
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(uint64(w), uint64(n)))
			lat := make([]time.Duration, 0, total/workers+1)
			ok, failed := 0, 0
			var firstErr error
			for next.Add(1) <= int64(total) {
				i := rng.IntN(n)
				j := rng.IntN(n - 1)
				if j >= i {
					j++
				}
				rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
				t0 := time.Now()
				s, err := f.clients[i].Connect(rctx, f.ids[j], Intro{})
				if err == nil {
					err = answered(rctx, s) // an introduction ends with the target's answer
				}
				d := time.Since(t0)
				cancel()
				if err != nil {
					failed++
					if firstErr == nil {
						firstErr = err
					}
					continue
				}
				s.Close()
				ok++
				lat = append(lat, d)
			}
			mu.Lock()
			res.ok += ok
			res.failed += failed
			res.lat = append(res.lat, lat...)
			if res.firstErr == nil {
				res.firstErr = firstErr
			}
			mu.Unlock()
		})
	}
	wg.Wait()
	res.elapsed = time.Since(start)
	return res
}

// scaleWorkers is the number of introductions in flight during a load run.
const scaleWorkers = 64

// TestScaleHarness runs the scale setup small, so that what the benchmark
// relies on holds in CI: every peer registers with the child and is
// counted there, every introduction of a load run succeeds, and the
// child's memory grows with the registrations and shrinks when they leave.
func TestScaleHarness(t *testing.T) {
	ctx := t.Context()
	srv := startScaleServer(t, "bootstrap")
	f := &fleet{srv: srv}
	defer f.close()
	base, err := srv.mem()
	if err != nil {
		t.Fatal(err)
	}
	const n = 300
	if err := f.grow(ctx, n); err != nil {
		t.Fatal(err)
	}
	full, err := srv.mem()
	if err != nil {
		t.Fatal(err)
	}
	if full.Peers != n {
		t.Fatalf("the bootstrap counts %d peers, want %d", full.Peers, n)
	}
	if full.live() <= base.live() {
		t.Fatalf("memory did not grow with %d peers: %d -> %d bytes", n, base.live(), full.live())
	}
	l := f.coordinate(ctx, n, 2000, scaleWorkers)
	if l.failed != 0 {
		t.Fatalf("%d of %d introductions failed, first: %v", l.failed, l.ok+l.failed, l.firstErr)
	}
	if got := f.offers.Load(); got != int64(l.ok) {
		t.Fatalf("%d offers reached targets for %d introductions", got, l.ok)
	}
	t.Logf("%d peers: %.0f B per peer; %d introductions at %.0f/s, p50 %v p99 %v",
		n, float64(full.live()-base.live())/n, l.ok, l.perSecond(), l.percentile(50), l.percentile(99))
	f.close()
	f.clients, f.eps = nil, nil
	deadline := time.Now().Add(20 * time.Second)
	for {
		m, err := srv.mem()
		if err != nil {
			t.Fatal(err)
		}
		if m.Peers == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d peers still registered 20 s after they closed", m.Peers)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// BenchmarkBootstrapScale registers 1 000, then 5 000, then 10 000 peers
// with one bootstrap and, at each size, runs introductions between random
// pairs with scaleWorkers in flight. Reported per size:
//
//   - B/peer: the bootstrap's Go memory (heap in use and stacks, after a
//     collection) per registered idle peer, measured as the growth from
//     the registrations alone (introductions of earlier sizes excluded);
//   - over-quic-B/peer: B/peer less the floor, what a bare quic-go server
//     holds for an idle connection with one stream being read (measured
//     first, in its own child, with the bootstrap's TLS and QUIC settings);
//   - stack-B/peer: the goroutine stacks in B/peer;
//   - RSS-B/peer: the same for its resident set;
//   - goroutines/peer: the bootstrap's goroutines per registered peer;
//   - req/s, p50-ms, p99-ms: introductions completed per second and their
//     latency. Both ends of every introduction run in this process, so the
//     bootstrap shares the machine's cores with its load;
//   - bootstrap-CPU-µs/req: the bootstrap's CPU time (user and system) per
//     introduction during the run, and capacity-req/s what that makes on
//     all of this machine's cores with nothing else running.
func BenchmarkBootstrapScale(b *testing.B) {
	ctx := b.Context()
	floor := bareQUICPerPeer(b, 1000)
	srv := startScaleServer(b, "bootstrap")
	f := &fleet{srv: srv}
	defer f.close()
	before, err := srv.mem()
	if err != nil {
		b.Fatal(err)
	}
	base := before
	var grown, stackGrown, rssGrown float64 // registration growth, summed over sizes
	for _, n := range []int{1000, 5000, 10000} {
		prev := len(f.clients)
		t0 := time.Now()
		if err := f.grow(ctx, n); err != nil {
			b.Fatal(err)
		}
		regTime := time.Since(t0)
		after, err := srv.mem()
		if err != nil {
			b.Fatal(err)
		}
		if after.Peers != n {
			b.Fatalf("the bootstrap counts %d peers, want %d", after.Peers, n)
		}
		grown += float64(after.live()) - float64(before.live())
		stackGrown += float64(after.StackInuse) - float64(before.StackInuse)
		rssGrown += float64(after.RSS) - float64(before.RSS)
		b.Run(fmt.Sprintf("peers=%d", n), func(b *testing.B) {
			if p := os.Getenv("ANTNODE_SCALE_CPU_PROFILE"); p != "" {
				io.WriteString(srv.in, fmt.Sprintf("cpu %s.%d\n", p, n))
				defer io.WriteString(srv.in, "cpu-stop\n")
			}
			cpu0, err := srv.cpuTime()
			if err != nil {
				b.Fatal(err)
			}
			l := f.coordinate(ctx, n, max(b.N, scaleWorkers), scaleWorkers)
			if l.failed != 0 {
				b.Fatalf("%d of %d introductions failed, first: %v", l.failed, l.ok+l.failed, l.firstErr)
			}
			cpu1, err := srv.cpuTime()
			if err != nil {
				b.Fatal(err)
			}
			perReq := (cpu1 - cpu0).Seconds() / float64(l.ok)
			b.ReportMetric(perReq*1e6, "bootstrap-CPU-µs/req")
			b.ReportMetric(float64(runtime.NumCPU())/perReq, "capacity-req/s")
			b.ReportMetric(grown/float64(n), "B/peer")
			b.ReportMetric(grown/float64(n)-floor, "over-quic-B/peer")
			b.ReportMetric(stackGrown/float64(n), "stack-B/peer")
			b.ReportMetric(rssGrown/float64(n), "RSS-B/peer")
			b.ReportMetric(float64(after.Goroutines-base.Goroutines)/float64(n), "goroutines/peer")
			b.ReportMetric(float64(n-prev)/regTime.Seconds(), "registrations/s")
			b.ReportMetric(l.perSecond(), "req/s")
			b.ReportMetric(float64(l.percentile(50).Microseconds())/1000, "p50-ms")
			b.ReportMetric(float64(l.percentile(99).Microseconds())/1000, "p99-ms")
		})
		if p := os.Getenv("ANTNODE_SCALE_HEAP_PROFILE"); p != "" {
			io.WriteString(srv.in, fmt.Sprintf("heap %s.%d\n", p, n))
		}
		// The next size's growth is measured from here, after this size's
		// introductions.
		if before, err = srv.mem(); err != nil {
			b.Fatal(err)
		}
	}
}

// bareQUICPerPeer measures the floor: the Go memory a quic-go server with
// the bootstrap's settings holds per idle connection whose one stream it
// reads, with n connections from this process.
func bareQUICPerPeer(tb testing.TB, n int) float64 {
	srv := startScaleServer(tb, "bare")
	base, err := srv.mem()
	if err != nil {
		tb.Fatal(err)
	}
	var (
		eps   []*endpoint.Endpoint
		conns []*quic.Conn
	)
	defer func() {
		for _, c := range conns {
			c.CloseWithError(0, "")
		}
		for _, ep := range eps {
			ep.Close()
		}
	}()
	ctx, cancel := context.WithTimeout(tb.Context(), 2*time.Minute)
	defer cancel()
	for i := range n {
		if i%peersPerSocket == 0 {
			ep, err := endpoint.Listen("udp4", "127.0.0.1:0", endpoint.Config{})
			if err != nil {
				tb.Fatal(err)
			}
			eps = append(eps, ep)
		}
		id, err := identity.Generate()
		if err != nil {
			tb.Fatal(err)
		}
		c, err := eps[len(eps)-1].Transport().Dial(ctx, net.UDPAddrFromAddrPort(srv.addr), id.ClientTLS(srv.id, wire.ALPN),
			&quic.Config{KeepAlivePeriod: 10 * time.Second, MaxIncomingStreams: -1, MaxIncomingUniStreams: -1})
		if err != nil {
			tb.Fatal(err)
		}
		conns = append(conns, c)
		str, err := c.OpenStream()
		if err != nil {
			tb.Fatal(err)
		}
		if _, err := str.Write([]byte{0}); err != nil {
			tb.Fatal(err)
		}
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		m, err := srv.mem()
		if err != nil {
			tb.Fatal(err)
		}
		if m.Peers == n {
			return (float64(m.live()) - float64(base.live())) / float64(n)
		}
		if time.Now().After(deadline) {
			tb.Fatalf("bare QUIC: %d of %d connections reading", m.Peers, n)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
