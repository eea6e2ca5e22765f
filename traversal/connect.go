package traversal

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"time"

	"github.com/failsafe-go/failsafe-go"
	"github.com/failsafe-go/failsafe-go/circuitbreaker"
	"github.com/failsafe-go/failsafe-go/timeout"
	"github.com/quic-go/quic-go"

	"github.com/antnode/antnode/bootstrap"
	"github.com/antnode/antnode/bootstrap/wire"
	"github.com/antnode/antnode/endpoint"
	"github.com/antnode/antnode/event"
	"github.com/antnode/antnode/holepunch"
	"github.com/antnode/antnode/identity"
	"github.com/antnode/antnode/migration"
	"github.com/antnode/antnode/nattype"
	"github.com/antnode/antnode/relay"
)

// ConnectError is a failed connection attempt: the phase it failed in, a
// reason from monitor's closed set, and the underlying error.
type ConnectError struct {
	Phase  event.Phase
	Reason event.Reason
	Err    error
	// Attempt is the failed attempt's ID (zero if it never started).
	Attempt event.AttemptID
}

func (e *ConnectError) Error() string {
	return fmt.Sprintf("connect failed in %s (%s): %v", e.Phase, e.Reason, e.Err)
}

func (e *ConnectError) Unwrap() error { return e.Err }

// Errors of connection attempts.
var (
	// ErrSelf: a node was asked to connect to itself.
	ErrSelf = errors.New("traversal: cannot connect to self")
	// ErrNoAlternateBootstrap: an introduction through another bootstrap
	// was wanted, and the node is registered with no other.
	ErrNoAlternateBootstrap = errors.New("traversal: no other registered bootstrap")
	// ErrNoDirectPath: the two NAT types leave no direct path (both map
	// per destination, or UDP is blocked); only a relay can connect them.
	ErrNoDirectPath = errors.New("traversal: no direct path can exist between these NATs")
)

// Reason maps an error of a connection attempt to an event.Reason: the
// one place that does, for every layer's errors. An error that knows its
// own reason (a refused bootstrap request, by its wire code; a refused
// service stream) gives it; sentinels and QUIC's errors are mapped here.
func Reason(err error) event.Reason {
	var ce *ConnectError
	switch {
	case err == nil:
		return event.ReasonNone
	case errors.As(err, &ce):
		return ce.Reason
	case errors.Is(err, identity.ErrKeyMismatch):
		return event.ReasonKeyMismatch
	case errors.Is(err, relay.ErrQuota):
		return event.ReasonRelayQuota
	case errors.Is(err, ErrNoConnection):
		return event.ReasonRefused
	case errors.Is(err, ErrNoRelay), errors.Is(err, relay.ErrRefused):
		// Whatever the bootstrap answered, the relay is what failed.
		return event.ReasonRelayUnavailable
	}
	if r, ok := event.ReasonOf(err); ok {
		return r
	}
	var idle *quic.IdleTimeoutError
	var hs *quic.HandshakeTimeoutError
	switch {
	case errors.Is(err, bootstrap.ErrUnavailable):
		return event.ReasonBootstrapUnreachable
	case errors.Is(err, bootstrap.ErrPeerCanceled):
		return event.ReasonCanceled
	case errors.Is(err, holepunch.ErrNoPath), errors.Is(err, holepunch.ErrBirthdayFailed):
		return event.ReasonPunchTimeout
	case errors.Is(err, holepunch.ErrNoCandidates):
		return event.ReasonNoCandidates
	case errors.Is(err, ErrTransferMismatch):
		return event.ReasonTransferMismatch
	case errors.Is(err, context.Canceled):
		return event.ReasonCanceled
	case errors.As(err, &hs):
		return event.ReasonHandshakeFailed
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, timeout.ErrExceeded), errors.As(err, &idle):
		return event.ReasonTimeout
	}
	return event.ReasonInternal
}

