package traversal

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strconv"

	"github.com/antnode/antnode/bootstrap"
)

// The configured bootstraps at runtime: SetBootstraps replaces them (for
// discovery through DNS) without a restart.

// maxBootstrapSlots bounds the configured bootstraps a node registers
// with at one time (more when Config.Bootstraps lists more): their
// metrics labels are the slots "0" to "15".
const maxBootstrapSlots = 16

// ErrBootstrapSlotsFull is the error of SetBootstraps when it was given
// more bootstraps than the node has slots for: the ones beyond were left
// out.
var ErrBootstrapSlotsFull = errors.New("traversal: too many bootstraps")

// newClient starts the client of configured bootstrap b in slot.
func (n *Node) newClient(slot int, b Bootstrap) (*bootstrap.Client, error) {
	label := strconv.Itoa(slot)
	return bootstrap.NewClient(bootstrap.ClientConfig{
		Identity: n.cfg.Identity, Endpoint: n.cfg.Endpoint, Addr: b.Addr, ID: b.ID,
		Label: label, Recorder: n.rec, Logger: n.log,
		Local:       n.localIntro,
		OnOffer:     n.handleOffer,
		TCPFallback: !n.cfg.DisableTCPFallback,
		OnObserved:  n.observedFunc(label),
		MapAddr:     n.mapAddr(),
	})
}

// mapAddr is the bootstrap clients' MapAddr: through the NAT64 prefix,
// if the node has one.
func (n *Node) mapAddr() func(netip.AddrPort) netip.AddrPort {
	if !n.cfg.NAT64.IsValid() {
		return nil
	}
	return n.cfg.NAT64.Map
}

// SetBootstraps makes bs the node's configured bootstraps: it keeps the
// registrations with the ones it has (same address, and the same key
// when bs gives one), starts registering with the new ones and ends the
// registrations with the others, returning after their goroutines exit.
// A new bootstrap takes the lowest free slot, which is its metrics label
// ("0" to "15"); beyond the slots it is left out and the error matches
// ErrBootstrapSlotsFull. On-demand registrations (tickets) are left
// alone. After Close it returns bootstrap.ErrClosed.
func (n *Node) SetBootstraps(bs []Bootstrap) error {
	bs = MapBootstraps(n.cfg.NAT64, bs)
	n.demandMu.Lock()
	if n.ctx.Err() != nil {
		n.demandMu.Unlock()
		return bootstrap.ErrClosed
	}
	var dropped []*bootstrap.Client
	for i, c := range n.slots {
		if c != nil && !slices.ContainsFunc(bs, func(b Bootstrap) bool { return keeps(c, b) }) {
			dropped = append(dropped, c)
			n.slots[i] = nil
		}
	}
	var errs []error
	for _, b := range bs {
		if slices.ContainsFunc(n.slots, func(c *bootstrap.Client) bool { return c != nil && c.Addr() == b.Addr }) {
			continue // kept, or listed twice
		}
		slot := slices.Index(n.slots, nil)
		if slot < 0 {
			errs = append(errs, fmt.Errorf("bootstrap %s: %w (%d slots)", b, ErrBootstrapSlotsFull, len(n.slots)))
			continue
		}
		cl, err := n.newClient(slot, b)
		if err != nil {
			errs = append(errs, fmt.Errorf("bootstrap %s: %w", b, err))
			continue
		}
		cl.SetHeartbeat(n.Keepalive())
		n.breakers[cl.Label()].Close() // a new bootstrap in the slot starts afresh
		n.slots[slot] = cl
		n.log.Info("traversal: bootstrap added", "bootstrap", cl.Label(), "addr", b.Addr)
	}
	n.storeClients()
	n.demandMu.Unlock()
	for _, c := range dropped {
		c.Close()
		n.log.Info("traversal: bootstrap removed", "bootstrap", c.Label(), "addr", c.Addr())
	}
	return errors.Join(errs...)
}

// keeps reports whether client c serves bootstrap b: the same address,
// and the key b names (if any) is the one c was given or pinned.
func keeps(c *bootstrap.Client, b Bootstrap) bool {
	return c.Addr() == b.Addr && (b.ID.IsZero() || c.ServerID() == b.ID)
}

// storeClients publishes the configured clients by slot, then the
// on-demand ones as they were. The caller holds demandMu.
func (n *Node) storeClients() {
	clients := make([]*bootstrap.Client, 0, len(n.slots)+maxOnDemand)
	for _, c := range n.slots {
		if c != nil {
			clients = append(clients, c)
		}
	}
	for _, c := range n.bootstrapClients() {
		if onDemandLabel(c.Label()) {
			clients = append(clients, c)
		}
	}
	n.clients.Store(&clients)
}
