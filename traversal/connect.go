package traversal

import (
	"context"
	"errors"
	"fmt"
	"net"
	"time"

	"github.com/quic-go/quic-go"

	"github.com/antnode/antnode/bootstrap"
	"github.com/antnode/antnode/bootstrap/wire"
	"github.com/antnode/antnode/holepunch"
	"github.com/antnode/antnode/identity"
	"github.com/antnode/antnode/monitor"
)

// ConnectError is a failed connection attempt: the phase it failed in, a
// reason from monitor's closed set, and the underlying error.
type ConnectError struct {
	Phase  monitor.Phase
	Reason monitor.Reason
	Err    error
}

func (e *ConnectError) Error() string {
	return fmt.Sprintf("connect failed in %s (%s): %v", e.Phase, e.Reason, e.Err)
}

func (e *ConnectError) Unwrap() error { return e.Err }

// ErrSelf is returned when a node is asked to connect to itself.
var ErrSelf = errors.New("traversal: cannot connect to self")

// Reason maps an error of a connection attempt to a monitor.Reason.
func Reason(err error) monitor.Reason {
	var ce *ConnectError
	var idle *quic.IdleTimeoutError
	var hs *quic.HandshakeTimeoutError
	switch {
	case err == nil:
		return monitor.ReasonNone
	case errors.As(err, &ce):
		return ce.Reason
	case errors.Is(err, identity.ErrKeyMismatch):
		return monitor.ReasonKeyMismatch
	case errors.Is(err, bootstrap.ErrUnknownPeer):
		return monitor.ReasonUnknownPeer
	case errors.Is(err, bootstrap.ErrRateLimited):
		return monitor.ReasonRateLimited
	case errors.Is(err, bootstrap.ErrExpired):
		return monitor.ReasonExpired
	case errors.Is(err, bootstrap.ErrRefused):
		return monitor.ReasonRefused
	case errors.Is(err, bootstrap.ErrOverloaded):
		return monitor.ReasonOverloaded
	case errors.Is(err, bootstrap.ErrUnavailable):
		return monitor.ReasonBootstrapUnreachable
	case errors.Is(err, holepunch.ErrNoPath):
		return monitor.ReasonPunchTimeout
	case errors.Is(err, holepunch.ErrNoCandidates):
		return monitor.ReasonNoCandidates
	case errors.Is(err, ErrTransferMismatch):
		return monitor.ReasonTransferMismatch
	case errors.Is(err, context.Canceled):
		return monitor.ReasonCanceled
	case errors.As(err, &hs):
		return monitor.ReasonHandshakeFailed
	case errors.Is(err, context.DeadlineExceeded), errors.As(err, &idle):
		return monitor.ReasonTimeout
	}
	return monitor.ReasonInternal
}

// Connect establishes an authenticated connection to peer through the
// node's bootstraps: it asks a registered bootstrap to introduce the two
// peers (trying the next bootstrap when one cannot), punches and validates
// a direct path, and dials QUIC over the best validated pair.
func (n *Node) Connect(ctx context.Context, peer identity.PeerID) (*Conn, error) {
	if peer == n.ID() {
		return nil, &ConnectError{Phase: monitor.PhaseCoordinate, Reason: monitor.ReasonSelf, Err: ErrSelf}
	}
	ctx, cancel := context.WithTimeout(ctx, n.cfg.ConnectTimeout)
	defer cancel()
	att := monitor.StartAttempt(n.rec, peer.String(), "initiator", n.NAT().Class())
	c, phase, err := n.connect(ctx, att, peer)
	if err != nil {
		reason := Reason(err)
		att.Finish(monitor.OutcomeFail, reason, monitor.PathNone)
		return nil, &ConnectError{Phase: phase, Reason: reason, Err: err}
	}
	c.attempt = att.ID()
	c.timeToConnect = att.Finish(monitor.OutcomeOK, monitor.ReasonNone, c.path)
	n.rec.Record(monitor.Event{Kind: monitor.KindLatency, Path: c.path, Duration: c.RTT(), Attempt: att.ID()})
	return c, nil
}

