package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/antnode/antnode/endpoint"
	"github.com/antnode/antnode/identity"
	"github.com/antnode/antnode/monitor"
	"github.com/antnode/antnode/traversal"
)

type connectOptions struct {
	peer           identity.PeerID
	target         peerArg // peer, by ID or ticket
	bootstrapNodes string
	key            string
	listen         string
	send           int64
	timeout        time.Duration
	repeat         int
	interval       time.Duration
	idle           time.Duration
	json           bool
	remember       bool
	relay          peerFlags
	log            logFlags
}

// connectResult is the JSON outcome of `antnode connect --json`.
type connectResult struct {
	Peer          string  `json:"peer"`
	Connected     bool    `json:"connected"`
	Path          string  `json:"path"`
	TimeToConnect float64 `json:"time_to_connect_ms"`
	RTT           float64 `json:"rtt_ms"`
	BytesVerified int64   `json:"bytes_verified"`
	ThroughputMbs float64 `json:"throughput_mbps,omitempty"`
	// NAT is the NAT class in the family the node registered in (kept
	// for a release; NATFamilies has each family's).
	NAT         string            `json:"nat"`
	NATFamilies map[string]string `json:"nat_families,omitempty"` // "ipv4", "ipv6": the class in each family the socket serves
	PeerNAT     string            `json:"peer_nat,omitempty"`
	// Family is the address family ("ipv4", "ipv6") the connection's
	// packets travel in from this node (see traversal.Conn.Family): the
	// family that won a dual-stack race. NAT64 is the prefix it
	// reached IPv4 addresses through, if it needed one.
	Family  string `json:"family,omitempty"`
	NAT64   string `json:"nat64,omitempty"`
	Attempt string `json:"attempt_id,omitempty"`
	Phase   string `json:"failed_phase,omitempty"`
	Reason  string `json:"reason,omitempty"`
	Error   string `json:"error,omitempty"`
	// NextStep is what to do about the failure's reason (diagnosis's
	// next step for it).
	NextStep string  `json:"next_step,omitempty"`
	IdleS    float64 `json:"idle_s,omitempty"`
	// FinalPath is the path at the end (after migrations), Migrations
	// the moves the connection made.
	FinalPath string `json:"final_path,omitempty"`
	// FinalFamily is the family the connection's packets travel in at the
	// end (after a move to the other family, that one).
	FinalFamily string          `json:"final_family,omitempty"`
	Migrations  []migrationJSON `json:"migrations,omitempty"`
	// Runs holds every run's outcome with --repeat (the fields above are
	// the last run's).
	Runs []connectRun `json:"runs,omitempty"`
	// Bootstraps is the state of each bootstrap at the end.
	Bootstraps []bootstrapState `json:"bootstraps,omitempty"`
	// MappingLifetimeMS is the NAT mapping lifetime the node learned (an
	// upper bound; 0: none learned), KeepaliveMS the keepalive pace that
	// follows from it.
	MappingLifetimeMS float64 `json:"mapping_lifetime_ms,omitempty"`
	KeepaliveMS       float64 `json:"keepalive_ms"`
	// PortMap is the port mapping the router granted (--portmap).
	PortMap *portMapJSON `json:"portmap,omitempty"`
	// WarmRelay is the node's warm relay when it wanted one (UDP blocked,
	// a symmetric NAT): ready (its relayed address went with the
	// introduction) or retrying (the attempt allocated its own).
	WarmRelay *warmRelayJSON `json:"warm_relay,omitempty"`
}

type migrationJSON struct {
	Kind       string  `json:"kind"`
	Reason     string  `json:"reason"`
	OK         bool    `json:"ok"`
	DurationMS float64 `json:"duration_ms"`
	From       string  `json:"from"`
	To         string  `json:"to"`
	AtMS       float64 `json:"at_ms"` // since the connection was made
	AtUnixMS   int64   `json:"at_unix_ms"`
}

type connectRun struct {
	Connected     bool    `json:"connected"`
	Path          string  `json:"path"`
	TimeToConnect float64 `json:"time_to_connect_ms"`
	BytesVerified int64   `json:"bytes_verified"`
	Reason        string  `json:"reason,omitempty"`
}

type bootstrapState struct {
	Label      string `json:"label"`
	Registered bool   `json:"registered"`
	Transport  string `json:"transport,omitempty"`
	Breaker    string `json:"breaker"`
}

