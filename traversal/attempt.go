package traversal

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"time"

	"github.com/failsafe-go/failsafe-go/timeout"
	"github.com/quic-go/quic-go"

	"github.com/antnode/antnode/bootstrap"
	"github.com/antnode/antnode/bootstrap/wire"
	"github.com/antnode/antnode/endpoint"
	"github.com/antnode/antnode/event"
	"github.com/antnode/antnode/holepunch"
	"github.com/antnode/antnode/identity"
)

// attempt is one run of a session's punch rounds on a leg (the node's
// socket or a relay allocation), the QUIC dials they lead to, and the
// connection that wins: dialled by this side (speculatively to the peer's
// candidates, to every pair a check validates, to every address the
// peer's checks come from, or from the birthday search's winning socket)
// or accepted from the peer. A new punch round supersedes the previous
// one; a relayed address the peer announces becomes a target.
//
// Its state is fields, changed only on the goroutine of run; each event
// of run's loop has a method of its own. The goroutines it starts (one
// per dial, one per round) report over its channels; close stops the
// round and closes what completes after the winner.
type attempt struct {
	n        *Node
	ctx      context.Context
	att      *event.Attempt
	peer     identity.PeerID
	sess     *bootstrap.Session
	lg       leg
	strat    Strategy
	incoming <-chan *quic.Conn
	to       PhaseTimeouts

	results   chan dialResult
	nominated chan *quic.Conn
	validated chan holepunch.Pair
	peerAt    chan netip.AddrPort
	sprayed   chan sprayWin
	punchDone chan roundResult

	pending   int                    // dials not yet reported
	dialed    map[netip.AddrPort]int // dials made, by address
	relayed   map[netip.AddrPort]bool
	targets   []wire.Candidate // of every round: the peer's candidates, plus its relayed addresses
	punch     *bootstrap.Punch // the first round
	roundID   int
	rounds    int
	rechecks  int // rounds of checks to the peer's relayed address after the first
	punching  bool
	punchErr  error
	stopRound context.CancelFunc
	syncLate  bool // punched without the bootstrap's PunchNow
}

// sprayWin is the birthday search's winning socket and the target it
// reached.
type sprayWin struct {
	ep     *endpoint.Endpoint
	target netip.AddrPort
}

// roundResult is how a punch round ended.
type roundResult struct {
	id  int
	err error
}

// attemptEnd is what run returns: the connection and its path, or the
// phase that failed and why.
type attemptEnd struct {
	qc    *quic.Conn
	path  event.Path
	phase event.Phase
	err   error
}

// establish runs the punch rounds of a session on leg under strategy strat
// and returns the first authenticated QUIC connection (see attempt).
func (n *Node) establish(ctx context.Context, att *event.Attempt, peer identity.PeerID, sess *bootstrap.Session,
	lg leg, strat Strategy, incoming <-chan *quic.Conn) (*quic.Conn, event.Path, event.Phase, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	a := &attempt{n: n, ctx: ctx, att: att, peer: peer, sess: sess, lg: lg, strat: strat, incoming: incoming,
		to: n.phaseTimeouts(sess), results: make(chan dialResult, 8), nominated: make(chan *quic.Conn, 1),
		validated: make(chan holepunch.Pair, 16), peerAt: make(chan netip.AddrPort, 16),
		sprayed: make(chan sprayWin, 1), punchDone: make(chan roundResult, 1),
		dialed: map[netip.AddrPort]int{}, relayed: map[netip.AddrPort]bool{}, stopRound: func() {}}
	defer a.close()
	e := a.run()
	return e.qc, e.path, e.phase, e.err
}

// close stops the round, closes a spray's socket that won after the end,
// and, in the background, what completes after the winner and the
// sockets of failed dials.
func (a *attempt) close() {
	a.stopRound()
	select {
	case w := <-a.sprayed:
		w.ep.Close()
	default:
	}
	if a.pending == 0 {
		return
	}
	left, results := a.pending, a.results
	go func() {
		for range left {
			r := <-results
			if r.err == nil {
				r.qc.CloseWithError(codeSuperseded, "superseded")
			}
			if r.ep != nil {
				r.ep.Close()
			}
		}
	}()
}

