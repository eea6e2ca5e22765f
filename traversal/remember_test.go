package traversal

import (
	"context"
	"crypto/tls"
	"errors"
	"net"
	"net/netip"
	"runtime"
	"slices"
	"testing"
	"testing/synctest"
	"time"

	"github.com/antnode/antnode/event"
	"github.com/antnode/antnode/identity"
	"github.com/antnode/antnode/internal/testkit"
)

// fakeClock is a clock a test moves by hand.
type fakeClock struct{ t time.Time }

func (c *fakeClock) now() time.Time { return c.t }

func TestPeerMemory(t *testing.T) {
	p1, p2, p3 := testkit.Identity(t).ID(), testkit.Identity(t).ID(), testkit.Identity(t).ID()
	a1 := netip.MustParseAddrPort("192.0.2.1:4000")
	a2 := netip.MustParseAddrPort("192.0.2.2:4000")
	ticket := &tls.ClientSessionState{}
	type want struct {
		peer    identity.PeerID
		addr    netip.AddrPort // invalid: no dial
		expects bool
		ticket  bool
	}
	tests := []struct {
		name     string
		ttl      time.Duration
		maxPeers int
		steps    func(pm *peerMemory, clk *fakeClock)
		want     []want
	}{
		{"remembered", time.Minute, 4, func(pm *peerMemory, _ *fakeClock) {
			pm.remember(p1, a1)
			pm.sessions(p1).Put("any", ticket)
		}, []want{{p1, a1, true, true}, {p2, netip.AddrPort{}, false, false}}},
		{"expires after ttl", time.Minute, 4, func(pm *peerMemory, clk *fakeClock) {
			pm.remember(p1, a1)
			pm.sessions(p1).Put("any", ticket)
			clk.t = clk.t.Add(time.Minute)
		}, []want{{p1, netip.AddrPort{}, false, false}}},
		{"refreshed when it ends", time.Minute, 4, func(pm *peerMemory, clk *fakeClock) {
			pm.remember(p1, a1)
			clk.t = clk.t.Add(50 * time.Second)
			pm.remember(p1, a2)
			clk.t = clk.t.Add(50 * time.Second)
		}, []want{{p1, a2, true, false}}},
		{"count evicts the least recent", time.Minute, 2, func(pm *peerMemory, clk *fakeClock) {
			pm.remember(p1, a1)
			clk.t = clk.t.Add(time.Second)
			pm.remember(p2, a2)
			clk.t = clk.t.Add(time.Second)
			pm.remember(p3, a1)
		}, []want{{p1, netip.AddrPort{}, false, false}, {p2, a2, true, false}, {p3, a1, true, false}}},
		{"ticket alone neither dials nor expects", time.Minute, 4, func(pm *peerMemory, _ *fakeClock) {
			pm.sessions(p1).Put("any", ticket)
		}, []want{{p1, netip.AddrPort{}, false, true}}},
		{"kept without a direct path", time.Minute, 4, func(pm *peerMemory, _ *fakeClock) {
			pm.remember(p1, a1)
			pm.remember(p1, netip.AddrPort{}) // reconnected over a relay
		}, []want{{p1, netip.AddrPort{}, true, false}}},
		{"a failed dial forgets the address", time.Minute, 4, func(pm *peerMemory, _ *fakeClock) {
			pm.remember(p1, a1)
			pm.sessions(p1).Put("any", ticket)
			pm.forgetAddr(p1, a1)
		}, []want{{p1, netip.AddrPort{}, true, true}}},
		{"a refusal forgets the peer", time.Minute, 4, func(pm *peerMemory, _ *fakeClock) {
			pm.remember(p1, a1)
			pm.sessions(p1).Put("any", ticket)
			pm.forget(p1)
		}, []want{{p1, netip.AddrPort{}, false, false}}},
		{"an invalidated ticket goes", time.Minute, 4, func(pm *peerMemory, _ *fakeClock) {
			pm.remember(p1, a1)
			pm.sessions(p1).Put("any", ticket)
			pm.sessions(p1).Put("any", nil)
		}, []want{{p1, a1, true, false}}},
		{"off", -1, 4, func(pm *peerMemory, _ *fakeClock) {
			pm.remember(p1, a1)
			pm.keep(p2)
		}, []want{{p1, netip.AddrPort{}, false, false}, {p2, netip.AddrPort{}, false, false}}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			clk := &fakeClock{t: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
			pm := newPeerMemory(tc.ttl, tc.maxPeers)
			pm.setClock(clk.now)
			tc.steps(pm, clk)
			if pm.len() > max(tc.maxPeers, 0) {
				t.Fatalf("%d entries, at most %d allowed", pm.len(), tc.maxPeers)
			}
			for _, w := range tc.want {
				addr, ok := pm.lookup(w.peer)
				if ok != w.addr.IsValid() || addr != w.addr {
					t.Errorf("lookup %s: %v %v, want %v", w.peer.Short(), addr, ok, w.addr)
				}
				if got := pm.expects(w.peer); got != w.expects {
					t.Errorf("expects %s: %v, want %v", w.peer.Short(), got, w.expects)
				}
				var got bool
				if c := pm.sessions(w.peer); c != nil {
					_, got = c.Get("other")
				}
				if got != w.ticket {
					t.Errorf("ticket of %s: %v, want %v", w.peer.Short(), got, w.ticket)
				}
			}
		})
	}
}

