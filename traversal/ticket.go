package traversal

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/antnode/antnode/bootstrap"
	"github.com/antnode/antnode/event"
	"github.com/antnode/antnode/identity"
	"github.com/antnode/antnode/service"
	"github.com/antnode/antnode/ticket"
)

// Tickets: reaching a peer by its ticket, registering on demand with one
// of its home bootstraps when the node shares none with it.

const (
	// maxOnDemand bounds the registrations made on demand at one time;
	// their metrics labels are "t0" to "t3".
	maxOnDemand = 4
	// onDemandWait bounds the wait for one on-demand registration.
	onDemandWait = 5 * time.Second
)

// ErrOnDemandFull is the error when every on-demand registration slot
// is taken (by tickets of other peers whose connections are still open).
var ErrOnDemandFull = errors.New("traversal: too many on-demand bootstrap registrations")

// onDemand is a registration made for tickets: it lasts while an attempt
// uses it or a connection to one of its peers is open, and
// Config.TicketIdle after that.
type onDemand struct {
	slot   int
	client *bootstrap.Client
	stop   chan struct{} // closed when it is dropped
	once   sync.Once

	// Guarded by Node.demandMu.
	peers    map[identity.PeerID]struct{}
	inflight int       // attempts using it now
	idle     time.Time // since when nothing used it
}

// Ticket returns the node's ticket: its ID and the bootstraps it is
// configured with whose key is known (given, or pinned at first contact),
// at most ticket.MaxBootstraps. On-demand registrations are not home.
func (n *Node) Ticket() (ticket.Ticket, error) {
	var bs []ticket.Bootstrap
	for _, b := range n.Bootstraps() {
		if !b.OnDemand && !b.ID.IsZero() && len(bs) < ticket.MaxBootstraps &&
			!slices.ContainsFunc(bs, func(o ticket.Bootstrap) bool { return o.Addr == b.Addr }) {
			bs = append(bs, ticket.Bootstrap{ID: b.ID, Addr: b.Addr})
		}
	}
	return ticket.New(n.ID(), bs)
}

// ConnectTicket is Connect to t.Peer, first registering on demand with
// one of t's bootstraps when the node is registered with none of them
// (see Config.TicketIdle for how long that registration lasts). A
// bootstrap presenting another key than the ticket's fails with a
// *ConnectError of reason key_mismatch (errors.Is identity.ErrKeyMismatch).
func (n *Node) ConnectTicket(ctx context.Context, t ticket.Ticket) (*Conn, error) {
	done, err := n.reach(ctx, t)
	if err != nil {
		return nil, err
	}
	defer done()
	return n.Connect(ctx, t.Peer)
}

// PeerConnTicket is PeerConn to t.Peer, registering on demand as
// ConnectTicket does when a connection must be made.
func (n *Node) PeerConnTicket(ctx context.Context, t ticket.Ticket) (*Conn, error) {
	if c := n.liveConn(t.Peer); c != nil {
		return c, nil
	}
	done, err := n.reach(ctx, t)
	if err != nil {
		return nil, err
	}
	defer done()
	return n.PeerConn(ctx, t.Peer)
}

// DialTicket is Dial to t.Peer's service name, registering on demand as
// ConnectTicket does when a connection must be made.
func (n *Node) DialTicket(ctx context.Context, t ticket.Ticket, name string) (*service.Conn, error) {
	if err := service.ValidName(name); err != nil {
		return nil, err
	}
	if _, err := n.PeerConnTicket(ctx, t); err != nil {
		return nil, err
	}
	return n.Dial(ctx, t.Peer, name)
}