// dial dials the peer at addr from ep; own says the dial owns ep (the
// birthday search's socket).
func (a *attempt) dial(ep *endpoint.Endpoint, addr netip.AddrPort, own bool) {
	a.dialAfter(ep, addr, own, 0)
}

// dialAfter is dial, started delay from now (the less preferred family
// of a dual-stack race).
func (a *attempt) dialAfter(ep *endpoint.Endpoint, addr netip.AddrPort, own bool, delay time.Duration) {
	a.pending++
	a.dialed[addr]++
	a.n.log.Debug("traversal: dial", "attempt", a.att.ID().String(), "addr", a.n.san(addr), "relay_leg", a.lg.alloc != nil)
	go func() {
		if delay > 0 {
			t := time.NewTimer(delay)
			select {
			case <-t.C:
			case <-a.n.ctx.Done():
				t.Stop()
			}
		}
		// Not the attempt's context: a dial cut off by the end of the
		// attempt mid-handshake would leave the other side a connection
		// it completed and nobody closes (until its idle timeout).
		// Bounded by its handshake timeout, a late dial completes and is
		// closed as superseded (close).
		qc, err := a.n.dialPeer(a.n.ctx, ep, addr, a.peer, a.sess.Remote.Creds.Ufrag, a.to.Handshake)
		r := dialResult{qc: qc, addr: addr, err: err}
		if own {
			r.ep = ep
		}
		a.results <- r
	}()
}

// fail ends the attempt in phase with err.
func (a *attempt) fail(phase event.Phase, err error) *attemptEnd {
	if a.syncLate {
		recovered(a.att, "sync_timeout", event.ReasonTimeout, "", err)
	}
	a.att.End(event.PhaseHandshake, event.OutcomeFail, Reason(err))
	return &attemptEnd{path: event.PathNone, phase: phase, err: err}
}

// won ends the attempt with qc.
func (a *attempt) won(qc *quic.Conn) *attemptEnd {
	if a.syncLate {
		recovered(a.att, "sync_timeout", event.ReasonTimeout, "", nil)
	}
	a.att.End(event.PhaseHandshake, event.OutcomeOK, event.ReasonNone)
	return &attemptEnd{qc: qc, path: a.pathOf(qc), phase: event.PhaseHandshake}
}

// pathOf decides the path of the winning connection from what this side
// knows for certain: it dialled or accepted on its own relay leg, the
// remote address is one the peer announced as relayed, or the dialler
// nominated the connection as dialled through its relay (however late the
// peer's relayed candidate would have arrived).
func (a *attempt) pathOf(qc *quic.Conn) event.Path {
	relayed := a.lg.path == event.PathRelay || a.relayed[addrPortOf(qc.RemoteAddr())]
	if c := a.n.connOf(qc); c != nil && c.Path() == event.PathRelay {
		relayed = true // an accepted connection the dialler nominated as relayed
	}
	if relayed {
		return event.PathRelay
	}
	return event.PathDirect
}

// sync waits for the bootstrap's PunchNow (unless the leg starts at once)
// and sets the first round.
func (a *attempt) sync() error {
	a.punch = a.lg.start
	if a.punch != nil {
		return nil
	}
	a.att.Begin(event.PhaseSync)
	p, err := waitPunchWithin(a.ctx, a.sess, a.to.Sync)
	switch {
	case err == nil:
		a.att.End(event.PhaseSync, event.OutcomeOK, event.ReasonNone)
	case a.ctx.Err() == nil && errors.Is(err, timeout.ErrExceeded):
		// The bootstrap's PunchNow is late (lost with the bootstrap?):
		// punch now rather than not at all.
		a.att.End(event.PhaseSync, event.OutcomeFail, event.ReasonTimeout)
		a.syncLate = true // a recovery, recorded with the attempt's result
		p = bootstrap.Punch{Round: 1, At: time.Now()}
	default:
		a.att.End(event.PhaseSync, event.OutcomeFail, Reason(err))
		return err
	}
	a.punch = &p
	return nil
}

