package migration

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/quic-go/quic-go"

	"github.com/antnode/antnode/bootstrap/wire"
	"github.com/antnode/antnode/event"
	"github.com/antnode/antnode/identity"
	"github.com/antnode/antnode/internal/testkit"
)

// fakeNode is the node's side of the moves, scripted by the test: the
// check rounds validate what it says, the reroutes succeed or fail as it
// says, and it keeps every call.
type fakeNode struct {
	mu        sync.Mutex
	validate  func(extra []netip.AddrPort) ([]netip.AddrPort, error)
	rerouteEr error
	// otherTo is where OtherFamily moves a connection; invalid: it fails.
	otherTo netip.AddrPort
	others  int // OtherFamily calls
	rounds  []wire.Purpose
	// redirectEr fails Redirect; redirects keeps its calls.
	redirectEr error
	redirects  []string
	unroutes   int
	leaves     int
	steps      []string
}

func (f *fakeNode) CheckRound(_ context.Context, _ identity.PeerID, purpose wire.Purpose, extra []netip.AddrPort) ([]netip.AddrPort, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.rounds = append(f.rounds, purpose)
	if f.validate == nil {
		return extra, nil
	}
	return f.validate(extra)
}

// errNoOther is the fake's OtherFamily failure.
var errNoOther = errors.New("no other family")

func (f *fakeNode) OtherFamily(context.Context, *quic.Conn, identity.PeerID, netip.AddrPort) (netip.AddrPort, func(), error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.others++
	if !f.otherTo.IsValid() {
		return netip.AddrPort{}, nil, errNoOther
	}
	return f.otherTo, func() {
		f.mu.Lock()
		f.unroutes++
		f.mu.Unlock()
	}, nil
}

func (f *fakeNode) Reroute(context.Context, *quic.Conn, identity.PeerID, netip.AddrPort) (func(), error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.rerouteEr != nil {
		return nil, f.rerouteEr
	}
	return func() {
		f.mu.Lock()
		f.unroutes++
		f.mu.Unlock()
	}, nil
}

func (f *fakeNode) Redirect(_ context.Context, _ *quic.Conn, _, to netip.AddrPort, await bool) (func(), error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.redirects = append(f.redirects, fmt.Sprintf("%s await=%v", to, await))
	if f.redirectEr != nil {
		return nil, f.redirectEr
	}
	return func() {
		f.mu.Lock()
		f.unroutes++
		f.mu.Unlock()
	}, nil
}

func (f *fakeNode) LeaveRelay(*quic.Conn) {
	f.mu.Lock()
	f.leaves++
	f.mu.Unlock()
}

var stepNames = map[Step]string{StepMigrating: "migrating", StepUpgrading: "upgrading", StepDirect: "direct", StepRelay: "relay"}

func (f *fakeNode) Moved(_ identity.PeerID, s Step, reason event.Reason) {
	f.mu.Lock()
	f.steps = append(f.steps, stepNames[s]+"/"+reason.String())
	f.mu.Unlock()
}

func (f *fakeNode) calls() (steps []string, rounds []wire.Purpose, unroutes, leaves int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.steps), slices.Clone(f.rounds), f.unroutes, f.leaves
}

// side is one end of a connection with its manager.
type side struct {
	node *fakeNode
	rec  *testkit.Recorder
	m    *Manager
	c    *Conn
}

// newSide starts a manager (no network watch, no pacing) whose upgrades
// add their path on tr, and tracks qc.
func newSide(t *testing.T, tr *quic.Transport, qc *quic.Conn, path event.Path, tc Track) *side {
	t.Helper()
	s := &side{node: &fakeNode{}, rec: &testkit.Recorder{}}
	m, err := New(Config{Node: s.node, Transport: tr, Recorder: s.rec, NetworkPoll: -1, Check: -1, UpgradeBase: -1})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	s.m = m
	tc.Path = path
	s.c = m.Track(qc, tc)
	return s
}

// migrations returns the Detail/Outcome/Reason of the side's migration
// and fallback events, in order.
func (s *side) migrations() []string {
	var out []string
	for _, ev := range s.rec.Events(func(ev event.Event) bool {
		return ev.Kind == event.KindMigration || ev.Kind == event.KindFallback
	}) {
		out = append(out, fmt.Sprintf("%s %s %s %s", ev.Kind, ev.Detail, ev.Outcome, ev.Reason))
	}
	return out
}

