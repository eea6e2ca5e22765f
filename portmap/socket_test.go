package portmap

import (
	"bytes"
	"encoding/binary"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/antnode/antnode/internal/testkit"
)

var loopback = netip.MustParseAddr("127.0.0.1")

// responder is a PCP or NAT-PMP server of the test on loopback: it
// records every request and answers through answer.
type responder struct {
	conn *net.UDPConn
	mu   sync.Mutex
	reqs [][]byte
}

// newResponder serves on 127.0.0.1 at a random port until the test ends.
func newResponder(t *testing.T, answer func(r *responder, req []byte, from netip.AddrPort)) *responder {
	t.Helper()
	conn, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	r := &responder{conn: conn}
	var wg sync.WaitGroup
	wg.Go(func() {
		buf := make([]byte, 2048)
		for {
			n, from, err := conn.ReadFromUDPAddrPort(buf)
			if err != nil {
				return
			}
			req := append([]byte(nil), buf[:n]...)
			r.mu.Lock()
			r.reqs = append(r.reqs, req)
			r.mu.Unlock()
			answer(r, req, from)
		}
	})
	t.Cleanup(func() {
		_ = conn.Close()
		wg.Wait()
	})
	return r
}

func (r *responder) port() uint16 { return uint16(r.conn.LocalAddr().(*net.UDPAddr).Port) }

func (r *responder) requests() [][]byte {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([][]byte(nil), r.reqs...)
}

func (r *responder) send(t *testing.T, b []byte, to netip.AddrPort) {
	if _, err := r.conn.WriteToUDPAddrPort(b, to); err != nil {
		t.Error(err)
	}
}

// pcpAnswer answers a PCP request as a server with the given epoch does:
// a MAP is granted 203.0.113.7:40000 for the lifetime asked, an ANNOUNCE
// answered.
func pcpAnswer(req []byte, epoch uint32) []byte {
	b := append([]byte(nil), req...)
	b[1] |= pcpResponseBit
	b[2], b[3] = 0, 0
	binary.BigEndian.PutUint32(b[8:12], epoch)
	clear(b[12:24])
	if len(b) >= pcpHeaderLen+pcpMapLen && b[1] == pcpResponseBit|pcpOpMap {
		m := b[pcpHeaderLen:]
		binary.BigEndian.PutUint16(m[18:20], testExternal.Port())
		putAddr16(m[20:36], testExternal.Addr())
	}
	return b
}

// natpmpAnswer answers a NAT-PMP request: the external address
// 203.0.113.7, a mapping to port 40000 (0 when deleted).
func natpmpAnswer(req []byte, epoch uint32) []byte {
	switch {
	case len(req) == 2 && req[1] == natpmpOpAddr:
		b := []byte{0, 0x80, 0, 0, 0, 0, 0, 0}
		binary.BigEndian.PutUint32(b[4:8], epoch)
		a := testExternal.Addr().As4()
		return append(b, a[:]...)
	case len(req) == 12 && req[1] == natpmpOpMapUDP:
		b := make([]byte, 16)
		b[1] = 0x81
		binary.BigEndian.PutUint32(b[4:8], epoch)
		copy(b[8:10], req[4:6])
		if lifetime := binary.BigEndian.Uint32(req[8:12]); lifetime > 0 {
			binary.BigEndian.PutUint16(b[10:12], testExternal.Port())
			binary.BigEndian.PutUint32(b[12:16], lifetime)
		}
		return b
	}
	return []byte{0, 0x80 | req[1], 0, 5, 0, 0, 0, 0} // unsupported opcode
}

// socketConfig is a Config on loopback against a responder's port.
func socketConfig(p Protocol, port uint16, reg prometheus.Registerer) Config {
	return Config{
		Protocol:     p,
		Gateway:      loopback,
		LocalAddr:    loopback,
		Port:         4242,
		Check:        -1,
		Registerer:   reg,
		serverPort:   port,
		announceAddr: "-",
	}
}

func startMapper(t *testing.T, cfg Config) *Mapper {
	t.Helper()
	m, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := m.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = m.Close() })
	return m
}

func waitActive(t *testing.T, m *Mapper) Status {
	t.Helper()
	testkit.WaitFor(t, 10*time.Second, "the mapping", func() bool { return m.Status().Active })
	return m.Status()
}

