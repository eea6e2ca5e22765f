package traversal

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"sync"
	"time"

	"github.com/pion/stun/v3"

	"github.com/antnode/antnode/bootstrap"
	"github.com/antnode/antnode/bootstrap/wire"
	"github.com/antnode/antnode/endpoint"
	"github.com/antnode/antnode/event"
	"github.com/antnode/antnode/nattype"
)

// Observation is one server's view of the node's socket.
type Observation struct {
	Server netip.AddrPort // who looked
	Mapped netip.AddrPort // what it saw (invalid: no answer)
}

// NATObservations is the evidence that ClassifyNAT turns into a NAT type.
type NATObservations struct {
	Local      netip.AddrPort // the socket's bound address
	LocalAddrs []netip.Addr   // the host's interface addresses
	Mapped     []Observation
	// OtherPort and OtherAddr say whether an unsolicited probe from a port
	// (or address) the node never contacted arrived; nil: not tested.
	OtherPort, OtherAddr *bool
	// UDPBlocked: the node could register with its bootstraps only over
	// TCP.
	UDPBlocked bool
}

// ClassifyNAT derives mapping and filtering behaviour (RFC 4787) from
// observations. It is a pure function:
//
//   - registered only over TCP: UDP blocked;
//   - no answer at all: unknown/unknown;
//   - the mapped address is one of the host's own: no NAT (mapping none);
//   - one server address seeing two different mappings on two ports, or
//     two addresses seeing different mappings with no same-address pair to
//     tell: address-and-port-dependent; same per address but different
//     across addresses: address-dependent; the same everywhere:
//     endpoint-independent;
//   - a probe from an uncontacted address arrived: endpoint-independent
//     filtering (none, if not NATed); else one from an uncontacted port
//     of a contacted address: address-dependent; else, if tested:
//     address-and-port-dependent. With the address probe untested, a
//     received port probe says ADF (the conservative choice).
func ClassifyNAT(o NATObservations) nattype.Type {
	if o.UDPBlocked {
		return nattype.Type{Filtering: nattype.FilteringBlocked}
	}
	var seen []Observation
	for _, m := range o.Mapped {
		if m.Mapped.IsValid() && m.Server.IsValid() {
			seen = append(seen, m)
		}
	}
	if len(seen) == 0 {
		return nattype.Type{}
	}
	var t nattype.Type
	own := func(a netip.AddrPort) bool {
		return a.Port() == o.Local.Port() && (a.Addr() == o.Local.Addr() || slices.Contains(o.LocalAddrs, a.Addr()))
	}
	switch {
	case own(seen[0].Mapped):
		t.Mapping = nattype.MappingNone
	default:
		t.Mapping = nattype.MappingEIM
		sameAddrDiffers, crossDiffers, samePair := false, false, false
		for i := range seen {
			for j := i + 1; j < len(seen); j++ {
				a, b := seen[i], seen[j]
				if a.Server.Addr() == b.Server.Addr() {
					samePair = true
					sameAddrDiffers = sameAddrDiffers || a.Mapped != b.Mapped
				} else {
					crossDiffers = crossDiffers || a.Mapped != b.Mapped
				}
			}
		}
		switch {
		case sameAddrDiffers:
			t.Mapping = nattype.MappingAPDM
		case crossDiffers && samePair:
			t.Mapping = nattype.MappingADM
		case crossDiffers:
			t.Mapping = nattype.MappingAPDM
		}
	}
	is := func(b *bool) bool { return b != nil && *b }
	switch {
	case is(o.OtherAddr) && t.Mapping == nattype.MappingNone:
		t.Filtering = nattype.FilteringNone
	case is(o.OtherAddr):
		t.Filtering = nattype.FilteringEIF
	case is(o.OtherPort):
		t.Filtering = nattype.FilteringADF
	case o.OtherPort != nil:
		t.Filtering = nattype.FilteringAPDF
	}
	return t
}

// ErrNotClassified is returned when no bootstrap could be asked.
var ErrNotClassified = errors.New("traversal: NAT not classified: no registered bootstrap")

