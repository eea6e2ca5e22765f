package traversal

import (
	"context"
	"fmt"
	"maps"
	"net/netip"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/antnode/antnode/bootstrap"
	"github.com/antnode/antnode/bootstrap/wire"
	"github.com/antnode/antnode/holepunch"
	"github.com/antnode/antnode/internal/testkit"
	"github.com/antnode/antnode/nattype"
)

// TestCheckTargets: every candidate a bootstrap observed is checked; of
// those merely announced (or of a bootstrap that does not say), only the
// MaxAnnouncedTargets of highest priority.
func TestCheckTargets(t *testing.T) {
	cand := func(i int, o wire.Origin) wire.Candidate {
		return wire.Candidate{Kind: wire.KindHost, Priority: uint32(100 + i),
			Addr: netip.AddrPortFrom(netip.AddrFrom4([4]byte{203, 0, 113, byte(i)}), 4000), Origin: o}
	}
	many := func(n int, o wire.Origin) []wire.Candidate {
		var out []wire.Candidate
		for i := range n {
			out = append(out, cand(i, o))
		}
		return out
	}
	tests := []struct {
		name      string
		in        []wire.Candidate
		keep      int
		lowestOut uint32 // the highest priority cut (0: none cut)
	}{
		{"none", nil, 0, 0},
		{"few announced", many(3, wire.OriginAnnounced), 3, 0},
		{"the cap exactly", many(MaxAnnouncedTargets, wire.OriginAnnounced), MaxAnnouncedTargets, 0},
		{"too many announced", many(30, wire.OriginAnnounced), MaxAnnouncedTargets, 121},
		{"too many of an older bootstrap", many(30, wire.OriginUnknown), MaxAnnouncedTargets, 121},
		{"observed never cut", append(many(30, wire.OriginObserved), cand(200, wire.OriginAnnounced)), 31, 0},
		{"observed IP never cut", append(many(30, wire.OriginObservedIP), many(10, wire.OriginAnnounced)...), 30 + MaxAnnouncedTargets, 101},
		{"a relayed address never cut", append(many(30, wire.OriginAnnounced), wire.Candidate{Kind: wire.KindRelay, Priority: 1,
			Addr: netip.MustParseAddrPort("198.51.100.9:5000"), Origin: wire.OriginAnnounced}), MaxAnnouncedTargets + 1, 121},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := checkTargets(tc.in)
			if len(got) != tc.keep {
				t.Fatalf("kept %d of %d, want %d", len(got), len(tc.in), tc.keep)
			}
			kept := map[wire.Candidate]bool{}
			for _, c := range got {
				kept[c] = true
			}
			var announced int
			for _, c := range tc.in {
				if !c.Origin.Observed() {
					announced++
				}
				if c.Origin.Observed() && !kept[c] {
					t.Fatalf("an observed candidate was cut: %+v", c)
				}
				if !kept[c] && c.Priority > tc.lowestOut {
					t.Fatalf("cut %+v over a lower one", c)
				}
			}
		})
	}
}

// victimIP is a third party's address: nothing of the test listens there.
var victimIP = netip.MustParseAddr("203.0.113.200")