// startRound supersedes the running round with a new one.
func (a *attempt) startRound(p bootstrap.Punch, targets []wire.Candidate) {
	a.stopRound()
	rctx, cancel := context.WithCancel(a.ctx)
	a.stopRound = cancel
	a.roundID++
	go a.runRound(rctx, a.roundID, p, targets)
}

// runRound runs one round (checks, or the birthday search) on its own
// goroutine and reports how it ended.
func (a *attempt) runRound(rctx context.Context, id int, p bootstrap.Punch, targets []wire.Candidate) {
	start := p.At.Add(p.Delay)
	var err error
	birthday := a.strat.Birthday
	if slices.ContainsFunc(targets, func(c wire.Candidate) bool { return c.Kind == wire.KindRelay }) {
		// The peer went to a relay (its attempt was degraded, or its
		// search failed): its relayed address wants plain checks, which
		// open this side's NAT to it, not a search.
		birthday = BirthdayNone
	}
	switch birthday {
	case BirthdaySpray:
		err = a.spray(rctx, start)
	case BirthdayScan:
		err = a.scan(rctx, start)
	default:
		err = a.checks(rctx, p, start, targets)
	}
	select {
	case a.punchDone <- roundResult{id: id, err: err}:
	case <-a.ctx.Done():
	}
}

// spray is the symmetric side's birthday search: many sockets towards the
// peer's reflexive address; the winning socket gets its own endpoint (and
// QUIC transport), which the connection owns from the dial on.
func (a *attempt) spray(rctx context.Context, start time.Time) error {
	target, ok := reflexive(a.sess.Remote, a.lg.ep.Serves)
	if !ok {
		return holepunch.ErrNoCandidates
	}
	sleepUntil(rctx, start)
	conn, _, err := a.lg.hp.Spray(rctx, a.n.cfg.Listen, a.n.sprayAddr(target.Addr()), target, a.n.cfg.Birthday)
	if err != nil {
		return err
	}
	ep, err := endpoint.New(endpoint.Config{Conn: conn, Logger: a.n.log})
	if err != nil {
		conn.Close()
		return err
	}
	select {
	case a.sprayed <- sprayWin{ep: ep, target: target}:
	default:
		ep.Close()
	}
	return nil
}

// scan is the other side's birthday search: checks to many ports of the
// symmetric side's address, predicted ones first.
func (a *attempt) scan(rctx context.Context, start time.Time) error {
	target, ok := reflexive(a.sess.Remote, a.lg.ep.Serves)
	if !ok {
		return holepunch.ErrNoCandidates
	}
	sleepUntil(rctx, start)
	_, err := a.lg.hp.Scan(rctx, target.Addr(), reflexivePorts(a.sess.Remote, target.Addr()), a.n.cfg.Birthday)
	return err
}

// checks is an ordinary round: connectivity checks to the targets.
func (a *attempt) checks(rctx context.Context, p bootstrap.Punch, start time.Time, targets []wire.Candidate) error {
	_, err := a.lg.hp.Punch(rctx, targets, holepunch.PunchConfig{
		Round: p.Round, Start: start, Plan: punchPlan(a.to, a.strat), Passive: a.strat.Passive,
		OnValidated: func(pr holepunch.Pair) {
			select {
			case a.validated <- pr:
			default:
			}
		},
		OnPeerCheck: func(from netip.AddrPort) {
			select {
			case a.peerAt <- from:
			default:
			}
		},
	})
	return err
}