// Connect establishes an authenticated connection to peer through the
// node's bootstraps: it asks a registered bootstrap to introduce the two
// peers (trying the next bootstrap when one cannot), chooses a strategy
// from both NAT types, punches and validates a direct path, and returns
// the QUIC connection that one side dialled over it. If the node
// connected to peer directly within Config.RememberFor, a direct dial to
// the address of that path, resuming its TLS session, races the
// introduction, and the first authenticated connection wins (see
// reconnect.go).
func (n *Node) Connect(ctx context.Context, peer identity.PeerID) (*Conn, error) {
	if peer == n.ID() {
		return nil, &ConnectError{Phase: event.PhaseCoordinate, Reason: event.ReasonSelf, Err: ErrSelf}
	}
	ctx, cancel := context.WithTimeout(ctx, n.cfg.ConnectTimeout)
	defer cancel()
	att := event.StartAttempt(n.rec, peer.String(), "initiator", n.NAT().Class(), n.socketFamilies())
	n.move(peer, StateDiscovering, event.ReasonNone, att)
	g := n.degrade.begin(peer, n.cfg.MaxInflight, time.Now())
	defer n.degrade.end()
	c, phase, err := n.connectOrRecall(ctx, att, peer, g)
	if g.RelayOnly || g.Light {
		recovered(att, "degrade", g.Reason, "", err)
	}
	if err != nil {
		reason := Reason(err)
		n.move(peer, StateFailed, reason, att)
		att.Finish(event.OutcomeFail, reason, event.PathNone)
		return nil, &ConnectError{Phase: phase, Reason: reason, Err: err, Attempt: att.ID()}
	}
	n.move(peer, connectedState(c.Path()), event.ReasonNone, att)
	if g.RelayOnly && c.Path() == event.PathRelay {
		n.move(peer, StateDegraded, g.Reason, att) // kept on the relay on purpose
	}
	c.attempt = att.ID()
	fam := c.Family().String()
	att.SetFamily(fam)
	c.timeToConnect = att.Finish(event.OutcomeOK, event.ReasonNone, c.Path())
	n.rememberConn(c)
	n.rec.Record(event.Event{Kind: event.KindLatency, Path: c.Path(), Duration: c.RTT(), Attempt: att.ID(), Family: fam})
	return c, nil
}

func (n *Node) connect(ctx context.Context, att *event.Attempt, peer identity.PeerID, g degradation) (*Conn, event.Phase, error) {
	// A connection from peer may arrive (this side may be the one that
	// waits): listen for it from the start.
	creds := holepunch.NewCreds()
	incoming, release := n.expect(peer, creds.Ufrag)
	defer release()

	att.Begin(event.PhaseDiscover)
	cands := n.candidates()
	for _, c := range cands {
		att.Record(event.Event{Kind: event.KindCandidate, Addr: c.Addr, Detail: c.Kind.String(), Value: float64(c.Priority)})
	}
	att.End(event.PhaseDiscover, event.OutcomeOK, event.ReasonNone)

	att.Begin(event.PhaseCoordinate)
	n.move(peer, StateCoordinating, event.ReasonNone, att)
	local := n.NAT()
	intro := bootstrap.Intro{NAT: local, Candidates: cands, Creds: creds}
	if len(relayedOf(cands)) > 0 {
		// Announcing a warm relay: permit the target where its bootstrap
		// observes it while it answers.
		intro.OnTarget = n.warm.permit
	}
	sess, err := n.introduce(ctx, peer, intro, "")
	if err != nil {
		att.End(event.PhaseCoordinate, event.OutcomeFail, Reason(err))
		return nil, event.PhaseCoordinate, err
	}
	connected := false
	defer func() {
		if connected {
			sess.Close()
		} else {
			sess.Cancel() // the responder stops now, not at its timeout
		}
	}()
	if sess.Early != nil && !earlyEnough(sess.Remote) {
		// Early, but what the bootstrap holds of the peer does not settle
		// the roles: the strategy needs the peer's answer, and the start
		// its PunchNow.
		if err := sess.AwaitAnswer(ctx); err != nil {
			att.End(event.PhaseCoordinate, event.OutcomeFail, Reason(err))
			return nil, event.PhaseCoordinate, err
		}
		sess.Remote.Candidates = checkTargets(sess.Remote.Candidates)
	}
	att.SetNAT(local.Class(), sess.Remote.NAT.Class())
	att.End(event.PhaseCoordinate, event.OutcomeOK, event.ReasonNone)

	qc, path, phase, err := n.attemptVia(ctx, att, peer, g, sess, intro, incoming)
	if r := Reason(err); (r == event.ReasonRelayUnavailable || r == event.ReasonRelayQuota || r == event.ReasonBootstrapUnreachable) && ctx.Err() == nil {
		// The relay of the bootstrap that made the introduction cannot be
		// had (restarting, full), or the bootstrap went away in the middle
		// of it: introduce again through another bootstrap (and use its
		// relay).
		intro.Creds = holepunch.NewCreds() // the first session's checks may still be answered
		alt, aerr := n.introduce(ctx, peer, intro, sess.Bootstrap().Label())
		label := ""
		if aerr == nil {
			label = alt.Bootstrap().Label()
			sess.Cancel()
			sess = alt // the deferred close ends this one
			qc, path, phase, err = n.attemptVia(ctx, att, peer, g, sess, intro, incoming)
			aerr = err
		}
		if !errors.Is(aerr, ErrNoAlternateBootstrap) { // tried, not merely thought of
			recovered(att, "alternate_bootstrap", r, label, aerr)
		}
	}
	if err != nil {
		return nil, phase, err
	}
	connected = true
	if c := n.setPath(qc, path); c != nil { // accepted: already tracked
		return c, event.PhaseHandshake, nil
	}
	return n.track(qc, peer, path, true), event.PhaseHandshake, nil
}

