package bootstrap

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/pion/stun/v3"
	"github.com/quic-go/quic-go"
	"github.com/quic-go/quic-go/quicvarint"

	"github.com/antnode/antnode/bootstrap/wire"
	"github.com/antnode/antnode/endpoint"
	"github.com/antnode/antnode/event"
	"github.com/antnode/antnode/identity"
	"github.com/antnode/antnode/internal/testkit"
	"github.com/antnode/antnode/nattype"
	"github.com/antnode/antnode/relay"
)

func newIdentity(t testing.TB) *identity.Identity {
	t.Helper()
	id, err := identity.Generate()
	if err != nil {
		t.Fatal(err)
	}
	return id
}

func newEndpoint(t testing.TB, addr string) *endpoint.Endpoint {
	t.Helper()
	ep, err := endpoint.Listen("udp4", addr, endpoint.Config{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ep.Close() })
	return ep
}

type testServer struct {
	*Server
	id *identity.Identity
	ep *endpoint.Endpoint
}

func startServer(t testing.TB, cfg ServerConfig) *testServer {
	t.Helper()
	if cfg.Identity == nil {
		cfg.Identity = newIdentity(t)
	}
	if cfg.Endpoint == nil && cfg.TCP == nil {
		// Control over TLS on TCP, on the same port number as QUIC: a
		// TCP port that another socket holds (tests of other packages run
		// at the same time) means a fresh UDP port; bounded.
		for i := 0; cfg.TCP == nil; i++ {
			ep := newEndpoint(t, "127.0.0.1:0")
			l, err := net.Listen("tcp4", ep.LocalAddr().String())
			switch {
			case err == nil:
				cfg.Endpoint, cfg.TCP = ep, l
			case !errors.Is(err, syscall.EADDRINUSE) || i == 20:
				t.Fatal(err)
			default:
				ep.Close()
			}
		}
	}
	if cfg.Endpoint == nil {
		cfg.Endpoint = newEndpoint(t, "127.0.0.1:0")
	}
	if cfg.TCP == nil {
		// Control over TLS on TCP, on the same port number as QUIC.
		l, err := net.Listen("tcp4", cfg.Endpoint.LocalAddr().String())
		if err != nil {
			t.Fatal(err)
		}
		cfg.TCP = l
	}
	s, err := NewServer(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return &testServer{Server: s, id: cfg.Identity, ep: cfg.Endpoint}
}

// restartServer starts a bootstrap with identity id at the UDP address
// addr of one that was closed: its clients come back over QUIC there. Its
// control port over TCP is any: the closed one's number may be another
// socket's by now (tests of other packages run at the same time).
func restartServer(t testing.TB, id *identity.Identity, addr netip.AddrPort) *testServer {
	t.Helper()
	ep, err := endpoint.Listen("udp4", addr.String(), endpoint.Config{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ep.Close() })
	tcp, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	return startServer(t, ServerConfig{Identity: id, Endpoint: ep, TCP: tcp})
}

func startClient(t testing.TB, srv *testServer, cfg ClientConfig) *Client {
	t.Helper()
	if cfg.Identity == nil {
		cfg.Identity = newIdentity(t)
	}
	if cfg.Endpoint == nil {
		cfg.Endpoint = newEndpoint(t, "127.0.0.1:0")
	}
	if !cfg.Addr.IsValid() {
		cfg.Addr = srv.Addr()
	}
	if cfg.MinBackoff == 0 {
		cfg.MinBackoff = 20 * time.Millisecond
		cfg.MaxBackoff = 200 * time.Millisecond
	}
	c, err := NewClient(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func ready(t testing.TB, c *Client) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := c.WaitReady(ctx); err != nil {
		t.Fatal(err)
	}
}

func TestRegisterAndObservedAddress(t *testing.T) {
	srv := startServer(t, ServerConfig{})
	ep := newEndpoint(t, "127.0.0.1:0")
	var observed []netip.AddrPort
	obsCh := make(chan netip.AddrPort, 4)
	cands := []wire.Candidate{{Kind: wire.KindHost, Priority: 1, Addr: netip.MustParseAddrPort("192.0.2.1:1")}}
	c := startClient(t, srv, ClientConfig{Endpoint: ep, ID: srv.id.ID(),
		Local:      func() (nattype.Type, []wire.Candidate) { return nattype.Type{Mapping: nattype.MappingEIM}, cands },
		OnObserved: func(a netip.AddrPort) { obsCh <- a }})
	ready(t, c)
	st := c.Status()
	if st.Observed != ep.LocalAddr() {
		t.Fatalf("observed %v, want %v", st.Observed, ep.LocalAddr())
	}
	observed = append(observed, <-obsCh)
	if observed[0] != ep.LocalAddr() {
		t.Fatalf("OnObserved got %v", observed[0])
	}
	testkit.WaitFor(t, 2*time.Second, "registry entry", func() bool { return srv.NumPeers() == 1 })
	p := srv.Peers()[0]
	if p.Observed != ep.LocalAddr() || len(p.Candidates) != 1 || p.Candidates[0] != cands[0] || p.NAT.Mapping != nattype.MappingEIM {
		t.Fatalf("registry entry %+v", p)
	}
	if c.ServerID() != srv.id.ID() {
		t.Fatal("client does not know the server's ID")
	}
	c.Close()
	testkit.WaitFor(t, 2*time.Second, "registry cleanup", func() bool { return srv.NumPeers() == 0 })
}

func TestSTUNBindingFromAnyClient(t *testing.T) {
	srv := startServer(t, ServerConfig{})
	for _, tc := range []struct {
		name        string
		fingerprint bool
	}{{"plain", false}, {"with fingerprint", true}} {
		t.Run(tc.name, func(t *testing.T) {
			// A plain UDP socket and pion's encoder: not antnode.
			conn, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			setters := []stun.Setter{stun.TransactionID, stun.BindingRequest}
			if tc.fingerprint {
				setters = append(setters, stun.Fingerprint)
			}
			req := stun.MustBuild(setters...)
			if _, err := conn.WriteToUDPAddrPort(req.Raw, srv.Addr()); err != nil {
				t.Fatal(err)
			}
			conn.SetReadDeadline(time.Now().Add(3 * time.Second))
			buf := make([]byte, 1500)
			n, from, err := conn.ReadFromUDPAddrPort(buf)
			if err != nil {
				t.Fatal(err)
			}
			if from != srv.Addr() {
				t.Fatalf("response from %v, want the bootstrap's port %v", from, srv.Addr())
			}
			resp := &stun.Message{Raw: buf[:n]}
			if err := resp.Decode(); err != nil {
				t.Fatal(err)
			}
			if resp.Type != stun.BindingSuccess || resp.TransactionID != req.TransactionID {
				t.Fatalf("response %v", resp)
			}
			var xor stun.XORMappedAddress
			if err := xor.GetFrom(resp); err != nil {
				t.Fatal(err)
			}
			want := conn.LocalAddr().(*net.UDPAddr)
			if !xor.IP.Equal(want.IP) || xor.Port != want.Port {
				t.Fatalf("XOR-MAPPED-ADDRESS %v, want %v", xor, want)
			}
			if tc.fingerprint {
				if err := stun.Fingerprint.Check(resp); err != nil {
					t.Fatalf("fingerprint: %v", err)
				}
			}
		})
	}
}

// rawControl opens an authenticated control connection and stream without
// the Client, to send arbitrary bytes.
func rawControl(t *testing.T, srv *testServer) (*quic.Conn, *quic.Stream) {
	t.Helper()
	ep := newEndpoint(t, "127.0.0.1:0")
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	conn, err := ep.Transport().Dial(ctx, net.UDPAddrFromAddrPort(srv.Addr()), newIdentity(t).ClientTLS(srv.id.ID(), wire.ALPN), &quic.Config{})
	if err != nil {
		t.Fatal(err)
	}
	str, err := conn.OpenStreamSync(ctx)
	if err != nil {
		t.Fatal(err)
	}
	return conn, str
}

func frameBytes(typ uint64, payload []byte) []byte {
	b := quicvarint.Append(nil, typ)
	b = quicvarint.Append(b, uint64(len(payload)))
	return append(b, payload...)
}

func mustMarshal(t testing.TB, m wire.Message) []byte {
	b, err := wire.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// closedByServer waits for the server to close conn and returns the
// application error code.
func closedByServer(t *testing.T, conn *quic.Conn) quic.ApplicationErrorCode {
	t.Helper()
	select {
	case <-conn.Context().Done():
	case <-time.After(5 * time.Second):
		t.Fatal("server did not close the connection")
	}
	var app *quic.ApplicationError
	if err := context.Cause(conn.Context()); errors.As(err, &app) && app.Remote {
		return app.ErrorCode
	}
	t.Fatalf("connection ended with %v, want a remote application close", context.Cause(conn.Context()))
	return 0
}

func TestMalformedControlMessages(t *testing.T) {
	srv := startServer(t, ServerConfig{HandshakeTimeout: time.Second})
	register := mustMarshal(t, &wire.Register{Version: wire.Version})
	tests := []struct {
		name string
		in   []byte
		code quic.ApplicationErrorCode
	}{
		{"garbage first", []byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff}, closeProtocol},
		{"oversized frame", append(quicvarint.Append([]byte{0x01}, 1<<20), make([]byte, 64)...), closeProtocol},
		{"connect before register", mustMarshal(t, &wire.ConnectRequest{ID: 1}), closeProtocol},
		{"unsupported version", mustMarshal(t, &wire.Register{Version: 99}), closeVersion},
		{"truncated register then FIN", []byte{0x01, 0x10, 0x01}, closeProtocol},
		{"register twice", append(append([]byte{}, register...), register...), closeProtocol},
		{"garbage after register", append(append([]byte{}, register...), 0x06, 0x05, 0xff, 0xff, 0xff, 0xff, 0xff), closeProtocol},
		{"bad NAT type after register", append(append([]byte{}, register...),
			frameBytes(0x06, append(append([]byte{1}, make([]byte, identity.PeerIDLen)...), 200, 0, 0, 0, 0))...), closeProtocol},
		{"answer-only message from peer", append(append([]byte{}, register...), mustMarshal(t, &wire.PunchNow{ID: 1})...), closeProtocol},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			conn, str := rawControl(t, srv)
			if _, err := str.Write(tc.in); err != nil {
				t.Fatal(err)
			}
			if tc.name == "truncated register then FIN" {
				str.Close()
			}
			if got := closedByServer(t, conn); got != tc.code {
				t.Fatalf("close code %#x, want %#x", got, tc.code)
			}
		})
	}
	// The server still serves well-behaved peers.
	c := startClient(t, srv, ClientConfig{})
	ready(t, c)
}