func kinds(moves []Move) []string {
	var out []string
	for _, mv := range moves {
		out = append(out, fmt.Sprintf("%s %v %s->%s", mv.Kind, mv.OK, mv.From, mv.To))
	}
	return out
}

// TestFallbackThenUpgrade: a dead direct path moves to the relay by a
// reroute, the peer hears of it, and an upgrade whose check round
// validates the connection's address undoes the reroute and gives the
// allocation back; each step is reported in order on both sides.
func TestFallbackThenUpgrade(t *testing.T) {
	p := testkit.NewQUICPair(t, nil)
	d := newSide(t, p.DialerTransport, p.Dialer, event.PathDirect, Track{Peer: p.ListenerID.ID()})
	l := newSide(t, p.ListenerTransport, p.Listener, event.PathDirect, Track{Peer: p.DialerID.ID()})

	if err := d.c.fallback(2 * time.Second); err != nil {
		t.Fatal(err)
	}
	if d.c.Path() != event.PathRelay {
		t.Fatalf("path %s after the fallback", d.c.Path())
	}
	testkit.WaitFor(t, 5*time.Second, "the peer learns of the fallback", func() bool { return l.c.Path() == event.PathRelay })
	if err := d.c.upgrade(); err != nil {
		t.Fatal(err)
	}
	testkit.WaitFor(t, 5*time.Second, "the peer learns of the upgrade", func() bool { return l.c.Path() == event.PathDirect })

	steps, rounds, unroutes, leaves := d.node.calls()
	wantSteps := []string{"migrating/path_blackholed", "relay/path_blackholed", "upgrading/none", "direct/direct_available"}
	if !slices.Equal(steps, wantSteps) {
		t.Errorf("dialler's steps %v, want %v", steps, wantSteps)
	}
	if !slices.Equal(rounds, []wire.Purpose{wire.PurposeUpgrade}) || unroutes != 1 || leaves != 1 {
		t.Errorf("rounds %v, unroutes %d, leaves %d; want one upgrade round, one unroute, one leave", rounds, unroutes, leaves)
	}
	wantEv := make([]string, 3)
	wantEv[0] = fmt.Sprintf("%s direct->relay %s %s", event.KindFallback, event.OutcomeNone, event.ReasonPathBlackholed)
	wantEv[1] = fmt.Sprintf("%s fallback %s %s", event.KindMigration, event.OutcomeOK, event.ReasonPathBlackholed)
	wantEv[2] = fmt.Sprintf("%s upgrade %s %s", event.KindMigration, event.OutcomeOK, event.ReasonDirectAvailable)
	if got := d.migrations(); !slices.Equal(got, wantEv) {
		t.Errorf("dialler's events\n%q\nwant\n%q", got, wantEv)
	}
	if got, want := kinds(d.c.Moves()), []string{"fallback true direct->relay", "upgrade true relay->direct"}; !slices.Equal(got, want) {
		t.Errorf("dialler's moves %v, want %v", got, want)
	}
	lsteps, _, _, _ := l.node.calls()
	if want := []string{"relay/path_blackholed", "direct/direct_available"}; !slices.Equal(lsteps, want) {
		t.Errorf("peer's steps %v, want %v", lsteps, want)
	}
	if got, want := kinds(l.c.Moves()), []string{"peer-moved true direct->relay", "peer-moved true relay->direct"}; !slices.Equal(got, want) {
		t.Errorf("peer's moves %v, want %v", got, want)
	}
}

// reasonErr is an error that knows its reason, as the node's do.
type reasonErr struct{ r event.Reason }

func (e reasonErr) Error() string        { return "refused: " + e.r.String() }
func (e reasonErr) Reason() event.Reason { return e.r }

