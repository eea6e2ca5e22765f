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
	"github.com/antnode/antnode/holepunch"
	"github.com/antnode/antnode/nattype"
)

// Observation is one server's view of the node's socket.
type Observation struct {
	Server netip.AddrPort // who looked
	Mapped netip.AddrPort // what it saw (invalid: no answer)
}

// FilterProbe is the sample of one kind of unsolicited probe (from a port,
// or an address, the node never contacted): how many the node asked a
// bootstrap to send, and how many arrived. The zero value: not tested.
type FilterProbe struct {
	Requested, Arrived int
}

// MinFilterSample is how many probes of one kind must have been requested,
// with none arriving, before their silence is taken as filtering. One lost
// probe is not proof of a filter: at 2 % loss on each of two links, the
// chance that 3 probes are all lost is about 1 in 16,000.
const MinFilterSample = 3

// verdict says whether the probe passes the node's filter: passed (any
// arrived), filtered (none of a sufficient sample arrived) or unknown.
func (p FilterProbe) verdict() (passed, known bool) {
	switch {
	case p.Arrived > 0:
		return true, true
	case p.Requested >= MinFilterSample:
		return false, true
	}
	return false, false
}

// cut is the sample of a measurement cut short: only the probes that
// arrived count, because the others were not given their time.
func (p FilterProbe) cut() FilterProbe { return FilterProbe{Requested: p.Arrived, Arrived: p.Arrived} }

// NATObservations is the evidence that ClassifyNAT turns into a NAT type.
type NATObservations struct {
	Local      netip.AddrPort // the socket's bound address
	LocalAddrs []netip.Addr   // the host's interface addresses
	Mapped     []Observation
	// OtherPort and OtherAddr are the samples of unsolicited probes from
	// a port of a contacted address, and from an address, the node never
	// contacted.
	OtherPort, OtherAddr FilterProbe
	// UDPBlocked: the node could register with its bootstraps only over
	// TCP.
	UDPBlocked bool
}

// ClassifyNAT derives mapping and filtering behaviour (RFC 4787) from
// observations. It is a pure function, and each axis it cannot decide
// from the evidence is unknown, never guessed:
//
//   - registered only over TCP: UDP blocked;
//   - no answer at all: unknown/unknown;
//   - the mapped address is one of the host's own: no NAT (mapping none);
//   - else at least two answers are needed: one server address seeing two
//     different mappings on two ports, or two addresses seeing different
//     mappings with no same-address pair to tell: address-and-port-
//     dependent; same per address but different across addresses:
//     address-dependent; the same everywhere: endpoint-independent; a
//     single answer: unknown;
//   - filtering, from the probe samples (see FilterProbe.verdict): a probe
//     from an uncontacted address passed: endpoint-independent filtering
//     (none, if not NATed); one from an uncontacted port was filtered:
//     address-and-port-dependent; the port probe passed and the address
//     probe was filtered: address-dependent. Anything else (a sample too
//     small, a bootstrap without a second address to probe from) leaves
//     filtering unknown: a missing answer is not proof of a filter.
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
	own := func(a netip.AddrPort) bool {
		return a.Port() == o.Local.Port() && (a.Addr() == o.Local.Addr() || slices.Contains(o.LocalAddrs, a.Addr()))
	}
	t := nattype.Type{Mapping: nattype.MappingNone}
	if !own(seen[0].Mapped) {
		t.Mapping = classifyMapping(seen)
	}
	t.Filtering = classifyFiltering(t.Mapping, o.OtherPort, o.OtherAddr)
	return t
}

// classifyMapping is ClassifyNAT's mapping behaviour of a NATed socket
// from the answers seen (all valid).
func classifyMapping(seen []Observation) nattype.Mapping {
	if len(seen) < 2 {
		return nattype.MappingUnknown // nothing to compare
	}
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
		return nattype.MappingAPDM
	case crossDiffers && samePair:
		return nattype.MappingADM
	case crossDiffers:
		return nattype.MappingAPDM
	}
	return nattype.MappingEIM
}