// readCorpusFile decodes a fuzz corpus file of one []byte value (Go's
// "go test fuzz v1" format).
func readCorpusFile(path string) ([]byte, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	lines := strings.Split(strings.TrimSuffix(string(b), "\n"), "\n")
	if len(lines) != 2 || lines[0] != "go test fuzz v1" ||
		!strings.HasPrefix(lines[1], "[]byte(") || !strings.HasSuffix(lines[1], ")") {
		return nil, fmt.Errorf("%s: not a corpus file of one []byte", path)
	}
	v, err := strconv.Unquote(strings.TrimSuffix(strings.TrimPrefix(lines[1], "[]byte("), ")"))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return []byte(v), nil
}

// TestCorpusNeverCrashesServer replays the committed wire fuzz corpus
// (bootstrap/wire/testdata/fuzz) and random mutations of valid frames on
// real control streams after a valid registration. Each input may end the
// connection; one whose first frame does not decode must end it with a
// protocol error; the server must keep serving.
func TestCorpusNeverCrashesServer(t *testing.T) {
	srv := startServer(t, ServerConfig{})
	register := mustMarshal(t, &wire.Register{Version: wire.Version})
	var inputs [][]byte
	for _, target := range []string{"FuzzParse", "FuzzReader"} {
		files, err := filepath.Glob(filepath.Join("wire", "testdata", "fuzz", target, "*"))
		if err != nil || len(files) == 0 {
			t.Fatalf("no %s corpus in wire/testdata/fuzz (%v)", target, err)
		}
		for _, f := range files {
			b, err := readCorpusFile(f)
			if err != nil {
				t.Fatal(err)
			}
			inputs = append(inputs, b)
		}
	}
	corpus := len(inputs)
	seeds := []wire.Message{
		&wire.ConnectRequest{ID: 1, Candidates: []wire.Candidate{{Kind: wire.KindHost, Addr: netip.MustParseAddrPort("10.0.0.1:1")}}},
		&wire.AddAddress{Candidate: wire.Candidate{Kind: wire.KindHost, Addr: netip.MustParseAddrPort("10.0.0.1:1")}},
		&wire.PunchRequest{ID: 3, Round: 2}, &wire.ConnectAnswer{ID: 7},
	}
	rng := rand.New(rand.NewPCG(1, 2))
	for i := range 60 {
		b := mustMarshal(t, seeds[i%len(seeds)])
		for range 1 + rng.IntN(4) {
			b[rng.IntN(len(b))] = byte(rng.Uint32())
		}
		inputs = append(inputs, b)
	}
	for i, in := range inputs {
		conn, str := rawControl(t, srv)
		str.Write(append(append([]byte{}, register...), in...))
		str.Close()
		_, _, perr := wire.Parse(in)
		if i < corpus && len(in) > 0 && (errors.Is(perr, wire.ErrMalformed) || errors.Is(perr, wire.ErrTooLarge)) {
			if got := closedByServer(t, conn); got != closeProtocol {
				t.Fatalf("corpus input %q: close code %#x, want %#x (protocol error)", in, got, closeProtocol)
			}
			continue
		}
		select {
		case <-conn.Context().Done():
		case <-time.After(300 * time.Millisecond): // accepted as valid: fine
		}
		conn.CloseWithError(0, "")
	}
	c := startClient(t, srv, ClientConfig{})
	ready(t, c)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	if _, err := c.Connect(ctx, newIdentity(t).ID(), Intro{}); !errors.Is(err, ErrUnknownPeer) {
		t.Fatalf("server no longer coordinates: %v", err)
	}
}

