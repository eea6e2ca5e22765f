package traversal

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/quic-go/quic-go"

	"github.com/antnode/antnode/event"
	"github.com/antnode/antnode/identity"
	"github.com/antnode/antnode/internal/testkit"
)

// TestConnectAndCloseAtOnce: an initiator that closes each connection as
// soon as it has it (a reachability check: `antnode connect` without
// --send), ten times in a row. Every one of the responder's attempts
// succeeded and says so at once, not as a timeout after ConnectTimeout
// (the nomination is lost when the dialler closes at once; a connection
// closed after use is taken as the nominated one, and each reaches its
// own attempt by the server name the dialler sends); and no connection is
// left open at the responder (a second dial cut off mid-handshake by the
// end of the attempt used to leave one until its idle timeout).
func TestConnectAndCloseAtOnce(t *testing.T) {
	b := startBootstrap(t)
	recB := &recorder{}
	// Nothing remembered: every connect is introduced (a remembered dial
	// that wins cancels the responder's attempt; see reconnect.go).
	a := startNodeCfg(t, Config{Bootstraps: []Bootstrap{b}, RememberFor: -1})
	bn := startNodeCfg(t, Config{Bootstraps: []Bootstrap{b}, Recorder: recB, ConnectTimeout: 8 * time.Second})
	const runs = 10
	for i := range runs {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		c, err := a.Connect(ctx, bn.ID())
		cancel()
		if err != nil {
			t.Fatalf("connect %d: %v", i, err)
		}
		c.Close()
	}
	ends := func() (ok, failed int) {
		for _, ev := range recB.Kind(event.KindAttemptEnd) {
			if ev.Outcome == event.OutcomeOK {
				ok++
			} else {
				failed++
			}
		}
		return ok, failed
	}
	deadline := time.Now().Add(4 * time.Second) // well under ConnectTimeout
	for ok, failed := ends(); ok+failed < runs && time.Now().Before(deadline); ok, failed = ends() {
		time.Sleep(20 * time.Millisecond)
	}
	okIn4, failedIn4 := ends()
	if ok, failed := okIn4, failedIn4; ok != runs {
		// Say how the missing ends came, if they come before the
		// responder's ConnectTimeout: the next failure is a diagnosis.
		late := time.Now().Add(5 * time.Second)
		for ok+failed < runs && time.Now().Before(late) {
			time.Sleep(50 * time.Millisecond)
			ok, failed = ends()
		}
		for _, ev := range recB.Kind(event.KindAttemptEnd) {
			if ev.Outcome != event.OutcomeOK {
				t.Logf("a failed attempt end: reason %s, phase %s, after %v: %v", ev.Reason, ev.Phase, ev.Duration, ev.Err)
			}
		}
		t.Fatalf("the responder recorded %d successes and %d failures for %d connects within 4 s (%d and %d within 9 s)",
			okIn4, failedIn4, runs, ok, failed)
	}
	// And its machine ends closed, not connected to a connection that is
	// gone.
	deadline = time.Now().Add(2 * time.Second)
	for time.Now().Before(deadline) {
		if st, _ := bn.machine(a.ID()).State(); st == StateClosed {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	st, _ := bn.machine(a.ID()).State()
	h := bn.machine(a.ID()).History()
	for _, c := range bn.Conns() {
		t.Logf("a connection still open at the responder: accepted %v ago, server name %s", time.Since(c.since), c.qc.ConnectionState().TLS.ServerName)
	}
	t.Fatalf("the responder's machine is %s after the last connection closed: last moves %+v; conns %d", st, h[max(0, len(h)-6):], len(bn.Conns()))
}

func TestPickExpectation(t *testing.T) {
	first, second := make(chan *quic.Conn), make(chan *quic.Conn)
	l := []expectation{{ufrag: "aaaa0001", ch: first}, {ufrag: "bbbb0002", ch: second}}
	tests := []struct {
		name       string
		l          []expectation
		serverName string
		want       chan *quic.Conn
	}{
		{"named attempt", l, attemptName("bbbb0002"), second},
		{"the oldest when named first", l, attemptName("aaaa0001"), first},
		{"named attempt is over", l, attemptName("cccc0003"), nil},
		{"a dialler that names none", l, "antnode", first},
		{"no attempt waiting", nil, attemptName("aaaa0001"), nil},
		{"no attempt, no name", nil, "antnode", nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := pickExpectation(tc.l, tc.serverName); got != tc.want {
				t.Fatalf("pickExpectation(%q) picked the wrong attempt", tc.serverName)
			}
		})
	}
}

// TestEarlyConnBeforeOffer: a dial that names an attempt the accepting
// node has not begun (on an early introduction the dialler holds the
// credentials first, and a lost offer arrives a retransmission later) is
// handed to that attempt when it begins. CI's lossy matrix once counted a
// responder attempt failed (after its timeout) whose initiator had
// connected: its connection had arrived before the offer and was given
// to no attempt.
func TestEarlyConnBeforeOffer(t *testing.T) {
	b := startBootstrap(t)
	a := startNodeCfg(t, Config{Bootstraps: []Bootstrap{b}, RememberFor: -1})
	bn := startNodeCfg(t, Config{Bootstraps: []Bootstrap{b}, RememberFor: -1})
	const ufrag = "eeee0001"
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	qc, err := a.dialPeer(ctx, a.cfg.Endpoint, bn.cfg.Endpoint.LocalAddr(), bn.ID(), ufrag, 3*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer qc.CloseWithError(0, "")
	// The accepting side has the connection once the dialler's handshake
	// is over, within a round trip on loopback; give it a bound.
	testkit.WaitFor(t, 2*time.Second, "the accepted connection", func() bool { return len(bn.Conns()) > 0 })
	other, releaseOther := bn.expect(a.ID(), "ffff0002") // another attempt: not its
	defer releaseOther()
	in, release := bn.expect(a.ID(), ufrag)
	defer release()
	select {
	case got := <-in:
		if got.RemoteAddr().String() != a.cfg.Endpoint.LocalAddr().String() {
			t.Fatalf("the attempt got a connection from %v, want %v", got.RemoteAddr(), a.cfg.Endpoint.LocalAddr())
		}
	case <-time.After(2 * time.Second):
		t.Fatal("the attempt that began after its connection arrived never got it")
	}
	select {
	case <-other:
		t.Fatal("an attempt with other credentials got the connection")
	default:
	}
}

func TestEarlyConns(t *testing.T) {
	p1, p2 := testkit.Identity(t).ID(), testkit.Identity(t).ID()
	c := make([]*quic.Conn, 6)
	for i := range c {
		c[i] = new(quic.Conn)
	}
	t0 := time.Unix(1000, 0)
	tests := []struct {
		name  string
		park  func(e *earlyConns)
		peer  identity.PeerID
		ufrag string
		at    time.Time
		want  []*quic.Conn
	}{
		{"claimed by its ufrag", func(e *earlyConns) { e.park(p1, "u1", c[0], t0); e.park(p1, "u2", c[1], t0) }, p1, "u2", t0, c[1:2]},
		{"not another peer's", func(e *earlyConns) { e.park(p2, "u1", c[0], t0) }, p1, "u1", t0, nil},
		{"two for the same attempt", func(e *earlyConns) { e.park(p1, "u1", c[0], t0); e.park(p1, "u1", c[1], t0) }, p1, "u1", t0, c[0:2]},
		{"too old", func(e *earlyConns) { e.park(p1, "u1", c[0], t0) }, p1, "u1", t0.Add(earlyConnTTL + time.Second), nil},
		{"the oldest goes first", func(e *earlyConns) {
			for i := range maxEarlyConns + 1 {
				e.park(p1, "u1", c[i], t0)
			}
		}, p1, "u1", t0, c[1 : maxEarlyConns+1]},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var e earlyConns
			tc.park(&e)
			got := e.claim(tc.peer, tc.ufrag, tc.at)
			if !slices.Equal(got, tc.want) {
				t.Fatalf("claimed %d connections, want %d", len(got), len(tc.want))
			}
			if again := e.claim(tc.peer, tc.ufrag, tc.at); len(again) != 0 {
				t.Fatalf("claimed %d connections a second time", len(again))
			}
		})
	}
	var e earlyConns
	for i := range maxEarlyPeers + 10 {
		e.park(testkit.Identity(t).ID(), "u", c[0], t0.Add(time.Duration(i)*time.Millisecond))
	}
	if len(e.byPeer) != maxEarlyPeers {
		t.Fatalf("%d peers parked, want at most %d", len(e.byPeer), maxEarlyPeers)
	}
}