func TestPCPOnTheWire(t *testing.T) {
	srv := newResponder(t, func(r *responder, req []byte, from netip.AddrPort) {
		r.send(t, pcpAnswer(req, 100), from)
	})
	reg := prometheus.NewRegistry()
	m := startMapper(t, socketConfig(PCP, srv.port(), reg))
	st := waitActive(t, m)
	if st.External != testExternal || st.Lease != MaxLease || st.Protocol != PCP {
		t.Errorf("status %+v", st)
	}
	if err := m.Close(); err != nil {
		t.Fatal(err)
	}
	reqs := srv.requests()
	want := [][]byte{
		pcpMapRequest{Lifetime: 7200, Client: loopback, Nonce: m.nonce, InternalPort: 4242, SuggestedPort: 4242}.encode(),
		pcpMapRequest{Lifetime: 0, Client: loopback, Nonce: m.nonce, InternalPort: 4242,
			SuggestedPort: testExternal.Port(), SuggestedAddr: testExternal.Addr()}.encode(),
	}
	if len(reqs) != len(want) {
		t.Fatalf("%d requests, want %d (map, delete): %x", len(reqs), len(want), reqs)
	}
	for i := range want {
		if !bytes.Equal(reqs[i], want[i]) {
			t.Errorf("request %d\n%x\nwant\n%x", i, reqs[i], want[i])
		}
	}
	if v := testutil.ToFloat64(m.met.requests.WithLabelValues("pcp", outcomeOK)); v != 2 {
		t.Errorf("%v PCP requests counted ok, want 2", v)
	}
}

func TestNATPMPOnTheWire(t *testing.T) {
	srv := newResponder(t, func(r *responder, req []byte, from netip.AddrPort) {
		r.send(t, natpmpAnswer(req, 100), from)
	})
	m := startMapper(t, socketConfig(NATPMP, srv.port(), nil))
	st := waitActive(t, m)
	if st.External != testExternal || st.Protocol != NATPMP {
		t.Errorf("status %+v", st)
	}
	if err := m.Close(); err != nil {
		t.Fatal(err)
	}
	want := []string{
		`00 00`,
		`00 01 0000 1092 1092 00001c20`,
		`00 01 0000 1092 0000 00000000`, // delete: suggested port and lifetime 0
	}
	reqs := srv.requests()
	if len(reqs) != len(want) {
		t.Fatalf("%d requests, want %d: %x", len(reqs), len(want), reqs)
	}
	for i := range want {
		if w := unhex(t, want[i]); !bytes.Equal(reqs[i], w) {
			t.Errorf("request %d: %x, want %x", i, reqs[i], w)
		}
	}
}

// TestAutoFallsBackToNATPMP: a NAT-PMP-only gateway answers PCP with
// version 0 UNSUPP_VERSION (RFC 6887, section 9).
func TestAutoFallsBackToNATPMP(t *testing.T) {
	srv := newResponder(t, func(r *responder, req []byte, from netip.AddrPort) {
		if req[0] == pcpVersion {
			r.send(t, unhex(t, `00 81 0001 00000064`), from)
			return
		}
		r.send(t, natpmpAnswer(req, 100), from)
	})
	m := startMapper(t, socketConfig(Auto, srv.port(), nil))
	st := waitActive(t, m)
	if st.Protocol != NATPMP || st.Probes[0].Result != Refused || st.Probes[0].Code != pcpUnsuppVersion ||
		st.Probes[1].Result != Answered || st.Probes[2].Result != NotTried {
		t.Errorf("status %+v", st)
	}
}

// TestAnswersFromElsewhereAreIgnored: on the first request, answers come
// from another port of the gateway, from another address at the server
// port, and unreadable from the server; only the retransmission is
// answered by the server.
func TestAnswersFromElsewhereAreIgnored(t *testing.T) {
	other, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	var (
		srv      *responder
		imposter atomic.Pointer[net.UDPConn] // set once the server's port is known
	)
	forged := func(req []byte) []byte {
		b := pcpAnswer(req, 100)
		binary.BigEndian.PutUint16(b[pcpHeaderLen+18:], 1) // another external port
		return b
	}
	srv = newResponder(t, func(r *responder, req []byte, from netip.AddrPort) {
		if len(r.requests()) > 1 {
			r.send(t, pcpAnswer(req, 100), from)
			return
		}
		if _, err := other.WriteToUDPAddrPort(forged(req), from); err != nil {
			t.Error(err)
		}
		if _, err := imposter.Load().WriteToUDPAddrPort(forged(req), from); err != nil {
			t.Error(err)
		}
		r.send(t, []byte{2, 0x81, 0, 0, 1}, from)
	})
	imp, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 2), Port: int(srv.port())})
	if err != nil {
		t.Skipf("no 127.0.0.2 on this host: %v", err)
	}
	defer imp.Close()
	imposter.Store(imp)
	reg := prometheus.NewRegistry()
	m := startMapper(t, socketConfig(PCP, srv.port(), reg))
	st := waitActive(t, m)
	if st.External != testExternal {
		t.Errorf("mapped to %v, want %v (a forged answer was taken)", st.External, testExternal)
	}
	if v := testutil.ToFloat64(m.met.ignored.WithLabelValues("pcp", ignoredForeign)); v != 2 {
		t.Errorf("%v foreign answers counted, want 2", v)
	}
	if v := testutil.ToFloat64(m.met.ignored.WithLabelValues("pcp", ignoredMalformed)); v != 1 {
		t.Errorf("%v malformed answers counted, want 1", v)
	}
}

