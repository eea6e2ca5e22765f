package traversal

import (
	"context"
	"fmt"
	"net/netip"
	"time"

	"github.com/antnode/antnode/bootstrap"
	"github.com/antnode/antnode/bootstrap/wire"
	"github.com/antnode/antnode/holepunch"
	"github.com/antnode/antnode/identity"
)

// Check rounds under a live connection. A connection's path manager
// (migration) asks for one when it rebinds, falls back or upgrades: the
// peer's checks open its NAT towards this node's new (or relayed)
// candidates. Both sides' parts are here, since they are introductions
// and checks like an attempt's; nobody dials.

// freshCandidates returns the node's candidates with its current mapping
// (asked of a bootstrap's STUN responder now, not remembered) first.
func (n *Node) freshCandidates(ctx context.Context) []wire.Candidate {
	cands := n.candidates()
	for _, c := range n.registered() {
		st := c.Status()
		if m := n.stunMapped(ctx, c.Addr(), st.RTT); m.IsValid() {
			fresh := wire.Candidate{Kind: wire.KindServerReflexive, Priority: holepunch.Priority(wire.KindServerReflexive, 0xffff), Addr: m}
			out := []wire.Candidate{fresh}
			for _, o := range cands {
				if o.Addr != m {
					out = append(out, o)
				}
			}
			return out
		}
	}
	return cands
}

// checkRound asks peer, through a bootstrap, for a check round of the
// given purpose and runs this side's: checks to the peer's candidates and
// to extra (the connection's current remote address), answering the
// peer's. It returns once a pair validated or (with no pair) the peer's
// check arrived.
func (n *Node) checkRound(ctx context.Context, peer identity.PeerID, purpose wire.Purpose, cands []wire.Candidate, extra []netip.AddrPort) (holepunch.Result, error) {
	creds := holepunch.NewCreds()
	sess, err := n.introduce(ctx, peer, bootstrap.Intro{NAT: n.NAT(), Candidates: cands, Creds: creds, Purpose: purpose}, "")
	if err != nil {
		return holepunch.Result{}, fmt.Errorf("traversal: %s: introduction: %w", purpose, err)
	}
	defer sess.Close()
	hp, err := n.agent.Open(creds, sess.Remote.Creds, nil)
	if err != nil {
		return holepunch.Result{}, fmt.Errorf("traversal: %s: %w", purpose, err)
	}
	defer time.AfterFunc(2*time.Second, hp.Close)
	p, err := waitPunch(ctx, sess)
	if err != nil {
		return holepunch.Result{}, fmt.Errorf("traversal: %s: %w", purpose, err)
	}
	targets := withoutRelayed(sess.Remote.Candidates)
	for _, a := range extra {
		targets = append(targets, wire.Candidate{Kind: wire.KindPeerReflexive, Priority: holepunch.Priority(wire.KindPeerReflexive, 0xffff), Addr: a})
	}
	heard := make(chan struct{}, 1)
	res, err := hp.Punch(ctx, targets, holepunch.PunchConfig{Start: p.At.Add(p.Delay), Round: p.Round,
		OnPeerCheck: func(netip.AddrPort) {
			select {
			case heard <- struct{}{}:
			default:
			}
		}})
	if err != nil {
		select {
		case <-heard: // the peer's check got through: its NAT is open to us
			return res, nil
		default:
		}
		return res, fmt.Errorf("traversal: %s: %w", purpose, err)
	}
	return res, nil
}

// answerRound answers an offer whose purpose is not a new connection: the
// requester has a connection with this node and needs this side's NAT
// opened towards its (new or relayed) candidates. This side sends checks
// there and answers the requester's.
func (n *Node) answerRound(o *bootstrap.Offer) {
	start := time.Now()
	have := false
	for _, c := range n.Conns() {
		if c.peer == o.From && c.qc.Context().Err() == nil {
			have = true
			break
		}
	}
	if !have {
		o.Decline(wire.CodeRefused)
		n.paths.Answered(o.From.String(), o.Remote.Purpose, 0, fmt.Errorf("%w: peer %s", ErrNoConnection, o.Remote.Purpose))
		return
	}
	ctx, cancel := context.WithTimeout(n.ctx, n.cfg.ConnectTimeout)
	defer cancel()
	creds := holepunch.NewCreds()
	hp, err := n.agent.Open(creds, o.Remote.Creds, nil)
	if err != nil {
		o.Decline(wire.CodeOverloaded)
		return
	}
	defer time.AfterFunc(2*time.Second, hp.Close)
	sess, err := o.Accept(bootstrap.Intro{NAT: n.NAT(), Candidates: n.candidates(), Creds: creds})
	if err != nil {
		return
	}
	defer sess.Close()
	p, err := waitPunch(ctx, sess)
	if err == nil {
		_, err = hp.Punch(ctx, roundTargets(o.Remote), holepunch.PunchConfig{Start: p.At.Add(p.Delay), Round: p.Round})
	}
	n.paths.Answered(o.From.String(), o.Remote.Purpose, time.Since(start), err)
}

// roundTargets are the candidates a check round for an existing
// connection checks: a fallback's are the relayed address it reroutes
// through (the round opens this side's NAT to the relay); the other
// rounds' (rebind, upgrade) are direct ones, without the peer's warm
// relayed address. It is a pure function.
func roundTargets(in bootstrap.Intro) []wire.Candidate {
	if in.Purpose == wire.PurposeFallback {
		return in.Candidates
	}
	return withoutRelayed(in.Candidates)
}