// earlyEnough says whether an early introduction's view of the peer (what
// it registered) settles both sides' roles, so that the initiator can
// start without the peer's answer. Not when the bootstrap holds no
// classified NAT type of the peer (it registered before it classified;
// a peer whose UDP is blocked is classified so, its mapping unknown), nor
// when the peer is one that keeps a warm relay (UDP blocked, or mapping
// per destination, without a port mapping) and no relayed address came:
// the peer plans its part with its warm relay (PlanWarmRelay) and this
// side without it, and both would wait to be dialled. The answer carries
// the relayed address then (a registration made before the warm
// allocation was ready). It is a pure function.
func earlyEnough(peer bootstrap.Intro) bool {
	if !peer.NAT.Settled() {
		return false
	}
	side := RemoteSide(peer)
	mayKeepWarm := NeedsWarmRelay(WarmRelayAuto, RelayAuto, side.NAT, side.Mapped)
	return !mayKeepWarm || len(relayedOf(peer.Candidates)) > 0
}

// attemptVia chooses the strategy for an introduction and runs it: the
// direct attempt and, when it cannot or did not work, the relayed one.
func (n *Node) attemptVia(ctx context.Context, att *event.Attempt, peer identity.PeerID, g degradation, sess *bootstrap.Session,
	intro bootstrap.Intro, incoming <-chan *quic.Conn) (*quic.Conn, event.Path, event.Phase, error) {
	local, creds := intro.NAT, intro.Creds
	ls, rs := LocalSide(intro), RemoteSide(sess.Remote)
	raw := ChooseStrategyFor(ls, rs, true)
	strat := g.apply(raw, n.cfg.Relay)
	hp, err := n.agent.Open(creds, sess.Remote.Creds, att)
	if err != nil {
		return nil, event.PathNone, event.PhasePunch, err
	}
	hp.Prime(withoutRelayed(sess.Remote.Candidates), n.cfg.PrimeTTL)
	// Keep answering the peer's checks a little longer than this side
	// needs: it may still be validating when this side is done.
	defer time.AfterFunc(2*time.Second, hp.Close)
	plan := PlanRelayFor(ls, rs, true)
	plan.PeerOnRelay = !raw.Direct && n.cfg.Relay != RelayForce
	if wp, ok := PlanWarmRelay(local, sess.Remote.NAT, true, len(relayedOf(sess.Remote.Candidates)) > 0); ok && !raw.Direct && sharesFamily(ls, rs) {
		// Both strategies say no direct path: what connects on the leg
		// that dials the peer's warm relay came through a relay,
		// whichever relayed address (one the peer replaced since its
		// registration included).
		wp.PeerOnRelay = plan.PeerOnRelay
		plan = wp
	}
	return n.connectWith(ctx, att, peer, sess, hp, strat, plan, intro, incoming)
}