func TestBootstrapRestartIsSurvived(t *testing.T) {
	id := newIdentity(t)
	// startServer finds a port free for UDP and TCP both (tests of other
	// packages hold TCP ports of the same range).
	srv := startServer(t, ServerConfig{Identity: id})
	addr := srv.ep.LocalAddr()
	c := startClient(t, srv, ClientConfig{ID: id.ID()})
	ready(t, c)
	first := c.Status().Session
	if first == 0 {
		t.Fatal("registered with session 0")
	}

	srv.Close()
	srv.ep.Close()
	testkit.WaitFor(t, 5*time.Second, "client to notice the loss", func() bool { return !c.Status().Registered })

	srv2 := restartServer(t, id, addr)
	testkit.WaitFor(t, 10*time.Second, "re-registration", func() bool { return c.Status().Registered && srv2.NumPeers() == 1 })
	// A new session: what the old bootstrap granted (a relay allocation)
	// is not to be trusted with the new one.
	if got := c.Status().Session; got <= first {
		t.Fatalf("session %d after re-registration, was %d", got, first)
	}
}

func TestConnectUnknownPeerFailsFast(t *testing.T) {
	srv := startServer(t, ServerConfig{})
	c := startClient(t, srv, ClientConfig{})
	ready(t, c)
	start := time.Now()
	_, err := c.Connect(context.Background(), newIdentity(t).ID(), Intro{})
	if !errors.Is(err, ErrUnknownPeer) {
		t.Fatalf("got %v, want ErrUnknownPeer", err)
	}
	if d := time.Since(start); d > time.Second {
		t.Fatalf("unknown peer took %v", d)
	}
	if _, err := c.Connect(context.Background(), c.cfg.Identity.ID(), Intro{}); err == nil {
		t.Fatal("connecting to self succeeded")
	}
}

func TestIntroductionAndPunchRounds(t *testing.T) {
	srv := startServer(t, ServerConfig{})
	offers := make(chan *Session, 1)
	bCands := []wire.Candidate{{Kind: wire.KindHost, Priority: 5, Addr: netip.MustParseAddrPort("192.0.2.7:7")}}
	// The offer/answer introduction (a peer without FeatureEarly); the
	// early one is TestEarlyIntroduction's.
	b := startClient(t, srv, ClientConfig{DisableEarly: true, OnOffer: func(o *Offer) {
		s, err := o.Accept(Intro{NAT: nattype.Type{Mapping: nattype.MappingAPDM}, Candidates: bCands, Creds: wire.Creds{Ufrag: "b", Pwd: "bp"}})
		if err != nil {
			t.Error(err)
			return
		}
		if o.Remote.Creds.Ufrag != "a" {
			t.Errorf("offer creds %+v", o.Remote.Creds)
		}
		offers <- s
	}})
	a := startClient(t, srv, ClientConfig{})
	ready(t, a)
	ready(t, b)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	sa, err := a.Connect(ctx, b.cfg.Identity.ID(), Intro{Creds: wire.Creds{Ufrag: "a", Pwd: "ap"}})
	if err != nil {
		t.Fatal(err)
	}
	defer sa.Close()
	sb := <-offers
	defer sb.Close()
	if sa.Remote.Creds.Ufrag != "b" || sa.Remote.NAT.Mapping != nattype.MappingAPDM {
		t.Fatalf("result %+v", sa.Remote)
	}
	// B's announced candidate plus its observed address, each marked.
	announced := bCands[0]
	announced.Origin = wire.OriginAnnounced
	if len(sa.Remote.Candidates) != 2 || sa.Remote.Candidates[0] != announced ||
		sa.Remote.Candidates[1].Addr != b.Status().Observed || sa.Remote.Candidates[1].Kind != wire.KindServerReflexive ||
		sa.Remote.Candidates[1].Origin != wire.OriginObserved {
		t.Fatalf("candidates %+v", sa.Remote.Candidates)
	}
	round := func(s *Session, want uint64) {
		t.Helper()
		select {
		case p := <-s.Punches():
			if p.Round != want {
				t.Fatalf("round %d, want %d", p.Round, want)
			}
		case <-time.After(3 * time.Second):
			t.Fatalf("no punch round %d", want)
		}
	}
	round(sa, 1)
	round(sb, 1)
	if err := sb.RequestRound(2); err != nil { // the target may ask too
		t.Fatal(err)
	}
	round(sa, 2)
	round(sb, 2)
	if err := sa.RequestRound(2); err != nil { // stale: ignored
		t.Fatal(err)
	}
	if err := sa.RequestRound(3); err != nil {
		t.Fatal(err)
	}
	round(sa, 3)
	round(sb, 3)
}