// run syncs, starts the first round (and the speculative dials), and
// handles the attempt's events until one ends it.
func (a *attempt) run() attemptEnd {
	if err := a.sync(); err != nil {
		return attemptEnd{path: event.PathNone, phase: event.PhaseSync, err: err}
	}
	start := a.punch.At.Add(a.punch.Delay)
	a.att.Begin(event.PhaseHandshake)
	if a.lg.alloc != nil {
		// Not waited for: the first check or dial to each address asks
		// for its own permission (see relay.Allocation.PermitAsync).
		a.lg.alloc.PermitAsync(candidateAddrs(a.sess.Remote.Candidates)...)
	}
	a.targets = withoutRelayed(a.sess.Remote.Candidates)
	if a.lg.targets != nil {
		a.targets = a.lg.targets
	}
	a.startRound(*a.punch, a.targets)
	if len(a.lg.relayed) > 0 && a.strat.Dial && a.lg.dialRelayed {
		sleepUntil(a.ctx, start) // the peer's permission first (warmPermitWait)
	}
	for _, r := range a.lg.relayed {
		a.relayed[r] = true
		if a.strat.Dial && (a.lg.alloc != nil || a.lg.dialRelayed) {
			// The peer's warm relay: relay to relay (permitted above with
			// the peer's candidates), or from the node's socket.
			a.dial(a.lg.ep, r, false)
		}
	}
	if a.strat.Speculative && a.strat.Birthday == BirthdayNone {
		sleepUntil(a.ctx, start)
		// Only to what a bootstrap observed: a dial is a 1200-byte Initial
		// and its retransmissions, which an announced address gets only
		// once a check there was answered (onValidated).
		targets := holepunch.Targets(observedOnly(a.sess.Remote.Candidates), holepunch.TargetFamily(a.lg.ep))
		targets = targets[:min(len(targets), a.n.cfg.SpeculativeDials)]
		for _, t := range targets {
			a.dialAfter(a.lg.ep, t.Addr, false, holepunch.FamilyDelay(t.Addr.Addr(), targets))
		}
	}
	a.punching, a.rounds = true, 1
	sessDone, answered := a.sess.Done(), a.sess.Answered()
	for {
		var end *attemptEnd
		select {
		case <-sessDone:
			sessDone = nil
			end = a.onSessionDone()
		case <-a.ctx.Done():
			err := context.Cause(a.ctx)
			if a.punchErr != nil {
				err = fmt.Errorf("%w (punch: %v)", err, a.punchErr) //nolint:errorlint // the reason is the deadline, not the punch
			}
			end = a.fail(event.PhasePunch, err)
		case qc := <-a.incoming:
			// The dialler may have several dials succeed; it keeps one
			// and nominates it. Wait for the nomination before taking it.
			go a.n.awaitNomination(a.ctx, qc, a.nominated)
		case qc := <-a.nominated:
			end = a.won(qc)
		case w := <-a.sprayed:
			a.dial(w.ep, w.target, true)
		case r := <-a.sess.Relays():
			a.onRelayed(r)
		case from := <-a.peerAt:
			a.onPeerCheck(from)
		case p := <-a.validated:
			a.onValidated(p)
		case r := <-a.results:
			end = a.onDial(r)
		case rr := <-a.punchDone:
			end = a.onRound(rr)
		case next := <-a.sess.Punches():
			// The other side asked for a new round: it supersedes ours
			// (unless it is the early round this side started already).
			if !a.lg.early || next.Round > a.punch.Round {
				a.punching = true
				a.startRound(next, a.targets)
			}
		case <-answered:
			answered = nil
			a.onAnswer(a.sess.Answer())
		}
		if end != nil {
			return *end
		}
	}
}

// maxRelayed bounds the relayed addresses one attempt takes from the peer
// (each starts a round): its own allocation and one on another relay.
const maxRelayed = 2