// connectWith runs the direct attempt and, when it cannot or did not
// work and the relay mode allows, the relayed one (intro: what this side
// announced in the introduction, with its check credentials).
func (n *Node) connectWith(ctx context.Context, att *event.Attempt, peer identity.PeerID, sess *bootstrap.Session,
	hp *holepunch.Session, strat Strategy, plan RelayPlan, intro bootstrap.Intro, incoming <-chan *quic.Conn) (*quic.Conn, event.Path, event.Phase, error) {
	noDirect := func() error {
		return &ConnectError{Phase: event.PhasePunch, Reason: strat.Reason,
			Err: fmt.Errorf("%w (local %s, peer %s)", ErrNoDirectPath, n.NAT().Class(), sess.Remote.NAT.Class())}
	}
	switch {
	case n.cfg.Relay == RelayForce:
		att.Record(event.Event{Kind: event.KindFallback, Detail: "direct->relay (forced)"})
		n.move(peer, StateRelaying, event.ReasonNone, att)
		return n.viaRelay(ctx, att, peer, sess, hp, plan, intro, incoming)
	case !strat.Direct && n.cfg.Relay == RelayNever:
		att.Record(event.Event{Kind: event.KindFallback, Reason: strat.Reason, Detail: "direct->none"})
		return nil, event.PathNone, event.PhasePunch, noDirect()
	case !strat.Direct:
		// No direct path can exist: straight to the relay.
		att.Record(event.Event{Kind: event.KindFallback, Reason: strat.Reason, Detail: "direct->relay"})
		n.move(peer, StateRelaying, strat.Reason, att)
		return n.viaRelay(ctx, att, peer, sess, hp, plan, intro, incoming)
	}
	n.move(peer, StatePunching, event.ReasonNone, att)
	qc, path, phase, err := n.establish(ctx, att, peer, sess, n.directLeg(sess, hp, strat), strat, incoming)
	if err == nil {
		n.degrade.directWorked(peer)
	} else if ctx.Err() == nil && !errors.Is(err, identity.ErrKeyMismatch) && !declined(err) {
		n.degrade.directFailed(peer, time.Now())
	}
	if err == nil || n.cfg.Relay == RelayNever || ctx.Err() != nil || errors.Is(err, identity.ErrKeyMismatch) || declined(err) {
		return qc, path, phase, err
	}
	// The direct attempt failed within its budget: fall back to the
	// relay with the time that is left.
	reason := Reason(err)
	att.Record(event.Event{Kind: event.KindFallback, Reason: reason, Detail: "direct->relay"})
	n.move(peer, StateRelaying, reason, att)
	qc, path, phase, err = n.viaRelay(ctx, att, peer, sess, hp, plan, intro, incoming)
	recovered(att, "relay_fallback", reason, "", err)
	return qc, path, phase, err
}

// recovered records a recovery action of att once its result is known:
// detail names the strategy, why what made it necessary, bootstrap the
// bootstrap it turned to (if any), err its result.
func recovered(att *event.Attempt, detail string, why event.Reason, bootstrap string, err error) {
	o := event.OutcomeOK
	if err != nil {
		o = event.OutcomeFail
	}
	att.Record(event.Event{Kind: event.KindRecovery, Detail: detail, Reason: why, Outcome: o, Bootstrap: bootstrap, Err: err})
}

