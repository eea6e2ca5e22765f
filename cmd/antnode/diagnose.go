package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"strings"
	"time"

	"github.com/pion/stun/v3"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/antnode/antnode/bootstrap"
	"github.com/antnode/antnode/endpoint"
	"github.com/antnode/antnode/identity"
	"github.com/antnode/antnode/monitor"
	"github.com/antnode/antnode/nat64"
	"github.com/antnode/antnode/portmap"
	"github.com/antnode/antnode/traversal"
)

// `antnode diagnose`: what a new or troubled node needs to know about its
// network, measured, then the probable problems and what to do.

type diagnoseReport struct {
	Time       time.Time           `json:"time"`
	Redacted   bool                `json:"redacted"`
	Interfaces []ifaceJSON         `json:"interfaces"`
	Clock      checkJSON           `json:"clock"`
	MTU        checkJSON           `json:"mtu"`
	UDP        udpCheckJSON        `json:"udp"`
	Bootstraps []diagBootstrapJSON `json:"bootstraps"`
	NAT        natJSON             `json:"nat"`
	// Families is what the node found in each address family its socket
	// serves (two for a dual-stack --listen), the registrations' first.
	Families []familyJSON `json:"families"`
	Hairpin  *bool        `json:"hairpin"`
	// Portmap is what the router answered to a port-mapping request
	// (--portmap), per protocol.
	Portmap  portmapCheckJSON  `json:"portmap"`
	Relay    []relayCheckJSON  `json:"relay"`
	Findings []monitor.Finding `json:"findings"`
	Guide    monitor.Guide     `json:"guide"`
}

type ifaceJSON struct {
	Name  string   `json:"name"`
	MTU   int      `json:"mtu"`
	Up    bool     `json:"up"`
	Addrs []string `json:"addrs"`
}

type checkJSON struct {
	OK     bool   `json:"ok"`
	Detail string `json:"detail"`
}

type diagBootstrapJSON struct {
	Label      string  `json:"label"`
	Addr       string  `json:"addr"`
	Registered bool    `json:"registered"`
	Transport  string  `json:"transport,omitempty"`
	RTTMS      float64 `json:"rtt_ms,omitempty"`
	RTTOver    string  `json:"rtt_over,omitempty"` // udp (STUN), quic or tcp (the registration)
	Mapped     string  `json:"mapped,omitempty"`
	Error      string  `json:"error,omitempty"`
	// UDP and TCP are the probes' answers: STUN over UDP, TLS over TCP
	// on the same port.
	UDP reachJSON `json:"udp"`
	TCP reachJSON `json:"tcp"`
}

// reachJSON is one probe of a bootstrap: answered, and in how long, or
// the error.
type reachJSON struct {
	OK    bool    `json:"ok"`
	RTTMS float64 `json:"rtt_ms,omitempty"`
	Error string  `json:"error,omitempty"`
}

// familyJSON is one address family in a diagnosis: whether UDP in it
// reached a bootstrap, and the NAT there.
type familyJSON struct {
	Family   string  `json:"family"` // ipv4, ipv6
	Works    bool    `json:"works"`
	Answered int     `json:"answered"` // servers (registrations, STUN sockets) that answered
	Asked    int     `json:"asked"`
	Observed string  `json:"observed,omitempty"`
	NAT      natJSON `json:"nat"`
}

type natJSON struct {
	Class     string `json:"class"`
	Mapping   string `json:"mapping"`
	Filtering string `json:"filtering"`
	Error     string `json:"error,omitempty"`
}

type relayCheckJSON struct {
	Bootstrap string  `json:"bootstrap"`
	Transport string  `json:"transport"`
	OK        bool    `json:"ok"`
	Relayed   string  `json:"relayed,omitempty"`
	TookMS    float64 `json:"took_ms,omitempty"`
	Error     string  `json:"error,omitempty"`
}