func mainConnect(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	var o connectOptions
	fs := flag.NewFlagSet("antnode connect", flag.ContinueOnError)
	fs.StringVar(&o.bootstrapNodes, "bootstrap-nodes", "", "comma-separated bootstrap nodes, HOST:PORT, PEERID@HOST:PORT or dns:NAME (SRV _antnode._udp.NAME)")
	fs.StringVar(&o.key, "key", "", "path of this node's key (empty: an ephemeral identity)")
	fs.StringVar(&o.listen, "listen", "", "UDP address to connect from; 0.0.0.0:P,[::]:P for one dual-stack socket (empty: 0.0.0.0:0,[::]:0 where the host has IPv4 and global IPv6, else 0.0.0.0:0)")
	send := fs.String("send", "0", "bytes of pseudo-random data to send and have verified (e.g. 1048576, 4MiB)")
	fs.DurationVar(&o.timeout, "timeout", 20*time.Second, "give up after this long (each run; at most 24h)")
	fs.IntVar(&o.repeat, "repeat", 1, "connect this many times in a row (a new attempt each time), for failover tests (1-1000)")
	fs.DurationVar(&o.interval, "interval", 0, "pause between repeated runs (0-1h)")
	fs.BoolVar(&o.remember, "remember", true, "between repeated runs, race a direct dial to the peer's last direct path (resuming its TLS session) against the introduction; false: every run goes through a bootstrap")
	fs.DurationVar(&o.idle, "idle", 0, "once connected, stay idle this long before the transfer (the connection must survive it; 0-1h)")
	fs.BoolVar(&o.json, "json", false, "print one JSON object")
	o.relay.register(fs)
	o.log.register(fs, "warn")
	configFlag(fs)
	cmd := command{name: "antnode connect", positional: true, synopsis: `usage: antnode connect PEERID|TICKET --bootstrap-nodes ADDR[,ADDR...] [--send BYTES] [--timeout DUR] [--json] [flags]
  connect to a peer through a bootstrap, optionally verify a transfer; exit 0 only on success
ADDR is HOST:PORT or PEERID@HOST:PORT (the bootstrap's key is then checked).
TICKET is a peer's ticket (antnode id --ticket): without --bootstrap-nodes its bootstraps
are this node's; with them, it registers on demand with one of the ticket's when it shares none.
`}
	pos, code, ok := cmd.parse(fs, args, stdout, stderr)
	if !ok {
		return code
	}
	var err error
	if len(pos) != 1 {
		fmt.Fprintln(stderr, "antnode connect: exactly one PEERID or TICKET is required")
		return exitUsage
	}
	if o.target, err = parsePeerArg(pos[0]); err != nil {
		fmt.Fprintln(stderr, "antnode connect:", err)
		return exitUsage
	}
	o.peer, o.bootstrapNodes = o.target.id, o.target.bootstrapNodes(o.bootstrapNodes)
	if o.send, err = parseSize(*send); err != nil {
		fmt.Fprintln(stderr, "antnode connect: --send:", err)
		return exitUsage
	}
	if o.bootstrapNodes == "" {
		fmt.Fprintln(stderr, "antnode connect: --bootstrap-nodes is required (or a ticket that names bootstraps)")
		return exitUsage
	}
	if err := firstErr(inRange("timeout", o.timeout, time.Millisecond, maxCmdTimeout), inRange("repeat", o.repeat, 1, 1000),
		inRange("interval", o.interval, 0, maxPause), inRange("idle", o.idle, 0, maxPause), o.relay.validate()); err != nil {
		fmt.Fprintln(stderr, "antnode connect:", err)
		return exitUsage
	}
	log, san, err := o.log.build(stderr)
	if err != nil {
		fmt.Fprintln(stderr, "antnode connect:", err)
		return exitUsage
	}
	ctx, cancel := context.WithTimeout(ctx, time.Duration(o.repeat)*(o.timeout+o.interval+o.idle))
	defer cancel()
	tl := &timeline{}
	res, err := runConnect(ctx, o, log, san, prometheus.NewRegistry(), tl)
	if ue := (*usageError)(nil); errors.As(err, &ue) {
		// Bad input: said plainly, with the user's own addresses.
		fmt.Fprintln(stderr, "antnode connect:", err)
		if o.json {
			b, _ := json.Marshal(res)
			fmt.Fprintln(stdout, string(b))
		}
		return exitUsage
	}
	res.PeerNAT = tl.peerNAT()
	if o.json {
		b, _ := json.Marshal(res)
		fmt.Fprintln(stdout, string(b))
	} else {
		printHuman(stdout, res, tl)
	}
	if !res.Connected || res.Error != "" {
		return exitFailure
	}
	return exitOK
}