func TestNoAnswer(t *testing.T) {
	srv := newResponder(t, func(*responder, []byte, netip.AddrPort) {})
	cfg := socketConfig(PCP, srv.port(), prometheus.NewRegistry())
	cfg.timeout = 600 * time.Millisecond
	m := startMapper(t, cfg)
	testkit.WaitFor(t, 10*time.Second, "the probe", func() bool { return m.Status().Probes[0].Result != NotTried })
	if st := m.Status(); st.Active || st.Probes[0].Result != NoAnswer {
		t.Errorf("status %+v", st)
	}
	if n := len(srv.requests()); n < 1 || n > 2 {
		t.Errorf("%d transmissions in 600 ms (at 0 and 250 ms), want 2 (1 on a loaded host)", n)
	}
	if v := testutil.ToFloat64(m.met.requests.WithLabelValues("pcp", outcomeTimeout)); v < 1 {
		t.Errorf("%v timeouts counted", v)
	}
}

// TestAnnouncementRemaps: an unsolicited ANNOUNCE from the gateway makes
// the Mapper check the epoch, find it reset, and map again.
func TestAnnouncementRemaps(t *testing.T) {
	var (
		mu    sync.Mutex
		epoch uint32 = 5000
	)
	srv := newResponder(t, func(r *responder, req []byte, from netip.AddrPort) {
		mu.Lock()
		e := epoch
		mu.Unlock()
		r.send(t, pcpAnswer(req, e), from)
	})
	cfg := socketConfig(PCP, srv.port(), nil)
	cfg.announceAddr = "127.0.0.1:0"
	var ch changes
	cfg.OnChange = ch.add
	m := startMapper(t, cfg)
	waitActive(t, m)
	m.mu.Lock()
	ann := m.annAddr
	m.mu.Unlock()
	if !ann.IsValid() {
		t.Fatal("no announcement listener")
	}
	mu.Lock()
	epoch = 2 // the server restarted
	mu.Unlock()
	srv.send(t, pcpAnswer(encodePCPAnnounce(loopback), 2), ann)
	testkit.WaitFor(t, 10*time.Second, "the mapping granted anew", func() bool { return len(ch.all()) == 2 })
	reqs := srv.requests()
	if len(reqs) != 3 || reqs[1][1] != pcpOpAnnounce || reqs[2][1] != pcpOpMap {
		t.Errorf("requests %x; want MAP, ANNOUNCE, MAP", reqs)
	}
}

func TestMetricsLint(t *testing.T) {
	srv := newResponder(t, func(r *responder, req []byte, from netip.AddrPort) {
		r.send(t, pcpAnswer(req, 100), from)
	})
	reg := prometheus.NewRegistry()
	m := startMapper(t, socketConfig(PCP, srv.port(), reg))
	waitActive(t, m)
	m.met.ignore(PCP, ignoredForeign)
	m.met.request(UPnP, &ResultError{Protocol: UPnP, Code: 718})
	problems, err := testutil.GatherAndLint(reg)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Errorf("lint: %s: %s", p.Metric, p.Text)
	}
	if n, err := testutil.GatherAndCount(reg, "antnode_portmap_active"); err != nil || n != 3 {
		t.Errorf("%d active series (%v), want 3: one per protocol", n, err)
	}
	// A second Mapper on the same registry shares the collectors.
	m2, err := New(socketConfig(PCP, srv.port(), reg))
	if err != nil {
		t.Fatal(err)
	}
	if m2.met.requests != m.met.requests {
		t.Error("a second Mapper registered its own collectors")
	}
	if err := m2.Close(); err != nil {
		t.Fatal(err)
	}
}