func mainDiagnose(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("antnode diagnose", flag.ContinueOnError)
	boots := fs.String("bootstrap-nodes", "", "comma-separated bootstrap nodes, HOST:PORT, PEERID@HOST:PORT or dns:NAME (SRV _antnode._udp.NAME)")
	listen := fs.String("listen", "", "UDP address to test from; 0.0.0.0:P,[::]:P tests both families from one dual-stack socket (empty: 0.0.0.0:0,[::]:0 where the host has IPv4 and global IPv6, else 0.0.0.0:0)")
	var dnsServer string
	dnsServerFlag(fs, &dnsServer)
	asJSON := fs.Bool("json", false, "print one JSON object")
	redact := fs.Bool("redact", false, "hide every address (keyed hash), so the output can be shared")
	timeout := fs.Duration("timeout", 20*time.Second, "give up on the measurements after this long (at most 10m)")
	pmFlag := fs.String("portmap", "auto", "ask the router for a mapping of the test socket's port, report which protocols answered, and delete it: auto (PCP, then NAT-PMP, then UPnP IGD; nothing when every bootstrap is on loopback), pcp, natpmp, upnp or off")
	var lf logFlags
	lf.register(fs, "error")
	configFlag(fs)
	cmd := command{name: "antnode diagnose", synopsis: `usage: antnode diagnose --bootstrap-nodes ADDR[,ADDR...] [--json] [--redact] [flags]
  measure this host's network (UDP, NAT type, bootstraps, relay, port mapping) and say what is wrong; exit 1 when something stops the node from working
`}
	if _, code, ok := cmd.parse(fs, args, stdout, stderr); !ok {
		return code
	}
	if err := inRange("timeout", *timeout, time.Millisecond, maxDiagTimeout); err != nil {
		fmt.Fprintln(stderr, "antnode diagnose:", err)
		return exitUsage
	}
	if *boots == "" {
		fmt.Fprintln(stderr, "antnode diagnose: --bootstrap-nodes is required")
		return exitUsage
	}
	if *listen == "" {
		*listen = defaultListenHere()
	}
	bs, err := parseBootstraps(*boots)
	if err == nil {
		err = checkFamilies(*listen, bs)
	}
	pmMode, perr := portmap.ParseProtocol(*pmFlag)
	if err == nil && perr != nil {
		err = fmt.Errorf("--portmap: %w", perr)
	}
	if err == nil {
		err = checkDNSServer(dnsServer)
	}
	if err != nil {
		fmt.Fprintln(stderr, "antnode diagnose:", err)
		return exitUsage
	}
	log, _, err := lf.build(stderr)
	if err != nil {
		fmt.Fprintln(stderr, "antnode diagnose:", err)
		return exitUsage
	}
	mode := monitor.AddressesFull
	if *redact {
		mode = monitor.AddressesSanitized
	}
	ctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()
	if bs, _, err = resolveBootstraps(ctx, *boots, dnsServer, log); err != nil { // resolved once
		fmt.Fprintln(stderr, "antnode diagnose:", err)
		return exitFailure
	}
	prefix, err := nat64For(ctx, *listen, bs, dnsServer, log)
	if err != nil {
		fmt.Fprintln(stderr, "antnode diagnose:", err)
		return exitUsage
	}
	bs = traversal.MapBootstraps(prefix, bs)
	rep, err := runDiagnose(ctx, bs, prefix, *listen, mode, newPortmapProbe(*pmFlag, pmMode, bs), log)
	if err != nil {
		fmt.Fprintln(stderr, "antnode diagnose:", err)
		return exitFailure
	}
	return reportDiagnose(stdout, rep, *asJSON)
}

// reportDiagnose prints rep (as JSON or text) and returns the exit code:
// a failure when a finding is an error.
func reportDiagnose(stdout io.Writer, rep *diagnoseReport, asJSON bool) int {
	if asJSON {
		b, _ := json.MarshalIndent(rep, "", "  ")
		fmt.Fprintln(stdout, string(b))
	} else {
		printDiagnose(stdout, rep)
	}
	for _, f := range rep.Findings {
		if f.Severity == monitor.SeverityError {
			return exitFailure
		}
	}
	return exitOK
}