// TestUpgradeThatFails: an upgrade that finds no direct path to the
// peer, or whose move to another address of the peer's gets nothing
// back, stays on the relay, says why, and tells the peer nothing.
func TestUpgradeThatFails(t *testing.T) {
	other := netip.MustParseAddrPort("198.51.100.7:4433")
	tests := []struct {
		name       string
		validate   func([]netip.AddrPort) ([]netip.AddrPort, error)
		redirectEr error
		reason     event.Reason
		is         error
	}{
		{"nothing validated", func([]netip.AddrPort) ([]netip.AddrPort, error) { return nil, nil }, nil,
			event.ReasonPunchTimeout, ErrNoDirectYet},
		{"another address validated, nothing back from it", func([]netip.AddrPort) ([]netip.AddrPort, error) { return []netip.AddrPort{other}, nil },
			reasonErr{event.ReasonTimeout}, event.ReasonTimeout, nil},
		{"the round failed", func([]netip.AddrPort) ([]netip.AddrPort, error) {
			return nil, fmt.Errorf("introduction: %w", reasonErr{event.ReasonRefused})
		}, nil, event.ReasonRefused, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p := testkit.NewQUICPair(t, nil)
			d := newSide(t, p.DialerTransport, p.Dialer, event.PathRelay, Track{Peer: p.ListenerID.ID()})
			d.node.validate = tc.validate
			d.node.redirectEr = tc.redirectEr
			err := d.c.upgrade()
			if err == nil || (tc.is != nil && !errors.Is(err, tc.is)) {
				t.Fatalf("upgrade: %v, want %v", err, tc.is)
			}
			steps, _, unroutes, leaves := d.node.calls()
			want := []string{"upgrading/none", "relay/" + tc.reason.String()}
			if !slices.Equal(steps, want) || unroutes != 0 || leaves != 0 || d.c.Path() != event.PathRelay {
				t.Fatalf("steps %v (want %v), unroutes %d, leaves %d, path %s", steps, want, unroutes, leaves, d.c.Path())
			}
			if got := kinds(d.c.Moves()); !slices.Equal(got, []string{"upgrade false relay->relay"}) {
				t.Fatalf("moves %v", got)
			}
		})
	}
}

// TestUpgradeSwitchesTheQUICPath: a connection that runs on a QUIC path
// over the relay's socket goes direct by a new path on the main socket
// (AddPath, Probe, Switch): its packets leave from the main socket then.
func TestUpgradeSwitchesTheQUICPath(t *testing.T) {
	p := testkit.NewQUICPair(t, nil)
	main := testkit.NewQUICPair(t, nil).DialerTransport // another socket: the "main" one
	d := newSide(t, main, p.Dialer, event.PathRelay, Track{Peer: p.ListenerID.ID()})
	l := newSide(t, p.ListenerTransport, p.Listener, event.PathRelay, Track{Peer: p.DialerID.ID()})
	if err := d.c.upgrade(); err != nil {
		t.Fatal(err)
	}
	mainAddr := main.Conn.LocalAddr().(*net.UDPAddr).AddrPort()
	testkit.WaitFor(t, 5*time.Second, "the peer sees the new path", func() bool {
		return p.Listener.RemoteAddr().(*net.UDPAddr).AddrPort() == mainAddr && l.c.Path() == event.PathDirect
	})
	if _, _, unroutes, leaves := d.node.calls(); unroutes != 0 || leaves != 1 {
		t.Fatalf("unroutes %d, leaves %d; want 0 and 1", unroutes, leaves)
	}
}

// TestUpgradeToAnotherAddress: an upgrade whose round validated another
// address of the peer's than the connection's remote one (its address
// changed while the connection ran on the relay) moves there, behind
// QUIC's back: a rerouted connection after a packet came back that way
// (then the relay's cleanup runs, and the proven route stays the
// connection's to undo), a connection on a QUIC path over the allocation
// by its new path's probe.
func TestUpgradeToAnotherAddress(t *testing.T) {
	other := netip.MustParseAddrPort("198.51.100.7:4433")
	tests := []struct {
		name      string
		rerouted  bool
		redirects []string
		unroutes  int
	}{
		{"rerouted through the relay", true, []string{other.String() + " await=true"}, 1},
		{"a QUIC path over the allocation", false, []string{other.String() + " await=false"}, 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p := testkit.NewQUICPair(t, nil)
			tr, path := p.DialerTransport, event.PathDirect
			if !tc.rerouted {
				tr, path = testkit.NewQUICPair(t, nil).DialerTransport, event.PathRelay // another socket: the "main" one
			}
			d := newSide(t, tr, p.Dialer, path, Track{Peer: p.ListenerID.ID()})
			if tc.rerouted {
				if err := d.c.fallback(time.Second); err != nil {
					t.Fatal(err)
				}
			}
			d.node.validate = func([]netip.AddrPort) ([]netip.AddrPort, error) { return []netip.AddrPort{other}, nil }
			if err := d.c.upgrade(); err != nil {
				t.Fatal(err)
			}
			d.node.mu.Lock()
			redirects := slices.Clone(d.node.redirects)
			d.node.mu.Unlock()
			_, _, unroutes, leaves := d.node.calls()
			if !slices.Equal(redirects, tc.redirects) || unroutes != tc.unroutes || leaves != 1 || d.c.Path() != event.PathDirect {
				t.Fatalf("redirects %q (want %q), unroutes %d (want %d), leaves %d, path %s",
					redirects, tc.redirects, unroutes, tc.unroutes, leaves, d.c.Path())
			}
			d.c.unroute() // a later move undoes the redirect
			if _, _, after, _ := d.node.calls(); after != unroutes+1 {
				t.Fatalf("undoing the connection's route: %d unroutes, want %d", after, unroutes+1)
			}
		})
	}
}