// TestMaliciousAnnouncementIsNotReflected: a peer registers honestly and
// then, introduced to an honest node behind a port-restricted NAT, claims
// a symmetric NAT and announces a third party's address as its
// server-reflexive candidate (top priority) and 30 more third-party
// addresses as host candidates. The honest node must not run its birthday
// search against the third party (it aims only at what the bootstrap
// observed: the liar's own address), and each third-party address gets at
// most the check schedule's few packets, at most MaxAnnouncedTargets
// addresses of them.
func TestMaliciousAnnouncementIsNotReflected(t *testing.T) {
	tests := []struct {
		name   string
		claim  nattype.Type
		search bool // the honest side runs the birthday search (at the liar's own IP)
	}{
		{"claims symmetric: the search", apdm, true},
		{"claims full cone: checks", eimEIF, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				toVictim, toLiar := reflectedBy(t, tc.claim)
				most := 0
				for _, n := range toVictim {
					most = max(most, n)
				}
				t.Logf("third-party addresses reached: %d, at most %d packets each; the liar's own IP: %d packets", len(toVictim), most, toLiar)
				if len(toVictim) > MaxAnnouncedTargets {
					t.Errorf("%d third-party addresses were sent to, want at most %d", len(toVictim), MaxAnnouncedTargets)
				}
				if most > maxChecksPerAnnounced {
					t.Errorf("a third-party address got %d packets, want at most %d", most, maxChecksPerAnnounced)
				}
				if tc.search && toLiar < 100 {
					t.Errorf("the search sent %d packets to the liar's observed IP: did it run at all?", toLiar)
				}
				if !tc.search && len(toVictim) == 0 {
					t.Errorf("no checks to announced addresses at all: is the case testing anything?")
				}
			})
		})
	}
}

// reflectedBy has a liar, claiming claim, introduce itself to an honest
// node behind a port-restricted NAT, and counts the packets that reach
// the third-party addresses it announced, and its own IP.
func reflectedBy(t *testing.T, claim nattype.Type) (toVictim map[netip.AddrPort]int, toLiar int) {
	mn := newModelNet(t)
	var mu sync.Mutex
	toVictim = map[netip.AddrPort]int{}
	liarIP := netip.MustParseAddr("198.51.100.150")
	mn.m.OnDrop = func(_, to netip.AddrPort, _ string) {
		mu.Lock()
		defer mu.Unlock()
		switch a := to.Addr(); {
		case a == victimIP || (a.Is4() && a.As4()[2] == 113 && a.As4()[3] >= 100):
			toVictim[to]++
		case a == liarIP:
			toLiar++
		}
	}
	honest := mn.peer(1, eimAPDF, 20*time.Millisecond)
	if _, err := honest.Classify(context.Background()); err != nil {
		t.Fatal(err)
	}
	lie := []wire.Candidate{{Kind: wire.KindServerReflexive, Priority: 0xffffffff, Addr: netip.AddrPortFrom(victimIP, 443)}}
	for i := range 30 {
		lie = append(lie, wire.Candidate{Kind: wire.KindHost, Priority: holepunch.Priority(wire.KindHost, 0xffff),
			Addr: netip.AddrPortFrom(netip.AddrFrom4([4]byte{203, 0, 113, byte(100 + i)}), 4433)})
	}
	liar := liarClient(t, mn, netip.AddrPortFrom(liarIP, 4000))
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	sess, err := liar.Connect(ctx, honest.ID(), bootstrap.Intro{NAT: claim, Candidates: lie, Creds: holepunch.NewCreds()})
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(30 * time.Second) // virtual: the honest side's whole attempt, and its end
	sess.Close()
	synctest.Wait()
	mu.Lock()
	defer mu.Unlock()
	return maps.Clone(toVictim), toLiar
}

// maxChecksPerAnnounced is what one announced address receives at most
// from one attempt: the checks of MaxRounds rounds of the check schedule
// (see README).
const maxChecksPerAnnounced = 24

// liarClient registers a bootstrap client (the real protocol, a lying
// announcement) at addr on the model's public network.
func liarClient(t *testing.T, mn *modelNet, addr netip.AddrPort) *bootstrap.Client {
	c, err := mn.m.Listen(addr, nil, 20*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	ep := testkit.EndpointOn(t, c)
	cl, err := bootstrap.NewClient(bootstrap.ClientConfig{Identity: testkit.Identity(t), Endpoint: ep,
		Addr: mn.boot.Addr, ID: mn.boot.ID})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cl.Close() })
	if err := cl.WaitReady(context.Background()); err != nil {
		t.Fatal(fmt.Errorf("liar: %w", err))
	}
	return cl
}