func TestTowardDirect(t *testing.T) {
	allow := Transitions()
	for s := range stateEnd {
		t.Run(s.String(), func(t *testing.T) {
			cur := s
			for range 4 {
				next, ok := towardDirect(cur)
				if !ok {
					break
				}
				if !slices.Contains(allow[cur], next) {
					t.Fatalf("%s -> %s is not in the transition table", cur, next)
				}
				cur = next
			}
			if !cur.Connected() {
				t.Fatalf("from %s the walk ends in %s", s, cur)
			}
		})
	}
}

// deadAddr returns the address of a UDP socket that is closed: a peer
// that moved away from it.
func deadAddr(t testing.TB) netip.AddrPort {
	t.Helper()
	c, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := addrPortOf(c.LocalAddr())
	c.Close()
	return addr
}

// connectClose connects a to b, uses the connection (a round trip: the
// session ticket arrives meanwhile) and closes it again, and waits until
// b has seen the close. It returns the connection (closed).
func connectClose(t testing.TB, a, b *Node) *Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := a.Connect(ctx, b.ID())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.SendVerified(ctx, 1); err != nil {
		t.Fatal(err)
	}
	c.Close()
	waitNoConn(t, b, a.ID())
	return c
}

// waitNoConn waits until n has no live connection to peer left.
func waitNoConn(t testing.TB, n *Node, peer identity.PeerID) {
	t.Helper()
	for range 500 {
		live := slices.ContainsFunc(n.Conns(), func(c *Conn) bool { return c.peer == peer })
		if !live {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("%s keeps a connection to %s", n.ID().Short(), peer.Short())
}

// recallOutcome returns how the remembered dial of attempt id ended
// (false: there was none).
func recallOutcome(rec *recorder, id event.AttemptID) (event.Event, bool) {
	return rec.Find(func(ev event.Event) bool {
		return ev.Kind == event.KindRecovery && ev.Detail == "remembered_path" && ev.Attempt == id
	})
}

// reconnect connects a to b again and returns the connection and how
// its remembered dial ended. Until won: on loopback an introduction
// (1.5 round trips of almost nothing) can beat the remembered dial (1)
// when the machine is busy (it won 8 to 18% of the time under the race
// detector), so a test of the win connects again, 5 times at most, until
// the remembered dial wins.
func reconnect(t *testing.T, ctx context.Context, a, b *Node, recA *recorder, untilWon bool) (*Conn, event.Event, bool) {
	t.Helper()
	for i := 0; ; i++ {
		c, err := a.Connect(ctx, b.ID())
		if err != nil {
			t.Fatal(err)
		}
		ev, tried := recallOutcome(recA, c.Attempt())
		if !untilWon || (tried && ev.Outcome == event.OutcomeOK) || i == 4 {
			return c, ev, tried
		}
		c.Close()
		waitNoConn(t, b, a.ID())
	}
}

// TestRememberedPathRace connects two nodes through a bootstrap on
// loopback, closes the connection and connects again: the remembered
// path races the introduction and wins, loses (its address is dead, the
// peer forgot this node) or is not tried (the memory expired by time or
// by count).
func TestRememberedPathRace(t *testing.T) {
	boot := startBootstrap(t)
	tests := []struct {
		name  string
		cfg   Config // the dialler's
		setup func(t *testing.T, a, b *Node)
		// want: the remembered dial's outcome (OutcomeOK: it won;
		// OutcomeNone: not tried); lost: it lost (failed or cancelled).
		want event.Outcome
		lost bool
	}{
		{"win", Config{}, func(*testing.T, *Node, *Node) {}, event.OutcomeOK, false},
		{"lose: address dead", Config{}, func(t *testing.T, a, b *Node) {
			a.memory.remember(b.ID(), deadAddr(t))
		}, event.OutcomeNone, true},
		{"lose: peer forgot", Config{}, func(_ *testing.T, a, b *Node) {
			b.memory.forget(a.ID())
			a.memory.sessions(b.ID()).Put("", nil) // no ticket: a full handshake, which b must confirm
		}, event.OutcomeNone, true},
		{"stale: expired", Config{}, func(_ *testing.T, a, _ *Node) {
			later := time.Now().Add(a.cfg.RememberFor)
			a.memory.setClock(func() time.Time { return later })
		}, event.OutcomeNone, false},
		{"stale: evicted", Config{RememberPeers: 1}, func(t *testing.T, a, _ *Node) {
			connectClose(t, a, startNode(t, nil, boot))
		}, event.OutcomeNone, false},
		{"off", Config{RememberFor: -1}, func(*testing.T, *Node, *Node) {}, event.OutcomeNone, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			recA, recB := &recorder{}, &recorder{}
			cfg := tc.cfg
			cfg.Bootstraps, cfg.Recorder = []Bootstrap{boot}, recA
			a, b := startNodeCfg(t, cfg), startNode(t, recB, boot)
			connectClose(t, a, b)
			tc.setup(t, a, b)
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			c, ev, tried := reconnect(t, ctx, a, b, recA, tc.want == event.OutcomeOK)
			defer c.Close()
			switch {
			case tc.want == event.OutcomeNone && !tc.lost && tried:
				t.Fatalf("remembered dial tried (%s, %v), want none", ev.Outcome, ev.Err)
			case tc.lost && (!tried || ev.Outcome == event.OutcomeOK):
				t.Fatalf("remembered dial tried %v, outcome %s, want it lost", tried, ev.Outcome)
			case tc.want == event.OutcomeOK && (!tried || ev.Outcome != event.OutcomeOK):
				t.Fatalf("remembered dial tried %v, outcome %s (%v), want it won", tried, ev.Outcome, ev.Err)
			}
			won := tried && ev.Outcome == event.OutcomeOK
			if resumed := c.QUIC().ConnectionState().TLS.DidResume; won && !resumed {
				t.Error("the remembered dial did not resume the TLS session")
			}
			if c.Path() != event.PathDirect {
				t.Fatalf("path %s", c.Path())
			}
			if _, err := c.SendVerified(ctx, 64<<10); err != nil {
				t.Fatal(err)
			}
			if st, _ := a.machine(b.ID()).State(); st != StateConnectedDirect {
				t.Fatalf("dialler's state %s", st)
			}
			noRefusedMoves(t, recA)
			if won { // the accepting side took it as a connection of its own
				waitState(t, b, a.ID(), StateConnectedDirect)
			}
			noRefusedMoves(t, recB)
			// The dialler remembers the path it connected on now.
			if addr, ok := a.memory.lookup(b.ID()); a.cfg.RememberFor > 0 && (!ok || addr != addrPortOf(c.RemoteAddr())) {
				t.Fatalf("remembers %v %v, want %v", addr, ok, c.RemoteAddr())
			}
		})
	}
}

// TestDialWithoutIntroductionRefused: a peer the node never kept a
// connection with cannot dial it as a remembered peer, whatever attempt
// the node has under way; a remembered peer can.
func TestDialWithoutIntroductionRefused(t *testing.T) {
	boot := startBootstrap(t)
	b := startNode(t, nil, boot)
	to := b.cfg.Endpoint.LocalAddr()
	tests := []struct {
		name    string
		setup   func(t *testing.T, d *Node)
		refused bool
	}{
		{"stranger", func(*testing.T, *Node) {}, true},
		{"forgotten", func(t *testing.T, d *Node) {
			connectClose(t, d, b)
			b.memory.forget(d.ID())
			d.memory.sessions(b.ID()).Put("", nil)
		}, true},
		{"remembered, full handshake", func(t *testing.T, d *Node) {
			connectClose(t, d, b)
			d.memory.sessions(b.ID()).Put("", nil)
		}, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			d := startNode(t, nil, boot)
			tc.setup(t, d)
			// b waits for d in an attempt: the dial must not reach it.
			incoming, release := b.expect(d.ID(), "someufrag")
			defer release()
			qc, err := d.dialRemembered(b.ID(), to)
			if tc.refused {
				if !errors.Is(err, ErrNotRemembered) {
					t.Fatalf("dial: %v, want %v", err, ErrNotRemembered)
				}
			} else {
				if err != nil {
					t.Fatal(err)
				}
				defer qc.CloseWithError(0, "")
			}
			select {
			case <-incoming:
				t.Fatal("a dial without an introduction reached an attempt")
			default:
			}
		})
	}
}