func TestRateLimit(t *testing.T) {
	srv := startServer(t, ServerConfig{RequestRate: 0.001, RequestBurst: 2})
	c := startClient(t, srv, ClientConfig{})
	ready(t, c)
	unknown := newIdentity(t).ID()
	for i := range 2 {
		if _, err := c.Connect(context.Background(), unknown, Intro{}); !errors.Is(err, ErrUnknownPeer) {
			t.Fatalf("request %d: %v", i, err)
		}
	}
	if _, err := c.Connect(context.Background(), unknown, Intro{}); !errors.Is(err, ErrRateLimited) {
		t.Fatalf("third request: %v, want ErrRateLimited", err)
	}
}

func TestMessageFloodDisconnects(t *testing.T) {
	srv := startServer(t, ServerConfig{MessageRate: 0.001, MessageBurst: 5})
	conn, str := rawControl(t, srv)
	flood := mustMarshal(t, &wire.Register{Version: wire.Version})
	for range 10 {
		flood = append(flood, mustMarshal(t, &wire.RemoveAddress{Addr: netip.MustParseAddrPort("10.0.0.1:1")})...)
	}
	if _, err := str.Write(flood); err != nil {
		t.Fatal(err)
	}
	if got := closedByServer(t, conn); got != closeProtocol {
		t.Fatalf("close code %#x", got)
	}
}

func TestPinnedKeyMismatch(t *testing.T) {
	srv := startServer(t, ServerConfig{})
	c := startClient(t, srv, ClientConfig{ID: newIdentity(t).ID()})
	// A mismatch ends the wait at once, as a mismatch: no retry mends it.
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	start := time.Now()
	err := c.WaitReady(ctx)
	if err == nil {
		t.Fatal("registered with a bootstrap holding the wrong key")
	}
	if !errors.Is(err, identity.ErrKeyMismatch) || ctx.Err() != nil {
		t.Fatalf("WaitReady after %v: %v, want ErrKeyMismatch before the deadline", time.Since(start), err)
	}
	if err := c.Status().LastError; !errors.Is(err, identity.ErrKeyMismatch) {
		t.Fatalf("last error %v, want ErrKeyMismatch", err)
	}
	if srv.NumPeers() != 0 {
		t.Fatal("the server registered the peer")
	}
}

func TestRegistryBound(t *testing.T) {
	srv := startServer(t, ServerConfig{MaxPeers: 1})
	ready(t, startClient(t, srv, ClientConfig{}))
	c2 := startClient(t, srv, ClientConfig{})
	ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
	defer cancel()
	if err := c2.WaitReady(ctx); err == nil {
		t.Fatal("registry exceeded its bound")
	}
	// Depending on timing the client reads the Error frame or only sees
	// the close; either way it must be classified as a full registry.
	if err := c2.Status().LastError; classify(err) != event.ReasonRegistryFull {
		t.Fatalf("last error %v classified %v, want registry_full", err, classify(err))
	}
	if srv.NumPeers() != 1 {
		t.Fatalf("%d peers registered", srv.NumPeers())
	}
}

func TestPunchDelays(t *testing.T) {
	ms := time.Millisecond
	tests := []struct {
		name       string
		a, b       time.Duration
		wantA, wan time.Duration
	}{
		{"equal", 40 * ms, 40 * ms, 0, 0},
		{"a nearer", 10 * ms, 50 * ms, 20 * ms, 0},
		{"b nearer", 80 * ms, 20 * ms, 0, 30 * ms},
		{"zero", 0, 0, 0, 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			da, db := PunchDelays(tc.a, tc.b)
			if da != tc.wantA || db != tc.wan {
				t.Fatalf("PunchDelays(%v, %v) = %v, %v", tc.a, tc.b, da, db)
			}
			// Both start when the farther one hears PunchNow.
			if tc.a/2+da != tc.b/2+db {
				t.Fatalf("start times differ: %v vs %v", tc.a/2+da, tc.b/2+db)
			}
		})
	}
}

func TestSrflxNeverExceedsLimit(t *testing.T) {
	many := make([]wire.Candidate, wire.MaxCandidates)
	for i := range many {
		many[i] = wire.Candidate{Kind: wire.KindHost, Addr: netip.AddrPortFrom(netip.AddrFrom4([4]byte{10, 0, 0, byte(i)}), 1)}
	}
	obs := netip.MustParseAddrPort("198.51.100.1:9")
	got := srflx([]netip.AddrPort{obs}, many)
	if len(got) != wire.MaxCandidates || got[len(got)-1].Addr != obs {
		t.Fatalf("len %d, last %v", len(got), got[len(got)-1])
	}
	if !bytes.Equal(mustMarshal(t, &wire.ConnectOffer{Candidates: got})[:1], []byte{byte(wire.TypeConnectOffer)}) {
		t.Fatal("offer with a full candidate list does not marshal")
	}
}