// handleOffer is the responder side of an attempt: it answers the offer,
// punches when told, and waits for (or makes) the QUIC connection.
func (n *Node) handleOffer(o *bootstrap.Offer) {
	o.Remote.Candidates = checkTargets(o.Remote.Candidates)
	if o.Remote.Purpose != wire.PurposeConnect {
		n.answerRound(o)
		return
	}
	ctx, cancel := context.WithTimeout(n.ctx, n.cfg.ConnectTimeout)
	defer cancel()
	ctx, giveUp := context.WithCancelCause(ctx)
	defer giveUp(nil)
	local := n.NAT()
	att := event.StartAttempt(n.rec, o.From.String(), "responder", local.Class(), n.socketFamilies())
	att.SetNAT(local.Class(), o.Remote.NAT.Class())
	n.move(o.From, StateDiscovering, event.ReasonNone, att)
	qc, path, err := n.respond(ctx, giveUp, att, o, local)
	if err != nil {
		reason := Reason(err)
		if n.ctx.Err() != nil {
			reason = event.ReasonCanceled
		}
		n.move(o.From, StateFailed, reason, att)
		att.Finish(event.OutcomeFail, reason, event.PathNone)
		return
	}
	if n.setPath(qc, path) == nil { // dialled: not tracked yet
		n.track(qc, o.From, path, true)
	}
	n.move(o.From, connectedState(path), event.ReasonNone, att)
	fam := n.familyOf(qc).String()
	att.SetFamily(fam)
	att.Finish(event.OutcomeOK, event.ReasonNone, path)
	n.rec.Record(event.Event{Kind: event.KindLatency, Path: path, Duration: qc.ConnectionStats().SmoothedRTT, Attempt: att.ID(), Family: fam})
	if qc.Context().Err() != nil {
		// Over already (the dialler closed it at once): its end may have
		// come before this attempt's and left the machine to it.
		n.closedIfGone(o.From)
	}
}

// respond accepts the offer with this node's candidates and fresh check
// credentials, stops when the initiator gives up (giveUp), and then
// connects as the strategy says.
func (n *Node) respond(ctx context.Context, giveUp context.CancelCauseFunc, att *event.Attempt, o *bootstrap.Offer,
	local nattype.Type) (*quic.Conn, event.Path, error) {
	creds := holepunch.NewCreds()
	if o.Early != nil {
		creds = o.EarlyCreds // issued by the bootstrap: the initiator holds them already
	}
	incoming, release := n.expect(o.From, creds.Ufrag)
	defer release()
	g := n.degrade.begin(o.From, n.cfg.MaxInflight, time.Now())
	defer n.degrade.end()

	att.Begin(event.PhaseDiscover)
	cands := n.candidates()
	att.End(event.PhaseDiscover, event.OutcomeOK, event.ReasonNone)
	hp, err := n.agent.Open(creds, o.Remote.Creds, att)
	if err != nil {
		o.Decline(wire.CodeOverloaded)
		return nil, event.PathNone, &ConnectError{Phase: event.PhaseDiscover, Reason: event.ReasonOverloaded, Err: err}
	}
	defer time.AfterFunc(2*time.Second, hp.Close)
	att.Begin(event.PhaseCoordinate)
	n.move(o.From, StateCoordinating, event.ReasonNone, att)
	sess, err := o.Accept(bootstrap.Intro{NAT: local, Candidates: cands, Creds: creds})
	if err != nil {
		return nil, event.PathNone, err
	}
	defer sess.Close()
	// The initiator gave up (its attempt failed or was cancelled): stop
	// punching and waiting now.
	go func() {
		select {
		case <-sess.Done():
			if errors.Is(sess.Err(), bootstrap.ErrPeerCanceled) {
				giveUp(sess.Err())
			}
		case <-ctx.Done():
		}
	}()
	att.End(event.PhaseCoordinate, event.OutcomeOK, event.ReasonNone)
	hp.Prime(withoutRelayed(o.Remote.Candidates), n.cfg.PrimeTTL)
	return n.respondWith(ctx, att, o, sess, hp, incoming, g, bootstrap.Intro{NAT: local, Candidates: cands, Creds: creds})
}