// TestReconnectInRoundTrips measures, in the NAT model with virtual time,
// a reconnect between two peers behind port-restricted NATs in peer round
// trips: on the remembered path while the NATs still hold the mappings,
// introduced with nothing remembered, and with a stale memory (the
// peer's NAT forgot its mapping): the race must cost the introduction
// nothing.
func TestReconnectInRoundTrips(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		delay := 20 * time.Millisecond
		rtt := 4 * delay
		mn := newModelNet(t)
		rec := &recorder{}
		a, b := mn.peerRec(1, eimAPDF, delay, rec), mn.peer(2, eimAPDF, delay)
		for _, n := range []*Node{a, b} {
			if _, err := n.Classify(context.Background()); err != nil {
				t.Fatal(err)
			}
		}
		// b's NAT forgets its mappings (a reboot, a conntrack flush); b
		// maps anew with its next keepalive to the bootstrap, which lets
		// only the bootstrap in.
		flush := func() {
			mn.nats[2].Rebind()
			time.Sleep(30 * time.Second)
		}
		steps := []struct {
			name   string
			before func()
			recall string // the remembered dial: none, won or lost
		}{
			{"first", func() {}, "none"},
			// b may have dialled the first connection: a holds no
			// ticket then, and its full handshake waits for b's word.
			{"remembered", func() {}, "won"},
			// a dialled the last one: it resumes the session.
			{"resumed", func() {}, "won"},
			{"no memory", func() { flush(); a.memory.forget(b.ID()) }, "none"},
			{"stale", flush, "lost"},
		}
		took := map[string]float64{}
		for _, s := range steps {
			s.before()
			c := connectClose(t, a, b)
			ev, tried := recallOutcome(rec, c.Attempt())
			recall := "none"
			if tried {
				recall = map[bool]string{true: "won", false: "lost"}[ev.Outcome == event.OutcomeOK]
			}
			if recall != s.recall {
				t.Fatalf("%s: remembered dial %s, want %s", s.name, recall, s.recall)
			}
			if resumed := c.QUIC().ConnectionState().TLS.DidResume; s.name == "resumed" && !resumed {
				t.Fatal("the remembered dial after one a made did not resume the session")
			}
			took[s.name] = float64(c.TimeToConnect()) / float64(rtt)
			t.Logf("%s: %v = %.2f round trips", s.name, c.TimeToConnect(), took[s.name])
			time.Sleep(time.Second) // both sides see the close
		}
		t.Logf("remembered (resumed)/introduced %.2f, stale/no-memory %.2f",
			took["resumed"]/took["no memory"], took["stale"]/took["no memory"])
		if took["resumed"] > 1.05 {
			t.Errorf("resumed reconnect took %.2f round trips, want at most 1.05", took["resumed"])
		}
		if took["remembered"] > took["no memory"] {
			t.Errorf("remembered reconnect took %.2f round trips, introduced %.2f", took["remembered"], took["no memory"])
		}
		if took["stale"] > took["no memory"]*1.02 {
			t.Errorf("stale reconnect took %.2f round trips, no-memory %.2f", took["stale"], took["no memory"])
		}
	})
}

