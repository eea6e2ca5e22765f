package traversal

import (
	"log/slog"
	"net/netip"
	"testing"
	"time"

	"github.com/antnode/antnode/event"
	"github.com/antnode/antnode/internal/testkit"
	"github.com/antnode/antnode/nattype"
)

// TestContradictionRemeasures checks that a peer's check arriving from an
// endpoint the node never sent to makes it measure its NAT again when
// its filtering class says such a packet is dropped, at most once per
// contradictionEvery, and not otherwise.
func TestContradictionRemeasures(t *testing.T) {
	from := netip.MustParseAddrPort("198.51.100.7:40000")
	lan := netip.MustParseAddrPort("192.168.1.20:40000")
	eim := func(f nattype.Filtering) nattype.Type { return nattype.Type{Mapping: nattype.MappingEIM, Filtering: f} }
	tests := []struct {
		name             string
		from             netip.AddrPort
		nat              nattype.Type
		addressContacted bool
		last             time.Duration // since the previous contradiction (0: none)
		want             bool
	}{
		{"port-restricted, a host on the LAN", lan, eim(nattype.FilteringAPDF), false, 0, false},
		{"port-restricted, uncontacted endpoint", from, eim(nattype.FilteringAPDF), true, 0, true},
		{"restricted, uncontacted address", from, eim(nattype.FilteringADF), false, 0, true},
		{"restricted, contacted address", from, eim(nattype.FilteringADF), true, 0, false},
		{"full cone", from, eim(nattype.FilteringEIF), false, 0, false},
		{"unknown filtering", from, eim(nattype.FilteringUnknown), false, 0, false},
		{"port-restricted, asked 10 s ago", from, eim(nattype.FilteringAPDF), false, 10 * time.Second, false},
		{"port-restricted, asked long ago", from, eim(nattype.FilteringAPDF), false, 2 * contradictionEvery, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			n := &Node{nat: tc.nat, log: slog.New(slog.DiscardHandler), reclassify: make(chan struct{}, 1)}
			if tc.last > 0 {
				n.contradictedAt = time.Now().Add(-tc.last)
			}
			if got := n.contradicted(tc.from, tc.addressContacted); got != tc.want {
				t.Fatalf("contradicted = %v, want %v", got, tc.want)
			}
			if poked := len(n.reclassify) == 1; poked != tc.want {
				t.Fatalf("measurement asked %v, want %v", poked, tc.want)
			}
			if tc.want && n.contradicted(tc.from, tc.addressContacted) {
				t.Fatal("a second contradiction at once asked again")
			}
		})
	}
}

// TestContradictionMeasuresAgain checks the whole path on a running node:
// a contradiction makes the classify loop measure again.
func TestContradictionMeasuresAgain(t *testing.T) {
	rec := &recorder{}
	n := startNode(t, rec, startBootstrap(t))
	classifications := func() int {
		return len(rec.Events(func(e event.Event) bool {
			return e.Kind == event.KindPhaseEnd && e.Phase == event.PhaseClassify
		}))
	}
	testkit.WaitFor(t, 5*time.Second, "the first classification", func() bool { return classifications() >= 1 })
	before := classifications()
	n.natMu.Lock()
	n.nat = nattype.Type{Mapping: nattype.MappingEIM, Filtering: nattype.FilteringAPDF}
	n.natMu.Unlock()
	if !n.contradicted(netip.MustParseAddrPort("198.51.100.7:40000"), false) {
		t.Fatal("an APDF node seeing an unsolicited check did not ask for a measurement")
	}
	testkit.WaitFor(t, 5*time.Second, "a new classification", func() bool { return classifications() > before })
	if got := n.NAT(); got.Filtering == nattype.FilteringAPDF {
		t.Fatalf("after the new measurement on loopback the class is still %v", got)
	}
}
