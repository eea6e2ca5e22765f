package traversal

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"sync/atomic"
	"time"

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

// RelayMode says when connections use the relay.
type RelayMode uint8

// Relay modes.
const (
	// RelayAuto: direct when possible; the relay when no direct path can
	// exist or none validated.
	RelayAuto RelayMode = iota
	// RelayForce: always through the relay (testing, benchmarks).
	RelayForce
	// RelayNever: direct or nothing.
	RelayNever
)

// ParseRelayMode parses "auto", "force" and "never".
func ParseRelayMode(s string) (RelayMode, error) {
	switch s {
	case "auto", "":
		return RelayAuto, nil
	case "force":
		return RelayForce, nil
	case "never":
		return RelayNever, nil
	}
	return 0, fmt.Errorf("relay mode %q: want auto, force or never", s)
}

// TURNServer is a third-party TURN server (coturn with use-auth-secret)
// that the node allocates on instead of its bootstraps' relay.
type TURNServer struct {
	Addr   netip.AddrPort
	TCP    bool   // TURN over TCP
	Secret []byte // coturn's static-auth-secret
}

// RelayPlan is one side's part in a relayed connection.
type RelayPlan struct {
	// Allocate: this side allocates on the relay and announces its
	// relayed address.
	Allocate bool
	// TCP: allocate over TCP (this side's UDP is blocked).
	TCP bool
	// Dial: this side dials QUIC (through its allocation if it has one):
	// the dialler is the QUIC client, so the side that allocated can later
	// move the connection to a direct path.
	Dial bool
	// Optional: this side allocates, but reaches the peer's relayed
	// address from its own socket too; when its allocation fails (the
	// relay's quota) it goes on without (viaPeerRelay). Set by
	// PlanRelayFor for the IPv4 side of a pair without a family in
	// common: a relay's relayed addresses are IPv4 where it has an IPv4
	// address (a dual-stack bootstrap's).
	Optional bool
	// PeerOnRelay: both sides' strategy says no direct path can exist,
	// so the peer goes straight to its relay leg too and checks the warm
	// relayed address of this side's introduction at once; this side's
	// warm allocation needs no announcement then. Set by the caller
	// (PlanRelay leaves it false).
	PeerOnRelay bool
}

// PlanRelay decides the roles of a relayed connection from both NAT types.
// The side whose UDP is blocked must allocate (over TCP) and dial, since it
// can receive nothing directly; otherwise the initiator allocates and
// dials, and the other side checks the relayed address (opening its NAT
// towards the relay) and accepts. When both sides' UDP is blocked both
// allocate, and the initiator dials the other's relayed address. A type
// with an unknown axis plans like any type whose UDP is not blocked: the
// initiator allocates, so the relay is ready when the direct attempt
// fails. It is a pure function.
func PlanRelay(local, remote nattype.Type, initiator bool) RelayPlan {
	lb := local.Filtering == nattype.FilteringBlocked
	rb := remote.Filtering == nattype.FilteringBlocked
	switch {
	case lb && rb:
		return RelayPlan{Allocate: true, TCP: true, Dial: initiator}
	case lb:
		return RelayPlan{Allocate: true, TCP: true, Dial: true}
	case rb:
		return RelayPlan{}
	}
	return RelayPlan{Allocate: initiator, Dial: initiator}
}

// PlanRelayFor is PlanRelay with address families. Two sides without a
// family in common (an IPv6-only node and an IPv4-only one) both
// allocate, over TCP where UDP is blocked, and the initiator dials the
// other's relayed address through its own allocation: relay to relay.
// Relayed addresses are of the relay's family, which one of the two does
// not have; an allocation reaches them from either. It is a pure
// function.
func PlanRelayFor(local, remote Side, initiator bool) RelayPlan {
	if !sharesFamily(local, remote) {
		return RelayPlan{Allocate: true, TCP: local.NAT.Filtering == nattype.FilteringBlocked, Dial: initiator,
			Optional: local.Families&familyIPv4 != 0 && local.NAT.Filtering != nattype.FilteringBlocked}
	}
	return PlanRelay(local.NAT, remote.NAT, initiator)
}

