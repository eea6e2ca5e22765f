package traversal

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"time"

	"github.com/quic-go/quic-go"

	"github.com/antnode/antnode/event"
	"github.com/antnode/antnode/identity"
	"github.com/antnode/antnode/migration"
)

// Reconnecting without the bootstrap. A connect to a peer the node
// remembers (remember.go) races a direct dial to the remembered address,
// resuming the TLS session of the last connection, against the
// introduction through the bootstrap. The first authenticated connection
// wins: a remembered dial that wins is nominated and the introduction is
// cancelled (Session.Cancel, so that the other side stops); an
// introduction that wins leaves the remembered dial to end on its own
// (bounded by the handshake timeout) and closes what it makes as
// superseded. A dial cut off mid-handshake would leave the peer a
// connection it completed and nobody closes.
//
// The side that receives a remembered dial (its TLS server name is
// rememberedName) never hands it to an attempt: it accepts it as a
// connection of its own only from an authenticated peer it kept a
// connection with recently (or that resumed a session this node's
// listener issued), and confirms with a notice; anything else is closed
// with codeNotRemembered. A dialler that did not resume a session waits
// for that confirmation before it takes the connection (a peer that
// restarted remembers nothing); one that resumed takes it at once.

// rememberedName is the TLS server name of a remembered dial. It has no
// attemptSuffix: no attempt's ufrag can match it.
const rememberedName = "remembered.antnode"

// codeNotRemembered closes a remembered dial the accepting side does not
// expect.
const codeNotRemembered quic.ApplicationErrorCode = 3

// Errors of remembered dials.
var (
	// ErrNotRemembered: the peer refused a dial without an introduction
	// (it does not remember this node).
	ErrNotRemembered = errors.New("traversal: peer does not expect a dial without an introduction")
)

// introEnd is how an introduced attempt racing a remembered dial ended.
type introEnd struct {
	c     *Conn
	phase event.Phase
	err   error
}

// connectOrRecall connects to peer through an introduction and, if the
// node remembers a direct path to peer, races a dial there against it.
func (n *Node) connectOrRecall(ctx context.Context, att *event.Attempt, peer identity.PeerID, g degradation) (*Conn, event.Phase, error) {
	addr, ok := n.memory.lookup(peer)
	if !ok || g.RelayOnly || n.cfg.Relay == RelayForce {
		return n.connect(ctx, att, peer, g)
	}
	dialed, lost := n.recall(peer, addr) // first: it needs no round trip before it sends
	defer close(lost)
	ictx, stopIntro := context.WithCancel(ctx)
	defer stopIntro()
	intro := make(chan introEnd, 1)
	go func() {
		c, phase, err := n.connect(ictx, att, peer, g)
		intro <- introEnd{c: c, phase: phase, err: err}
	}()
	return n.race(ctx, att, peer, intro, dialed, stopIntro)
}

// race takes the first of the two to connect (see connectOrRecall). It
// returns only once the introduction has ended: the introduction moves
// peer's state machine, and a cancelled one has told the other side.
func (n *Node) race(ctx context.Context, att *event.Attempt, peer identity.PeerID, intro <-chan introEnd,
	dialed <-chan dialResult, stopIntro context.CancelFunc) (*Conn, event.Phase, error) {
	var failed *introEnd
	for range 2 { // one result of each
		select {
		case e := <-intro:
			if e.err == nil {
				if dialed != nil {
					recalled(att, event.OutcomeCanceled, nil)
				}
				return e.c, e.phase, nil
			}
			failed, intro = &e, nil
		case r := <-dialed:
			dialed = nil
			if r.err == nil {
				if r.err = nominate(r.qc, event.PathDirect); r.err != nil {
					r.qc.CloseWithError(codeSuperseded, "nomination failed")
				}
			}
			if r.err != nil {
				n.recallFailed(peer, r)
				recalled(att, event.OutcomeFail, r.err)
				continue
			}
			stopIntro()
			if failed == nil {
				e := <-intro // cancelled: it ends at once
				failed = &e
			}
			c := n.wonRecalled(att, peer, r.qc)
			if failed.err == nil { // introduced just as well: the first one stays
				failed.c.qc.CloseWithError(codeSuperseded, "superseded")
			}
			recalled(att, event.OutcomeOK, nil)
			return c, event.PhaseHandshake, nil
		case <-ctx.Done():
			if failed == nil {
				e := <-intro
				failed = &e
			}
			if failed.err == nil {
				return failed.c, failed.phase, nil
			}
			recalled(att, event.OutcomeCanceled, nil)
			return nil, failed.phase, failed.err
		}
	}
	return nil, failed.phase, failed.err
}