// classifyFiltering is ClassifyNAT's filtering behaviour from the probe
// samples.
func classifyFiltering(m nattype.Mapping, port, addr FilterProbe) nattype.Filtering {
	portPassed, portKnown := port.verdict()
	addrPassed, addrKnown := addr.verdict()
	switch {
	case addrPassed && m == nattype.MappingNone:
		return nattype.FilteringNone
	case addrPassed:
		return nattype.FilteringEIF
	case portKnown && !portPassed:
		return nattype.FilteringAPDF
	case portPassed && addrKnown:
		return nattype.FilteringADF
	}
	return nattype.FilteringUnknown
}

// ErrNotClassified is returned when no bootstrap could be asked.
var ErrNotClassified = errors.New("traversal: NAT not classified: no registered bootstrap")

// The repetition of the classification's probes (RFC 5389 section 7.2.1
// for the STUN transactions: an initial RTO from the measured round trip,
// doubling, a bounded count).
const (
	// stunSends is how many times a Binding request to an alternate STUN
	// address is sent before that address counts as silent.
	stunSends = 4
	// filterProbes is how many unsolicited probes of each kind the node
	// asks for, filterPace apart (at least MinFilterSample).
	filterProbes = 4
	filterPace   = 60 * time.Millisecond
)

// Classify measures the node's NAT with its registered bootstraps: their
// observed addresses and STUN on their alternate ports (mapping), and
// unsolicited probes they send from another port and another address
// (filtering), each repeated so that a lost packet leaves an axis unknown
// rather than wrong (see ClassifyNAT). The result becomes the node's NAT
// type.
func (n *Node) Classify(ctx context.Context) (nattype.Type, error) {
	start := time.Now()
	clients := n.registered()
	if len(clients) == 0 {
		return nattype.Type{}, ErrNotClassified
	}
	n.rec.Record(event.Event{Kind: event.KindPhaseStart, Phase: event.PhaseClassify})
	primary, other := familySplit(clients)
	// The family the registrations' packets leave in: the socket's (an
	// IPv6 node behind NAT64 is observed at an IPv4 address, and its NAT
	// type is the NAT64's, reached over IPv6), or on a dual-stack socket
	// the family the bootstraps observed it in.
	fam := holepunch.SocketFamilies(n.cfg.Endpoint)[0]
	if n.cfg.Endpoint.DualStack() {
		fam = holepunch.FamilyOf(primary[0].Status().Observed.Addr())
	}
	obs := n.observe(ctx, primary)
	t := ClassifyNAT(obs)
	reports := []FamilyReport{familyReport(fam, obs)}
	if n.cfg.Endpoint.DualStack() {
		reports = append(reports, familyReport(otherFamily(fam), n.classifyOther(ctx, primary, other)))
	}
	n.natMu.Lock()
	changed := n.nat != t
	n.nat = t
	n.families = reports
	n.natMu.Unlock()
	d := time.Since(start)
	o := event.OutcomeOK
	if !t.Known() {
		o = event.OutcomeFail
	}
	n.rec.Record(event.Event{Kind: event.KindPhaseEnd, Phase: event.PhaseClassify, Outcome: o, Duration: d})
	n.warm.poke() // a type that cannot be reached directly wants a warm relay
	if changed {
		for _, c := range clients {
			_ = c.AnnounceNAT(t) // best effort: a lost connection re-registers with the new type
		}
		n.rec.Record(event.Event{Kind: event.KindNATType, NAT: t.Class(),
			Detail: fmt.Sprintf("mapping %s filtering %s (port probes %d/%d, address probes %d/%d arrived)",
				t.Mapping, t.Filtering, obs.OtherPort.Arrived, obs.OtherPort.Requested,
				obs.OtherAddr.Arrived, obs.OtherAddr.Requested)})
	}
	return t, nil
}

// FamilyReport is what the node's last measurement found in one address
// family its socket serves.
type FamilyReport struct {
	Family holepunch.Family
	NAT    nattype.Type
	// Observed is the address a server saw the node at in this family
	// (invalid: none answered); Answered how many of the servers asked
	// (registrations, STUN sockets) answered, of Asked.
	Observed        netip.AddrPort
	Answered, Asked int
}

// Works reports whether UDP in the family reached a bootstrap.
func (r FamilyReport) Works() bool { return r.Answered > 0 }