// PlanWarmRelay is PlanRelay for a pair that only a relay can connect
// (both sides' strategy says no direct path) when the responder's
// introduction carried a warm relayed address (responderWarm): an
// initiator whose UDP is not blocked dials that address from its own
// socket (no allocation of its own, no permission to wait for: the
// responder permits the initiator's addresses as soon as the offer
// comes), and the responder accepts on its warm allocation. ok is false
// where the rule does not apply (an initiator whose UDP is blocked
// cannot dial but through a relay): PlanRelay's roles then. It is a
// pure function.
func PlanWarmRelay(local, remote nattype.Type, initiator, responderWarm bool) (plan RelayPlan, ok bool) {
	init := remote
	if initiator {
		init = local
	}
	if !responderWarm || init.Filtering == nattype.FilteringBlocked {
		return RelayPlan{}, false
	}
	if initiator {
		return RelayPlan{Dial: true}, true
	}
	return RelayPlan{Allocate: true, TCP: local.Filtering == nattype.FilteringBlocked, PeerOnRelay: true}, true
}

// ErrNoRelay is returned when no relay is available for a connection that
// needs one.
var ErrNoRelay = errors.New("traversal: no relay available")

// relayGrant is where and how to allocate.
type relayGrant struct {
	creds    relay.Credentials
	udp, tcp netip.AddrPort
}

// relayCredentials gets credentials: derived locally for a third-party
// TURN server, else issued by the bootstrap that made the introduction
// (its relay's permission policy knows the introduced peers).
func (n *Node) relayCredentials(ctx context.Context, c *bootstrap.Client) (relayGrant, error) {
	if t := n.cfg.TURN; t != nil {
		g := relayGrant{creds: relay.NewCredentials(t.Secret, n.ID(), time.Now(), n.cfg.RelayTTL)}
		if t.TCP {
			g.tcp = t.Addr
		} else {
			g.udp = t.Addr
		}
		return g, nil
	}
	g, err := c.RequestRelay(ctx)
	if err != nil {
		return relayGrant{}, fmt.Errorf("%w: bootstrap %s: %w", ErrNoRelay, c.Label(), err)
	}
	return relayGrant{creds: relay.Credentials{Username: g.Username, Password: g.Password,
		Expires: time.Unix(int64(g.ExpiresUnix), 0)}, udp: reachedAt(g.UDP, c.Addr()), tcp: reachedAt(g.TCP, c.Addr())}, nil
}

// reachedAt is a relay address from a grant as this node can reach it: a
// bootstrap that listens on a wildcard address grants its relay's port on
// that wildcard, and the relay is then where this node reaches the
// bootstrap.
func reachedAt(relayAddr, bootstrap netip.AddrPort) netip.AddrPort {
	if relayAddr.IsValid() && relayAddr.Addr().IsUnspecified() {
		return netip.AddrPortFrom(bootstrap.Addr(), relayAddr.Port())
	}
	return relayAddr
}

// sharedRelay is one allocation that all of the node's relayed
// connections through one relay share: one relayed address, one QUIC
// transport that dials and accepts, one agent that answers checks for
// every attempt using it. It is reference-counted and released when idle.
//
// Two counts govern it. refs counts what uses the allocation now:
// attempts in progress and connections on the relay path. users counts
// the live connections that ever ran on its QUIC transport, including
// those that moved to a direct path since: closing a quic.Transport ends
// every connection that ever used it, so the transport stays (with the
// allocation released under it: see migration.DetachConn) until the last of them
// ends.
type sharedRelay struct {
	key      string
	alloc    *relay.Allocation
	conn     *migration.DetachConn // alloc.Conn, detachable
	ep       *endpoint.Endpoint
	agent    *holepunch.Agent
	ln       *quic.Listener
	made     time.Time // when allocating began (the credentials' lifetime is expires-made, about)
	expires  time.Time
	ready    chan struct{} // closed once allocated (or failed: err set)
	err      error
	refs     int
	users    int
	detached bool // the allocation is released; the transport may live on
	// suspect: an attempt through it failed; the next attempt allocates
	// anew (a relay that restarted forgets allocations without a word).
	suspect bool
	// session is the bootstrap client's registration (Status.Session) the
	// allocation was made in (0: a third-party TURN server's). A later
	// registration may be with a restarted bootstrap, whose relay forgot
	// the allocation: it answers nothing for it (a permission request
	// then costs pion's whole retransmission schedule), so it is not
	// shared again.
	session uint64
	idle    *time.Timer
}

