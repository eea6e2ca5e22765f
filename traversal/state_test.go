package traversal

import (
	"errors"
	"slices"
	"testing"

	"github.com/antnode/antnode/event"
	"github.com/antnode/antnode/identity"
	"github.com/antnode/antnode/internal/testkit"
)

func TestTransitionTable(t *testing.T) {
	table := Transitions()
	// Every state is in the table and reachable from idle.
	seen := map[State]bool{StateIdle: true}
	queue := []State{StateIdle}
	for len(queue) > 0 {
		s := queue[0]
		queue = queue[1:]
		for _, to := range table[s] {
			if !seen[to] {
				seen[to] = true
				queue = append(queue, to)
			}
		}
	}
	for s := StateIdle; s < stateEnd; s++ {
		if _, ok := table[s]; !ok {
			t.Errorf("%s has no row", s)
		}
		if !seen[s] {
			t.Errorf("%s is unreachable from idle", s)
		}
		if len(table[s]) == 0 {
			t.Errorf("%s is a dead end", s)
		}
	}
	// Only connected states claim a connection.
	for _, s := range []State{StateIdle, StateDiscovering, StatePunching, StateFailed, StateClosed} {
		if s.Connected() {
			t.Errorf("%s claims a connection", s)
		}
	}
}

func TestMachine(t *testing.T) {
	var rec recorder
	id, _ := identity.Generate()
	m := NewMachine(id.ID(), &rec)
	path := []State{StateDiscovering, StateCoordinating, StatePunching, StateRelaying, StateConnectedRelay,
		StateUpgrading, StateConnectedDirect, StateClosed, StateDiscovering}
	for _, s := range path {
		if err := m.To(s, event.ReasonNone, 0); err != nil {
			t.Fatalf("-> %s: %v", s, err)
		}
	}
	if err := m.To(StateDiscovering, event.ReasonNone, 0); err != nil {
		t.Fatalf("a move to the current state: %v", err)
	}
	tests := []struct{ to State }{{StateConnectedDirect}, {StateIdle}, {StateUpgrading}}
	for _, tc := range tests {
		if err := m.To(tc.to, event.ReasonNone, 0); !errors.Is(err, ErrInvalidTransition) {
			t.Errorf("discovering -> %s: %v, want ErrInvalidTransition", tc.to, err)
		}
	}
	if st, _ := m.State(); st != StateDiscovering {
		t.Fatalf("a refused move changed the state to %s", st)
	}
	evs := rec.Kind(event.KindStateChange)
	if len(evs) != len(path) {
		t.Fatalf("%d state events for %d moves", len(evs), len(path))
	}
	if evs[4].Detail != "relaying" || evs[4].To != "connected-relay" || evs[4].Peer != id.ID().String() {
		t.Fatalf("event %+v", evs[4])
	}
	for range 100 {
		m.To(StateCoordinating, event.ReasonNone, 0)
		m.To(StateFailed, event.ReasonPunchTimeout, 0)
		m.To(StateDiscovering, event.ReasonNone, 0)
	}
	if h := m.History(); len(h) != historyLen {
		t.Fatalf("history holds %d transitions, want %d", len(h), historyLen)
	}
}

