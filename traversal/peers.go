package traversal

import (
	"slices"
	"time"

	"github.com/antnode/antnode/event"
	"github.com/antnode/antnode/identity"
)

// Peers: one state machine per peer, bounded, driven by the attempts and moves.

// machineList returns the machines of every peer the node knows.
func (n *Node) machineList() []*Machine {
	n.peersMu.Lock()
	defer n.peersMu.Unlock()
	out := make([]*Machine, 0, len(n.machines))
	for _, m := range n.machines {
		out = append(out, m)
	}
	return out
}

// closedIfGone moves peer's machine to closed when no live connection to
// it is left (and the machine stands for one: see ConnectionClosed).
func (n *Node) closedIfGone(peer identity.PeerID) {
	for _, c := range n.Conns() {
		if c.peer == peer && c.qc.Context().Err() == nil {
			return
		}
	}
	if err := n.machine(peer).ConnectionClosed(event.ReasonNone); err != nil {
		n.log.Debug("traversal: state", "peer", peer.Short(), "err", err)
	}
}

// machine returns peer's state machine, creating it.
func (n *Node) machine(peer identity.PeerID) *Machine {
	n.peersMu.Lock()
	defer n.peersMu.Unlock()
	m := n.machines[peer]
	if m == nil {
		if len(n.machines) >= n.cfg.MaxPeerStates {
			n.evictMachinesLocked()
		}
		m = &Machine{peer: peer, rec: n.rec, allow: n.allow, state: StateIdle, since: time.Now()}
		n.machines[peer] = m
	}
	return m
}

// evictMachinesLocked forgets peers without a connection, those whose
// state changed longest ago, until fewer than MaxPeerStates of them
// remain. One scan frees a sixteenth of the limit at once, so that a
// stream of new peers costs a scan per many of them, not per peer.
func (n *Node) evictMachinesLocked() {
	type idleState struct {
		id    identity.PeerID
		since time.Time
	}
	var idle []idleState
	for id, m := range n.machines {
		if st, since := m.State(); !st.Connected() {
			idle = append(idle, idleState{id, since})
		}
	}
	excess := len(idle) - n.cfg.MaxPeerStates + max(1, n.cfg.MaxPeerStates/16)
	if excess <= 0 {
		return
	}
	slices.SortFunc(idle, func(a, b idleState) int { return a.since.Compare(b.since) })
	for _, s := range idle[:min(excess, len(idle))] {
		delete(n.machines, s.id)
	}
}

// move drives peer's machine; a refused move (concurrent attempts to the
// same peer) is logged, not fatal.
func (n *Node) move(peer identity.PeerID, s State, reason event.Reason, att *event.Attempt) {
	m := n.machine(peer)
	if err := m.To(s, reason, att.ID()); err != nil {
		// A move the table does not allow is a fault of this code, not
		// of the network: the state the API shows is now stale. It is
		// reported as a failed state change, which tests look for.
		from, _ := m.State()
		n.rec.Record(event.Event{Kind: event.KindStateChange, Outcome: event.OutcomeFail, Peer: peer.String(),
			Detail: from.String(), To: s.String(), Reason: reason, Attempt: att.ID()})
		n.log.Warn("traversal: state change refused", "peer", peer.Short(), "err", err)
	}
}

// PeerStatus is one peer's state for the API and the dashboard.
type PeerStatus struct {
	ID          identity.PeerID `json:"id"`
	State       State           `json:"state"`
	Since       time.Time       `json:"since"`
	Path        string          `json:"path"`
	Family      string          `json:"family,omitempty"` // the connection's (Conn.Family); empty: none
	RTT         time.Duration   `json:"rtt_ns"`
	Connections int             `json:"connections"`
	Transitions []Transition    `json:"transitions,omitempty"`
}

// Peers returns the state of every peer the node knows.
func (n *Node) Peers() []PeerStatus {
	n.peersMu.Lock()
	machines := make(map[identity.PeerID]*Machine, len(n.machines))
	for id, m := range n.machines {
		machines[id] = m
	}
	n.peersMu.Unlock()
	conns := n.Conns()
	out := make([]PeerStatus, 0, len(machines))
	for id, m := range machines {
		st, since := m.State()
		ps := PeerStatus{ID: id, State: st, Since: since, Path: event.PathNone.String(), Transitions: m.History()}
		for _, c := range conns {
			if c.peer == id {
				ps.Connections++
				ps.Path, ps.RTT, ps.Family = c.Path().String(), c.RTT(), c.Family().String()
			}
		}
		out = append(out, ps)
	}
	return out
}