// TestUpgradeTarget: where an upgrade goes, of the addresses its round
// validated.
func TestUpgradeTarget(t *testing.T) {
	v4 := netip.MustParseAddrPort("198.51.100.7:4433")
	v4b := netip.MustParseAddrPort("198.51.100.9:4433")
	v6 := netip.MustParseAddrPort("[2001:db8::7]:4433")
	mapped := netip.MustParseAddrPort("[::ffff:198.51.100.9]:4433")
	tests := []struct {
		name      string
		validated []netip.AddrPort
		remote    netip.AddrPort
		want      netip.AddrPort
		ok        bool
	}{
		{"none validated", nil, v4, netip.AddrPort{}, false},
		{"the remote address", []netip.AddrPort{v4b, v4}, v4, v4, true},
		{"IPv6 over an IPv4 remote", []netip.AddrPort{v4, v6}, v4, v6, true},
		{"an IPv6 remote stays", []netip.AddrPort{v4, v6}, v6, v6, true},
		{"a mapped IPv4 address is no IPv6", []netip.AddrPort{v4, mapped}, v4, v4, true},
		{"another address, the first validated", []netip.AddrPort{v4b, mapped}, v4, v4b, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, ok := upgradeTarget(tc.validated, tc.remote)
			if got != tc.want || ok != tc.ok {
				t.Fatalf("upgradeTarget = %v, %v; want %v, %v", got, ok, tc.want, tc.ok)
			}
		})
	}
}

// TestFallbackWithoutRelay: a fallback that gets no reroute stays direct.
func TestFallbackWithoutRelay(t *testing.T) {
	p := testkit.NewQUICPair(t, nil)
	d := newSide(t, p.DialerTransport, p.Dialer, event.PathDirect, Track{Peer: p.ListenerID.ID()})
	d.node.rerouteEr = reasonErr{event.ReasonRelayUnavailable}
	if err := d.c.fallback(time.Second); err == nil {
		t.Fatal("fallback without a relay succeeded")
	}
	steps, _, _, _ := d.node.calls()
	if want := []string{"migrating/path_blackholed", "direct/path_blackholed"}; !slices.Equal(steps, want) || d.c.Path() != event.PathDirect {
		t.Fatalf("steps %v (want %v), path %s", steps, want, d.c.Path())
	}
}