// reach makes sure the node is registered with a bootstrap of t (when it
// names any): one it uses already, or one registered with now. done ends
// the attempt's hold on an on-demand registration.
func (n *Node) reach(ctx context.Context, t ticket.Ticket) (done func(), err error) {
	if t.Peer == n.ID() || len(t.Bootstraps) == 0 {
		return func() {}, nil
	}
	var fresh []ticket.Bootstrap
	var errs []error
	for _, b := range t.Bootstraps {
		c := n.clientAt(b.Addr)
		if c == nil {
			fresh = append(fresh, b)
			continue
		}
		switch id := c.ServerID(); {
		case !id.IsZero() && id != b.ID:
			errs = append(errs, fmt.Errorf("bootstrap %s: %w", b.Addr, &identity.KeyMismatchError{Want: b.ID, Got: id}))
		case c.Status().Registered:
			return n.holdClient(c, t.Peer), nil
		}
	}
	if len(fresh) == 0 && len(errs) == 0 {
		return func() {}, nil // configured with them, not registered now: Connect says why
	}
	for _, b := range fresh {
		done, err := n.registerOnDemand(ctx, b, t.Peer)
		if err == nil {
			return done, nil
		}
		errs = append(errs, fmt.Errorf("bootstrap %s: %w", b.Addr, err))
		if ctx.Err() != nil {
			break
		}
	}
	err = errors.Join(errs...)
	reason := event.ReasonBootstrapUnreachable
	if errors.Is(err, identity.ErrKeyMismatch) {
		reason = event.ReasonKeyMismatch
	}
	return nil, &ConnectError{Phase: event.PhaseRegister, Reason: reason,
		Err: fmt.Errorf("no bootstrap of the ticket registered this node: %w", err)}
}

// clientAt returns the node's client of the bootstrap at addr, or nil.
func (n *Node) clientAt(addr netip.AddrPort) *bootstrap.Client {
	for _, c := range n.bootstrapClients() {
		if c.Addr() == addr {
			return c
		}
	}
	return nil
}

// holdClient holds c for peer when it is an on-demand registration.
func (n *Node) holdClient(c *bootstrap.Client, peer identity.PeerID) func() {
	n.demandMu.Lock()
	defer n.demandMu.Unlock()
	for _, d := range n.demand {
		if d != nil && d.client == c {
			d.peers[peer] = struct{}{}
			d.inflight++
			return func() { n.releaseDemand(d) }
		}
	}
	return func() {}
}

// registerOnDemand registers with b for peer and waits until it is
// registered, which fails at once when b presents another key.
func (n *Node) registerOnDemand(ctx context.Context, b ticket.Bootstrap, peer identity.PeerID) (func(), error) {
	d, err := n.addDemand(b, peer)
	if err != nil {
		return nil, err
	}
	wctx, cancel := context.WithTimeout(ctx, onDemandWait)
	defer cancel()
	if err := d.client.WaitReady(wctx); err != nil {
		n.releaseDemand(d)
		n.demandMu.Lock()
		unused := d.inflight == 0
		n.demandMu.Unlock()
		if unused {
			n.dropDemand(d) // failed: not kept for TicketIdle
		}
		return nil, err
	}
	n.log.Info("traversal: registered on demand for a ticket", "bootstrap", d.client.Label(), "addr", b.Addr, "peer", peer.Short())
	return func() { n.releaseDemand(d) }, nil
}

// addDemand starts an on-demand registration with b (or joins the one in
// progress) and holds it.
func (n *Node) addDemand(b ticket.Bootstrap, peer identity.PeerID) (*onDemand, error) {
	b.Addr = n.cfg.NAT64.Map(b.Addr)
	n.demandMu.Lock()
	defer n.demandMu.Unlock()
	if n.ctx.Err() != nil {
		return nil, bootstrap.ErrClosed
	}
	slot := -1
	for i, d := range n.demand {
		if d == nil {
			if slot < 0 {
				slot = i
			}
			continue
		}
		if d.client.Addr() == b.Addr {
			d.peers[peer] = struct{}{}
			d.inflight++
			return d, nil
		}
	}
	if slot < 0 {
		return nil, ErrOnDemandFull
	}
	cl, err := bootstrap.NewClient(bootstrap.ClientConfig{
		Identity: n.cfg.Identity, Endpoint: n.cfg.Endpoint, Addr: b.Addr, ID: b.ID,
		Label: "t" + strconv.Itoa(slot), Recorder: n.rec, Logger: n.log,
		Local: n.localIntro, OnOffer: n.handleOffer, TCPFallback: !n.cfg.DisableTCPFallback, MapAddr: n.mapAddr(),
	})
	if err != nil {
		return nil, err
	}
	cl.SetHeartbeat(n.Keepalive())
	d := &onDemand{slot: slot, client: cl, stop: make(chan struct{}), peers: map[identity.PeerID]struct{}{peer: {}}, inflight: 1}
	n.demand[slot] = d
	clients := append(slices.Clone(n.bootstrapClients()), cl)
	n.clients.Store(&clients)
	n.wg.Add(1)
	go n.reap(d)
	return d, nil
}

