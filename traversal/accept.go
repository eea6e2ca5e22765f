package traversal

import (
	"slices"
	"strings"
	"time"

	"github.com/quic-go/quic-go"

	"github.com/antnode/antnode/event"
	"github.com/antnode/antnode/identity"
)

// Accepting peer connections: each one goes to the attempt that expects it.

// expectation is an attempt waiting for connections from a peer: the
// ufrag of this side's credentials for the attempt, which the dialler
// sends as its TLS server name (attemptName), and where they go.
type expectation struct {
	ufrag string
	ch    chan *quic.Conn
}

// expect registers interest in incoming connections from peer for the
// attempt whose local credentials have ufrag.
func (n *Node) expect(peer identity.PeerID, ufrag string) (<-chan *quic.Conn, func()) {
	// Several connections from the peer may arrive (the dialler may have
	// several dials succeed); the attempt takes the nominated one.
	ch := make(chan *quic.Conn, 8)
	n.expectMu.Lock()
	n.expected[peer] = append(n.expected[peer], expectation{ufrag: ufrag, ch: ch})
	// Connections that named this attempt before it began (the dialler
	// holds the credentials first on an early introduction, and the offer
	// can be late, lost once on the way): they are its.
	for _, qc := range n.early.claim(peer, ufrag, time.Now()) {
		if qc.Context().Err() == nil {
			ch <- qc // at most maxEarlyConns, fewer than ch holds
		}
	}
	n.expectMu.Unlock()
	return ch, func() {
		n.expectMu.Lock()
		defer n.expectMu.Unlock()
		l := n.expected[peer]
		if i := slices.IndexFunc(l, func(e expectation) bool { return e.ch == ch }); i >= 0 {
			l = slices.Delete(l, i, i+1)
		}
		if len(l) == 0 {
			delete(n.expected, peer)
		} else {
			n.expected[peer] = l
		}
	}
}

func (n *Node) acceptLoop() {
	defer n.wg.Done()
	n.acceptOn(n.ln)
}

// acceptOn accepts peer connections on ln (the node's listener, or one on
// a relay allocation) until it closes: each is tracked and handed to an
// attempt waiting for that peer.
func (n *Node) acceptOn(ln *quic.Listener) {
	for {
		qc, err := ln.Accept(n.ctx)
		if err != nil {
			return
		}
		peer, err := identity.PeerFromState(qc.ConnectionState().TLS)
		if err != nil {
			qc.CloseWithError(1, "unauthenticated")
			continue
		}
		if qc.ConnectionState().TLS.ServerName == rememberedName {
			// A dial without an introduction: never an attempt's.
			n.acceptRecalled(qc, peer, ln == n.ln)
			continue
		}
		n.track(qc, peer, event.PathDirect, false)
		name := qc.ConnectionState().TLS.ServerName
		n.expectMu.Lock()
		waiter := pickExpectation(n.expected[peer], name)
		if ufrag, ok := strings.CutSuffix(name, attemptSuffix); ok && waiter == nil {
			// An attempt that has not begun yet, or one that is over:
			// kept a while for the first.
			n.early.park(peer, ufrag, qc, time.Now())
		}
		n.expectMu.Unlock()
		if waiter != nil {
			select {
			case waiter <- qc:
			default:
			}
		}
	}
}

// attemptName is the TLS server name a dialler sends: the ufrag of the
// accepting side's credentials for the attempt, so that the accepting
// side hands the connection to that attempt when a peer has several under
// way (it connected, closed and connects again, say).
func attemptName(ufrag string) string { return ufrag + attemptSuffix }

const attemptSuffix = ".attempt.antnode"

// pickExpectation returns where a connection whose dialler sent
// serverName goes: the attempt it names, or (a dialler that names none)
// the peer's oldest one. It is a pure function.
func pickExpectation(l []expectation, serverName string) chan *quic.Conn {
	if ufrag, ok := strings.CutSuffix(serverName, attemptSuffix); ok {
		if i := slices.IndexFunc(l, func(e expectation) bool { return e.ufrag == ufrag }); i >= 0 {
			return l[i].ch
		}
		return nil // an attempt that is over
	}
	if len(l) > 0 {
		return l[0].ch
	}
	return nil
}

// earlyConns are accepted connections that named an attempt this node
// has not begun: on an early introduction the dialler holds this side's
// credentials (from the bootstrap) at the moment the offer leaves for
// this side, and its first dial can arrive before a late offer does. The
// attempt claims them when it begins. They are bounded in count per peer,
// in peers and in age; the connections themselves are tracked (and
// closed) as any other.
type earlyConns struct {
	byPeer map[identity.PeerID][]earlyConn
}

type earlyConn struct {
	ufrag string
	qc    *quic.Conn
	at    time.Time
}

const (
	maxEarlyConns = 4                // per peer: the oldest goes first
	maxEarlyPeers = 256              // peers with parked connections
	earlyConnTTL  = 10 * time.Second // an offer later than this is not coming
)

// park keeps qc, which named ufrag, for peer's attempt to come.
func (e *earlyConns) park(peer identity.PeerID, ufrag string, qc *quic.Conn, now time.Time) {
	e.prune(now)
	if e.byPeer == nil {
		e.byPeer = make(map[identity.PeerID][]earlyConn)
	}
	l, ok := e.byPeer[peer]
	if !ok && len(e.byPeer) >= maxEarlyPeers {
		return
	}
	if len(l) >= maxEarlyConns {
		l = slices.Delete(l, 0, 1)
	}
	e.byPeer[peer] = append(l, earlyConn{ufrag: ufrag, qc: qc, at: now})
}

// claim removes and returns the connections parked for peer's attempt
// with ufrag.
func (e *earlyConns) claim(peer identity.PeerID, ufrag string, now time.Time) []*quic.Conn {
	e.prune(now)
	var out []*quic.Conn
	l := slices.DeleteFunc(e.byPeer[peer], func(c earlyConn) bool {
		if c.ufrag == ufrag {
			out = append(out, c.qc)
			return true
		}
		return false
	})
	if len(l) == 0 {
		delete(e.byPeer, peer)
	} else {
		e.byPeer[peer] = l
	}
	return out
}

// prune drops what is older than earlyConnTTL.
func (e *earlyConns) prune(now time.Time) {
	for p, l := range e.byPeer {
		l = slices.DeleteFunc(l, func(c earlyConn) bool { return now.Sub(c.at) > earlyConnTTL })
		if len(l) == 0 {
			delete(e.byPeer, p)
		} else {
			e.byPeer[p] = l
		}
	}
}