// runDiagnose measures the network from a socket on listen, with the
// bootstraps bs (reached through the NAT64 prefix p, if valid), and
// diagnoses it; pm is the port-mapping probe.
func runDiagnose(ctx context.Context, bs []traversal.Bootstrap, p nat64.Prefix, listen string, mode monitor.AddressMode, pm portmapProbe, log *slog.Logger) (*diagnoseReport, error) {
	wallStart, monoStart := time.Now().Round(0), time.Now()
	mon, err := monitor.New(monitor.Config{Logger: log, Registerer: prometheus.NewRegistry(), Addresses: mode})
	if err != nil {
		return nil, err
	}
	san := mon.Sanitizer()
	rep := &diagnoseReport{Time: time.Now().UTC(), Redacted: !san.Full()}
	rep.Interfaces, rep.MTU = interfacesCheck(san)

	id, err := identity.Generate()
	if err != nil {
		return nil, err
	}
	ep, err := listenPeer(listen, endpoint.Config{Logger: log})
	if err != nil {
		return nil, err
	}
	defer ep.Close()

	// UDP: a STUN Binding to every bootstrap from the socket, before any
	// QUIC: the mapped address and the round trip; and TLS over TCP to
	// the same port, which tells UDP blocked from a bootstrap down.
	reach := probeBootstraps(ctx, ep, id, bs)
	udp, probes := reachVerdict(reach, time.Now(), san.Text)
	rep.UDP = udp

	node, err := traversal.New(traversal.Config{Identity: id, Endpoint: ep, Bootstraps: bs, Recorder: mon, Logger: log,
		NetworkPoll: -1, UpgradeBase: -1, NAT64: p})
	if err != nil {
		return nil, err
	}
	defer node.Close()
	rctx, rcancel := context.WithTimeout(ctx, 6*time.Second)
	node.WaitReady(rctx) // failures show in the bootstraps' states
	rcancel()
	// The other bootstraps get a moment to register too.
	waitAllRegistered(node, 1500*time.Millisecond)
	rep.Bootstraps = bootstrapsJSON(node.Bootstraps(), reach, san)

	diagnoseNAT(ctx, rep, node, bs, reach, san)

	// The router's port mapping, after the NAT's measurement (a mapping of
	// the socket's port could change it), while the relay checks run.
	run := startPortmapProbe(ctx, pm, ep.LocalAddr().Port(), san, log)
	// Relay: a real allocation over UDP and one over TCP, held at the same
	// time (a quota of one per peer shows), then released.
	rep.Relay = relayChecks(ctx, node, mon, san)
	rep.Portmap = run.finish(ctx)
	probes = append(probes, portmapVerdict(rep.Portmap, time.Now())...)

	// The clock: a wall clock that jumped while this ran, or one far in
	// the past, breaks TLS and credential expiry.
	rep.Clock = clockCheck(wallStart, monoStart)

	r := mon.DiagnosticsWith(peerFacts(node), time.Now(), probes)
	rep.Findings, rep.Guide = r.Findings, r.Guide
	return rep, nil
}

// diagnoseNAT measures the NAT's class and hairpinning.
func diagnoseNAT(ctx context.Context, rep *diagnoseReport, node *traversal.Node, bs []traversal.Bootstrap, reach []bootReach, san *monitor.Sanitizer) {
	cctx, ccancel := context.WithTimeout(ctx, 5*time.Second)
	nat, err := node.Classify(cctx)
	ccancel()
	rep.NAT = natJSON{Class: nat.Class(), Mapping: nat.Mapping.String(), Filtering: nat.Filtering.String()}
	if err != nil {
		rep.NAT.Error = san.Text(err.Error())
	}
	rep.Families = familiesJSON(node.Families(), san)
	// Hairpinning: does the NAT loop a packet to its own public address
	// back in? Only meaningful behind a NAT with a known mapping.
	rep.Hairpin = hairpinCheck(ctx, bs, reach, nat.Mapping.String() != "none")
}

// waitAllRegistered polls the node's bootstraps every 50 ms until all are
// registered or wait has passed.
func waitAllRegistered(node *traversal.Node, wait time.Duration) {
	for deadline := time.Now().Add(wait); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		all := true
		for _, b := range node.Bootstraps() {
			all = all && b.Registered
		}
		if all {
			break
		}
	}
}