// releaseDemand ends one attempt's hold on d.
func (n *Node) releaseDemand(d *onDemand) {
	n.demandMu.Lock()
	defer n.demandMu.Unlock()
	d.inflight--
	if d.inflight == 0 {
		d.idle = time.Now()
	}
}

// reap drops d once it has been idle for Config.TicketIdle: no attempt
// holds it and no connection to its peers is open. It checks a few times
// per TicketIdle; it ends when d is dropped or the node closes.
func (n *Node) reap(d *onDemand) {
	defer n.wg.Done()
	t := time.NewTicker(max(n.cfg.TicketIdle/4, 10*time.Millisecond))
	defer t.Stop()
	for {
		select {
		case <-n.ctx.Done():
			return
		case <-d.stop:
			return
		case now := <-t.C:
			if n.demandIdle(d, now) {
				n.dropDemand(d)
				return
			}
		}
	}
}

// demandIdle reports whether d has been unused for Config.TicketIdle at
// now.
func (n *Node) demandIdle(d *onDemand, now time.Time) bool {
	n.demandMu.Lock()
	peers := make([]identity.PeerID, 0, len(d.peers))
	for p := range d.peers {
		peers = append(peers, p)
	}
	n.demandMu.Unlock()
	connected := slices.ContainsFunc(peers, func(p identity.PeerID) bool { return n.liveConn(p) != nil })
	n.demandMu.Lock()
	defer n.demandMu.Unlock()
	if connected || d.inflight > 0 {
		d.idle = now
		return false
	}
	return now.Sub(d.idle) >= n.cfg.TicketIdle
}

// dropDemand ends the on-demand registration d: out of the node's
// clients, its client closed (after its goroutines exit). Idempotent.
func (n *Node) dropDemand(d *onDemand) {
	n.demandMu.Lock()
	if n.demand[d.slot] != d {
		n.demandMu.Unlock()
		return
	}
	n.demand[d.slot] = nil
	clients := slices.DeleteFunc(slices.Clone(n.bootstrapClients()), func(c *bootstrap.Client) bool { return c == d.client })
	n.clients.Store(&clients)
	n.demandMu.Unlock()
	d.once.Do(func() { close(d.stop) })
	d.client.Close()
	n.log.Info("traversal: on-demand registration ended", "bootstrap", d.client.Label(), "addr", d.client.Addr())
}

// forPeerFirst moves the on-demand registrations made for peer to the
// front of clients, the others keeping their order.
func (n *Node) forPeerFirst(clients []*bootstrap.Client, peer identity.PeerID) []*bootstrap.Client {
	n.demandMu.Lock()
	defer n.demandMu.Unlock()
	mine := func(c *bootstrap.Client) bool {
		for _, d := range n.demand {
			if d != nil && d.client == c {
				_, ok := d.peers[peer]
				return ok
			}
		}
		return false
	}
	out := make([]*bootstrap.Client, 0, len(clients))
	for _, c := range clients {
		if mine(c) {
			out = append(out, c)
		}
	}
	for _, c := range clients {
		if !mine(c) {
			out = append(out, c)
		}
	}
	return out
}

// onDemandLabel reports whether label names an on-demand registration.
func onDemandLabel(label string) bool { return len(label) > 1 && label[0] == 't' }
