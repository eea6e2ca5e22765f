package traversal

import (
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/antnode/antnode/event"
	"github.com/antnode/antnode/identity"
)

// State is where a node's connection to one peer stands.
type State uint8

// States.
const (
	StateIdle            State = iota // no connection, no attempt
	StateDiscovering                  // gathering candidates
	StateCoordinating                 // asking a bootstrap for the introduction
	StatePunching                     // checks and dials on direct paths
	StateRelaying                     // allocating and connecting through the relay
	StateConnectedDirect              // a QUIC connection on a direct path
	StateConnectedRelay               // a QUIC connection through the relay
	StateUpgrading                    // relayed, trying to move to a direct path
	StateMigrating                    // moving the connection to a new local path
	StateDegraded                     // kept on the relay on purpose (load, repeated failure)
	StateFailed                       // the last attempt failed
	StateClosed                       // the connection ended
	stateEnd
)

var stateNames = [stateEnd]string{"idle", "discovering", "coordinating", "punching", "relaying",
	"connected-direct", "connected-relay", "upgrading", "migrating", "degraded", "failed", "closed"}

func (s State) String() string {
	if s < stateEnd {
		return stateNames[s]
	}
	return fmt.Sprintf("state(%d)", uint8(s))
}

// MarshalText implements encoding.TextMarshaler.
func (s State) MarshalText() ([]byte, error) { return []byte(s.String()), nil }

// Connected reports whether s has a live connection.
func (s State) Connected() bool {
	switch s {
	case StateConnectedDirect, StateConnectedRelay, StateUpgrading, StateMigrating, StateDegraded:
		return true
	}
	return false
}

// Transitions returns the state machine as data: for each state, the
// states it may move to. Tests, the API and the dashboard read it.
func Transitions() map[State][]State {
	start := []State{StateDiscovering}
	return map[State][]State{
		StateIdle:            start,
		StateDiscovering:     {StateCoordinating, StateFailed, StateClosed},
		StateCoordinating:    {StatePunching, StateRelaying, StateFailed, StateClosed},
		StatePunching:        {StateConnectedDirect, StateConnectedRelay, StateRelaying, StateFailed, StateClosed},
		StateRelaying:        {StateConnectedRelay, StateConnectedDirect, StateFailed, StateClosed},
		StateConnectedDirect: {StateMigrating, StateConnectedRelay, StateClosed, StateDiscovering},
		// A peer that dialled the connection moves it; this side hears
		// of the move once it is done: connected-relay <-> connected-direct.
		StateConnectedRelay: {StateUpgrading, StateDegraded, StateMigrating, StateClosed, StateDiscovering, StateConnectedDirect},
		StateUpgrading:      {StateConnectedDirect, StateConnectedRelay, StateDegraded, StateClosed},
		StateMigrating:      {StateConnectedDirect, StateConnectedRelay, StateClosed},
		StateDegraded:       {StateUpgrading, StateConnectedRelay, StateClosed, StateDiscovering},
		StateFailed:         start,
		StateClosed:         start,
	}
}

// ErrInvalidTransition is returned for a move the machine does not allow.
var ErrInvalidTransition = errors.New("traversal: invalid state transition")

// Transition is one recorded move.
type Transition struct {
	From   State        `json:"from"`
	To     State        `json:"to"`
	At     time.Time    `json:"at"`
	Reason event.Reason `json:"reason"`
}

// historyLen bounds a machine's recorded transitions.
const historyLen = 32

// Machine is one peer's state machine. Every transition is reported as an
// event. It is safe for concurrent use.
type Machine struct {
	peer  identity.PeerID
	rec   event.Recorder
	allow map[State][]State

	mu      sync.Mutex
	state   State
	since   time.Time
	history []Transition
	// running are the attempts under way, oldest first, with the step
	// each reached (see follow).
	running []attemptStep
}

// attemptStep is a running attempt and the step it reached.
type attemptStep struct {
	id    event.AttemptID
	state State
}

