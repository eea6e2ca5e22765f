package main

import (
	"context"
	"fmt"
	"strings"

	"github.com/antnode/antnode/identity"
	"github.com/antnode/antnode/service"
	"github.com/antnode/antnode/ticket"
	"github.com/antnode/antnode/traversal"
)

// peerArg is the peer argument of connect, forward and pipe: a PEERID or
// a ticket (antnode1...), which also names the peer's home bootstraps.
type peerArg struct {
	id     identity.PeerID
	ticket *ticket.Ticket // nil: a plain peer ID
}

// parsePeerArg parses a PEERID or a ticket.
func parsePeerArg(s string) (peerArg, error) {
	if ticket.Looks(s) {
		t, err := ticket.Parse(s)
		if err != nil {
			return peerArg{}, err
		}
		return peerArg{id: t.Peer, ticket: &t}, nil
	}
	id, err := identity.ParsePeerID(strings.TrimSpace(s))
	if err != nil {
		return peerArg{}, fmt.Errorf("want a PEERID or a ticket (antnode1...): %w", err)
	}
	return peerArg{id: id}, nil
}

// bootstrapNodes is the --bootstrap-nodes value to use: flag as given, or,
// when it is empty, the ticket's bootstraps (the node then registers with
// them as its own). Empty when there is neither.
func (p peerArg) bootstrapNodes(flag string) string {
	if flag != "" || p.ticket == nil {
		return flag
	}
	var out []string
	for _, b := range p.ticket.Bootstraps {
		out = append(out, b.String())
	}
	return strings.Join(out, ",")
}

// connect connects to the peer (by its ticket when it has one: the node
// registers on demand with one of the peer's bootstraps when it shares
// none).
func (p peerArg) connect(ctx context.Context, n *traversal.Node) (*traversal.Conn, error) {
	if p.ticket != nil {
		return n.ConnectTicket(ctx, *p.ticket)
	}
	return n.Connect(ctx, p.id)
}

// peerConn is Node.PeerConn, by ticket when there is one.
func (p peerArg) peerConn(ctx context.Context, n *traversal.Node) (*traversal.Conn, error) {
	if p.ticket != nil {
		return n.PeerConnTicket(ctx, *p.ticket)
	}
	return n.PeerConn(ctx, p.id)
}

// dial is Node.Dial, by ticket when there is one.
func (p peerArg) dial(ctx context.Context, n *traversal.Node, name string) (*service.Conn, error) {
	if p.ticket != nil {
		return n.DialTicket(ctx, *p.ticket, name)
	}
	return n.Dial(ctx, p.id, name)
}

// dialEarly is Node.DialEarly, the connection made by ticket when there
// is one.
func (p peerArg) dialEarly(ctx context.Context, n *traversal.Node, name string) (*service.Conn, error) {
	if p.ticket != nil {
		if _, err := n.PeerConnTicket(ctx, *p.ticket); err != nil {
			return nil, err
		}
	}
	return n.DialEarly(ctx, p.id, name)
}
