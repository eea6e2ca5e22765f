package traversal

import (
	"slices"
	"strings"

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
		n.expectMu.Lock()
		waiter := pickExpectation(n.expected[peer], qc.ConnectionState().TLS.ServerName)
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