// TestFallbackToTheOtherFamily: a dual-stack connection whose direct
// path died moves to a direct path in the other address family before
// the relay: it stays direct, the move is recorded as "family", the
// peer hears that the path is direct, and no relay is asked for. Where
// the other family does not work, the fallback goes on to the relay.
func TestFallbackToTheOtherFamily(t *testing.T) {
	p := testkit.NewQUICPair(t, nil)
	d := newSide(t, p.DialerTransport, p.Dialer, event.PathDirect, Track{Peer: p.ListenerID.ID()})
	l := newSide(t, p.ListenerTransport, p.Listener, event.PathDirect, Track{Peer: p.DialerID.ID()})
	d.node.otherTo = netip.MustParseAddrPort("198.51.100.7:4433")
	if err := d.c.fallback(2 * time.Second); err != nil {
		t.Fatal(err)
	}
	if d.c.Path() != event.PathDirect {
		t.Fatalf("path %s after a move to the other family", d.c.Path())
	}
	if got, want := kinds(d.c.Moves()), []string{"family true direct->direct"}; !slices.Equal(got, want) {
		t.Errorf("moves %v, want %v", got, want)
	}
	testkit.WaitFor(t, 5*time.Second, "the peer hears of the move", func() bool { return len(l.c.Moves()) == 1 })
	if l.c.Path() != event.PathDirect {
		t.Errorf("peer's path %s", l.c.Path())
	}
	wantEv := []string{fmt.Sprintf("%s family %s %s", event.KindMigration, event.OutcomeOK, event.ReasonPathBlackholed)}
	if got := d.migrations(); !slices.Equal(got, wantEv) {
		t.Errorf("events %q, want %q (no fallback to the relay)", got, wantEv)
	}

	// Without the other family: on to the relay.
	p2 := testkit.NewQUICPair(t, nil)
	d2 := newSide(t, p2.DialerTransport, p2.Dialer, event.PathDirect, Track{Peer: p2.ListenerID.ID()})
	if err := d2.c.fallback(2 * time.Second); err != nil {
		t.Fatal(err)
	}
	if d2.c.Path() != event.PathRelay || d2.node.others != 1 {
		t.Fatalf("path %s after %d tries of the other family, want relay after 1", d2.c.Path(), d2.node.others)
	}
}

// TestNominatedOnce: a nomination notice calls OnNominate once, however
// often it comes; notices are read in order.
func TestNominatedOnce(t *testing.T) {
	p := testkit.NewQUICPair(t, nil)
	var mu sync.Mutex
	calls := 0
	l := newSide(t, p.ListenerTransport, p.Listener, event.PathDirect, Track{Peer: p.DialerID.ID(), OnNominate: func() {
		mu.Lock()
		calls++
		mu.Unlock()
	}})
	for _, n := range [][]byte{{NoticeNominate}, {NoticeNominate}, {'?'}, append([]byte{NoticePath}, PathNotice{Path: event.PathRelay}.Encode()...)} {
		if err := SendNotice(p.Dialer, n[0], n[1:]...); err != nil {
			t.Fatal(err)
		}
	}
	testkit.WaitFor(t, 5*time.Second, "the path notice", func() bool { return l.c.Path() == event.PathRelay })
	mu.Lock()
	defer mu.Unlock()
	if calls != 1 {
		t.Fatalf("OnNominate called %d times", calls)
	}
}

// TestLearnMappingLifetime: a shorter bound speeds the keepalives up and
// tells the node; a longer or no bound changes nothing.
func TestLearnMappingLifetime(t *testing.T) {
	var paces []time.Duration
	m, err := New(Config{Node: &fakeNode{}, Transport: &quic.Transport{}, NetworkPoll: -1, KeepAlive: 10 * time.Second,
		OnKeepalive: func(d time.Duration) { paces = append(paces, d) }})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	steps := []struct {
		learn         time.Duration
		lifetime      time.Duration
		keepaliveOver time.Duration // the keepalive is under the lifetime
		calls         int
	}{
		{0, 0, 0, 0},
		{-time.Second, 0, 0, 0},
		{10 * time.Second, 10 * time.Second, 0, 1},
		{20 * time.Second, 10 * time.Second, 0, 1},
		{4 * time.Second, 4 * time.Second, 0, 2},
	}
	for i, s := range steps {
		m.LearnMappingLifetime(s.learn)
		if got := m.MappingLifetime(); got != s.lifetime || len(paces) != s.calls {
			t.Fatalf("step %d: lifetime %v, %d calls; want %v, %d", i, got, len(paces), s.lifetime, s.calls)
		}
		if ka := m.Keepalive(); s.lifetime > 0 && (ka >= s.lifetime || paces[len(paces)-1] != ka) {
			t.Fatalf("step %d: keepalive %v under a %v lifetime (told %v)", i, ka, s.lifetime, paces)
		}
	}
}