// maxRelayRechecks bounds the rounds of checks a side that accepts sends
// to the peer's relayed address after its first round went unanswered.
// The peer's relay drops those checks until the peer has permitted this
// side's address, and under loss that permission can come seconds after
// the relayed address did (a lost CreatePermission is retransmitted with
// a doubling timeout); only this side's checks can open its NAT towards
// the relay, so it keeps checking, a round (about 1.5 s) at a time, while
// the attempt lasts.
const maxRelayRechecks = 8

// onSessionDone: the introduction's bootstrap went away. With nothing to
// check (a relay leg still waiting for the peer's relayed address, which
// only the session can bring), waiting is hopeless: give up now, so the
// attempt can be made again through another bootstrap.
func (a *attempt) onSessionDone() *attemptEnd {
	if declined(a.sess.Err()) {
		// The peer refused an early introduction: it will not connect.
		return a.fail(event.PhaseCoordinate, a.sess.Err())
	}
	if len(a.targets) == 0 && len(a.relayed) == 0 && a.pending == 0 && !errors.Is(a.sess.Err(), bootstrap.ErrPeerCanceled) {
		return a.fail(event.PhasePunch, fmt.Errorf("%w: the introduction ended before the peer's relayed address came", bootstrap.ErrUnavailable))
	}
	return nil
}

// onRelayed: the peer announced a relayed address.
func (a *attempt) onRelayed(r netip.AddrPort) {
	if !a.relayed[r] && len(a.relayed) >= maxRelayed {
		return // a peer announcing relayed address after relayed address
	}
	if a.relayed[r] {
		return // known already (the peer's warm relay, from the introduction)
	}
	a.relayed[r] = true
	a.att.Record(event.Event{Kind: event.KindCandidate, Addr: r, Detail: wire.KindRelay.String()})
	cand := relayCandidate(r)
	switch {
	case a.lg.alloc != nil && a.strat.Dial:
		// Relay to relay (both sides' UDP is blocked).
		a.lg.alloc.PermitAsync(r)
		a.dial(a.lg.ep, r, false)
	case a.lg.alloc != nil:
		a.lg.alloc.PermitAsync(r)
	default:
		// The peer allocated and will dial from there (or accepts there,
		// under PlanWarmRelay: its warm allocation was replaced since the
		// introduction): check its relayed address, which opens this
		// side's NAT to it, and dial it if this leg dials relayed
		// addresses.
		if a.lg.dialRelayed {
			a.dial(a.lg.ep, r, false)
		}
		a.targets = append(slices.Clone(a.targets), cand)
		a.punching = true
		a.startRound(bootstrap.Punch{Round: a.punch.Round, At: time.Now()}, a.targets)
	}
}

// onAnswer: the peer answered an early introduction (this side started
// on what it had registered). Candidates its registration did not have
// extend the checks of a direct leg with a new round; a relayed address
// it did not have is taken by a relay leg as if announced (a direct leg
// leaves relayed addresses to the relay leg, which sees the answer too).
// A leg with targets of its own (a relay leg) keeps them.
func (a *attempt) onAnswer(in bootstrap.Intro) {
	cands := checkTargets(in.Candidates)
	registered := relayedOf(a.sess.Remote.Candidates)
	if a.lg.path == event.PathRelay || a.lg.dialRelayed || a.lg.targets != nil {
		for _, r := range relayedOf(cands) {
			if !slices.Contains(registered, r) {
				a.onRelayed(r)
			}
		}
	}
	if a.lg.targets != nil || a.strat.Birthday != BirthdayNone {
		return
	}
	fresh := lateTargets(a.targets, cands)
	if len(fresh) == 0 {
		return
	}
	for _, c := range fresh {
		a.att.Record(event.Event{Kind: event.KindCandidate, Addr: c.Addr, Detail: c.Kind.String(), Value: float64(c.Priority)})
	}
	a.targets = append(slices.Clone(a.targets), fresh...)
	a.punching = true
	a.startRound(bootstrap.Punch{Round: a.punch.Round, At: time.Now()}, a.targets)
}