func (r *sharedRelay) close() {
	r.closeTransport()
	if r.alloc != nil {
		r.alloc.Close()
	}
}

// closeTransport closes the QUIC side: listener, check agent, endpoint.
func (r *sharedRelay) closeTransport() {
	if r.ln != nil {
		r.ln.Close()
	}
	if r.agent != nil {
		r.agent.Close()
	}
	if r.ep != nil {
		r.ep.Close()
	}
}

// acquireRelay returns the shared allocation on the relay of the
// introduction's bootstrap (or the configured TURN server), allocating it
// (over TCP if tcp) when there is none or its credentials run out soon.
func (n *Node) acquireRelay(ctx context.Context, att *event.Attempt, bc *bootstrap.Client, tcp bool) (*sharedRelay, error) {
	return n.acquireShared(ctx, att, bc, tcp, nil)
}

// relayKey names the shared allocation on bc's relay (or the TURN
// server) over UDP or TCP.
func (n *Node) relayKey(bc *bootstrap.Client, tcp bool) string {
	key := "bootstrap:" + bc.Label()
	if n.cfg.TURN != nil {
		key = "turn:" + n.cfg.TURN.Addr.String()
	}
	return key + fmt.Sprintf("/tcp=%v", tcp)
}

// acquireShared is acquireRelay that never shares replace (the warm
// relay's keeper replacing its allocation): a new one is made instead.
func (n *Node) acquireShared(ctx context.Context, att *event.Attempt, bc *bootstrap.Client, tcp bool, replace *sharedRelay) (*sharedRelay, error) {
	key := n.relayKey(bc, tcp)
	n.relayMu.Lock()
	r := n.relays[key]
	if r != nil {
		select {
		case <-r.ready:
			if r == replace || r.err != nil || r.detached || r.suspect || expiringSoon(r.made, r.expires, time.Now()) ||
				isClosed(r.alloc.Dead()) || (r.session != 0 && r.session != bc.Status().Session) {
				r = nil // replaced, failed, released, dead, suspect, about to expire or from before the bootstrap's restart: make a new one
			}
		default: // being allocated by another attempt: share it
		}
	}
	if r == nil {
		r = &sharedRelay{key: key, ready: make(chan struct{})}
		n.relays[key] = r
		n.relayMu.Unlock()
		r.err = n.allocateShared(ctx, att, bc, tcp, r)
		close(r.ready)
		n.relayMu.Lock()
		if r.err != nil {
			if n.relays[key] == r {
				delete(n.relays, key)
			}
			n.relayMu.Unlock()
			return nil, r.err
		}
	}
	r.refs++
	if r.idle != nil {
		r.idle.Stop()
		r.idle = nil
	}
	n.relayMu.Unlock()
	select {
	case <-r.ready:
		if r.err != nil {
			n.releaseRelay(r, false)
			return nil, r.err
		}
	case <-ctx.Done():
		n.releaseRelay(r, false)
		return nil, context.Cause(ctx)
	}
	return r, nil
}

// suspectRelays marks the node's shared allocations suspect: the NAT
// mapped this node anew (a flush, a reboot), and it may have mapped the
// allocations' sockets anew too, leaving each allocation bound to a
// mapping that is gone (a relay answers nothing for it). The next attempt
// allocates anew; connections on them keep theirs.
func (n *Node) suspectRelays() {
	n.relayMu.Lock()
	defer n.relayMu.Unlock()
	for _, r := range n.relays {
		r.suspect = true
	}
}

// markSuspect marks one shared allocation suspect: an attempt, a fallback
// or a keepalive through it failed, and the next attempt allocates anew.
func (n *Node) markSuspect(r *sharedRelay) {
	n.relayMu.Lock()
	defer n.relayMu.Unlock()
	r.suspect = true
}

func isClosed(ch <-chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}