// BenchmarkReconnect connects two nodes on loopback through an
// in-process bootstrap, closes the connection and reconnects, in turn:
// introduced with nothing remembered, on the remembered path, and with a
// stale memory (the remembered address is a closed socket: the peer
// moved). It reports each one's median time to connect and the ratios
// remembered/introduced and stale/no-memory (the introduced one), and how
// often the remembered path won where it could.
func BenchmarkReconnect(b *testing.B) {
	boot := startBootstrapCfg(b, retentionBootstrap)
	rec := &recorder{}
	a := startNodeCfg(b, Config{Bootstraps: []Bootstrap{boot}, Recorder: rec})
	peer := startNodeCfg(b, Config{Bootstraps: []Bootstrap{boot}})
	dead := deadAddr(b)
	connectClose(b, a, peer)
	kinds := []struct {
		name string
		prep func()
	}{
		{"introduced", func() { a.memory.forget(peer.ID()) }},
		{"remembered", func() {}},
		{"stale", func() { a.memory.remember(peer.ID(), dead) }},
	}
	took := make([][]time.Duration, len(kinds))
	won := 0
	b.ResetTimer()
	for range b.N {
		for i, k := range kinds {
			k.prep()
			c := connectClose(b, a, peer)
			took[i] = append(took[i], c.TimeToConnect())
			if ev, ok := recallOutcome(rec, c.Attempt()); ok && ev.Outcome == event.OutcomeOK {
				won++
			}
		}
	}
	med := make([]float64, len(kinds))
	for i, k := range kinds {
		slices.Sort(took[i])
		med[i] = took[i][len(took[i])/2].Seconds() * 1e3
		b.ReportMetric(med[i], k.name+"-ms")
	}
	b.ReportMetric(med[1]/med[0], "remembered/introduced")
	b.ReportMetric(med[2]/med[0], "stale/no-memory")
	b.ReportMetric(float64(won)/float64(b.N), "remembered-won")
}