// lateTargets returns the candidates of an answer that are new check
// targets: not relayed (those are dialled or checked as relayed
// addresses) and at no address of targets.
func lateTargets(targets, answered []wire.Candidate) []wire.Candidate {
	var out []wire.Candidate
	for _, c := range withoutRelayed(answered) {
		if !slices.ContainsFunc(targets, func(t wire.Candidate) bool { return t.Addr == c.Addr }) &&
			!slices.ContainsFunc(out, func(t wire.Candidate) bool { return t.Addr == c.Addr }) {
			out = append(out, c)
		}
	}
	return out
}

// onPeerCheck: an authenticated check came from an address this side has
// not dialled yet (a peer-reflexive one, behind a NAT that maps per
// destination, or the peer's mapping towards the relay): dial it now
// (again, if a speculative dial there may have lost its Initial to a NAT
// that was not open yet).
func (a *attempt) onPeerCheck(from netip.AddrPort) {
	if a.strat.Dial && a.dialed[from] < 2 {
		a.dial(a.lg.ep, from, false)
	}
}

// onValidated: a check was answered. A speculative dial to its address
// may have lost its Initial to a NAT that was not open yet (and waits for
// a retransmission): dial again now that the path is known.
func (a *attempt) onValidated(p holepunch.Pair) {
	if a.strat.Dial && a.dialed[p.Remote] < 2 {
		a.dial(a.lg.ep, p.Remote, false)
	}
}

// onDial: a dial ended. The first that succeeds and is nominated wins.
func (a *attempt) onDial(r dialResult) *attemptEnd {
	a.pending--
	if r.err == nil {
		if err := nominate(r.qc, a.pathOf(r.qc)); err != nil {
			r.qc.CloseWithError(codeSuperseded, "nomination failed")
			if r.ep != nil {
				r.ep.Close()
			}
			return nil
		}
		if r.ep != nil {
			a.n.ownEndpoint(r.qc, r.ep)
		}
		return a.won(r.qc)
	}
	if r.ep != nil {
		r.ep.Close()
	}
	if errors.Is(r.err, identity.ErrKeyMismatch) {
		return a.fail(event.PhaseHandshake, r.err)
	}
	if !a.punching && a.pending == 0 && a.strat.Dial && a.lg.alloc == nil {
		return a.fail(event.PhaseHandshake, r.err)
	}
	return nil
}

// onRound: a round ended. Over a relay the checks only open the way; the
// dial decides, until the attempt's time is up. A failed round: the
// dialler asks for another while the attempt's budget allows (the other
// side follows it); with none left and no dial pending, the attempt
// fails.
func (a *attempt) onRound(rr roundResult) *attemptEnd {
	if rr.id != a.roundID {
		return nil // a superseded round
	}
	a.punchErr, a.punching = rr.err, false
	if a.punchErr == nil || a.ctx.Err() != nil || a.lg.alloc != nil {
		return nil
	}
	if !a.strat.Dial && a.rechecks < maxRelayRechecks &&
		slices.ContainsFunc(a.targets, func(c wire.Candidate) bool { return c.Kind == wire.KindRelay }) {
		a.rechecks++
		a.punching = true
		a.startRound(bootstrap.Punch{Round: a.punch.Round, At: time.Now()}, a.targets)
		return nil
	}
	if a.strat.Dial && a.rounds < a.n.cfg.MaxRounds && !errors.Is(a.punchErr, holepunch.ErrNoCandidates) {
		a.rounds++
		if err := a.sess.RequestRound(a.punch.Round + uint64(a.rounds) - 1); err == nil {
			if next, err := waitPunch(a.ctx, a.sess); err == nil {
				a.punching = true
				a.startRound(next, a.targets)
				return nil
			}
		}
	}
	if a.pending == 0 && (a.strat.Dial || a.strat.Birthday == BirthdayScan) {
		return a.fail(event.PhasePunch, a.punchErr)
	}
	return nil
}