// releaseRelay drops a reference; the last one starts the idle timer, or
// releases the allocation at once if now (a connection moved off it).
func (n *Node) releaseRelay(r *sharedRelay, now bool) {
	n.relayMu.Lock()
	defer n.relayMu.Unlock()
	r.refs--
	if r.refs > 0 {
		return
	}
	if r.err != nil || n.ctx.Err() != nil {
		if n.relays[r.key] == r {
			delete(n.relays, r.key)
		}
		r.detached = true
		if r.users == 0 {
			r.close()
		} else if r.alloc != nil {
			r.conn.Detach()
			r.alloc.Close()
		}
		return
	}
	if now {
		n.detachRelayLocked(r)
		return
	}
	r.idle = time.AfterFunc(n.cfg.RelayIdle, func() {
		n.relayMu.Lock()
		defer n.relayMu.Unlock()
		if r.refs > 0 || r.detached {
			return
		}
		n.detachRelayLocked(r)
	})
}

// detachRelayLocked releases the allocation (the relay frees it) and, if
// no live connection ever used its transport, the transport too; relayMu
// held.
func (n *Node) detachRelayLocked(r *sharedRelay) {
	if r.detached {
		return
	}
	if n.relays[r.key] == r {
		delete(n.relays, r.key)
	}
	r.detached = true
	if r.idle != nil {
		r.idle.Stop()
		r.idle = nil
	}
	r.conn.Detach()
	r.alloc.Close()
	if r.users == 0 {
		r.closeTransport()
	}
	n.rec.Record(event.Event{Kind: event.KindRelay, Detail: "release", Outcome: event.OutcomeOK})
}

// userDone drops a connection that used the relay's transport; the last
// one closes a transport whose allocation is gone.
func (n *Node) userDone(r *sharedRelay) {
	n.relayMu.Lock()
	defer n.relayMu.Unlock()
	r.users--
	if r.users == 0 && r.detached {
		r.closeTransport()
	}
}

// closeRelays releases every shared allocation (node shutdown).
func (n *Node) closeRelays() {
	n.relayMu.Lock()
	rs := make([]*sharedRelay, 0, len(n.relays))
	for k, r := range n.relays {
		rs = append(rs, r)
		delete(n.relays, k)
		if r.idle != nil {
			r.idle.Stop()
		}
	}
	n.relayMu.Unlock()
	for _, r := range rs {
		<-r.ready
		r.close()
	}
}

func (n *Node) allocateShared(ctx context.Context, att *event.Attempt, bc *bootstrap.Client, tcp bool, r *sharedRelay) error {
	g, err := n.relayCredentials(ctx, bc)
	if err != nil {
		return err
	}
	useTCP := tcp || !g.udp.IsValid()
	server := g.udp
	if useTCP {
		server = g.tcp
	}
	if !server.IsValid() {
		return fmt.Errorf("%w: the relay offers no transport this node can use (TCP needed: %v)", ErrNoRelay, useTCP)
	}
	start := time.Now()
	alloc, err := relay.Allocate(ctx, relay.ClientConfig{Server: server, TCP: useTCP,
		Credentials: g.creds, ListenUDP: n.cfg.RelayListen, DialTCP: n.cfg.RelayDialTCP, Logger: n.log, NAT64: n.cfg.NAT64})
	if err != nil {
		att.Record(event.Event{Kind: event.KindRelay, Detail: "allocate", Outcome: event.OutcomeFail, Reason: Reason(err), Err: err})
		return err
	}
	att.Record(event.Event{Kind: event.KindRelay, Detail: "allocate", Outcome: event.OutcomeOK, Addr: alloc.Relayed, Duration: time.Since(start)})
	r.alloc, r.made, r.expires = alloc, start, g.creds.Expires
	if n.cfg.TURN == nil {
		r.session = bc.Status().Session
		// A bootstrap's relay permits its own address: a peer's warm
		// relay on it is then reached, and answers, with no permission
		// round trip on the first packet (relay to relay).
		alloc.PermitRelayAsync()
	}
	r.conn = migration.NewDetachConn(alloc.Conn)
	fail := func(err error) error {
		r.close()
		return err
	}
	if r.ep, err = endpoint.New(endpoint.Config{Conn: r.conn, Logger: n.log}); err != nil {
		return fail(err)
	}
	if r.agent, err = holepunch.NewAgent(holepunch.AgentConfig{Endpoint: r.ep, Recorder: n.rec, Logger: n.log}); err != nil {
		return fail(err)
	}
	if r.ln, err = r.ep.Transport().Listen(n.cfg.Identity.ServerTLS(PeerALPN), n.listenQUIC()); err != nil {
		return fail(err)
	}
	n.wg.Add(1)
	go func() {
		defer n.wg.Done()
		n.acceptOn(r.ln)
	}()
	return nil
}