// bootstrapsJSON reports each bootstrap's state, preferring the STUN
// probe's round trip and mapped address over the node's own, with
// addresses and errors passed through san. No field is left empty where
// its value is unknown: the error says why.
func bootstrapsJSON(states []traversal.BootstrapStatus, reach []bootReach, san *monitor.Sanitizer) []diagBootstrapJSON {
	out := make([]diagBootstrapJSON, 0, len(states))
	for _, b := range states {
		j := diagBootstrapJSON{Label: b.Label, Addr: san.AddrPort(b.Addr), Registered: b.Registered, Transport: b.Transport}
		if b.RTT > 0 {
			j.RTTMS, j.RTTOver = msFloat(b.RTT), b.Transport
		}
		// Over TCP the bootstrap sees a TCP connection's source, which is
		// not the UDP socket's mapping.
		if b.Observed.IsValid() && b.Transport == bootstrap.TransportQUIC {
			j.Mapped = san.AddrPort(b.Observed)
		}
		for _, r := range reach {
			if r.Label != b.Label {
				continue
			}
			j.UDP, j.TCP = reachOf(r.UDP, r.UDPRTT, r.UDPErr, san), reachOf(r.TCP, r.TCPRTT, r.TCPErr, san)
			if r.UDP {
				j.RTTMS, j.RTTOver, j.Mapped = msFloat(r.UDPRTT), "udp", san.AddrPort(r.Mapped)
			}
		}
		if !b.Registered {
			j.Error = "no registration completed during the run"
			if b.LastError != nil {
				j.Error = san.Text(errText(b.LastError))
			}
		}
		out = append(out, j)
	}
	return out
}

func reachOf(ok bool, rtt time.Duration, err error, san *monitor.Sanitizer) reachJSON {
	if ok {
		return reachJSON{OK: true, RTTMS: msFloat(rtt)}
	}
	return reachJSON{Error: san.Text(errText(err))}
}

// hairpinCheck tests hairpinning through the first bootstrap to one of
// the mapped addresses, when there is one and behindNAT; nil otherwise.
func hairpinCheck(ctx context.Context, bs []traversal.Bootstrap, reach []bootReach, behindNAT bool) *bool {
	for _, r := range reach {
		if r.UDP && behindNAT {
			h := hairpin(ctx, bs[0].Addr, r.Mapped.Addr())
			return &h
		}
	}
	return nil
}

// relayChecks allocates a relay over UDP and one over TCP on every
// registered bootstrap (6 s each), recording each failure on mon.
func relayChecks(ctx context.Context, node *traversal.Node, mon *monitor.Monitor, san *monitor.Sanitizer) []relayCheckJSON {
	var out []relayCheckJSON
	for _, b := range node.Bootstraps() {
		if !b.Registered {
			continue
		}
		actx, acancel := context.WithTimeout(ctx, 6*time.Second)
		checks := node.CheckRelays(actx, b.Label)
		acancel()
		for _, rc := range checks {
			j := relayCheckJSON{Bootstrap: b.Label, Transport: map[bool]string{false: "udp", true: "tcp"}[rc.TCP], OK: rc.Err == nil}
			if rc.Err != nil {
				j.Error = san.Text(rc.Err.Error())
				mon.Record(monitor.Event{Kind: monitor.KindRelay, Detail: "allocate", Outcome: monitor.OutcomeFail,
					Reason: relayReason(rc.Err), Err: rc.Err})
			} else {
				j.Relayed, j.TookMS = san.AddrPort(rc.Relayed), float64(rc.Took.Microseconds())/1000
			}
			out = append(out, j)
		}
	}
	return out
}

// clockCheck is the clock check: fine if the wall clock drifted under a
// second from the monotonic one since the run began and is not before 2024.
func clockCheck(wallStart, monoStart time.Time) checkJSON {
	drift := time.Since(wallStart) - time.Since(monoStart)
	return checkJSON{OK: drift.Abs() < time.Second && time.Now().Year() >= 2024,
		Detail: fmt.Sprintf("%s; wall clock drifted %v from the monotonic clock during the run", time.Now().UTC().Format(time.RFC3339), drift.Round(time.Millisecond))}
}

func relayReason(err error) monitor.Reason {
	if r := traversal.Reason(err); r == monitor.ReasonRelayQuota {
		return r
	}
	return monitor.ReasonRelayUnavailable
}

