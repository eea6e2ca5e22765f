package relay

import (
	"encoding/binary"
	"errors"
	"net"
	"testing"
	"time"

	"github.com/pion/stun/v3"

	"github.com/antnode/antnode/event"
	"github.com/antnode/antnode/internal/testkit"
)

// auditLog keeps what a relay records; with picks its security events.
type auditLog = testkit.Recorder

// with returns the security events of one detail, and the occurrences
// they stand for (each record one, plus the repeats its Value counts).
func with(a *auditLog, detail string) (recs []event.Event, occurrences int) {
	for _, ev := range a.Kind(event.KindSecurity) {
		if ev.Detail == detail {
			recs = append(recs, ev)
			occurrences += 1 + int(ev.Value)
		}
	}
	return recs, occurrences
}

// stunClient sends TURN Allocate requests one at a time over UDP and
// reads each answer.
type stunClient struct {
	t     *testing.T
	c     net.Conn
	nonce stun.Nonce
	realm stun.Realm
}

func newSTUNClient(t *testing.T, r *testRelay) *stunClient {
	c, err := net.Dial("udp4", r.UDPAddr().String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	sc := &stunClient{t: t, c: c}
	// An unauthenticated request is answered 401 with the nonce.
	resp := sc.roundTrip(stun.MustBuild(stun.TransactionID, stun.NewType(stun.MethodAllocate, stun.ClassRequest)))
	if err := sc.nonce.GetFrom(resp); err != nil {
		t.Fatalf("no nonce in %v: %v", resp, err)
	}
	if err := sc.realm.GetFrom(resp); err != nil {
		t.Fatal(err)
	}
	return sc
}

func (sc *stunClient) roundTrip(m *stun.Message) *stun.Message {
	sc.t.Helper()
	if _, err := sc.c.Write(m.Raw); err != nil {
		sc.t.Fatal(err)
	}
	buf := make([]byte, 1500)
	sc.c.SetReadDeadline(time.Now().Add(5 * time.Second))
	n, err := sc.c.Read(buf)
	if err != nil {
		sc.t.Fatal(err)
	}
	resp := &stun.Message{Raw: buf[:n]}
	if err := resp.Decode(); err != nil {
		sc.t.Fatal(err)
	}
	return resp
}

// allocate sends an authenticated Allocate and returns the error code of
// the answer.
func (sc *stunClient) allocate(user, password string) stun.ErrorCode {
	sc.t.Helper()
	m := stun.MustBuild(stun.TransactionID, stun.NewType(stun.MethodAllocate, stun.ClassRequest),
		stun.NewUsername(user), sc.realm, sc.nonce,
		stun.NewLongTermIntegrity(user, sc.realm.String(), password), stun.Fingerprint)
	var code stun.ErrorCodeAttribute
	if err := code.GetFrom(sc.roundTrip(m)); err != nil {
		sc.t.Fatalf("allocate answered without an error code: %v", err)
	}
	return code.Code
}

// TestRelayAuditsEachDistinctFailureOnce: a wrong password with a
// well-formed, unexpired username is audited (it was silent), and a flood
// of failures (wrong passwords, malformed usernames) is aggregated: one
// record at once and one with the count of the rest, per source and
// reason, and the counts add up to every failure.
func TestRelayAuditsEachDistinctFailureOnce(t *testing.T) {
	audit := &auditLog{}
	r := startRelay(t, ServerConfig{Recorder: audit, AuditInterval: time.Hour}, allowLoopback)
	good := r.Credentials(peerID(t), time.Minute)
	if _, err := allocate(t, r, Credentials{Username: good.Username, Password: "wrong"}, false); !errors.Is(err, ErrRefused) {
		t.Fatalf("wrong password: %v, want ErrRefused", err)
	}
	recs, n := with(audit, "relay credentials: wrong password")
	if len(recs) != 1 || n != 1 || recs[0].Reason != event.ReasonBadCredentials || recs[0].Peer == "" {
		t.Fatalf("one wrong password: records %+v (occurrences %d), want one bad_credentials record naming the peer", recs, n)
	}

	const flood = 1000
	sc := newSTUNClient(t, r)
	for range flood {
		sc.allocate(good.Username, "wrong")
		sc.allocate("alice", "secret")
	}
	r.Close() // ends the interval: the pending counts are recorded
	for _, detail := range []string{"relay credentials: wrong password", "relay credentials: malformed"} {
		recs, n := with(audit, detail)
		sources := map[string]int{}
		for _, ev := range recs {
			sources[ev.Addr.String()]++
		}
		for src, k := range sources {
			if k > 2 {
				t.Errorf("%s: %d records from %s in one interval, want at most 2 (the first and the count)", detail, k, src)
			}
		}
		want := flood
		if detail == "relay credentials: wrong password" {
			want++ // the allocation above
		}
		if n != want {
			t.Errorf("%s: records stand for %d failures, want %d", detail, n, want)
		}
	}
}

// dialTCP opens a raw TCP connection to the relay.
func dialTCP(t *testing.T, r *testRelay) net.Conn {
	t.Helper()
	c, err := net.Dial("tcp4", r.TCPAddr().String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// closedWithin reports how long the relay took to close c (read EOF or
// reset), failing t if it did not within d.
func closedWithin(t *testing.T, c net.Conn, d time.Duration) time.Duration {
	t.Helper()
	start := time.Now()
	c.SetReadDeadline(start.Add(d))
	buf := make([]byte, 2048)
	for {
		_, err := c.Read(buf)
		var ne net.Error
		switch {
		case err == nil:
			continue
		case errors.As(err, &ne) && ne.Timeout():
			t.Fatalf("connection still open after %v", d)
		default: // EOF or a reset: closed by the relay
			return time.Since(start)
		}
	}
}

// stunHeader is the first bytes of a STUN message announcing a body of
// length bytes.
func stunHeader(length uint16) []byte {
	h := make([]byte, 20)
	binary.BigEndian.PutUint16(h[0:2], 0x0003) // Allocate request
	binary.BigEndian.PutUint16(h[2:4], length)
	binary.BigEndian.PutUint32(h[4:8], 0x2112A442)
	return h
}

// TestRelayTCPDeadlines: a TURN-over-TCP connection is held no longer
// than its use: without an authenticated request it ends at the
// authentication deadline; a frame left incomplete ends it at the frame
// deadline, long before that; a frame larger than the relay handles ends
// it at once; an authenticated allocation outlives the authentication
// deadline and ends when idle.
func TestRelayTCPDeadlines(t *testing.T) {
	const authTimeout, frameTimeout, idle = 600 * time.Millisecond, 200 * time.Millisecond, 1500 * time.Millisecond
	audit := &auditLog{}
	r := startRelay(t, ServerConfig{Recorder: audit, TCPAuthTimeout: authTimeout, TCPFrameTimeout: frameTimeout,
		TCPIdleTimeout: idle}, allowLoopback)

	if d := closedWithin(t, dialTCP(t, r), 5*authTimeout); d < authTimeout/2 {
		t.Errorf("an idle unauthenticated connection closed after %v, before the %v deadline", d, authTimeout)
	}
	partial := dialTCP(t, r)
	if _, err := partial.Write(stunHeader(1000)[:20]); err != nil {
		t.Fatal(err)
	}
	if d := closedWithin(t, partial, authTimeout); d > authTimeout/2 {
		t.Errorf("a partial frame held its connection %v (frame deadline %v)", d, frameTimeout)
	}
	huge := dialTCP(t, r)
	if _, err := huge.Write(stunHeader(65000)); err != nil {
		t.Fatal(err)
	}
	if d := closedWithin(t, huge, authTimeout); d > frameTimeout {
		t.Errorf("a 65 KB frame's connection closed after %v, want at once", d)
	}
	if recs, _ := with(audit, "relay TCP: frame deadline"); len(recs) == 0 {
		t.Error("the frame deadline is not audited")
	}

	a, err := allocate(t, r, r.Credentials(peerID(t), time.Minute), true)
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	time.Sleep(authTimeout + frameTimeout) // past the authentication deadline: the allocation must outlive it
	if r.Allocations() != 1 {
		t.Fatalf("the authenticated allocation ended at the authentication deadline (%d allocations)", r.Allocations())
	}
	// The client refreshes far less often than idle: the relay ends it.
	testkit.WaitFor(t, 5*idle, "the idle allocation to end", func() bool { return r.Allocations() == 0 })
}

// TestRelayTCPConnectionCaps: connections past the per-IP cap are closed
// at once (and audited), the ones within it stay, and closing one frees
// its place.
func TestRelayTCPConnectionCaps(t *testing.T) {
	audit := &auditLog{}
	r := startRelay(t, ServerConfig{Recorder: audit, MaxTCPConnsPerIP: 3}, allowLoopback)
	held := []net.Conn{dialTCP(t, r), dialTCP(t, r), dialTCP(t, r)}
	testkit.WaitFor(t, 5*time.Second, "3 connections held", func() bool { return r.tcp[0].Conns() == 3 })
	for range 2 {
		closedWithin(t, dialTCP(t, r), 2*time.Second)
	}
	if r.tcp[0].Conns() != 3 {
		t.Fatalf("%d connections held, want the cap of 3", r.tcp[0].Conns())
	}
	held[0].Close()
	testkit.WaitFor(t, 5*time.Second, "the closed connection's place to free", func() bool { return r.tcp[0].Conns() == 2 })
	dialTCP(t, r)
	testkit.WaitFor(t, 5*time.Second, "a new connection held", func() bool { return r.tcp[0].Conns() == 3 })
	r.Close()
	if recs, n := with(audit, "relay TCP: per-IP connection cap"); n != 2 || len(recs) != 2 || recs[0].Value != 0 {
		t.Fatalf("cap refusals audited as %+v (%d refusals), want the first at once, then one with the count, for 2", recs, n)
	}
}
