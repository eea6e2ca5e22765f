package traversal

import (
	"context"
	"testing"
	"time"

	"github.com/quic-go/quic-go"

	"github.com/antnode/antnode/event"
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
	if ok, failed := ends(); ok != runs {
		t.Fatalf("the responder recorded %d successes and %d failures for %d connects within 4 s", ok, failed, runs)
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