// TestRememberedRacesLeaveNothing runs reconnects that race the
// remembered path against the introduction, in the NAT model: ones the
// remembered path wins and ones it loses (the peer's NAT forgot its
// mapping), each connection used once and closed. Once both sides settle, no
// goroutine, socket, check session or waiter is left over, no connection
// stays open at either side, and no state change was refused.
func TestRememberedRacesLeaveNothing(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		mn := newModelNet(t)
		delay := 5 * time.Millisecond
		recA, recB := &recorder{}, &recorder{}
		a, b := mn.peerRec(1, eimAPDF, delay, recA), mn.peerRec(2, eimAPDF, delay, recB)
		for _, n := range []*Node{a, b} {
			n.Classify(context.Background())
		}
		settle := func() {
			time.Sleep(65 * time.Second) // responders, check sessions, the bootstrap's sessions
			synctest.Wait()
			runtime.GC()
		}
		round := func() {
			for i := range 10 {
				if i%2 == 1 {
					mn.nats[2].Rebind() // lost: b's NAT lets only the bootstrap in again
					time.Sleep(15 * time.Second)
				}
				// Used, not closed at once: a responder that an introduced
				// connection closed at once may wait for its timeout (in
				// the model, with remembering off too), and its attempt
				// would overlap the next one.
				connectClose(t, a, b)
			}
		}
		round() // grows maps and pools to their high-water mark
		settle()
		g0, s0 := runtime.NumGoroutine(), mn.m.OpenSockets()
		round()
		settle()
		g1, s1 := runtime.NumGoroutine(), mn.m.OpenSockets()
		t.Logf("goroutines %d -> %d, sockets %d -> %d", g0, g1, s0, s1)
		if g1 > g0 {
			t.Errorf("goroutines %d -> %d after 10 raced reconnects", g0, g1)
		}
		if s1 != s0 {
			t.Errorf("sockets %d -> %d", s0, s1)
		}
		won := 0
		for _, ev := range recA.Kind(event.KindRecovery) {
			if ev.Detail == "remembered_path" && ev.Outcome == event.OutcomeOK {
				won++
			}
		}
		if won < 8 {
			t.Errorf("the remembered path won %d of 20 reconnects, want the 9 or 10 where the mapping held", won)
		}
		noLeftovers(t, false, a, b)
		for _, n := range []*Node{a, b} {
			if len(n.Conns()) != 0 {
				t.Errorf("%d connections left open", len(n.Conns()))
			}
		}
		noRefusedMoves(t, recA)
		noRefusedMoves(t, recB)
		for _, n := range []*Node{a, b} {
			peer := a.ID()
			if n == a {
				peer = b.ID()
			}
			if st, _ := n.machine(peer).State(); st.Connected() || attempting(st) {
				t.Errorf("%s's machine is %s with no connection", n.ID().Short(), st)
			}
		}
	})
}