// reasonUsage is the reason of a run that bad input stopped before it
// began (a usage error, exit 2).
const reasonUsage = "usage"

// runConnect registers an (ephemeral) peer, connects to o.peer and
// optionally verifies a transfer. Every failure is described in the result;
// bad input (a flag's value, the key file, the listen address) is also
// returned as a *usageError.
func runConnect(ctx context.Context, o connectOptions, log *slog.Logger, san *monitor.Sanitizer, reg prometheus.Registerer, tl *timeline) (connectResult, error) {
	res := connectResult{Peer: o.peer.String(), Path: "none"}
	fail := func(phase string, reason monitor.Reason, err error) (connectResult, error) {
		res.Phase, res.Reason, res.Error = phase, reason.String(), oneLine(err)
		res.NextStep = nextStep(res.Reason)
		return res, nil
	}
	bad := func(err error) (connectResult, error) {
		res.Phase, res.Reason, res.Error = "setup", reasonUsage, oneLine(err)
		return res, badInput(err)
	}
	bs, _, err := resolveBootstraps(ctx, o.bootstrapNodes, o.relay.dnsServer, log) // resolved once: a connect is short
	if err != nil {
		return bad(err)
	}
	if o.listen == "" {
		o.listen = defaultListenHere()
	}
	prefix, err := nat64For(ctx, o.listen, bs, o.relay.dnsServer, log)
	if err != nil {
		return bad(err)
	}
	id, err := loadIdentity(o.key, log)
	if err != nil {
		return bad(fmt.Errorf("--key: %w", err))
	}
	mon, err := monitor.New(monitor.Config{Logger: log, Registerer: reg, Sanitizer: san})
	if err != nil {
		return fail("setup", monitor.ReasonInternal, err)
	}
	tl.next = mon
	ep, err := listenPeer(o.listen, endpoint.Config{Logger: log, StatelessResetKey: resetKey(id)})
	if err != nil {
		return bad(fmt.Errorf("--listen: %w", err))
	}
	defer ep.Close()
	bs = traversal.MapBootstraps(prefix, bs)
	ncfg := traversal.Config{Identity: id, Endpoint: ep, Bootstraps: bs, Recorder: tl, Logger: log, ConnectTimeout: o.timeout, NAT64: prefix}
	if !o.remember {
		ncfg.RememberFor = -1
	}
	if err := o.relay.apply(&ncfg); err != nil {
		return bad(err)
	}
	pm, err := newPortMapping(o.relay.portmapMode, ep, bs, reg, log, san, &ncfg)
	if err != nil {
		return fail("setup", monitor.ReasonInternal, err)
	}
	node, err := traversal.New(ncfg)
	if err != nil {
		return fail("setup", monitor.ReasonInternal, err)
	}
	defer node.Close()
	if err := pm.start(ctx, node); err != nil {
		return fail("setup", monitor.ReasonInternal, err)
	}
	defer pm.Close()
	res.NAT = "unknown"
	if err := node.WaitReady(ctx); err != nil {
		reason := monitor.ReasonBootstrapUnreachable
		if errors.Is(err, identity.ErrKeyMismatch) {
			reason = monitor.ReasonKeyMismatch
		}
		return fail("register", reason, err)
	}
	// The strategy depends on this side's NAT type: measure it first
	// (bounded; an unknown type is tried as the easy kind).
	cctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	if nat, err := node.Classify(cctx); err == nil {
		res.NAT = nat.Class()
		res.NATFamilies = natFamilies(node)
	}
	cancel()
	pm.wait(ctx)
	res.PortMap = portMapState(pm.m.Status(), san)
	res.WarmRelay = awaitWarmRelay(ctx, node, san)
	failed := connectRepeatedly(ctx, node, o, &res)
	if failed && res.Error == "" {
		res.Error = "at least one run failed"
	}
	describe(&res, node)
	return res, nil
}

// describe completes a connect's result with what the node says at the
// end: its bootstraps' states, its mapping lifetime and keepalive, and
// the next step for a failure's reason.
func describe(res *connectResult, node *traversal.Node) {
	for _, b := range node.Bootstraps() {
		res.Bootstraps = append(res.Bootstraps, bootstrapState{Label: b.Label, Registered: b.Registered,
			Transport: b.Transport, Breaker: b.Breaker})
	}
	res.MappingLifetimeMS, res.KeepaliveMS = ms(node.MappingLifetime()), ms(node.Keepalive())
	res.NextStep = nextStep(res.Reason)
}