// Classify measures the node's NAT with its registered bootstraps: their
// observed addresses and STUN on their alternate ports (mapping), and
// unsolicited probes they send from another port and another address
// (filtering). The result becomes the node's NAT type.
func (n *Node) Classify(ctx context.Context) (nattype.Type, error) {
	start := time.Now()
	clients := n.registered()
	if len(clients) == 0 {
		return nattype.Type{}, ErrNotClassified
	}
	n.rec.Record(event.Event{Kind: event.KindPhaseStart, Phase: event.PhaseClassify})
	obs := NATObservations{Local: n.cfg.Endpoint.LocalAddr()}
	if obs.Local.Addr().IsUnspecified() {
		obs.LocalAddrs = interfaceAddrs()
	}
	var mu sync.Mutex
	var wg sync.WaitGroup
	add := func(o Observation) {
		mu.Lock()
		obs.Mapped = append(obs.Mapped, o)
		mu.Unlock()
	}
	var rtt time.Duration
	var prober *bootstrap.Client
	obs.UDPBlocked = true
	for _, c := range clients {
		st := c.Status()
		if st.Transport == bootstrap.TransportTCP {
			continue // says nothing about UDP mappings
		}
		obs.UDPBlocked = false
		add(Observation{Server: c.Addr(), Mapped: st.Observed})
		rtt = max(rtt, st.RTT)
		if prober == nil && st.Probes&wire.ProbeOtherPort != 0 {
			prober = c
		}
		for _, alt := range st.AltSTUN {
			alt = reachedAt(alt, c.Addr()) // a bootstrap on a wildcard address
			wg.Add(1)
			go func() {
				defer wg.Done()
				add(Observation{Server: alt, Mapped: n.stunMapped(ctx, alt, st.RTT)})
			}()
		}
	}
	wait := 2*rtt + 250*time.Millisecond
	if prober != nil {
		caps := prober.Status().Probes
		for _, kind := range []uint64{wire.ProbeOtherPort, wire.ProbeOtherAddr} {
			if caps&kind == 0 {
				continue
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				got, err := n.probe(ctx, prober, kind, wait)
				if err != nil {
					return // untested
				}
				mu.Lock()
				if kind == wire.ProbeOtherPort {
					obs.OtherPort = &got
				} else {
					obs.OtherAddr = &got
				}
				mu.Unlock()
			}()
		}
	}
	wg.Wait()
	t := ClassifyNAT(obs)
	n.natMu.Lock()
	changed := n.nat != t
	n.nat = t
	n.natMu.Unlock()
	d := time.Since(start)
	o := event.OutcomeOK
	if !t.Known() {
		o = event.OutcomeFail
	}
	n.rec.Record(event.Event{Kind: event.KindPhaseEnd, Phase: event.PhaseClassify, Outcome: o, Duration: d})
	if changed {
		n.rec.Record(event.Event{Kind: event.KindNATType, NAT: t.Class(),
			Detail: fmt.Sprintf("mapping %s filtering %s", t.Mapping, t.Filtering)})
	}
	return t, nil
}

// stunMapped asks a STUN server for the socket's mapped address.
func (n *Node) stunMapped(ctx context.Context, server netip.AddrPort, rtt time.Duration) netip.AddrPort {
	rto := max(2*rtt, 100*time.Millisecond)
	ctx, cancel := context.WithTimeout(ctx, 3*rto+100*time.Millisecond)
	defer cancel()
	req, err := stun.Build(stun.TransactionID, stun.BindingRequest)
	if err != nil {
		return netip.AddrPort{}
	}
	resp, _, _, err := n.cfg.Endpoint.RoundTrip(ctx, req, server, []time.Duration{rto})
	if err != nil {
		return netip.AddrPort{}
	}
	mapped, _ := endpoint.MappedAddress(resp.Msg) // none: the zero value
	return mapped
}

// probe asks c for an unsolicited probe of kind and reports whether it
// arrived within wait.
func (n *Node) probe(ctx context.Context, c *bootstrap.Client, kind uint64, wait time.Duration) (bool, error) {
	var tx [stun.TransactionIDSize]byte
	rand.Read(tx[:])
	ch, release, err := n.cfg.Endpoint.Expect(tx)
	if err != nil {
		return false, err
	}
	defer release()
	if err := c.RequestProbe(kind, tx); err != nil {
		return false, err
	}
	t := time.NewTimer(wait)
	defer t.Stop()
	select {
	case <-ch:
		return true, nil
	case <-t.C:
		return false, nil
	case <-ctx.Done():
		return false, ctx.Err()
	}
}
