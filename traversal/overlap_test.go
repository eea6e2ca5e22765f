package traversal

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/antnode/antnode/event"
	"github.com/antnode/antnode/internal/testkit"
)

// TestConcurrentConnects: three connects from one node to another at
// once, each an attempt of its own on both sides. All connect, no state
// move is refused on either side (each used to record refused moves such
// as punching -> discovering: the machines are per peer, the attempts
// overlapped), and both machines end connected.
func TestConcurrentConnects(t *testing.T) {
	b := startBootstrap(t)
	recA, recB := &recorder{}, &recorder{}
	a := startNodeCfg(t, Config{Bootstraps: []Bootstrap{b}, Recorder: recA, RememberFor: -1})
	bn := startNodeCfg(t, Config{Bootstraps: []Bootstrap{b}, Recorder: recB})
	var wg sync.WaitGroup
	conns := make([]*Conn, 3)
	for i := range 3 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			c, err := a.Connect(ctx, bn.ID())
			if err != nil {
				t.Error(err)
				return
			}
			conns[i] = c
		}()
	}
	wg.Wait()
	for _, c := range conns {
		if c != nil {
			defer c.Close()
		}
	}
	// The responder's attempts end when the nominations arrive, within a
	// round trip on loopback of the initiator's; give them a bound.
	testkit.WaitFor(t, 10*time.Second, "the responder's attempts to end", func() bool {
		return len(recB.Kind(event.KindAttemptEnd)) == 3
	})
	for _, r := range []*recorder{recA, recB} {
		for _, ev := range r.Kind(event.KindStateChange) {
			if ev.Outcome == event.OutcomeFail {
				t.Errorf("a refused move: %s -> %s (attempt %v)", ev.Detail, ev.To, ev.Attempt)
			}
		}
	}
	stA, _ := a.machine(bn.ID()).State()
	stB, _ := bn.machine(a.ID()).State()
	if !stA.Connected() || !stB.Connected() {
		t.Errorf("the initiator's machine is %s, the responder's %s, with %d connections open", stA, stB, len(bn.Conns()))
	}
}