// connectRepeatedly makes o.repeat attempts on a ready node, o.interval
// apart, copying the last run's outcome into res (and each run's summary
// into res.Runs when there are several); it reports whether any failed.
func connectRepeatedly(ctx context.Context, node *traversal.Node, o connectOptions, res *connectResult) bool {
	failed := false
	for i := range o.repeat {
		if i > 0 {
			select {
			case <-time.After(o.interval):
			case <-ctx.Done():
			}
		}
		run := connectOnce(ctx, node, o)
		failed = failed || !run.Connected || run.Error != ""
		res.Connected, res.Path, res.TimeToConnect, res.RTT = run.Connected, run.Path, run.TimeToConnect, run.RTT
		res.BytesVerified, res.ThroughputMbs, res.Attempt = run.BytesVerified, run.ThroughputMbs, run.Attempt
		res.IdleS, res.FinalPath, res.Migrations = run.IdleS, run.FinalPath, run.Migrations
		res.FinalFamily = run.FinalFamily
		res.Family, res.NAT64 = run.Family, run.NAT64
		res.Phase, res.Reason, res.Error = run.Phase, run.Reason, run.Error
		if o.repeat > 1 {
			res.Runs = append(res.Runs, connectRun{Connected: run.Connected && run.Error == "", Path: run.Path,
				TimeToConnect: run.TimeToConnect, BytesVerified: run.BytesVerified, Reason: run.Reason})
		}
	}
	return failed
}

// nextStep is diagnosis's next step for a failure's reason, when the
// reason points to one of its causes ("" otherwise).
func nextStep(reason string) string {
	r, err := monitor.ParseReason(reason)
	if err != nil {
		return ""
	}
	step, _ := monitor.NextStep(r)
	return step
}

// connectOnce makes one attempt (and transfer) on a running node.
func connectOnce(ctx context.Context, node *traversal.Node, o connectOptions) connectResult {
	res := connectResult{Peer: o.peer.String(), Path: "none"}
	fail := func(phase string, reason monitor.Reason, err error) connectResult {
		res.Phase, res.Reason, res.Error = phase, reason.String(), oneLine(err)
		return res
	}
	ctx, cancel := context.WithTimeout(ctx, o.timeout+o.idle)
	defer cancel()
	c, err := o.target.connect(ctx, node)
	if err != nil {
		var ce *traversal.ConnectError
		if errors.As(err, &ce) {
			res.Attempt = ce.Attempt.String()
			return fail(ce.Phase.String(), ce.Reason, ce.Err)
		}
		return fail("connect", traversal.Reason(err), err)
	}
	defer c.Close()
	connected := time.Now()
	res.Connected = true
	res.Path = c.Path().String()
	res.Family = c.Family().String()
	if p := node.NAT64(); p.IsValid() {
		res.NAT64 = p.String()
	}
	res.Attempt = c.Attempt().String()
	res.TimeToConnect = ms(c.TimeToConnect())
	if o.idle > 0 {
		select {
		case <-time.After(o.idle):
		case <-ctx.Done():
		case <-c.QUIC().Context().Done():
			return fail("idle", monitor.ReasonConnectionLost, context.Cause(c.QUIC().Context()))
		}
		res.IdleS = o.idle.Seconds()
	}
	if o.send > 0 {
		tr, err := c.SendVerified(ctx, o.send)
		if err != nil {
			res.RTT = ms(c.RTT())
			return fail("transfer", traversal.Reason(err), err)
		}
		res.BytesVerified = tr.Bytes
		res.ThroughputMbs = float64(int(tr.Mbps*10)) / 10
	}
	res.RTT = ms(c.RTT())
	res.FinalPath = c.Path().String()
	res.FinalFamily = c.Family().String()
	for _, m := range c.Migrations() {
		res.Migrations = append(res.Migrations, migrationJSON{Kind: m.Kind, Reason: m.Reason.String(), OK: m.OK,
			DurationMS: ms(m.Duration), From: m.From.String(), To: m.To.String(), AtMS: ms(m.At.Sub(connected)),
			AtUnixMS: m.At.UnixMilli()})
	}
	return res
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

func oneLine(err error) string {
	return strings.Join(strings.Fields(err.Error()), " ")
}

// timeline is a Recorder that keeps the phase events of the process (for
// the human-readable report) and passes every event on.
type timeline struct {
	next monitor.Recorder

	mu     sync.Mutex
	events []monitor.Event
}

func (t *timeline) Record(ev monitor.Event) {
	if ev.Time.IsZero() {
		ev.Time = time.Now()
	}
	switch ev.Kind {
	case monitor.KindAttemptStart, monitor.KindPhaseEnd, monitor.KindAttemptEnd, monitor.KindPathValidated,
		monitor.KindBootstrapRequest, monitor.KindRecovery, monitor.KindFallback, monitor.KindThroughput:
		t.mu.Lock()
		if len(t.events) < 1000 {
			t.events = append(t.events, ev)
		}
		t.mu.Unlock()
	}
	if t.next != nil {
		t.next.Record(ev)
	}
}

// peerNAT returns the peer's NAT class from the attempt's end.
func (t *timeline) peerNAT() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	for _, ev := range t.events {
		if ev.Kind == monitor.KindAttemptEnd {
			return ev.PeerNAT
		}
	}
	return ""
}