// warmPermitWait is how long a side whose first packets go to the peer's
// relayed address from its own socket (it dials the peer's warm relay, or
// checks the relayed address of a peer that dials from there) waits on an
// early introduction (see wire.ConnectEarly), given the bootstrap's RTT
// to the peer and to this node. The peer permits this node's addresses
// on its allocation when the bootstrap's early message reaches it, sent
// at the moment this node's was: the permission reaches the relay (the
// bootstrap's) one peer RTT after that moment, this node's first packet
// one own RTT after it. A packet that arrives first is dropped (a dial's
// Initial then costs QUIC's retransmission timeout), so this node waits
// out the difference and a quarter of the peer's RTT for the relay's
// jitter. A pure function.
func warmPermitWait(peerRTT, ownRTT time.Duration) time.Duration {
	return max(0, peerRTT-ownRTT) + peerRTT/4
}

// viaRelay connects through the relay under plan: allocate and dial (or
// accept on the allocation), or check the peer's relayed address and
// accept on the node's socket. intro is what this side announced (its
// check credentials, and its warm relayed address if it has one).
func (n *Node) viaRelay(ctx context.Context, att *event.Attempt, peer identity.PeerID, sess *bootstrap.Session,
	hp *holepunch.Session, plan RelayPlan, intro bootstrap.Intro, incoming <-chan *quic.Conn) (*quic.Conn, event.Path, event.Phase, error) {
	att.Begin(event.PhaseRelay)
	if !plan.Allocate {
		return n.viaPeerRelay(ctx, att, peer, sess, hp, plan, incoming)
	}
	now := &bootstrap.Punch{Round: 1 << 20, At: time.Now()}
	warm := relayedOf(sess.Remote.Candidates) // the peer's warm relay, if it keeps one
	// The allocation is bounded by the Relay phase timeout: a relay that
	// does not answer costs that much rather than the attempt's whole
	// time, and the attempt can still go through another bootstrap.
	limit := n.phaseTimeouts(sess).Relay
	r, err := within(ctx, limit, func(ctx context.Context) (*sharedRelay, error) {
		return n.acquireRelay(ctx, att, sess.Bootstrap(), plan.TCP)
	})
	if err != nil && plan.Optional && ctx.Err() == nil {
		// This side reaches the peer's relayed address from its own
		// socket as well: go on without an allocation of its own.
		att.Record(event.Event{Kind: event.KindFallback, Reason: Reason(err), Detail: "relay->own socket"})
		return n.viaPeerRelay(ctx, att, peer, sess, hp, plan, incoming)
	}
	if err != nil {
		if errors.Is(err, timeout.ErrExceeded) {
			err = fmt.Errorf("%w: bootstrap %s: no allocation within %v: %w", ErrNoRelay, sess.Bootstrap().Label(), limit, err)
		}
		n.endRelayPhase(att, err)
		return nil, event.PathNone, event.PhaseRelay, err
	}
	rhp, err := r.agent.Open(intro.Creds, sess.Remote.Creds, att)
	if err == nil && !(plan.PeerOnRelay && slices.Contains(relayedOf(intro.Candidates), r.alloc.Relayed)) {
		// Not the warm allocation the introduction announced to a peer
		// that checks it already: tell the peer where to check.
		err = sess.AnnounceRelay(r.alloc.Relayed)
	}
	if err != nil {
		if rhp != nil {
			rhp.Close()
		}
		n.releaseRelay(r, false)
		n.endRelayPhase(att, err)
		return nil, event.PathNone, event.PhaseRelay, err
	}
	defer time.AfterFunc(2*time.Second, rhp.Close)
	targets := relayLegTargets(sess.Remote.Candidates, sess.Remote.NAT, plan.Dial, sharesFamily(LocalSide(intro), RemoteSide(sess.Remote)))
	qc, _, phase, err := n.establish(ctx, att, peer, sess,
		leg{ep: r.ep, hp: rhp, path: event.PathRelay, alloc: r.alloc, start: now, targets: targets, relayed: warm},
		Strategy{Direct: true, Dial: plan.Dial, Speculative: plan.Dial}, incoming)
	n.endRelayPhase(att, err)
	if err != nil {
		if ctx.Err() == nil || errors.Is(context.Cause(ctx), context.DeadlineExceeded) {
			n.markSuspect(r) // not cancelled by the caller: the relay may be at fault
		}
		n.releaseRelay(r, false)
		return nil, event.PathNone, phase, err
	}
	n.ownRelay(qc, r)
	return qc, event.PathRelay, phase, nil
}