// TestNetworkChangeRebindsDialledDirect: a change of the host's addresses
// rebinds the direct connections this node dialled, and only those.
func TestNetworkChangeRebindsDialledDirect(t *testing.T) {
	node := &fakeNode{}
	rec := &testkit.Recorder{}
	changed := make(chan struct{}, 1)
	m, err := New(Config{Node: node, Transport: &quic.Transport{}, Recorder: rec, NetworkPoll: -1, Check: -1, UpgradeBase: -1,
		OnNetworkChange: func() { changed <- struct{}{} }})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	dialled := testkit.NewQUICPair(t, nil)
	accepted := testkit.NewQUICPair(t, nil)
	relayed := testkit.NewQUICPair(t, nil)
	// The birthday search's connection, on a socket of its own: a round
	// from the node's socket cannot help it (the dead-path watch can).
	own := testkit.NewQUICPair(t, nil)
	m.Track(dialled.Dialer, Track{Peer: dialled.ListenerID.ID(), Path: event.PathDirect, Manage: true})
	m.Track(accepted.Listener, Track{Peer: accepted.DialerID.ID(), Path: event.PathDirect})
	m.Track(relayed.Dialer, Track{Peer: relayed.ListenerID.ID(), Path: event.PathRelay, Manage: true, NoUpgrade: true})
	m.Track(own.Dialer, Track{Peer: own.ListenerID.ID(), Path: event.PathDirect, Manage: true, OwnSocket: true})
	m.NetworkChanged(Change{Added: []netip.Addr{netip.MustParseAddr("192.0.2.1")}})
	<-changed
	testkit.WaitFor(t, 5*time.Second, "the rebind", func() bool {
		return len(rec.Events(func(ev event.Event) bool { return ev.Detail == "rebind" })) == 1
	})
	m.Close()
	_, rounds, _, _ := node.calls()
	if !slices.Equal(rounds, []wire.Purpose{wire.PurposeRebind}) {
		t.Fatalf("check rounds %v, want one rebind", rounds)
	}
	if m.Close() != nil {
		t.Fatal("second Close")
	}
}

// TestNominationCarriesThePath: a dialler that nominates a connection it
// made through its relay says so, and the accepting side calls the
// connection relayed before it hears of the nomination; no other payload
// makes a connection relayed.
func TestNominationCarriesThePath(t *testing.T) {
	tests := []struct {
		name    string
		payload []byte
		want    event.Path
	}{
		{"older peer: no payload", nil, event.PathDirect},
		{"dialled direct", []byte{byte(event.PathDirect)}, event.PathDirect},
		{"dialled through its relay", []byte{byte(event.PathRelay)}, event.PathRelay},
		{"unknown path byte", []byte{0xee}, event.PathDirect},
		{"oversized payload", append([]byte{byte(event.PathRelay)}, make([]byte, 64)...), event.PathRelay},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p := testkit.NewQUICPair(t, nil)
			seen := make(chan struct{})
			l := newSide(t, p.ListenerTransport, p.Listener, event.PathDirect, Track{Peer: p.DialerID.ID(), OnNominate: func() {
				close(seen) // the path is set before, and changes only here
			}})
			if err := SendNotice(p.Dialer, NoticeNominate, tc.payload...); err != nil {
				t.Fatal(err)
			}
			select {
			case <-seen:
				if got := l.c.Path(); got != tc.want {
					t.Fatalf("path at the nomination %s, want %s", got, tc.want)
				}
			case <-time.After(5 * time.Second):
				t.Fatal("no nomination")
			}
		})
	}
}