// recalled records how the remembered dial of att ended.
func recalled(att *event.Attempt, o event.Outcome, err error) {
	att.Record(event.Event{Kind: event.KindRecovery, Detail: "remembered_path", Outcome: o, Reason: Reason(err), Err: err})
}

// recallFailed forgets what a failed remembered dial shows is wrong: the
// address (nobody, or someone else, answers there), or the whole entry
// (the peer does not remember this node).
func (n *Node) recallFailed(peer identity.PeerID, r dialResult) {
	if errors.Is(r.err, ErrNotRemembered) {
		n.memory.forget(peer)
		return
	}
	n.memory.forgetAddr(peer, r.addr)
}

// recall dials peer at its remembered address in the background. Its
// result goes to the returned channel, unless lost is closed first: then
// a connection it makes is closed as superseded. The dial is bounded by
// the handshake timeout and the node's life, not by the attempt.
func (n *Node) recall(peer identity.PeerID, addr netip.AddrPort) (<-chan dialResult, chan struct{}) {
	out := make(chan dialResult)
	lost := make(chan struct{})
	n.wg.Add(1)
	go func() {
		defer n.wg.Done()
		qc, err := n.dialRemembered(peer, addr)
		select {
		case out <- dialResult{qc: qc, addr: addr, err: err}:
		case <-lost:
			if err == nil {
				qc.CloseWithError(codeSuperseded, "superseded")
			}
		}
	}()
	return out, lost
}

// dialRemembered dials peer at addr from the node's socket, resuming the
// TLS session of an earlier connection if the node holds its ticket. A
// full handshake is taken only once the peer confirms it expects the dial.
func (n *Node) dialRemembered(peer identity.PeerID, addr netip.AddrPort) (*quic.Conn, error) {
	ctx, cancel := context.WithTimeout(n.ctx, n.cfg.HandshakeTimeout)
	defer cancel()
	tlsConf := n.cfg.Identity.ClientTLS(peer, PeerALPN)
	tlsConf.ServerName = rememberedName
	tlsConf.ClientSessionCache = n.memory.sessions(peer)
	qc, err := n.cfg.Endpoint.Transport().Dial(ctx, net.UDPAddrFromAddrPort(addr), tlsConf, n.peerQUIC())
	if err != nil {
		return nil, fmt.Errorf("traversal: remembered dial to %s: %w", n.san(addr), err)
	}
	// A resumed session skips the certificate check: the ticket came from
	// a connection that checked it, and the session cache holds only
	// peer's tickets. Checked again all the same.
	got, err := identity.PeerFromState(qc.ConnectionState().TLS)
	if err == nil && got != peer {
		err = &identity.KeyMismatchError{Want: peer, Got: got}
	}
	if err != nil {
		qc.CloseWithError(codeSuperseded, "unexpected peer")
		return nil, fmt.Errorf("traversal: remembered dial to %s: %w", n.san(addr), err)
	}
	if qc.ConnectionState().TLS.DidResume {
		return qc, nil
	}
	if err := awaitAccepted(ctx, qc); err != nil {
		qc.CloseWithError(codeSuperseded, "not accepted")
		return nil, fmt.Errorf("traversal: remembered dial to %s: %w", n.san(addr), err)
	}
	return qc, nil
}

// awaitAccepted waits for the accepting side's first notice on qc, which
// says it took the connection.
func awaitAccepted(ctx context.Context, qc *quic.Conn) error {
	str, err := qc.AcceptUniStream(ctx)
	if err != nil {
		var ae *quic.ApplicationError
		if errors.As(err, &ae) && ae.Remote && ae.ErrorCode == codeNotRemembered {
			return &ConnectError{Phase: event.PhaseHandshake, Reason: event.ReasonRefused, Err: ErrNotRemembered}
		}
		return fmt.Errorf("waiting for the peer to accept: %w", err)
	}
	if dl, ok := ctx.Deadline(); ok {
		str.SetReadDeadline(dl)
	}
	var b [1]byte
	if _, err := io.ReadFull(str, b[:]); err != nil {
		return fmt.Errorf("reading the peer's acceptance: %w", err)
	}
	str.CancelRead(0)
	return nil
}

