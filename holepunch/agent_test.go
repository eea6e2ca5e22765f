package holepunch

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/pion/stun/v3"

	"github.com/antnode/antnode/bootstrap/wire"
	"github.com/antnode/antnode/endpoint"
)

func agentOn(t *testing.T) (*Agent, *endpoint.Endpoint) {
	t.Helper()
	ep, err := endpoint.Listen("udp4", "127.0.0.1:0", endpoint.Config{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ep.Close() })
	a, err := NewAgent(AgentConfig{Endpoint: ep})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { a.Close() })
	return a, ep
}

func hostOf(ep *endpoint.Endpoint) []wire.Candidate {
	return []wire.Candidate{{Kind: wire.KindHost, Priority: Priority(wire.KindHost, 1), Addr: ep.LocalAddr()}}
}

func TestPunchValidatesBothWays(t *testing.T) {
	a, epA := agentOn(t)
	b, epB := agentOn(t)
	ca, cb := NewCreds(), NewCreds()
	sa, err := a.Open(ca, cb, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer sa.Close()
	sb, err := b.Open(cb, ca, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer sb.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	type out struct {
		res Result
		err error
	}
	done := make(chan out, 1)
	go func() {
		r, err := sb.Punch(ctx, hostOf(epA), PunchConfig{})
		done <- out{r, err}
	}()
	ra, err := sa.Punch(ctx, hostOf(epB), PunchConfig{})
	if err != nil {
		t.Fatal(err)
	}
	if ra.Best.Remote != epB.LocalAddr() || ra.Best.RTT <= 0 || ra.Best.Mapped != epA.LocalAddr() {
		t.Fatalf("A's best pair %+v", ra.Best)
	}
	rb := <-done
	if rb.err != nil || rb.res.Best.Remote != epA.LocalAddr() {
		t.Fatalf("B: %+v, %v", rb.res.Best, rb.err)
	}
	if sa.PeerChecksAnswered() == 0 || sb.PeerChecksAnswered() == 0 {
		t.Fatal("a side answered none of the other's checks")
	}
}

func TestWrongCredentialsNeverValidate(t *testing.T) {
	a, _ := agentOn(t)
	b, epB := agentOn(t)
	ca, cb := NewCreds(), NewCreds()
	sa, _ := a.Open(ca, wire.Creds{Ufrag: cb.Ufrag, Pwd: "wrong password"}, nil)
	defer sa.Close()
	sb, _ := b.Open(cb, ca, nil)
	defer sb.Close()
	_, err := sa.Punch(context.Background(), hostOf(epB), PunchConfig{Plan: PlanConfig{Budget: 200 * time.Millisecond, MaxRTO: 50 * time.Millisecond}})
	if !errors.Is(err, ErrNoPath) {
		t.Fatalf("got %v, want ErrNoPath", err)
	}
	if sb.PeerChecksAnswered() != 0 {
		t.Fatal("checks with a wrong password were answered")
	}
	if b.stats.badIntegrity.Load() == 0 {
		t.Fatal("bad integrity not counted")
	}
}

func TestTriggeredCheckLearnsPeerReflexive(t *testing.T) {
	// B announces nothing usable; A's checks reach B, and B's triggered
	// check back validates A's real address as peer-reflexive.
	a, epA := agentOn(t)
	b, _ := agentOn(t)
	ca, cb := NewCreds(), NewCreds()
	sa, _ := a.Open(ca, cb, nil)
	defer sa.Close()
	sb, _ := b.Open(cb, ca, nil)
	defer sb.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	bogus := []wire.Candidate{{Kind: wire.KindHost, Priority: 1, Addr: netipMust("127.0.0.1:9")}}
	done := make(chan Result, 1)
	go func() {
		r, _ := sb.Punch(ctx, bogus, PunchConfig{Plan: PlanConfig{Budget: 2 * time.Second}})
		done <- r
	}()
	time.Sleep(20 * time.Millisecond)
	if _, err := sa.Punch(ctx, hostOf(b.ep), PunchConfig{}); err != nil {
		t.Fatal(err)
	}
	rb := <-done
	if rb.Best.Remote != epA.LocalAddr() || rb.Best.Kind != wire.KindPeerReflexive {
		t.Fatalf("B's best %+v, want A's address as prflx", rb.Best)
	}
}

func netipMust(s string) netip.AddrPort { return netip.MustParseAddrPort(s) }

// FuzzHandle feeds arbitrary datagrams that decode as STUN to the check
// handler: it must never panic, and never answer a request that does not
// carry the session's credentials.
func FuzzHandle(f *testing.F) {
	local, remote := wire.Creds{Ufrag: "loc", Pwd: "localpassword"}, wire.Creds{Ufrag: "rem", Pwd: "remotepassword"}
	good := stun.MustBuild(stun.TransactionID, stun.BindingRequest, stun.NewUsername("loc:rem"),
		stun.NewShortTermIntegrity(local.Pwd), stun.Fingerprint)
	f.Add(good.Raw)
	f.Add(stun.MustBuild(stun.TransactionID, stun.BindingRequest, stun.NewUsername("loc")).Raw)
	f.Add(stun.MustBuild(stun.TransactionID, stun.BindingRequest).Raw)
	f.Fuzz(func(t *testing.T, b []byte) {
		m := &stun.Message{Raw: append([]byte(nil), b...)}
		if err := m.Decode(); err != nil {
			return
		}
		ep, err := endpoint.Listen("udp4", "127.0.0.1:0", endpoint.Config{})
		if err != nil {
			t.Fatal(err)
		}
		defer ep.Close()
		a, _ := NewAgent(AgentConfig{Endpoint: ep})
		s, _ := a.Open(local, remote, nil)
		// The source is the endpoint itself: answers go nowhere else.
		a.handle(m, ep.LocalAddr())
		if s.PeerChecksAnswered() > 0 {
			if err := stun.NewShortTermIntegrity(local.Pwd).Check(m); err != nil {
				t.Fatal("answered a check without valid integrity")
			}
		}
	})
}

// TestPrime: priming sends one TTL-limited Binding indication to each of
// the peer's reflexive candidates (the ones behind its NAT, where an early
// packet would leave a clashing conntrack entry if it got that far), none
// to host candidates, and nothing with a TTL of 0.
func TestPrime(t *testing.T) {
	a, _ := agentOn(t)
	listen := func() *net.UDPConn {
		c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return c
	}
	host, srflx, prflx := listen(), listen(), listen()
	cand := func(k wire.CandidateKind, c *net.UDPConn) wire.Candidate {
		return wire.Candidate{Kind: k, Priority: Priority(k, 1), Addr: c.LocalAddr().(*net.UDPAddr).AddrPort()}
	}
	remote := []wire.Candidate{cand(wire.KindHost, host), cand(wire.KindServerReflexive, srflx), cand(wire.KindPeerReflexive, prflx)}
	s, err := a.Open(NewCreds(), NewCreds(), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if n := s.Prime(remote, 0); n != 0 {
		t.Fatalf("TTL 0 primed %d", n)
	}
	if n := s.Prime(remote, 2); n != 2 {
		t.Fatalf("primed %d candidates, want the 2 reflexive ones", n)
	}
	for _, tc := range []struct {
		name string
		c    *net.UDPConn
		want bool
	}{{"host", host, false}, {"server reflexive", srflx, true}, {"peer reflexive", prflx, true}} {
		t.Run(tc.name, func(t *testing.T) {
			tc.c.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
			buf := make([]byte, 1500)
			n, err := tc.c.Read(buf)
			if !tc.want {
				if err == nil {
					t.Fatalf("a host candidate was primed (%d bytes)", n)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			m := &stun.Message{Raw: buf[:n]}
			if err := m.Decode(); err != nil || m.Type != stun.NewType(stun.MethodBinding, stun.ClassIndication) {
				t.Fatalf("primed with %v (%v), want a Binding indication", m.Type, err)
			}
			if err := stun.Fingerprint.Check(m); err != nil {
				t.Fatalf("no valid fingerprint: %v", err)
			}
		})
	}
}

func TestPassiveSendsOnlyTriggeredChecks(t *testing.T) {
	a, epA := agentOn(t)
	b, epB := agentOn(t)
	ca, cb := NewCreds(), NewCreds()
	sa, _ := a.Open(ca, cb, nil)
	defer sa.Close()
	sb, _ := b.Open(cb, ca, nil)
	defer sb.Close()
	plan := PlanConfig{Budget: 300 * time.Millisecond, MaxRTO: 50 * time.Millisecond}

	t.Run("alone it sends nothing", func(t *testing.T) {
		res, err := sa.Punch(context.Background(), hostOf(epB), PunchConfig{Round: 1, Plan: plan, Passive: true})
		if !errors.Is(err, ErrNoPath) || res.Sent != 0 {
			t.Fatalf("passive round alone: sent %d, err %v; want 0 sent and ErrNoPath", res.Sent, err)
		}
		if sb.PeerChecksAnswered() != 0 {
			t.Fatal("the peer answered checks a passive side never should have sent")
		}
	})
	t.Run("checked, it checks back", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		done := make(chan Result, 1)
		go func() {
			r, _ := sa.Punch(ctx, hostOf(epB), PunchConfig{Round: 2, Plan: PlanConfig{Budget: 2 * time.Second}, Passive: true})
			done <- r
		}()
		if _, err := sb.Punch(ctx, hostOf(epA), PunchConfig{Round: 2}); err != nil {
			t.Fatalf("the active side: %v", err)
		}
		r := <-done
		if r.Best.Remote != epB.LocalAddr() || r.Sent == 0 {
			t.Fatalf("passive side: best %+v after %d checks; want a triggered check to %v validated", r.Best, r.Sent, epB.LocalAddr())
		}
	})
}