func (n *Node) connect(ctx context.Context, att *monitor.Attempt, peer identity.PeerID) (*Conn, monitor.Phase, error) {
	att.Begin(monitor.PhaseDiscover)
	cands := n.candidates()
	for _, c := range cands {
		att.Record(monitor.Event{Kind: monitor.KindCandidate, Addr: c.Addr, Detail: c.Kind.String(), Value: float64(c.Priority)})
	}
	att.End(monitor.PhaseDiscover, monitor.OutcomeOK, monitor.ReasonNone)

	att.Begin(monitor.PhaseCoordinate)
	creds := holepunch.NewCreds()
	local := bootstrap.Intro{NAT: n.NAT(), Candidates: cands, Creds: creds}
	sess, err := n.introduce(ctx, peer, local)
	if err != nil {
		att.End(monitor.PhaseCoordinate, monitor.OutcomeFail, Reason(err))
		return nil, monitor.PhaseCoordinate, err
	}
	defer sess.Close()
	att.SetNAT("", sess.Remote.NAT.Class())
	att.End(monitor.PhaseCoordinate, monitor.OutcomeOK, monitor.ReasonNone)

	hp, err := n.agent.Open(creds, sess.Remote.Creds, att)
	if err != nil {
		return nil, monitor.PhasePunch, err
	}
	// Keep answering the peer's checks a little longer than this side
	// needs: it may still be validating when this side is done.
	defer time.AfterFunc(2*time.Second, hp.Close)

	att.Begin(monitor.PhaseSync)
	punch, err := waitPunch(ctx, sess)
	if err != nil {
		att.End(monitor.PhaseSync, monitor.OutcomeFail, Reason(err))
		return nil, monitor.PhaseSync, err
	}
	att.End(monitor.PhaseSync, monitor.OutcomeOK, monitor.ReasonNone)

	res, err := hp.Punch(ctx, sess.Remote.Candidates, holepunch.PunchConfig{
		Round: punch.Round, Start: punch.At.Add(punch.Delay),
		Plan: holepunch.PlanConfig{Budget: n.cfg.PunchBudget},
	})
	if err != nil {
		return nil, monitor.PhasePunch, err
	}

	att.Begin(monitor.PhaseHandshake)
	qc, err := n.cfg.Endpoint.Transport().Dial(ctx, net.UDPAddrFromAddrPort(res.Best.Remote),
		n.cfg.Identity.ClientTLS(peer, PeerALPN), n.cfg.peerQUIC())
	if err != nil {
		att.End(monitor.PhaseHandshake, monitor.OutcomeFail, Reason(err))
		return nil, monitor.PhaseHandshake, fmt.Errorf("dial %s: %w", res.Best.Remote, err)
	}
	att.End(monitor.PhaseHandshake, monitor.OutcomeOK, monitor.ReasonNone)
	return n.track(qc, peer, monitor.PathDirect, true), monitor.PhaseHandshake, nil
}

// introduce asks the registered bootstraps in turn to introduce this node
// to peer, and returns the first session. An unavailable or overloaded
// bootstrap, or one the peer is not registered with, passes the request on
// to the next.
func (n *Node) introduce(ctx context.Context, peer identity.PeerID, local bootstrap.Intro) (*bootstrap.Session, error) {
	clients := n.registered()
	if len(clients) == 0 {
		all := n.bootstrapClients()
		if len(all) == 0 {
			return nil, &ConnectError{Phase: monitor.PhaseCoordinate, Reason: monitor.ReasonNoBootstrap, Err: errors.New("no bootstraps configured")}
		}
		var last error
		for _, c := range all {
			if err := c.Status().LastError; err != nil {
				last = err
			}
		}
		return nil, &ConnectError{Phase: monitor.PhaseCoordinate, Reason: monitor.ReasonBootstrapUnreachable,
			Err: fmt.Errorf("not registered with any bootstrap (last error: %v)", last)}
	}
	var errs []error
	for i, c := range clients {
		sess, err := c.Connect(ctx, peer, local)
		if err == nil {
			return sess, nil
		}
		errs = append(errs, fmt.Errorf("bootstrap %s: %w", c.Label(), err))
		if ctx.Err() != nil {
			break
		}
		if i+1 < len(clients) {
			n.rec.Record(monitor.Event{Kind: monitor.KindRecovery, Detail: "alternate_bootstrap",
				Outcome: monitor.OutcomeOK, Reason: Reason(err), Bootstrap: clients[i+1].Label()})
		}
	}
	if len(errs) == 1 {
		return nil, errs[0]
	}
	return nil, errors.Join(errs...)
}