// respondWith runs the responder's strategy: direct (checking the
// initiator's relayed address if it falls back to the relay) or straight
// to the relay.
func (n *Node) respondWith(ctx context.Context, att *event.Attempt, o *bootstrap.Offer, sess *bootstrap.Session,
	hp *holepunch.Session, incoming <-chan *quic.Conn, g degradation, intro bootstrap.Intro) (*quic.Conn, event.Path, error) {
	local := intro.NAT
	ls, rs := LocalSide(intro), RemoteSide(o.Remote)
	strat := ChooseStrategyFor(ls, rs, false)
	if g.Light {
		// Under load: slower checks (the roles stay as the initiator
		// expects them).
		strat.Slow = true
	}
	var qc *quic.Conn
	var path event.Path
	var err error
	switch {
	case !strat.Direct && n.cfg.Relay == RelayNever:
		att.Record(event.Event{Kind: event.KindFallback, Reason: strat.Reason, Detail: "direct->none"})
		return nil, event.PathNone, &ConnectError{Phase: event.PhasePunch, Reason: strat.Reason, Err: ErrNoDirectPath}
	case !strat.Direct:
		att.Record(event.Event{Kind: event.KindFallback, Reason: strat.Reason, Detail: "direct->relay"})
		n.move(o.From, StateRelaying, strat.Reason, att)
		plan := PlanRelayFor(ls, rs, false)
		plan.PeerOnRelay = true // the initiator's strategy says so too
		if wp, ok := PlanWarmRelay(local, o.Remote.NAT, false, len(relayedOf(intro.Candidates)) > 0); ok && sharesFamily(ls, rs) {
			plan = wp
			// The initiator dials the warm relayed address it was
			// given, which a refresh may have replaced since.
			n.warm.permitReplaced(candidateAddrs(o.Remote.Candidates))
		}
		qc, path, _, err = n.viaRelay(ctx, att, o.From, sess, hp, plan, intro, incoming)
	default:
		n.move(o.From, StatePunching, event.ReasonNone, att)
		// Direct; if the initiator falls back to the relay, its relayed
		// address arrives on the session and this side checks it.
		qc, path, _, err = n.establish(ctx, att, o.From, sess, n.directLeg(sess, hp, strat), strat, incoming)
	}
	if g.Light {
		recovered(att, "degrade", g.Reason, "", err)
	}
	return qc, path, err
}

func connectedState(p event.Path) State {
	if p == event.PathRelay {
		return StateConnectedRelay
	}
	return StateConnectedDirect
}

// dialResult is one QUIC dial's outcome.
type dialResult struct {
	qc   *quic.Conn
	ep   *endpoint.Endpoint // non-nil when the dial used its own socket
	addr netip.AddrPort
	err  error
}

// leg is where an attempt's checks and dials leave from: the node's
// socket, or a relay allocation.
type leg struct {
	ep    *endpoint.Endpoint
	hp    *holepunch.Session
	path  event.Path
	alloc *relay.Allocation // relay legs: new targets need permissions
	// start, if set, is the first round, begun at once instead of
	// waiting for the bootstrap's PunchNow (relay legs).
	start *bootstrap.Punch
	// targets, if not nil, are the first round's targets instead of the
	// peer's candidates (empty: wait for a relayed address).
	targets []wire.Candidate
	// relayed are the peer's warm relayed addresses from the
	// introduction: connections from them are on the relay path, and a
	// relay leg that dials dials them (relay to relay) at once.
	relayed []netip.AddrPort
	// early: start is the first round of an early introduction (see
	// wire.ConnectEarly), not a relay leg's own: the bootstrap's PunchNow
	// of that round, sent for sides that wait for one, is not a new round.
	early bool
	// dialRelayed: this leg (on the node's socket) dials the peer's
	// relayed addresses, those of the introduction and those announced
	// later (PlanWarmRelay's initiator). No other leg on the node's
	// socket does: the peer dials from its relay there.
	dialRelayed bool
}