// TestConnectionClosed: the end of a peer's last connection closes the
// machine only while it stands for a connection; an attempt under way (a
// reconnect that started before the old connection's goroutine noticed
// its end) keeps its state.
func TestConnectionClosed(t *testing.T) {
	tests := []struct {
		name string
		path []State
		want State
	}{
		{"connected direct", []State{StateDiscovering, StateCoordinating, StatePunching, StateConnectedDirect}, StateClosed},
		{"degraded on the relay", []State{StateDiscovering, StateCoordinating, StateRelaying, StateConnectedRelay, StateDegraded}, StateClosed},
		{"upgrading", []State{StateDiscovering, StateCoordinating, StateRelaying, StateConnectedRelay, StateUpgrading}, StateClosed},
		{"a new attempt coordinating", []State{StateDiscovering, StateCoordinating, StatePunching, StateConnectedDirect,
			StateDiscovering, StateCoordinating}, StateCoordinating},
		{"a new attempt punching", []State{StateDiscovering, StateCoordinating, StatePunching}, StatePunching},
		{"failed", []State{StateDiscovering, StateFailed}, StateFailed},
		{"already closed", []State{StateDiscovering, StateCoordinating, StatePunching, StateConnectedDirect, StateClosed}, StateClosed},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			id, _ := identity.Generate()
			m := NewMachine(id.ID(), nil)
			for _, s := range tc.path {
				if err := m.To(s, event.ReasonNone, 0); err != nil {
					t.Fatal(err)
				}
			}
			if err := m.ConnectionClosed(event.ReasonNone); err != nil {
				t.Fatal(err)
			}
			if st, _ := m.State(); st != tc.want {
				t.Fatalf("state %s, want %s", st, tc.want)
			}
		})
	}
}

// TestOverlappingAttempts: a peer with several attempts at once (two
// connects, an offer while a connect runs) shows the steps of the oldest
// running one, every connection whichever attempt made it, and no
// failure while another attempt still runs; no move is refused (three
// concurrent connects between two nodes used to record refused moves
// such as punching -> discovering and punching -> coordinating).
func TestOverlappingAttempts(t *testing.T) {
	type step struct {
		att event.AttemptID
		to  State
	}
	start := []step{{1, StateDiscovering}, {1, StateCoordinating}, {2, StateDiscovering}, {1, StatePunching}, {2, StateCoordinating}}
	tests := []struct {
		name  string
		steps []step
		want  State
	}{
		{"the oldest's steps show", start, StatePunching},
		{"the first to connect shows", append(slices.Clone(start), step{2, StatePunching}, step{2, StateConnectedDirect}), StateConnectedDirect},
		{"a later attempt's steps stay hidden over a connection",
			append(slices.Clone(start), step{1, StateConnectedDirect}, step{2, StatePunching}), StateConnectedDirect},
		{"a failure while another runs shows the other's step",
			[]step{{1, StateDiscovering}, {2, StateDiscovering}, {1, StateCoordinating}, {2, StateCoordinating}, {2, StatePunching}, {1, StateFailed}},
			StatePunching},
		{"a failure while another runs: no step back", append(slices.Clone(start), step{1, StateFailed}), StatePunching},
		{"the last failure shows", append(slices.Clone(start), step{1, StateFailed}, step{2, StateFailed}), StateFailed},
		{"a failure after the other connected",
			append(slices.Clone(start), step{2, StatePunching}, step{2, StateConnectedRelay}, step{1, StateFailed}), StateConnectedRelay},
		{"an attempt begun after a connection shows",
			[]step{{1, StateDiscovering}, {1, StateCoordinating}, {1, StatePunching}, {1, StateConnectedDirect}, {2, StateDiscovering}, {2, StateCoordinating}},
			StateCoordinating},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var rec recorder
			m := NewMachine(testkit.Identity(t).ID(), &rec)
			for _, s := range tc.steps {
				if err := m.To(s.to, event.ReasonNone, s.att); err != nil {
					t.Fatalf("attempt %d -> %s: %v", s.att, s.to, err)
				}
			}
			if st, _ := m.State(); st != tc.want {
				t.Fatalf("state %s, want %s (history %+v)", st, tc.want, m.History())
			}
		})
	}
	// Bounded: attempts that never end are forgotten past maxRunning.
	m := NewMachine(testkit.Identity(t).ID(), nil)
	for i := range 3 * maxRunning {
		m.To(StateDiscovering, event.ReasonNone, event.AttemptID(i+1))
	}
	if len(m.running) != maxRunning {
		t.Fatalf("%d attempts followed, want at most %d", len(m.running), maxRunning)
	}
}