// stunProbe asks server for the socket's mapped address, three times,
// and returns the fastest round trip.
func stunProbe(ctx context.Context, ep *endpoint.Endpoint, server netip.AddrPort) (netip.AddrPort, time.Duration, error) {
	var best time.Duration
	var mapped netip.AddrPort
	var lastErr error
	for range 3 {
		req, err := stun.Build(stun.TransactionID, stun.BindingRequest)
		if err != nil {
			return netip.AddrPort{}, 0, err
		}
		pctx, cancel := context.WithTimeout(ctx, time.Second)
		resp, rtt, _, err := ep.RoundTrip(pctx, req, server, []time.Duration{300 * time.Millisecond})
		cancel()
		if err != nil {
			lastErr = err
			continue
		}
		var x stun.XORMappedAddress
		if err := x.GetFrom(resp.Msg); err != nil {
			lastErr = err
			continue
		}
		a, _ := netip.AddrFromSlice(x.IP)
		mapped = netip.AddrPortFrom(a.Unmap(), uint16(x.Port))
		if best == 0 || rtt < best {
			best = rtt
		}
	}
	if !mapped.IsValid() {
		return netip.AddrPort{}, 0, lastErr
	}
	return mapped, best, nil
}

// hairpin maps a fresh socket through server, then sends to that public
// mapping from a second socket: hairpinning works if it arrives.
func hairpin(ctx context.Context, server netip.AddrPort, public netip.Addr) bool {
	network := udpNetwork(server.String())
	a, err := net.ListenUDP(network, nil)
	if err != nil {
		return false
	}
	defer a.Close()
	b, err := net.ListenUDP(network, nil)
	if err != nil {
		return false
	}
	defer b.Close()
	req, _ := stun.Build(stun.TransactionID, stun.BindingRequest)
	a.WriteToUDPAddrPort(req.Raw, server)
	a.SetReadDeadline(time.Now().Add(time.Second))
	buf := make([]byte, 1500)
	n, _, err := a.ReadFromUDPAddrPort(buf)
	if err != nil {
		return false
	}
	m := &stun.Message{Raw: append([]byte(nil), buf[:n]...)}
	var x stun.XORMappedAddress
	if m.Decode() != nil || x.GetFrom(m) != nil {
		return false
	}
	pub := netip.AddrPortFrom(public, uint16(x.Port))
	probe, _ := stun.Build(stun.TransactionID, stun.BindingRequest)
	for range 3 {
		b.WriteToUDPAddrPort(probe.Raw, pub)
		a.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
		if n, _, err := a.ReadFromUDPAddrPort(buf); err == nil {
			got := &stun.Message{Raw: append([]byte(nil), buf[:n]...)}
			if got.Decode() == nil && got.TransactionID == probe.TransactionID {
				return true
			}
		}
		if ctx.Err() != nil {
			return false
		}
	}
	return false
}

// interfacesCheck lists the interfaces and checks their MTU against
// QUIC's minimum (1200 bytes of UDP payload: 1228 with IPv4 headers,
// 1248 with IPv6).
func interfacesCheck(san *monitor.Sanitizer) ([]ifaceJSON, checkJSON) {
	ifs, err := net.Interfaces()
	if err != nil {
		return nil, checkJSON{Detail: err.Error()}
	}
	var out []ifaceJSON
	var small []string
	for _, in := range ifs {
		j := ifaceJSON{Name: in.Name, MTU: in.MTU, Up: in.Flags&net.FlagUp != 0}
		addrs, _ := in.Addrs()
		for _, a := range addrs {
			if p, err := netip.ParsePrefix(a.String()); err == nil {
				j.Addrs = append(j.Addrs, san.Addr(p.Addr()))
			}
		}
		if j.Up && in.Flags&net.FlagLoopback == 0 && len(j.Addrs) > 0 && in.MTU < 1248 {
			small = append(small, fmt.Sprintf("%s (%d)", in.Name, in.MTU))
		}
		out = append(out, j)
	}
	if len(small) > 0 {
		return out, checkJSON{Detail: "MTU below QUIC's minimum on " + strings.Join(small, ", ")}
	}
	return out, checkJSON{OK: true, Detail: "every interface in use carries QUIC's 1200-byte packets"}
}