// TestSrflxMarksOrigins: the bootstrap marks each candidate it forwards
// with what it saw: the observed address, another port of the observed
// IP, or the peer's word alone, whatever the peer claimed.
func TestSrflxMarksOrigins(t *testing.T) {
	obs := netip.MustParseAddrPort("198.51.100.1:4000")
	obs6 := netip.MustParseAddrPort("[2001:db8::7]:4000")
	c := func(addr string, o wire.Origin) wire.Candidate {
		return wire.Candidate{Kind: wire.KindServerReflexive, Priority: 7, Addr: netip.MustParseAddrPort(addr), Origin: o}
	}
	tests := []struct {
		name string
		also netip.AddrPort // observed in the other family
		in   []wire.Candidate
		want []wire.Origin
	}{
		{"nothing announced", netip.AddrPort{}, nil, []wire.Origin{wire.OriginObserved}},
		{"the observed address announced", netip.AddrPort{}, []wire.Candidate{c("198.51.100.1:4000", 0)}, []wire.Origin{wire.OriginObserved}},
		{"another port of the observed IP", netip.AddrPort{}, []wire.Candidate{c("198.51.100.1:5000", 0)},
			[]wire.Origin{wire.OriginObservedIP, wire.OriginObserved}},
		{"a third party's address", netip.AddrPort{}, []wire.Candidate{c("203.0.113.9:443", 0)}, []wire.Origin{wire.OriginAnnounced, wire.OriginObserved}},
		{"a claimed origin is not believed", netip.AddrPort{}, []wire.Candidate{c("203.0.113.9:443", wire.OriginObserved)},
			[]wire.Origin{wire.OriginAnnounced, wire.OriginObserved}},
		{"both families observed, nothing announced", obs6, nil, []wire.Origin{wire.OriginObserved, wire.OriginObserved}},
		{"the other family's address announced", obs6, []wire.Candidate{c("[2001:db8::7]:4000", 0)},
			[]wire.Origin{wire.OriginObserved, wire.OriginObserved}},
		{"another port of the other family's IP", obs6, []wire.Candidate{c("[2001:db8::7]:5000", 0)},
			[]wire.Origin{wire.OriginObservedIP, wire.OriginObserved, wire.OriginObserved}},
		{"an IPv6 address not observed", obs6, []wire.Candidate{c("[2001:db8::9]:4000", 0)},
			[]wire.Origin{wire.OriginAnnounced, wire.OriginObserved, wire.OriginObserved}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := srflx([]netip.AddrPort{obs, tc.also}, tc.in)
			var origins []wire.Origin
			for _, g := range got {
				origins = append(origins, g.Origin)
			}
			if !slices.Equal(origins, tc.want) {
				t.Fatalf("origins %v, want %v", origins, tc.want)
			}
		})
	}
}

// blockedConn is a UDP socket whose every datagram is lost: a host whose
// UDP is blocked.
type blockedConn struct{ net.PacketConn }

func (blockedConn) WriteTo(b []byte, _ net.Addr) (int, error) { return len(b), nil }