// directLeg is the leg on the node's socket for sess under strat. On an
// early introduction it starts at once, as the peer does: the bootstrap
// sent both sides each other's candidates at the same moment. The
// birthday search still waits for the bootstrap's PunchNow: its
// thousands of probes want the peer's NAT opened first, and a
// synchronised start.
func (n *Node) directLeg(sess *bootstrap.Session, hp *holepunch.Session, strat Strategy) leg {
	lg := leg{ep: n.cfg.Endpoint, hp: hp, path: event.PathDirect}
	if sess.Early != nil && strat.Birthday == BirthdayNone {
		lg.start, lg.early = sess.Early, true
	}
	return lg
}

// declined reports whether err ends an attempt because the peer refused
// the introduction (after an early start): no relay or other bootstrap
// changes that.
func declined(err error) bool {
	var re *bootstrap.RequestError
	return errors.As(err, &re)
}

// nominate marks the one connection a dialler keeps: when several
// dials succeed, the dialler keeps the first, nominates it on a
// unidirectional stream and closes the others; the accepting side takes the
// nominated one. The nomination travels with the dialler's handshake
// completion, so it costs no round trip.
func nominate(qc *quic.Conn, path event.Path) error {
	return migration.SendNotice(qc, migration.NoticeNominate, byte(path))
}

// Application error codes of peer connections.
const (
	codeClosed     quic.ApplicationErrorCode = 0 // closed after use
	codeSuperseded quic.ApplicationErrorCode = 2 // a dial the dialler does not keep
)

// awaitNomination delivers qc to nominated if the dialler nominates it
// before ctx ends or qc closes. The nomination arrives as a notice (see
// migration.Track's OnNominate), read by the connection's notice loop. A connection the
// dialler closed after use (not as superseded) was the one it kept, even
// if its nomination did not make it.
func (n *Node) awaitNomination(ctx context.Context, qc *quic.Conn, nominated chan<- *quic.Conn) {
	c := n.connOf(qc)
	// Accepted connections are tracked before they are handed out, and no
	// longer once they have ended: an untracked one is over already.
	var nominatedC <-chan struct{}
	if c != nil {
		nominatedC = c.nominated
	}
	select {
	case <-nominatedC:
	case <-ctx.Done():
		return
	case <-qc.Context().Done():
		select {
		case <-nominatedC: // read just before the close
		default:
			if !closedAfterUse(qc) {
				return
			}
		}
	}
	select {
	case nominated <- qc:
	case <-ctx.Done():
	}
}

// closedAfterUse reports whether the peer closed qc as done with it.
func closedAfterUse(qc *quic.Conn) bool {
	var ae *quic.ApplicationError
	return errors.As(context.Cause(qc.Context()), &ae) && ae.Remote && ae.ErrorCode == codeClosed
}

func addrPortOf(a net.Addr) netip.AddrPort {
	ap, err := netip.ParseAddrPort(a.String())
	if err != nil {
		return netip.AddrPort{}
	}
	return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
}

// candidateAddrs returns the addresses of candidates (for permissions).
func candidateAddrs(cs []wire.Candidate) []netip.AddrPort {
	out := make([]netip.AddrPort, 0, len(cs))
	for _, c := range cs {
		out = append(out, c.Addr)
	}
	return out
}

// reflexive returns the peer's best server-reflexive candidate: its
// mapping as a bootstrap observed it.
// Only an address a bootstrap observed qualifies: the birthday search
// sends thousands of probes to ports of its IP, which must be the peer's
// own NAT, never an address the peer merely announced.
func reflexive(in bootstrap.Intro, serves func(netip.Addr) bool) (netip.AddrPort, bool) {
	var obs []wire.Candidate
	for _, c := range observedOnly(in.Candidates) {
		if serves(c.Addr.Addr()) {
			obs = append(obs, c)
		}
	}
	// The address a bootstrap observed, IPv4 first: a dual-stack peer's
	// mapping (and the symmetric NAT the search is for) is its IPv4 one.
	for _, fam := range []holepunch.Family{holepunch.IPv4, holepunch.IPv6} {
		for _, c := range obs {
			if c.Origin == wire.OriginObserved && holepunch.FamilyOf(c.Addr.Addr()) == fam {
				return c.Addr, true
			}
		}
	}
	for _, c := range holepunch.Targets(obs, netip.Addr{}) {
		if c.Kind == wire.KindServerReflexive {
			return c.Addr, true
		}
	}
	return netip.AddrPort{}, false
}