// familyReport sums up the observations of one family.
func familyReport(f holepunch.Family, obs NATObservations) FamilyReport {
	r := FamilyReport{Family: f, NAT: ClassifyNAT(obs), Asked: len(obs.Mapped)}
	for _, o := range obs.Mapped {
		if o.Mapped.IsValid() {
			r.Answered++
			if !r.Observed.IsValid() {
				r.Observed = o.Mapped
			}
		}
	}
	return r
}

// otherFamily is the family that is not f.
func otherFamily(f holepunch.Family) holepunch.Family {
	if f == holepunch.IPv6 {
		return holepunch.IPv4
	}
	return holepunch.IPv6
}

// familySplit splits registered clients by the family they registered
// in: the first one's, and the other.
func familySplit(clients []*bootstrap.Client) (primary, other []*bootstrap.Client) {
	fam := holepunch.FamilyOf(clients[0].Status().Observed.Addr())
	for _, c := range clients {
		if holepunch.FamilyOf(c.Status().Observed.Addr()) == fam {
			primary = append(primary, c)
		} else {
			other = append(other, c)
		}
	}
	return primary, other
}

// classifyOther measures a dual-stack node's NAT in its other family:
// with the registrations made in it, if any; else through the other
// family's sockets of the bootstraps registered with (see
// wire.Registered.Other). First a Binding request carrying the
// registration's token to each main one, which the bootstrap records as
// the node's address in that family (and forwards as an observed
// candidate); then one to each alternate one (mapping) and, from the
// first bootstrap that offers them, unsolicited probes to that address
// (filtering).
func (n *Node) classifyOther(ctx context.Context, primary, other []*bootstrap.Client) NATObservations {
	if len(other) > 0 {
		return n.observe(ctx, other)
	}
	obs := NATObservations{Local: n.cfg.Endpoint.LocalAddr(), LocalAddrs: interfaceAddrs()}
	var wg sync.WaitGroup
	add := (&gathered{obs: &obs}).add
	var shown []*bootstrap.Client // those that saw the node in the other family
	var rtt time.Duration
	for _, c := range primary {
		st := c.Status()
		if st.Transport == bootstrap.TransportTCP || len(st.Other) == 0 || st.Token == ([16]byte{}) ||
			st.Other[0].Addr().IsUnspecified() {
			continue
		}
		main := st.Other[0]
		mapped := n.stunMapped(ctx, main, st.RTT, stun.NewUsername(wire.ObserveUsername(st.Token)))
		add(Observation{Server: main, Mapped: mapped})
		if !mapped.IsValid() {
			continue
		}
		shown = append(shown, c)
		rtt = max(rtt, st.RTT)
		for _, alt := range st.Other[1:] {
			alt = reachedAt(alt, main)
			wg.Go(func() { add(Observation{Server: alt, Mapped: n.stunMapped(ctx, alt, st.RTT)}) })
		}
	}
	if i := slices.IndexFunc(shown, func(c *bootstrap.Client) bool { return c.Status().OtherProbes&wire.ProbeOtherPort != 0 }); i >= 0 {
		prober, caps := shown[i], shown[i].Status().OtherProbes
		wait := 2*rtt + 500*time.Millisecond
		wg.Go(func() { obs.OtherPort = n.probeSample(ctx, prober, wire.ProbeOtherPort, wait, true) })
		if caps&wire.ProbeOtherAddr != 0 {
			wg.Go(func() { obs.OtherAddr = n.probeSample(ctx, prober, wire.ProbeOtherAddr, wait, true) })
		}
	}
	wg.Wait()
	return obs
}

// gathered collects the observations of parallel STUN transactions.
type gathered struct {
	mu  sync.Mutex
	obs *NATObservations
}

func (g *gathered) add(o Observation) {
	g.mu.Lock()
	g.obs.Mapped = append(g.obs.Mapped, o)
	g.mu.Unlock()
}