func TestTCPFallbackWhenUDPBlocked(t *testing.T) {
	srv := startServer(t, ServerConfig{})
	raw, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ep, err := endpoint.New(endpoint.Config{Conn: blockedConn{raw}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ep.Close() })
	c := startClient(t, srv, ClientConfig{Endpoint: ep, TCPFallback: true, TCPDelay: 100 * time.Millisecond,
		OnOffer: func(o *Offer) { o.Accept(Intro{}) }})
	ready(t, c)
	st := c.Status()
	if st.Transport != TransportTCP {
		t.Fatalf("registered over %q, want tcp", st.Transport)
	}
	if st.RTT <= 0 {
		t.Fatalf("no TCP RTT (%v)", st.RTT)
	}
	// The TCP-registered peer can be introduced, and introduce itself.
	other := startClient(t, srv, ClientConfig{TCPFallback: true, OnOffer: func(o *Offer) { o.Accept(Intro{}) }})
	ready(t, other)
	if got := other.Status().Transport; got != TransportQUIC {
		t.Fatalf("a peer with UDP registered over %q", got)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	s, err := c.Connect(ctx, other.cfg.Identity.ID(), Intro{})
	if err != nil {
		t.Fatal(err)
	}
	s.Close()
	// The bootstrap's RTT to the TCP-registered peer reaches the
	// requester (an early introduction's or the answer's: the warm
	// relay's permit wait and the start delays use it): it was 0 (the
	// kernel's TCP_INFO was read from a connection it could not get at).
	s2, err := other.Connect(ctx, c.cfg.Identity.ID(), Intro{})
	if err != nil {
		t.Fatal(err)
	}
	if s2.PeerRTT <= 0 {
		t.Fatalf("the bootstrap's RTT to the TCP peer %v (early %v), want one", s2.PeerRTT, s2.Early != nil)
	}
	s2.Close()
	peers := srv.Peers()
	transports := map[string]int{}
	for _, p := range peers {
		transports[p.Transport]++
	}
	if transports[TransportTCP] != 1 || transports[TransportQUIC] != 1 {
		t.Fatalf("registry transports %v", transports)
	}
	// A TCP control connection that breaks is noticed and re-registered.
	srv.Close()
	testkit.WaitFor(t, 5*time.Second, "loss noticed", func() bool { return !c.Status().Registered })
}

type fakeIssuer struct{}

func (fakeIssuer) Credentials(peer identity.PeerID, ttl time.Duration) relay.Credentials {
	return relay.NewCredentials([]byte("k"), peer, time.Now(), ttl)
}

var loopback4 = netip.MustParseAddr("127.0.0.1")

func (fakeIssuer) AddrsFor(netip.Addr) (udp, tcp netip.AddrPort) {
	return netip.MustParseAddrPort("203.0.113.1:3478"), netip.MustParseAddrPort("203.0.113.1:3478")
}

func TestRelayGrantAndPolicy(t *testing.T) {
	srv := startServer(t, ServerConfig{Relay: fakeIssuer{}})
	offers := make(chan *Session, 1)
	bCand := wire.Candidate{Kind: wire.KindHost, Priority: 1, Addr: netip.MustParseAddrPort("192.0.2.50:4000")}
	// Permissions after the answer (Connect returns with it; an early
	// introduction returns before).
	b := startClient(t, srv, ClientConfig{DisableEarly: true, OnOffer: func(o *Offer) {
		s, _ := o.Accept(Intro{Candidates: []wire.Candidate{bCand}})
		offers <- s
	}})
	a := startClient(t, srv, ClientConfig{})
	ready(t, a)
	ready(t, b)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	g, err := a.RequestRelay(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if peer, err := relay.ParseUsername(g.Username, time.Now()); err != nil || peer != a.cfg.Identity.ID() {
		t.Fatalf("grant username %q: %v", g.Username, err)
	}
	if udp, _ := (fakeIssuer{}).AddrsFor(loopback4); g.UDP != udp || time.Unix(int64(g.ExpiresUnix), 0).Before(time.Now()) {
		t.Fatalf("grant %+v", g)
	}
	aID, bID := a.cfg.Identity.ID(), b.cfg.Identity.ID()
	loop := netip.MustParseAddr("127.0.0.1")
	if srv.RelayAllowed(aID, loop) {
		t.Fatal("permission before any introduction")
	}
	sa, err := a.Connect(ctx, bID, Intro{})
	if err != nil {
		t.Fatal(err)
	}
	defer sa.Close()
	sb := <-offers
	defer sb.Close()
	// a may relay to what b announced or was observed at; nothing else.
	for _, tc := range []struct {
		peer identity.PeerID
		ip   netip.Addr
		want bool
	}{
		{aID, bCand.Addr.Addr(), true},
		{aID, loop, true}, // b's observed address
		{aID, netip.MustParseAddr("192.0.2.99"), false},
		{bID, loop, true},
		{newIdentity(t).ID(), loop, false},
	} {
		if got := srv.RelayAllowed(tc.peer, tc.ip); got != tc.want {
			t.Errorf("RelayAllowed(%s, %v) = %v, want %v", tc.peer.Short(), tc.ip, got, tc.want)
		}
	}
	// A relayed address b announces reaches a and becomes permitted.
	relayed := netip.MustParseAddrPort("198.51.100.200:50000")
	if err := sb.AnnounceRelay(relayed); err != nil {
		t.Fatal(err)
	}
	select {
	case got := <-sa.Relays():
		if got != relayed {
			t.Fatalf("a got relayed address %v", got)
		}
	case <-time.After(3 * time.Second):
		t.Fatal("relayed address not forwarded")
	}
	if !srv.RelayAllowed(aID, relayed.Addr()) {
		t.Fatal("announced relayed address not permitted")
	}
}

func TestNoRelayIsRefused(t *testing.T) {
	srv := startServer(t, ServerConfig{})
	a := startClient(t, srv, ClientConfig{})
	ready(t, a)
	_, err := a.RequestRelay(context.Background())
	var re *RequestError
	if !errors.As(err, &re) || re.Code != wire.CodeRefused {
		t.Fatalf("got %v, want refused", err)
	}
}

// udpProxy forwards datagrams between clients and a target that can be
// swapped (a bootstrap that crashed and came back) or cut (one that
// crashed and stayed down): neither side sees a goodbye.
type udpProxy struct {
	front  net.PacketConn
	mu     sync.Mutex
	target netip.AddrPort
	cut    bool
	backs  map[string]net.PacketConn // per client address
}

func newUDPProxy(t *testing.T, target netip.AddrPort) *udpProxy {
	t.Helper()
	front, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &udpProxy{front: front, target: target, backs: map[string]net.PacketConn{}}
	done := make(chan struct{})
	t.Cleanup(func() {
		front.Close()
		<-done
		p.mu.Lock()
		for _, b := range p.backs {
			b.Close()
		}
		p.mu.Unlock()
	})
	go func() {
		defer close(done)
		buf := make([]byte, 2048)
		for {
			n, from, err := front.ReadFrom(buf)
			if err != nil {
				return
			}
			p.mu.Lock()
			back, cut, target := p.backs[from.String()], p.cut, p.target
			if back == nil {
				if back, err = net.ListenPacket("udp4", "127.0.0.1:0"); err != nil {
					p.mu.Unlock()
					return
				}
				p.backs[from.String()] = back
				go func() { // replies from the target back to the client
					rb := make([]byte, 2048)
					for {
						m, _, err := back.ReadFrom(rb)
						if err != nil {
							return
						}
						p.mu.Lock()
						c := p.cut
						p.mu.Unlock()
						if !c {
							front.WriteTo(rb[:m], from)
						}
					}
				}()
			}
			p.mu.Unlock()
			if !cut {
				back.WriteTo(buf[:n], net.UDPAddrFromAddrPort(target))
			}
		}
	}()
	return p
}

func (p *udpProxy) addr() netip.AddrPort {
	return p.front.LocalAddr().(*net.UDPAddr).AddrPort()
}

func (p *udpProxy) set(target netip.AddrPort, cut bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.target, p.cut = target, cut
}

// stateRecorder keeps what a client records (downs: its bootstrap_state
// "down" events' errors).
type stateRecorder = testkit.Recorder

func downs(r *stateRecorder) []error {
	var out []error
	for _, ev := range r.Kind(event.KindBootstrapState) {
		if ev.Outcome == event.OutcomeFail {
			out = append(out, ev.Err)
		}
	}
	return out
}

// TestHeartbeatNoticesACrash: a bootstrap that vanishes without a goodbye
// is noticed by the heartbeat (not the 30 s idle timeout); one that comes
// back with the same key (so the same stateless reset key) answers the
// next heartbeat with a stateless reset, and the client re-registers.
func TestHeartbeatNoticesACrash(t *testing.T) {
	tests := []struct {
		name    string
		restart bool
		want    func(error) bool
	}{
		{"crashed and stays down", false, func(err error) bool { return errors.Is(err, ErrHeartbeat) }},
		{"crashed and restarted", true, func(err error) bool {
			var sr *quic.StatelessResetError
			return errors.As(err, &sr)
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			id := newIdentity(t)
			key := quic.StatelessResetKey(id.DeriveKey("reset"))
			mk := func() *testServer {
				// TCP on the UDP port's number: a port another socket
				// holds (loopback floods of other tests) means a fresh
				// UDP port; bounded.
				for i := 0; ; i++ {
					ep, err := endpoint.Listen("udp4", "127.0.0.1:0", endpoint.Config{StatelessResetKey: &key})
					if err != nil {
						t.Fatal(err)
					}
					t.Cleanup(func() { ep.Close() })
					l, err := net.Listen("tcp4", ep.LocalAddr().String())
					switch {
					case err == nil:
						return startServer(t, ServerConfig{Identity: id, Endpoint: ep, TCP: l})
					case !errors.Is(err, syscall.EADDRINUSE) || i == 20:
						t.Fatal(err)
					}
					ep.Close()
				}
			}
			srv := mk()
			proxy := newUDPProxy(t, srv.Addr())
			rec := &stateRecorder{}
			c := startClient(t, srv, ClientConfig{ID: id.ID(), Addr: proxy.addr(), Recorder: rec,
				Heartbeat: 200 * time.Millisecond, HeartbeatTimeout: 400 * time.Millisecond})
			ready(t, c)
			start := time.Now()
			if tc.restart {
				srv2 := mk()
				proxy.set(srv2.Addr(), false)
				testkit.WaitFor(t, 10*time.Second, "re-registration with the restarted bootstrap", func() bool {
					return srv2.NumPeers() == 1 && c.Status().Registered
				})
			} else {
				proxy.set(srv.Addr(), true)
				testkit.WaitFor(t, 10*time.Second, "the client to notice", func() bool { return len(downs(rec)) > 0 })
			}
			downs := downs(rec)
			t.Logf("noticed in %v: %v", time.Since(start), downs)
			if len(downs) == 0 || !tc.want(downs[0]) {
				t.Fatalf("the connection ended with %v", downs)
			}
		})
	}
}

// TestCancelReachesTheOtherSide: a side that gives up on an introduction
// (Session.Cancel, or a Connect whose context ends) makes the other
// side's session end with ErrPeerCanceled, or its Accept fail, at once.
func TestCancelReachesTheOtherSide(t *testing.T) {
	ended := func(t *testing.T, s *Session) {
		t.Helper()
		select {
		case <-s.Done():
			if !errors.Is(s.Err(), ErrPeerCanceled) {
				t.Fatalf("session ended with %v, want ErrPeerCanceled", s.Err())
			}
		case <-time.After(3 * time.Second):
			t.Fatal("the other side's session did not end")
		}
	}
	// introduced returns both sides' sessions of an answered introduction.
	introduced := func(t *testing.T) (requester, target *Session) {
		srv := startServer(t, ServerConfig{})
		offers := make(chan *Session, 1)
		b := startClient(t, srv, ClientConfig{DisableEarly: true, OnOffer: func(o *Offer) {
			if s, err := o.Accept(Intro{}); err == nil {
				offers <- s
			}
		}})
		a := startClient(t, srv, ClientConfig{})
		ready(t, a)
		ready(t, b)
		sa, err := a.Connect(t.Context(), b.cfg.Identity.ID(), Intro{})
		if err != nil {
			t.Fatal(err)
		}
		return sa, <-offers
	}
	t.Run("requester cancels after the answer", func(t *testing.T) {
		sa, sb := introduced(t)
		sa.Cancel()
		ended(t, sb)
	})
	t.Run("target cancels after its answer", func(t *testing.T) {
		sa, sb := introduced(t)
		sb.Cancel()
		ended(t, sa)
	})
	t.Run("requester gives up before the answer", func(t *testing.T) {
		srv := startServer(t, ServerConfig{})
		release := make(chan struct{})
		accepted := make(chan error, 1)
		b := startClient(t, srv, ClientConfig{DisableEarly: true, OnOffer: func(o *Offer) {
			<-release // the requester gives up meanwhile
			s, err := o.Accept(Intro{})
			if err == nil {
				s.Close()
			}
			select {
			case accepted <- err:
			default:
			}
		}})
		a := startClient(t, srv, ClientConfig{})
		ready(t, a)
		ready(t, b)
		ctx, cancel := context.WithTimeout(t.Context(), 300*time.Millisecond)
		defer cancel()
		if _, err := a.Connect(ctx, b.cfg.Identity.ID(), Intro{}); !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("Connect: %v, want the context's deadline", err)
		}
		time.Sleep(100 * time.Millisecond) // the cancel reaches b
		close(release)
		if err := <-accepted; !errors.Is(err, ErrPeerCanceled) {
			t.Fatalf("Accept after the requester gave up: %v, want ErrPeerCanceled", err)
		}
	})
}

// TestAckNamesTheTargetForAWarmRelay: a request that announces a relayed
// address (a warm relay) is acknowledged with where the target is
// observed, before the target answers, and the requester's relay may
// permit it from then on; a request without one learns nothing early.
func TestAckNamesTheTargetForAWarmRelay(t *testing.T) {
	srv := startServer(t, ServerConfig{Relay: fakeIssuer{}})
	answer := make(chan struct{})
	offers := make(chan *Session, 2)
	// An offer/answer introduction (an early one gives the requester all
	// of the target's candidates: TestEarlyIntroduction).
	b := startClient(t, srv, ClientConfig{DisableEarly: true, OnOffer: func(o *Offer) {
		<-answer // the target answers only once the test says so
		s, _ := o.Accept(Intro{})
		offers <- s
	}})
	a := startClient(t, srv, ClientConfig{})
	ready(t, a)
	ready(t, b)
	aID, bID := a.cfg.Identity.ID(), b.cfg.Identity.ID()
	relayed := wire.Candidate{Kind: wire.KindRelay, Priority: 1, Addr: netip.MustParseAddrPort("203.0.113.1:50000")}
	for _, tc := range []struct {
		name  string
		cands []wire.Candidate
		want  []netip.AddrPort
	}{
		// First: before any answer, nothing else has let a's relay reach b.
		{"a warm relay: the target's observed address", []wire.Candidate{relayed}, []netip.AddrPort{b.Status().Observed}},
		{"no warm relay: nothing early", nil, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			early := make(chan []netip.AddrPort, 1)
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			done := make(chan error, 1)
			go func() {
				s, err := a.Connect(ctx, bID, Intro{Candidates: tc.cands, OnTarget: func(at []netip.AddrPort) { early <- at }})
				if err == nil {
					s.Close()
				}
				done <- err
			}()
			var got []netip.AddrPort
			select {
			case got = <-early:
				if tc.want != nil && !srv.RelayAllowed(aID, got[0].Addr()) {
					t.Error("the requester's relay may not permit the target before it answered")
				}
			case <-time.After(time.Second): // no early address
			}
			answer <- struct{}{}
			if err := <-done; err != nil {
				t.Fatal(err)
			}
			(<-offers).Close()
			if !slices.Equal(got, tc.want) {
				t.Fatalf("early target %v, want %v", got, tc.want)
			}
		})
	}
}