// viaPeerRelay is viaRelay without an allocation of this side's: the
// peer allocates and dials; this side checks its relayed address
// (opening its NAT towards the relay) and accepts. A warm one came with
// the introduction: checked at once (and dialled, under PlanWarmRelay);
// another arrives on the session.
func (n *Node) viaPeerRelay(ctx context.Context, att *event.Attempt, peer identity.PeerID, sess *bootstrap.Session,
	hp *holepunch.Session, plan RelayPlan, incoming <-chan *quic.Conn) (*quic.Conn, event.Path, event.Phase, error) {
	now := &bootstrap.Punch{Round: 1 << 20, At: time.Now()}
	warm := relayedOf(sess.Remote.Candidates)
	targets := relayCandidates(warm)
	if sess.Early != nil {
		own := sess.Bootstrap().Status().RTT
		now.Delay = warmPermitWait(sess.Early.PeerRTT, own)
		n.log.Debug("traversal: warm permit wait", "wait", now.Delay, "peer_rtt", sess.Early.PeerRTT, "own_rtt", own)
	}
	// When both strategies say no direct path can exist, whatever
	// connects on this leg runs through a relay, whichever relayed
	// address it came from or went to (one announced late, under loss,
	// included): it is labelled, and nominated, as relayed.
	lp := event.PathDirect
	if plan.PeerOnRelay {
		lp = event.PathRelay
	}
	qc, path, phase, err := n.establish(ctx, att, peer, sess,
		leg{ep: n.cfg.Endpoint, hp: hp, path: lp, start: now, targets: targets, relayed: warm, dialRelayed: plan.Dial},
		Strategy{Direct: true, Dial: plan.Dial}, incoming)
	n.endRelayPhase(att, err)
	return qc, path, phase, err
}

// relayLegTargets are the first round's check targets of a relay leg
// (an allocation of this node's) towards a peer with candidates cands and
// NAT type nat. A side that accepts checks the peer's observed addresses
// and warm relayed addresses: that opens the way and gets pion's
// permissions in before the peer's Initial needs an answer. A side that
// dials checks the peer's own candidates (its relayed addresses are
// dialled). A peer whose UDP is blocked is reached at its relayed
// addresses only: a check anywhere else cannot arrive, and each new IP
// costs a permission round trip before the checks behind it (pion asks
// per IP, in order). Its list is empty, not nil, when it has none yet: a
// relayed address will come on the session. So is a peer without an
// address family in common with this side (shared false): each new IP
// costs a permission round trip, and its relayed address is the one
// both sides reach (the dialler's speculative dial tries its own
// candidates besides, which reaches a peer that went on without an
// allocation: PlanRelayFor's Optional). It is a pure function.
func relayLegTargets(cands []wire.Candidate, nat nattype.Type, dial, shared bool) []wire.Candidate {
	warm := relayCandidates(relayedOf(cands))
	switch {
	case nat.Filtering == nattype.FilteringBlocked, !shared:
		return warm
	case dial:
		return withoutRelayed(cands)
	}
	return append(observedOnly(cands), warm...)
}