// wonRecalled takes the remembered dial's connection: tracked, and peer's
// state machine moved on to connected-direct from where the cancelled
// introduction left it.
func (n *Node) wonRecalled(att *event.Attempt, peer identity.PeerID, qc *quic.Conn) *Conn {
	c := n.track(qc, peer, event.PathDirect, true)
	n.degrade.directWorked(peer)
	n.walkToDirect(peer, att)
	return c
}

// walkToDirect moves peer's machine to connected-direct the way its
// transition table allows (an attempt's way: discovering, coordinating,
// punching), from wherever it is short of a connection.
func (n *Node) walkToDirect(peer identity.PeerID, att *event.Attempt) {
	for range 4 {
		st, _ := n.machine(peer).State()
		next, ok := towardDirect(st)
		if !ok {
			return
		}
		n.move(peer, next, event.ReasonNone, att)
	}
}

// towardDirect returns the next state on the way from s to
// connected-direct, and false when s has a connection already. It is a
// pure function.
func towardDirect(s State) (State, bool) {
	switch s {
	case StateIdle, StateFailed, StateClosed:
		return StateDiscovering, true
	case StateDiscovering:
		return StateCoordinating, true
	case StateCoordinating:
		return StatePunching, true
	case StatePunching, StateRelaying:
		return StateConnectedDirect, true
	}
	return s, false
}

// attempting reports whether s is a state an attempt under way owns.
func attempting(s State) bool {
	switch s {
	case StateDiscovering, StateCoordinating, StatePunching, StateRelaying:
		return true
	}
	return false
}

// rememberConn remembers the peer of c, a connection this node kept: its
// address if c runs on a direct path from the node's socket (else no
// address: the last path was not one a dial from here can take).
func (n *Node) rememberConn(c *Conn) {
	var addr netip.AddrPort
	if c.Path() == event.PathDirect && addrPortOf(c.qc.LocalAddr()).Port() == n.cfg.Endpoint.LocalAddr().Port() {
		addr = addrPortOf(c.qc.RemoteAddr())
	}
	n.memory.remember(c.peer, addr)
}

// acceptRecalled takes a remembered dial that ln accepted from the
// authenticated peer: only on the node's own listener, and only from a
// peer this node expects (see above). It never reaches an attempt.
func (n *Node) acceptRecalled(qc *quic.Conn, peer identity.PeerID, onSocket bool) {
	if !onSocket || !(qc.ConnectionState().TLS.DidResume || n.memory.expects(peer)) {
		n.log.Debug("traversal: dial without an introduction refused", "peer", peer.Short())
		qc.CloseWithError(codeNotRemembered, "not remembered")
		return
	}
	c := n.track(qc, peer, event.PathDirect, false)
	if err := migration.SendNotice(qc, migration.NoticePing); err != nil {
		n.log.Debug("traversal: remembered dial: accept notice", "peer", peer.Short(), "err", err)
	}
	n.wg.Add(1)
	go func() {
		defer n.wg.Done()
		n.keepRecalled(c)
	}()
}

// recallPoll is how often the side that accepted a remembered dial looks
// whether an attempt with the peer (the introduction the dialler
// cancelled) is over.
const recallPoll = 10 * time.Millisecond

// keepRecalled waits for the dialler to nominate c, a remembered dial
// this node accepted, and then moves the peer's machine to
// connected-direct once no attempt with the peer owns it.
func (n *Node) keepRecalled(c *Conn) {
	ctx, cancel := context.WithTimeout(n.ctx, n.cfg.ConnectTimeout)
	defer cancel()
	select {
	case <-c.nominated:
	case <-c.qc.Context().Done():
		return
	case <-ctx.Done():
		return
	}
	t := time.NewTicker(recallPoll)
	defer t.Stop()
	for range int(n.cfg.ConnectTimeout/recallPoll) + 1 {
		if st, _ := n.machine(c.peer).State(); !attempting(st) {
			break
		}
		select {
		case <-t.C:
		case <-ctx.Done():
			return
		}
	}
	if c.qc.Context().Err() == nil {
		n.walkToDirect(c.peer, nil)
	}
}