// TestEarlyIntroduction: between peers that both registered with
// wire.FeatureEarly, the requester gets the target's registered
// candidates and the check credentials issued to the target with the
// acknowledgement, before the target answers, and the target gets them
// in its offer; the answer follows on the session (late candidates) or
// ends it (a refusal). A target without the feature gets the old
// introduction.
func TestEarlyIntroduction(t *testing.T) {
	late := wire.Candidate{Kind: wire.KindHost, Priority: 9, Addr: netip.MustParseAddrPort("192.0.2.9:9")}
	for _, tc := range []struct {
		name         string
		targetEarly  bool
		answer       func(o *Offer) (*Session, error)
		wantEarly    bool
		wantRefusal  bool
		wantLateCand bool
	}{
		{"accepted with a late candidate", true, func(o *Offer) (*Session, error) {
			return o.Accept(Intro{Candidates: []wire.Candidate{late}, Creds: o.EarlyCreds})
		}, true, false, true},
		{"declined after the early start", true, func(o *Offer) (*Session, error) {
			o.Decline(wire.CodeRefused)
			return nil, nil
		}, true, true, false},
		{"target without the feature", false, func(o *Offer) (*Session, error) {
			return o.Accept(Intro{Creds: wire.Creds{Ufrag: "b", Pwd: "bp"}})
		}, false, false, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv := startServer(t, ServerConfig{})
			release := make(chan struct{})
			offers := make(chan *Offer, 1)
			targets := make(chan *Session, 1)
			b := startClient(t, srv, ClientConfig{DisableEarly: !tc.targetEarly, OnOffer: func(o *Offer) {
				offers <- o
				<-release // answers only once the test says so
				s, err := tc.answer(o)
				if err != nil {
					t.Error(err)
				}
				targets <- s
			}})
			a := startClient(t, srv, ClientConfig{})
			ready(t, a)
			ready(t, b)
			ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
			defer cancel()
			// b classified its NAT after it registered: the early answer
			// carries the type it announced since. A request b makes after
			// the announcement is answered after it was handled.
			natB := nattype.Type{Mapping: nattype.MappingAPDM, Filtering: nattype.FilteringAPDF}
			if err := b.AnnounceNAT(natB); err != nil {
				t.Fatal(err)
			}
			if _, err := b.RequestRelay(ctx); !errors.Is(err, ErrRefused) {
				t.Fatalf("relay request of a bootstrap without a relay: %v", err)
			}
			type connected struct {
				s   *Session
				err error
			}
			done := make(chan connected, 1)
			go func() {
				s, err := a.Connect(ctx, b.cfg.Identity.ID(), Intro{Creds: wire.Creds{Ufrag: "a", Pwd: "ap"}})
				done <- connected{s, err}
			}()
			o := <-offers
			var sa *Session
			select {
			case r := <-done: // before the target answered
				if !tc.wantEarly {
					t.Fatalf("Connect returned before the answer: %v", r.err)
				}
				if r.err != nil {
					t.Fatal(r.err)
				}
				sa = r.s
			case <-time.After(500 * time.Millisecond):
				if tc.wantEarly {
					t.Fatal("Connect waited for the answer")
				}
			}
			close(release)
			if sa == nil {
				r := <-done
				if r.err != nil {
					t.Fatal(r.err)
				}
				sa = r.s
			}
			defer sa.Close()
			if sb := <-targets; sb != nil {
				defer sb.Close()
			}
			if (sa.Early != nil) != tc.wantEarly || (o.Early != nil) != tc.wantEarly {
				t.Fatalf("early start: requester %v, target %v, want %v", sa.Early, o.Early, tc.wantEarly)
			}
			if tc.wantEarly && sa.Remote.NAT != natB {
				t.Fatalf("early NAT type %v, want the announced %v", sa.Remote.NAT, natB)
			}
			if tc.wantEarly && (sa.Remote.Creds != o.EarlyCreds || o.EarlyCreds.Ufrag == "") {
				t.Fatalf("requester holds %+v, the target was issued %+v", sa.Remote.Creds, o.EarlyCreds)
			}
			if !tc.wantEarly && sa.Remote.Creds.Ufrag != "b" {
				t.Fatalf("requester holds %+v, want the target's answer", sa.Remote.Creds)
			}
			if o.Remote.Creds.Ufrag != "a" {
				t.Fatalf("offer creds %+v", o.Remote.Creds)
			}
			if tc.wantEarly && !slices.ContainsFunc(sa.Remote.Candidates, func(c wire.Candidate) bool {
				return c.Origin == wire.OriginObserved && c.Addr == b.Status().Observed
			}) {
				t.Fatalf("early candidates %+v lack the target's observed address", sa.Remote.Candidates)
			}
			switch {
			case tc.wantRefusal:
				select {
				case <-sa.Done():
					var re *RequestError
					if !errors.As(sa.Err(), &re) || re.Code != wire.CodeRefused {
						t.Fatalf("session ended with %v, want a refusal", sa.Err())
					}
				case <-time.After(3 * time.Second):
					t.Fatal("the refusal did not end the requester's session")
				}
			case tc.wantLateCand:
				select {
				case <-sa.Answered():
					if in := sa.Answer(); !slices.ContainsFunc(in.Candidates, func(c wire.Candidate) bool { return c.Addr == late.Addr }) {
						t.Fatalf("answer %+v lacks the late candidate", in.Candidates)
					}
				case <-time.After(3 * time.Second):
					t.Fatal("no answer on the early session")
				}
			}
			if !tc.wantRefusal {
				// The round-1 PunchNow still comes, for a birthday side.
				select {
				case p := <-sa.Punches():
					if p.Round != 1 {
						t.Fatalf("round %d", p.Round)
					}
				case <-time.After(3 * time.Second):
					t.Fatal("no PunchNow")
				}
			}
		})
	}
}