func (n *Node) endRelayPhase(att *event.Attempt, err error) {
	if err != nil {
		att.End(event.PhaseRelay, event.OutcomeFail, Reason(err))
		return
	}
	att.End(event.PhaseRelay, event.OutcomeOK, event.ReasonNone)
}

// relayUse is a connection's use of a shared relay.
type relayUse struct {
	r        *sharedRelay
	released atomic.Bool // the connection's reference was given back
}

// ownRelay holds the connection's reference on the shared allocation
// (until it ends, or moves off the relay) and counts it as a user of the
// relay's transport until it ends.
func (n *Node) ownRelay(qc *quic.Conn, r *sharedRelay) {
	u := &relayUse{r: r}
	n.relayMu.Lock()
	r.users++
	n.relayUses[qc] = u
	n.relayMu.Unlock()
	n.wg.Add(1)
	go func() {
		defer n.wg.Done()
		select {
		case <-qc.Context().Done():
		case <-n.ctx.Done():
			qc.CloseWithError(0, "node closing")
		}
		if u.released.CompareAndSwap(false, true) {
			n.releaseRelay(r, false)
		}
		n.relayMu.Lock()
		delete(n.relayUses, qc)
		n.relayMu.Unlock()
		n.userDone(r)
	}()
}

// relayOf returns the relay a connection was made through (nil if none).
func (n *Node) relayOf(qc *quic.Conn) *relayUse {
	n.relayMu.Lock()
	defer n.relayMu.Unlock()
	return n.relayUses[qc]
}

// leaveRelay gives back the reference of a connection that moved to a
// direct path, releasing the allocation at once if it was the last.
func (n *Node) leaveRelay(qc *quic.Conn) {
	if u := n.relayOf(qc); u != nil && u.released.CompareAndSwap(false, true) {
		n.releaseRelay(u.r, true)
	}
}

// RelayCheck is the outcome of a test allocation.
type RelayCheck struct {
	Bootstrap string
	TCP       bool
	Relayed   netip.AddrPort
	Took      time.Duration
	Err       error
}

// CheckRelays makes a real allocation over UDP and one over TCP on the
// relay of the bootstrap labelled label (or the configured TURN server),
// holds both at once, then releases them: `antnode diagnose` uses it to
// prove the relay reachable (and a per-peer quota of one shows).
func (n *Node) CheckRelays(ctx context.Context, label string) []RelayCheck {
	var out []RelayCheck
	var allocs []*relay.Allocation
	for _, tcp := range []bool{false, true} {
		rc, alloc := n.checkRelay(ctx, label, tcp)
		out = append(out, rc)
		if alloc != nil {
			allocs = append(allocs, alloc)
		}
	}
	for _, a := range allocs {
		a.Close()
	}
	return out
}

func (n *Node) checkRelay(ctx context.Context, label string, tcp bool) (RelayCheck, *relay.Allocation) {
	res := RelayCheck{Bootstrap: label, TCP: tcp}
	start := time.Now()
	var bc *bootstrap.Client
	for _, c := range n.bootstrapClients() {
		if c.Label() == label {
			bc = c
		}
	}
	if bc == nil && n.cfg.TURN == nil {
		res.Err = fmt.Errorf("%w: no bootstrap %q", ErrNoRelay, label)
		return res, nil
	}
	g, err := n.relayCredentials(ctx, bc)
	if err != nil {
		res.Err = err
		return res, nil
	}
	server := g.udp
	if tcp {
		server = g.tcp
	}
	if !server.IsValid() {
		res.Err = fmt.Errorf("%w: the relay offers no %s transport", ErrNoRelay, map[bool]string{true: "TCP", false: "UDP"}[tcp])
		return res, nil
	}
	alloc, err := relay.Allocate(ctx, relay.ClientConfig{Server: server, TCP: tcp, Credentials: g.creds,
		ListenUDP: n.cfg.RelayListen, DialTCP: n.cfg.RelayDialTCP, Logger: n.log, NAT64: n.cfg.NAT64})
	if err != nil {
		res.Err = err
		return res, nil
	}
	res.Relayed, res.Took = alloc.Relayed, time.Since(start)
	return res, alloc
}
