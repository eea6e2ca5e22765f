package traversal

import (
	"context"
	"errors"
	"net/netip"
	"testing"
	"time"

	"github.com/antnode/antnode/event"
	"github.com/antnode/antnode/identity"
	"github.com/antnode/antnode/internal/testkit"
	"github.com/antnode/antnode/ticket"
)

// startTicketNode is startNode with a short Config.TicketIdle.
func startTicketNode(t *testing.T, idle time.Duration, rec event.Recorder, bs ...Bootstrap) *Node {
	t.Helper()
	return startReady(t, Config{Bootstraps: bs, TicketIdle: idle, Recorder: rec})
}

// onDemand returns the node's on-demand registrations.
func onDemandOf(n *Node) []BootstrapStatus {
	var out []BootstrapStatus
	for _, b := range n.Bootstraps() {
		if b.OnDemand {
			out = append(out, b)
		}
	}
	return out
}

func nodeTicket(t *testing.T, n *Node) ticket.Ticket {
	t.Helper()
	tk, err := n.Ticket()
	if err != nil {
		t.Fatal(err)
	}
	return tk
}

// A and B share no bootstrap: A connects with B's ticket, registering on
// demand with B's bootstrap, which it leaves TicketIdle after the
// connection ends.
func TestConnectTicketDisjointBootstraps(t *testing.T) {
	b1, b2 := startBootstrap(t), startBootstrap(t)
	const idle = 300 * time.Millisecond
	recA := &recorder{}
	a, bn := startTicketNode(t, idle, recA, b1), startTicketNode(t, idle, nil, b2)
	tk := nodeTicket(t, bn)
	if len(tk.Bootstraps) != 1 || tk.Bootstraps[0].Addr != b2.Addr || tk.Bootstraps[0].ID != b2.ID || tk.Peer != bn.ID() {
		t.Fatalf("B's ticket %+v, want B with bootstrap 2", tk)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	c, err := a.ConnectTicket(ctx, tk)
	if err != nil {
		t.Fatal(err)
	}
	if c.Peer() != bn.ID() || c.Path() != event.PathDirect {
		t.Fatalf("conn to %s over %s", c.Peer().Short(), c.Path())
	}
	// The introduction came from the peer's bootstrap at once: A's own,
	// which does not know B, was not asked first.
	if evs := recA.Kind(event.KindRecovery); len(evs) != 0 {
		t.Fatalf("recoveries %+v", evs)
	}
	if res, err := c.SendVerified(ctx, 1<<20); err != nil || res.Bytes != 1<<20 {
		t.Fatalf("transfer: %+v, %v", res, err)
	}
	od := onDemandOf(a)
	if len(od) != 1 || od[0].Addr != b2.Addr || od[0].ID != b2.ID || od[0].Label != "t0" {
		t.Fatalf("on-demand registrations %+v, want one with bootstrap 2", od)
	}
	// A's own ticket names its home bootstrap only.
	if own := nodeTicket(t, a); len(own.Bootstraps) != 1 || own.Bootstraps[0].Addr != b1.Addr {
		t.Fatalf("A's ticket %+v names more than its home", own)
	}
	// Kept while the connection is open (several idle periods)...
	deadline := time.Now().Add(3 * idle)
	for time.Now().Before(deadline) {
		if len(onDemandOf(a)) != 1 {
			t.Fatal("on-demand registration dropped while its connection is open")
		}
		time.Sleep(20 * time.Millisecond)
	}
	// ...and ended after it.
	c.Close()
	testkit.WaitFor(t, 5*time.Second, "the on-demand registration to end", func() bool {
		return len(onDemandOf(a)) == 0 && len(a.bootstrapClients()) == 1
	})
	a.demandMu.Lock()
	defer a.demandMu.Unlock()
	for _, d := range a.demand {
		if d != nil {
			t.Fatalf("slot %d still taken", d.slot)
		}
	}
}

// A ticket naming a bootstrap the node uses already: no new registration.
func TestConnectTicketSharedBootstrap(t *testing.T) {
	b1, b2 := startBootstrap(t), startBootstrap(t)
	a, bn := startTicketNode(t, 0, nil, b1), startTicketNode(t, 0, nil, b2, b1)
	testkit.WaitFor(t, 5*time.Second, "B registered with both", func() bool { return len(bn.registered()) == 2 })
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	c, err := a.ConnectTicket(ctx, nodeTicket(t, bn))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if n := len(a.Bootstraps()); n != 1 {
		t.Fatalf("%d registrations, want the one A had", n)
	}
}

// A ticket whose bootstrap presents another key fails with key_mismatch
// and leaves no registration behind.
func TestConnectTicketKeyMismatch(t *testing.T) {
	b1, b2 := startBootstrap(t), startBootstrap(t)
	a, bn := startTicketNode(t, time.Minute, nil, b1), startTicketNode(t, 0, nil, b2)
	wrong, err := ticket.New(bn.ID(), []ticket.Bootstrap{{ID: testkit.Identity(t).ID(), Addr: b2.Addr}})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	_, err = a.ConnectTicket(ctx, wrong)
	var ce *ConnectError
	if !errors.As(err, &ce) || ce.Reason != event.ReasonKeyMismatch || !errors.Is(err, identity.ErrKeyMismatch) || Reason(err) != event.ReasonKeyMismatch {
		t.Fatalf("ConnectTicket: %v, want key_mismatch", err)
	}
	if od := onDemandOf(a); len(od) != 0 {
		t.Fatalf("on-demand registrations left: %+v", od)
	}
	// The same address under the key a configured client pinned: refused
	// without a new registration.
	wrong2, _ := ticket.New(bn.ID(), []ticket.Bootstrap{{ID: testkit.Identity(t).ID(), Addr: b1.Addr}})
	if _, err := a.ConnectTicket(ctx, wrong2); Reason(err) != event.ReasonKeyMismatch {
		t.Fatalf("ConnectTicket via a configured bootstrap under another key: %v", err)
	}
}

// DialTicket opens a service stream the same way; the registration ends
// once the streams' connection is gone.
func TestDialTicket(t *testing.T) {
	b1, b2 := startBootstrap(t), startBootstrap(t)
	a, bn := startTicketNode(t, 200*time.Millisecond, nil, b1), startTicketNode(t, 0, nil, b2)
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	s, err := a.DialTicket(ctx, nodeTicket(t, bn), TransferService)
	if err != nil {
		t.Fatal(err)
	}
	s.Close()
	if len(onDemandOf(a)) != 1 {
		t.Fatal("no on-demand registration")
	}
	for _, c := range a.Conns() {
		c.Close()
	}
	testkit.WaitFor(t, 5*time.Second, "the on-demand registration to end", func() bool { return len(onDemandOf(a)) == 0 })
}

// At most maxOnDemand registrations at a time; dropping one frees its
// slot (and is idempotent), and Close ends the rest.
func TestOnDemandSlots(t *testing.T) {
	b1 := startBootstrap(t)
	a := startTicketNode(t, time.Minute, nil, b1)
	peer := testkit.Identity(t).ID()
	var ds []*onDemand
	for i := range maxOnDemand {
		// Loopback ports nobody answers on: the clients keep trying.
		b := ticket.Bootstrap{ID: peer, Addr: netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), uint16(9+i))}
		d, err := a.addDemand(b, peer)
		if err != nil {
			t.Fatal(err)
		}
		ds = append(ds, d)
	}
	extra := ticket.Bootstrap{ID: peer, Addr: netip.MustParseAddrPort("127.0.0.1:30")}
	if _, err := a.addDemand(extra, peer); !errors.Is(err, ErrOnDemandFull) {
		t.Fatalf("fifth registration: %v, want ErrOnDemandFull", err)
	}
	if n := len(onDemandOf(a)); n != maxOnDemand {
		t.Fatalf("%d on-demand registrations", n)
	}
	a.dropDemand(ds[1])
	a.dropDemand(ds[1])
	d, err := a.addDemand(extra, peer)
	if err != nil || d.slot != 1 || d.client.Label() != "t1" {
		t.Fatalf("after a drop: %v, slot %v", err, d)
	}
	a.Close()
	if _, err := a.addDemand(ticket.Bootstrap{ID: peer, Addr: netip.MustParseAddrPort("127.0.0.1:31")}, peer); err == nil {
		t.Fatal("a registration started after Close")
	}
	for _, d := range append(ds, d) {
		if err := d.client.WaitReady(context.Background()); err == nil {
			t.Fatal("a client still running after Close")
		}
	}
}