// TestEarlyOfferWantsItsCredentials: an early offer answered with other
// check credentials than the issued ones is an error, and the offer can
// still be declined.
func TestEarlyOfferWantsItsCredentials(t *testing.T) {
	srv := startServer(t, ServerConfig{})
	got := make(chan error, 1)
	b := startClient(t, srv, ClientConfig{OnOffer: func(o *Offer) {
		_, err := o.Accept(Intro{Creds: wire.Creds{Ufrag: "mine", Pwd: "mine"}})
		got <- err
		o.Decline(wire.CodeRefused)
	}})
	a := startClient(t, srv, ClientConfig{})
	ready(t, a)
	ready(t, b)
	s, err := a.Connect(t.Context(), b.cfg.Identity.ID(), Intro{})
	if err := <-got; !errors.Is(err, ErrEarlyCreds) {
		t.Fatalf("Accept: %v, want ErrEarlyCreds", err)
	}
	switch {
	case err != nil && declined(err):
		return // the decline came before Connect returned: the same end (seen once in a CI rehearsal)
	case err != nil:
		t.Fatal(err)
	}
	defer s.Close()
	select {
	case <-s.Done():
		if !declined(s.Err()) {
			t.Fatalf("session ended with %v", s.Err())
		}
	case <-time.After(3 * time.Second):
		t.Fatal("the decline did not end the session")
	}
}

func declined(err error) bool {
	var re *RequestError
	return errors.As(err, &re) && re.Code == wire.CodeRefused
}