// maxRunning bounds the attempts a machine follows at once; an older
// one past it is forgotten (its end is still shown).
const maxRunning = 16

// follow decides what an attempt's move to s shows when a peer has
// several attempts at once (two connects, an offer while a connect runs,
// a remembered dial beside an introduction): the machine shows the steps
// of one, the oldest still running; the others' steps are kept, not
// shown. An attempt's end is shown, whichever attempt it is (a
// connection is a fact), except a failure while another attempt still
// runs or another's connection stands: the peer is not failed then, and
// the machine shows the step the next attempt reached where the table
// allows it. It returns the state to move to and whether to move. Called
// with mu held.
func (m *Machine) follow(id event.AttemptID, s State) (State, bool) {
	i := slices.IndexFunc(m.running, func(a attemptStep) bool { return a.id == id })
	if attempting(s) {
		if i < 0 {
			if len(m.running) == maxRunning {
				m.running = slices.Delete(m.running, 0, 1)
			}
			m.running = append(m.running, attemptStep{id: id})
			i = len(m.running) - 1
		}
		m.running[i].state = s
		// Not over a connection another attempt made, either, unless
		// this is an attempt that begins after it.
		return s, i == 0 && (!m.state.Connected() || s == StateDiscovering)
	}
	if i >= 0 {
		m.running = slices.Delete(m.running, i, i+1)
	}
	switch {
	case s != StateFailed:
		return s, true
	case m.state.Connected():
		return s, false // another attempt's connection stands
	case len(m.running) > 0:
		next := m.running[0].state
		return next, i == 0 && slices.Contains(m.allow[m.state], next)
	}
	return s, true
}

// NewMachine returns a machine in StateIdle.
func NewMachine(peer identity.PeerID, rec event.Recorder) *Machine {
	if rec == nil {
		rec = event.Nop{}
	}
	return &Machine{peer: peer, rec: rec, allow: Transitions(), state: StateIdle, since: time.Now()}
}

// State returns the current state and when it was entered.
func (m *Machine) State() (State, time.Time) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.state, m.since
}

// History returns the recorded transitions, oldest first.
func (m *Machine) History() []Transition {
	m.mu.Lock()
	defer m.mu.Unlock()
	return slices.Clone(m.history)
}

// To moves the machine to s. Moving to the current state is a no-op; a
// move the transition table does not allow is refused.
func (m *Machine) To(s State, reason event.Reason, attempt event.AttemptID) error {
	return m.to(s, reason, attempt, nil)
}

// ConnectionClosed moves the machine to StateClosed when the peer's last
// connection ended, unless no connection is what the machine stands for
// (a new attempt under way owns the state; a failed one keeps it).
func (m *Machine) ConnectionClosed(reason event.Reason) error {
	return m.to(StateClosed, reason, 0, State.Connected)
}

// to moves the machine to s if its current state satisfies when (nil: any).
func (m *Machine) to(s State, reason event.Reason, attempt event.AttemptID, when func(State) bool) error {
	m.mu.Lock()
	if attempt != 0 {
		var show bool
		if s, show = m.follow(attempt, s); !show {
			m.mu.Unlock()
			return nil
		}
	}
	from := m.state
	if from == s || when != nil && !when(from) {
		m.mu.Unlock()
		return nil
	}
	if !slices.Contains(m.allow[from], s) {
		m.mu.Unlock()
		return fmt.Errorf("%w: %s -> %s", ErrInvalidTransition, from, s)
	}
	now := time.Now()
	m.state, m.since = s, now
	m.history = append(m.history, Transition{From: from, To: s, At: now, Reason: reason})
	if len(m.history) > historyLen {
		m.history = slices.Delete(m.history, 0, len(m.history)-historyLen)
	}
	m.mu.Unlock()
	m.rec.Record(event.Event{Time: now, Kind: event.KindStateChange, Attempt: attempt, Peer: m.peer.String(),
		Detail: from.String(), To: s.String(), Reason: reason})
	return nil
}