func printHuman(w io.Writer, res connectResult, tl *timeline) {
	tl.mu.Lock()
	events := append([]monitor.Event(nil), tl.events...)
	tl.mu.Unlock()
	var start time.Time
	for _, ev := range events {
		if ev.Kind == monitor.KindAttemptStart {
			start = ev.Time
			fmt.Fprintf(w, "attempt %s to %s\n", ev.Attempt, shortPeer(res.Peer))
			continue
		}
		if start.IsZero() {
			if ev.Kind == monitor.KindBootstrapRequest {
				fmt.Fprintf(w, "  bootstrap %-2s %-10s %-8s %8.2f ms\n", ev.Bootstrap, ev.Detail, ev.Outcome, ms(ev.Duration))
			}
			continue
		}
		off := ms(ev.Time.Sub(start))
		switch ev.Kind {
		case monitor.KindPhaseEnd:
			line := fmt.Sprintf("  +%8.2f ms  %-11s %-8s %8.2f ms", off, ev.Phase, ev.Outcome, ms(ev.Duration))
			if ev.Reason != monitor.ReasonNone {
				line += "  (" + ev.Reason.String() + ")"
			}
			fmt.Fprintln(w, line)
		case monitor.KindPathValidated:
			fmt.Fprintf(w, "  +%8.2f ms  path validated, rtt %.2f ms, %d pair(s)\n", off, ms(ev.Duration), int(ev.Value))
		case monitor.KindRecovery, monitor.KindFallback:
			fmt.Fprintf(w, "  +%8.2f ms  %s: %s (%s)\n", off, ev.Kind, ev.Detail, ev.Reason)
		case monitor.KindAttemptEnd:
			fmt.Fprintf(w, "  +%8.2f ms  %s\n", off, map[bool]string{true: "connected", false: "failed"}[ev.Outcome == monitor.OutcomeOK])
		}
	}
	if !res.Connected {
		fmt.Fprintf(w, "FAILED (%s, %s): %s\n", res.Phase, res.Reason, res.Error)
		if res.NextStep != "" {
			fmt.Fprintf(w, "next step: %s\n", res.NextStep)
		}
		return
	}
	fmt.Fprintf(w, "connected to %s: path %s, time to connect %.2f ms, rtt %.2f ms (NAT here %s, there %s)\n",
		shortPeer(res.Peer), res.Path, res.TimeToConnect, res.RTT, res.NAT, res.PeerNAT)
	if res.BytesVerified > 0 {
		fmt.Fprintf(w, "transfer: %d bytes verified by SHA-256 on the peer, %.1f Mbit/s\n", res.BytesVerified, res.ThroughputMbs)
	}
	if res.Error != "" {
		fmt.Fprintf(w, "FAILED (%s, %s): %s\n", res.Phase, res.Reason, res.Error)
		if res.NextStep != "" {
			fmt.Fprintf(w, "next step: %s\n", res.NextStep)
		}
	}
}

func shortPeer(s string) string {
	if len(s) > 10 {
		return s[:10]
	}
	return s
}

// awaitWarmRelay lets a node that keeps a warm relay (UDP blocked, a
// symmetric NAT) have its allocation announced before it asks for an
// introduction, as a daemon would (bounded: 3 s; without it the attempt
// allocates its own), and returns its state for connect's JSON (nil when
// the node wants none).
func awaitWarmRelay(ctx context.Context, node *traversal.Node, san *monitor.Sanitizer) *warmRelayJSON {
	wctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	_ = node.WaitWarmRelay(wctx)
	st := node.WarmRelay()
	if st.State == traversal.WarmStateOff {
		return nil
	}
	w := warmRelayState(st, san)
	return &w
}

// natFamilies is the node's NAT class in each family its socket serves.
func natFamilies(node *traversal.Node) map[string]string {
	out := make(map[string]string)
	for fam, t := range node.NATFamilies() {
		out[fam] = t.Class()
	}
	return out
}