// reflexivePorts returns the ports at which the peer's NAT mapped it on
// addr, as the bootstraps observed them: what port prediction starts from.
func reflexivePorts(in bootstrap.Intro, addr netip.Addr) []uint16 {
	var out []uint16
	for _, c := range observedOnly(in.Candidates) {
		if c.Addr.Addr() == addr {
			out = append(out, c.Addr.Port())
		}
	}
	return out
}

// sprayAddr is the local address the birthday search towards target
// binds its sockets to: the node's, or on a dual-stack socket the
// unspecified address of target's family.
func (n *Node) sprayAddr(target netip.Addr) netip.Addr {
	if !n.cfg.Endpoint.DualStack() {
		return n.cfg.Endpoint.LocalAddr().Addr()
	}
	if holepunch.FamilyOf(target) == holepunch.IPv6 {
		return netip.IPv6Unspecified()
	}
	return netip.IPv4Unspecified()
}

func sleepUntil(ctx context.Context, t time.Time) {
	d := time.Until(t)
	if d <= 0 {
		return
	}
	tm := time.NewTimer(d)
	defer tm.Stop()
	select {
	case <-tm.C:
	case <-ctx.Done():
	}
}

// introduce asks the registered bootstraps in turn to introduce this node
// to peer (first those registered on demand for it: the peer's own), and
// returns the first session. An unavailable or overloaded
// bootstrap, or one the peer is not registered with, passes the request on
// to the next.
func (n *Node) introduce(ctx context.Context, peer identity.PeerID, local bootstrap.Intro, skip string) (*bootstrap.Session, error) {
	clients := n.forPeerFirst(n.registered(), peer)
	if skip != "" {
		clients = slices.DeleteFunc(clients, func(c *bootstrap.Client) bool { return c.Label() == skip })
		if len(clients) == 0 {
			return nil, fmt.Errorf("%w: %w", bootstrap.ErrUnavailable, ErrNoAlternateBootstrap)
		}
	}
	if len(clients) == 0 {
		all := n.bootstrapClients()
		if len(all) == 0 {
			return nil, &ConnectError{Phase: event.PhaseCoordinate, Reason: event.ReasonNoBootstrap, Err: errors.New("no bootstraps configured")}
		}
		var last error
		for _, c := range all {
			if err := c.Status().LastError; err != nil {
				last = err
			}
		}
		return nil, &ConnectError{Phase: event.PhaseCoordinate, Reason: event.ReasonBootstrapUnreachable,
			Err: fmt.Errorf("not registered with any bootstrap (last error: %w)", last)}
	}
	var errs []error
	for i, c := range clients {
		var made *bootstrap.Session
		sess, err := failsafe.With[*bootstrap.Session](n.breakers[c.Label()]).WithContext(ctx).
			Get(func() (*bootstrap.Session, error) {
				s, err := c.Connect(ctx, peer, local)
				made = s
				return s, err
			})
		if err == nil {
			sess.Remote.Candidates = checkTargets(sess.Remote.Candidates)
		}
		if i > 0 { // the alternate bootstrap, once its result is known
			o := event.OutcomeOK
			if err != nil {
				o = event.OutcomeFail
			}
			n.rec.Record(event.Event{Kind: event.KindRecovery, Detail: "alternate_bootstrap", Outcome: o,
				Reason: Reason(errs[len(errs)-1]), Bootstrap: c.Label(), Err: err})
		}
		if err == nil {
			return sess, nil
		}
		if made != nil {
			// Introduced just as ctx ended (failsafe then reports the
			// context's error): the other side must hear of it.
			made.Cancel()
		}
		if errors.Is(err, circuitbreaker.ErrOpen) {
			err = fmt.Errorf("%w: circuit breaker open", bootstrap.ErrUnavailable)
		}
		errs = append(errs, fmt.Errorf("bootstrap %s: %w", c.Label(), err))
		if ctx.Err() != nil {
			break
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