// observe gathers the classification's evidence from clients, in
// parallel: their observed addresses, STUN to their alternate addresses
// and the filter probes of the first bootstrap that offers them.
func (n *Node) observe(ctx context.Context, clients []*bootstrap.Client) NATObservations {
	obs := NATObservations{Local: n.cfg.Endpoint.LocalAddr()}
	if obs.Local.Addr().IsUnspecified() {
		obs.LocalAddrs = interfaceAddrs()
	}
	var wg sync.WaitGroup
	add := (&gathered{obs: &obs}).add
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
			wg.Go(func() { add(Observation{Server: alt, Mapped: n.stunMapped(ctx, alt, st.RTT)}) })
		}
	}
	if prober != nil {
		caps := prober.Status().Probes
		wait := 2*rtt + 500*time.Millisecond
		if caps&wire.ProbeOtherPort != 0 {
			wg.Go(func() { obs.OtherPort = n.probeSample(ctx, prober, wire.ProbeOtherPort, wait, false) })
		}
		if caps&wire.ProbeOtherAddr != 0 {
			wg.Go(func() { obs.OtherAddr = n.probeSample(ctx, prober, wire.ProbeOtherAddr, wait, false) })
		}
	}
	wg.Wait()
	return obs
}

// stunMapped asks a STUN server for the socket's mapped address, sending
// the request up to stunSends times (RTO twice the round trip, at least
// 100 ms, doubling). No answer: the zero value.
func (n *Node) stunMapped(ctx context.Context, server netip.AddrPort, rtt time.Duration, attrs ...stun.Setter) netip.AddrPort {
	req, err := stun.Build(append([]stun.Setter{stun.TransactionID, stun.BindingRequest}, attrs...)...)
	if err != nil {
		return netip.AddrPort{}
	}
	rto := max(2*rtt, 100*time.Millisecond)
	resp, _, err := n.cfg.Endpoint.Transact(ctx, req, server, endpoint.RetransmitSchedule(rto, stunSends, 4*rto))
	if err != nil {
		return netip.AddrPort{}
	}
	mapped, _ := endpoint.MappedAddress(resp.Msg) // none: the zero value
	return mapped
}

// probeSample asks c for filterProbes unsolicited probes of kind,
// filterPace apart, and counts those that arrived within wait of the last
// request. A request that could not be made is not counted as requested.
func (n *Node) probeSample(ctx context.Context, c *bootstrap.Client, kind uint64, wait time.Duration, other bool) FilterProbe {
	var p FilterProbe
	ch := make(chan endpoint.Response, filterProbes)
	t := time.NewTimer(time.Hour)
	defer t.Stop()
	for i := range filterProbes {
		if i > 0 {
			t.Reset(filterPace)
			select {
			case <-t.C:
			case <-ctx.Done():
				return p.cut()
			}
		}
		var tx [stun.TransactionIDSize]byte
		rand.Read(tx[:])
		release, err := n.cfg.Endpoint.ExpectInto(tx, ch)
		if err != nil {
			continue
		}
		defer release()
		if err := c.RequestProbe(kind, tx, other); err != nil {
			continue
		}
		p.Requested++
	}
	t.Reset(wait)
	for p.Arrived < p.Requested {
		select {
		case <-ch:
			p.Arrived++
		case <-t.C:
			return p
		case <-ctx.Done():
			return p.cut()
		}
	}
	return p
}

// contradictionEvery is the least time between two measurements asked for
// by contradicting evidence: a stream of peers' checks cannot make the
// node measure without pause.
const contradictionEvery = time.Minute

// contradicted is called with the source of a peer's check that passed
// this node's filter although the node sent nothing to that endpoint
// recently (holepunch.AgentConfig.OnUnsolicited). If the node's filtering
// class says such a packet is dropped (nattype.Type.Drops), the class is
// contradicted, and the node measures again (at most once per
// contradictionEvery). It reports whether it asked for a measurement.
func (n *Node) contradicted(from netip.AddrPort, addressContacted bool) bool {
	if a := from.Addr().Unmap(); a.IsPrivate() || a.IsLoopback() || a.IsLinkLocalUnicast() {
		return false // a host candidate on this side of the NAT: no filter between
	}
	now := time.Now()
	n.natMu.Lock()
	t := n.nat
	ask := t.Drops(addressContacted) &&
		(n.contradictedAt.IsZero() || now.Sub(n.contradictedAt) >= contradictionEvery)
	if ask {
		n.contradictedAt = now
	}
	n.natMu.Unlock()
	if !ask {
		return false
	}
	n.log.Info("traversal: a peer's check passed a filter that should have dropped it; measuring the NAT again",
		"nat", t.Class(), "filtering", t.Filtering.String(), "from", from, "address_contacted", addressContacted)
	n.poke()
	return true
}