func printDiagnose(w io.Writer, r *diagnoseReport) {
	mark := func(ok bool) string {
		if ok {
			return "ok  "
		}
		return "FAIL"
	}
	udpMark := mark(r.UDP.OK)
	if r.UDP.Status == udpUnknown {
		udpMark = "?   "
	}
	fmt.Fprintf(w, "antnode diagnose, %s\n", r.Time.Format(time.RFC3339))
	fmt.Fprintf(w, "  %s udp       %s\n", udpMark, r.UDP.Detail)
	fmt.Fprintf(w, "  %s mtu       %s\n", mark(r.MTU.OK), r.MTU.Detail)
	fmt.Fprintf(w, "  %s clock     %s\n", mark(r.Clock.OK), r.Clock.Detail)
	fmt.Fprintf(w, "  nat: %s (mapping %s, filtering %s)", r.NAT.Class, r.NAT.Mapping, r.NAT.Filtering)
	if r.NAT.Error != "" {
		fmt.Fprintf(w, ": %s", r.NAT.Error)
	}
	if r.Hairpin != nil {
		fmt.Fprintf(w, ", hairpinning %v", *r.Hairpin)
	}
	fmt.Fprintln(w)
	for _, f := range r.Families {
		m := mark(f.Works)
		if f.Asked == 0 {
			m = "?   " // not tested is not failed
		}
		fmt.Fprintf(w, "  %s %s      %s\n", m, f.Family, familyLine(f))
	}
	for _, b := range r.Bootstraps {
		fmt.Fprintf(w, "  bootstrap %s %s: %s\n", b.Label, b.Addr, bootstrapLine(b))
	}
	for _, rc := range r.Relay {
		if rc.OK {
			fmt.Fprintf(w, "  relay %s over %s: allocated %s in %.0f ms\n", rc.Bootstrap, rc.Transport, rc.Relayed, rc.TookMS)
		} else {
			fmt.Fprintf(w, "  relay %s over %s: FAILED: %s\n", rc.Bootstrap, rc.Transport, rc.Error)
		}
	}
	printPortmap(w, r.Portmap)
	fmt.Fprintln(w)
	fmt.Fprint(w, r.Guide.Markdown)
}

// familiesJSON renders the node's per-family reports.
func familiesJSON(rs []traversal.FamilyReport, san *monitor.Sanitizer) []familyJSON {
	out := make([]familyJSON, 0, len(rs))
	for _, r := range rs {
		f := familyJSON{Family: r.Family.String(), Works: r.Works(), Answered: r.Answered, Asked: r.Asked,
			NAT: natJSON{Class: r.NAT.Class(), Mapping: r.NAT.Mapping.String(), Filtering: r.NAT.Filtering.String()}}
		if r.Observed.IsValid() {
			f.Observed = san.AddrPort(r.Observed)
		}
		out = append(out, f)
	}
	return out
}

// familyLine says what a family's check found.
func familyLine(f familyJSON) string {
	switch {
	case f.Asked == 0:
		return "not tested: no bootstrap offers a socket in this family"
	case !f.Works:
		return fmt.Sprintf("no server answered (%d asked): UDP in this family does not reach the bootstraps", f.Asked)
	}
	return fmt.Sprintf("works: %d of %d servers answered, seen at %s; nat %s (mapping %s, filtering %s)",
		f.Answered, f.Asked, f.Observed, f.NAT.Class, f.NAT.Mapping, f.NAT.Filtering)
}

// bootstrapLine is a bootstrap's state, each field printed with its
// value or, where there is none, the reason.
func bootstrapLine(b diagBootstrapJSON) string {
	parts := []string{"registered over " + b.Transport}
	if !b.Registered {
		parts[0] = "NOT registered (" + b.Error + ")"
	}
	if b.RTTMS > 0 {
		parts = append(parts, "rtt "+msText(b.RTTMS)+" over "+b.RTTOver)
	} else {
		parts = append(parts, "rtt unknown (no round trip completed)")
	}
	if b.Mapped != "" {
		parts = append(parts, "mapped "+b.Mapped)
	} else {
		parts = append(parts, "mapped address unknown (no STUN answer over UDP)")
	}
	parts = append(parts, "udp "+reachText(b.UDP), "tcp "+reachText(b.TCP))
	return strings.Join(parts, ", ")
}

// reachText is one probe's answer: its round trip, or its error.
func reachText(r reachJSON) string {
	if r.OK {
		return "answered in " + msText(r.RTTMS)
	}
	return "no answer (" + r.Error + ")"
}