// TestRebindMovesWhenTheFamilyIsGone: a rebind (the host's addresses
// changed) whose round does not validate the connection's address moves
// the connection to the other family at once when the host has no
// address left in the connection's family, and only then.
func TestRebindMovesWhenTheFamilyIsGone(t *testing.T) {
	for _, tc := range []struct {
		name  string
		addrs []netip.Addr // the host's, after the change
		want  []string     // the moves
	}{
		{"IPv4 gone: a family move", []netip.Addr{netip.MustParseAddr("::1"), netip.MustParseAddr("2001:db8::10")},
			[]string{"rebind false direct->direct", "family true direct->direct"}},
		{"IPv4 still there: the rebind alone", []netip.Addr{netip.MustParseAddr("192.168.1.10"), netip.MustParseAddr("2001:db8::10")},
			[]string{"rebind false direct->direct"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := testkit.NewQUICPair(t, nil) // on 127.0.0.1: the connection is IPv4
			node := &fakeNode{otherTo: netip.MustParseAddrPort("[2001:db8::20]:4433"),
				validate: func([]netip.AddrPort) ([]netip.AddrPort, error) { return nil, errNoOther }}
			m, err := New(Config{Node: node, Transport: p.DialerTransport, Recorder: &testkit.Recorder{}, NetworkPoll: -1, Check: -1,
				UpgradeBase: -1, Addrs: func() ([]netip.Addr, error) { return tc.addrs, nil }})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { m.Close() })
			c := m.Track(p.Dialer, Track{Peer: p.ListenerID.ID(), Path: event.PathDirect})
			c.Rebind(event.ReasonNetworkChanged)
			moves := c.Moves()
			if got := kinds(moves); !slices.Equal(got, tc.want) {
				t.Fatalf("moves %v, want %v", got, tc.want)
			}
			if last := moves[len(moves)-1]; last.Reason != event.ReasonNetworkChanged {
				t.Fatalf("the move's reason is %s, want network_changed", last.Reason)
			}
		})
	}
}

// TestDisplacedBy: only a move from IPv6 to IPv4 leaves the preferred
// family.
func TestDisplacedBy(t *testing.T) {
	v4 := netip.MustParseAddrPort("198.51.100.7:4433")
	v6 := netip.MustParseAddrPort("[2001:db8::7]:4433")
	mapped := netip.MustParseAddrPort("[::ffff:198.51.100.9]:4433")
	for _, tc := range []struct {
		name       string
		remote, to netip.AddrPort
		want       bool
	}{
		{"IPv6 to IPv4", v6, v4, true},
		{"IPv6 to a mapped IPv4", v6, mapped, true},
		{"IPv4 to IPv6", v4, v6, false},
		{"a mapped IPv4 remote to IPv6", mapped, v6, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := displacedBy(tc.remote, tc.to); got != tc.want {
				t.Fatalf("displacedBy(%v, %v) = %v, want %v", tc.remote, tc.to, got, tc.want)
			}
		})
	}
}

// TestBackToThePreferredFamily: a displaced connection (moved from IPv6
// to IPv4 behind QUIC's back) goes back once a check round validates its
// remote address: the redirect goes, the move is a "family" one with
// reason direct_available, and the peer hears of it; while the address
// does not validate it stays displaced. (The loopback pair is IPv4: the
// test marks the moved connection displaced itself.)
func TestBackToThePreferredFamily(t *testing.T) {
	p := testkit.NewQUICPair(t, nil)
	d := newSide(t, p.DialerTransport, p.Dialer, event.PathDirect, Track{Peer: p.ListenerID.ID()})
	l := newSide(t, p.ListenerTransport, p.Listener, event.PathDirect, Track{Peer: p.DialerID.ID()})
	d.node.otherTo = netip.MustParseAddrPort("198.51.100.7:4433")
	if err := d.c.otherFamily(event.ReasonPathBlackholed, time.Second); err != nil {
		t.Fatal(err)
	}
	d.c.displaced.Store(true)
	d.node.validate = func([]netip.AddrPort) ([]netip.AddrPort, error) { return nil, nil }
	if err := d.c.back(); !errors.Is(err, ErrNoDirectYet) || !d.c.displaced.Load() {
		t.Fatalf("back with nothing validated: %v, displaced %v", err, d.c.displaced.Load())
	}
	d.node.validate = nil // the round validates what it is given: the remote address
	if err := d.c.back(); err != nil || d.c.displaced.Load() {
		t.Fatalf("back: %v, displaced %v", err, d.c.displaced.Load())
	}
	_, _, unroutes, _ := d.node.calls()
	want := []string{"family true direct->direct", "family false direct->direct", "family true direct->direct"}
	if got := kinds(d.c.Moves()); !slices.Equal(got, want) || unroutes != 1 {
		t.Fatalf("moves %v (want %v), unroutes %d (want 1)", got, want, unroutes)
	}
	if last := d.c.Moves()[2]; last.Reason != event.ReasonDirectAvailable {
		t.Fatalf("the move back's reason is %s, want direct_available", last.Reason)
	}
	testkit.WaitFor(t, 5*time.Second, "the peer hears of both moves", func() bool { return len(l.c.Moves()) == 2 })
}