func waitPunch(ctx context.Context, sess *bootstrap.Session) (bootstrap.Punch, error) {
	select {
	case p := <-sess.Punches():
		return p, nil
	case <-sess.Done():
		if err := sess.Err(); err != nil {
			return bootstrap.Punch{}, err
		}
		return bootstrap.Punch{}, bootstrap.ErrUnavailable
	case <-ctx.Done():
		return bootstrap.Punch{}, fmt.Errorf("waiting for punch round: %w", context.Cause(ctx))
	}
}

// handleOffer is the responder side of an attempt: it answers the offer,
// punches when told, and waits for the initiator's QUIC connection.
func (n *Node) handleOffer(o *bootstrap.Offer) {
	ctx, cancel := context.WithTimeout(n.ctx, n.cfg.ConnectTimeout)
	defer cancel()
	att := monitor.StartAttempt(n.rec, o.From.String(), "responder", n.NAT().Class())
	att.SetNAT("", o.Remote.NAT.Class())
	incoming, release := n.expect(o.From)
	defer release()

	att.Begin(monitor.PhaseDiscover)
	cands := n.candidates()
	att.End(monitor.PhaseDiscover, monitor.OutcomeOK, monitor.ReasonNone)
	creds := holepunch.NewCreds()
	hp, err := n.agent.Open(creds, o.Remote.Creds, att)
	if err != nil {
		o.Decline(wire.CodeOverloaded)
		att.Finish(monitor.OutcomeFail, monitor.ReasonOverloaded, monitor.PathNone)
		return
	}
	defer time.AfterFunc(2*time.Second, hp.Close)
	att.Begin(monitor.PhaseCoordinate)
	sess, err := o.Accept(bootstrap.Intro{NAT: n.NAT(), Candidates: cands, Creds: creds})
	if err != nil {
		att.Finish(monitor.OutcomeFail, Reason(err), monitor.PathNone)
		return
	}
	defer sess.Close()
	att.End(monitor.PhaseCoordinate, monitor.OutcomeOK, monitor.ReasonNone)

	// Punch in the background: the initiator's connection may arrive
	// before this side's checks finish, or even when they fail.
	punchCtx, stopPunch := context.WithCancel(ctx)
	defer stopPunch()
	punchErr := make(chan error, 1)
	go func() {
		att.Begin(monitor.PhaseSync)
		p, err := waitPunch(punchCtx, sess)
		if err != nil {
			att.End(monitor.PhaseSync, monitor.OutcomeFail, Reason(err))
			punchErr <- err
			return
		}
		att.End(monitor.PhaseSync, monitor.OutcomeOK, monitor.ReasonNone)
		_, err = hp.Punch(punchCtx, sess.Remote.Candidates, holepunch.PunchConfig{
			Round: p.Round, Start: p.At.Add(p.Delay), Plan: holepunch.PlanConfig{Budget: n.cfg.PunchBudget}})
		punchErr <- err
	}()
	att.Begin(monitor.PhaseHandshake)
	var perr error
	punchDone := false
	select {
	case qc := <-incoming:
		stopPunch()
		att.End(monitor.PhaseHandshake, monitor.OutcomeOK, monitor.ReasonNone)
		att.Finish(monitor.OutcomeOK, monitor.ReasonNone, monitor.PathDirect)
		n.rec.Record(monitor.Event{Kind: monitor.KindLatency, Path: monitor.PathDirect,
			Duration: qc.ConnectionStats().SmoothedRTT, Attempt: att.ID()})
	case <-ctx.Done():
		select {
		case perr = <-punchErr:
			punchDone = true
		default:
		}
		reason := monitor.ReasonTimeout
		if perr != nil && !errors.Is(perr, context.Canceled) && !errors.Is(perr, context.DeadlineExceeded) {
			reason = Reason(perr)
		}
		if n.ctx.Err() != nil {
			reason = monitor.ReasonCanceled
		}
		att.Finish(monitor.OutcomeFail, reason, monitor.PathNone)
	}
	stopPunch()
	if !punchDone {
		<-punchErr
	}
}
