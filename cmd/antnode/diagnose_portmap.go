package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"time"

	"github.com/antnode/antnode/monitor"
	"github.com/antnode/antnode/portmap"
	"github.com/antnode/antnode/traversal"
)

// The port-mapping probe of `antnode diagnose`: it asks the router for a
// mapping of the test socket's port as the node would (--portmap), waits
// for the first outcome, records what each protocol did, and deletes the
// mapping. It reports what it saw and nothing more: a protocol it did not
// try is "not tried", one still unanswered when it stopped waiting is
// "unknown", and "no answer" means a request that timed out.

// diagPortmapWait bounds the wait for the probe's first outcome (and the
// run's --timeout bounds it too). It covers a whole round of auto mode on
// a network where nothing answers, PCP's and NAT-PMP's request timeouts
// (4 s each) and UPnP's search (2 s), so that each protocol gets its own
// answer or timeout; the probe runs while the relay checks do.
const diagPortmapWait = 12 * time.Second

// Results of a protocol in the report beyond portmap.ProbeResult's.
const (
	// pmUnknown: the protocol's request was still unanswered when the
	// probe stopped waiting.
	pmUnknown = "unknown"
)

// portmapProbe is what the probe asks for.
type portmapProbe struct {
	// mode is the protocol choice (the --portmap flag, after the loopback
	// rule); Off tries nothing.
	mode portmap.Protocol
	// flag is what --portmap said; off says why nothing is tried when
	// mode is Off.
	flag, off string
	// base is the Config the probe starts from (Protocol, Port, Lease,
	// Logger and AddrString are set on it). The command leaves it zero:
	// the default gateway of the routing table, the local address that
	// routes to it. Tests point Gateway, LocalAddr and UPnPDescription at
	// loopback responders.
	base portmap.Config
	// wait bounds the wait for the first outcome (zero: diagPortmapWait).
	wait time.Duration
}

// newPortmapProbe is the probe for --portmap flag: auto maps nothing when
// every bootstrap is on loopback, as the node's portMapping does.
func newPortmapProbe(flag string, mode portmap.Protocol, bs []traversal.Bootstrap) portmapProbe {
	p := portmapProbe{mode: mode, flag: flag}
	switch {
	case mode == portmap.Off:
		p.off = "--portmap off"
	case mode == portmap.Auto && allLoopback(bs):
		p.mode, p.off = portmap.Off, "every bootstrap is on loopback, where auto maps nothing"
	}
	return p
}

// portmapCheckJSON is the probe's report.
type portmapCheckJSON struct {
	// Mode is what --portmap asked for.
	Mode string `json:"mode"`
	// Tried: a mapping was asked for (false: Detail says why not).
	Tried bool `json:"tried"`
	// Detail is the outcome in one line.
	Detail   string `json:"detail"`
	Gateway  string `json:"gateway,omitempty"`
	Internal string `json:"internal,omitempty"`
	// Granted: a protocol mapped the port (Protocol, External, LeaseS);
	// the probe deleted the mapping again (Deleted, or DeleteError).
	Granted     bool    `json:"granted"`
	Protocol    string  `json:"protocol,omitempty"`
	External    string  `json:"external,omitempty"`
	LeaseS      float64 `json:"lease_s,omitempty"`
	Deleted     bool    `json:"deleted,omitempty"`
	DeleteError string  `json:"delete_error,omitempty"`
	// Protocols are PCP, NAT-PMP and UPnP, in this order, always all
	// three.
	Protocols []portmapProtoJSON `json:"protocols"`
	LastError string             `json:"last_error,omitempty"`
}

// portmapProtoJSON is what one protocol's request found.
type portmapProtoJSON struct {
	Protocol string `json:"protocol"`
	// Result: ok, refused (Code is the router's result code), no-answer,
	// malformed, error (a local failure), not-tried, or unknown (no
	// answer yet when the probe stopped waiting).
	Result string `json:"result"`
	Code   int    `json:"code,omitempty"`
	Detail string `json:"detail"`
}

// portmapRun is a probe under way.
type portmapRun struct {
	p     portmapProbe
	m     *portmap.Mapper
	san   *monitor.Sanitizer
	start time.Time
	err   error // the Mapper could not be made or started
}

// startPortmapProbe starts the probe for the socket's port; finish
// collects it. With mode Off it starts nothing.
func startPortmapProbe(ctx context.Context, p portmapProbe, port uint16, san *monitor.Sanitizer, log *slog.Logger) *portmapRun {
	r := &portmapRun{p: p, san: san, start: time.Now()}
	if p.mode == portmap.Off {
		r.m, r.err = portmap.New(portmap.Config{Protocol: portmap.Off}) // sends nothing
		return r
	}
	cfg := p.base
	cfg.Protocol, cfg.Port, cfg.Logger, cfg.AddrString = p.mode, port, log, san.AddrPort
	// The shortest lease: a mapping whose deletion is lost expires soon.
	cfg.Lease = portmap.MinLease
	if r.m, r.err = portmap.New(cfg); r.err == nil {
		r.err = r.m.Start(ctx)
	}
	return r
}

// finish waits (from the start, at most p.wait, or until ctx ends) for a
// mapping or a round that failed, closes the Mapper, which deletes the
// mapping, and reports what it observed.
func (r *portmapRun) finish(ctx context.Context) portmapCheckJSON {
	if r.err != nil {
		return portmapReport(r.p, idleStatus(r.p.mode), r.err, false, nil, r.san)
	}
	if r.p.mode == portmap.Off {
		return portmapReport(r.p, r.m.Status(), nil, false, nil, r.san)
	}
	wait := r.p.wait
	if wait <= 0 {
		wait = diagPortmapWait
	}
	deadline := r.start.Add(wait)
	st := r.m.Status()
	for !st.Active && st.LastError == "" && time.Now().Before(deadline) && ctx.Err() == nil {
		time.Sleep(20 * time.Millisecond)
		st = r.m.Status()
	}
	delErr := r.m.Close()
	// The status once the Mapper has stopped: a mapping granted in the
	// meantime was granted (and Close deleted it); a round that Close cut
	// short recorded no outcome, and its protocol's answer is unknown.
	st = r.m.Status()
	st.Active = !st.GrantedAt.IsZero()
	cut := !st.Active && st.LastError == ""
	return portmapReport(r.p, st, nil, cut, delErr, r.san)
}

// idleStatus is the status of a Mapper that never ran.
func idleStatus(mode portmap.Protocol) portmap.Status {
	st := portmap.Status{Mode: mode}
	for i, p := range []portmap.Protocol{portmap.PCP, portmap.NATPMP, portmap.UPnP} {
		st.Probes[i].Protocol = p
	}
	return st
}

// portmapReport renders the probe's outcome: st as it was when the probe
// stopped waiting (cut: with no outcome yet), startErr the failure to
// start it, delErr the deletion's.
func portmapReport(p portmapProbe, st portmap.Status, startErr error, cut bool, delErr error, san *monitor.Sanitizer) portmapCheckJSON {
	out := portmapCheckJSON{Mode: p.flag, Tried: p.mode != portmap.Off && startErr == nil, LastError: san.Text(errLine(st.LastError))}
	if st.Gateway.IsValid() {
		out.Gateway = san.Addr(st.Gateway)
	}
	if st.Internal.IsValid() {
		out.Internal = san.AddrPort(st.Internal)
	}
	if st.Active {
		out.Granted, out.Protocol, out.External, out.LeaseS = true, st.Protocol.String(), san.AddrPort(st.External), st.Lease.Seconds()
		out.Deleted = delErr == nil
		if delErr != nil {
			out.DeleteError = san.Text(errText(delErr))
		}
	}
	pending := cut && st.Gateway.IsValid() // the first protocol not yet answered was being asked
	for _, pr := range st.Probes {
		j := portmapProtoJSON{Protocol: pr.Protocol.String(), Result: pr.Result.String(), Code: pr.Code}
		if pr.Result == portmap.NotTried && pending && p.mode != portmap.Off && (p.mode == portmap.Auto || p.mode == pr.Protocol) {
			j.Result, pending = pmUnknown, false
		}
		j.Detail = protoDetail(p, st, j, cut)
		out.Protocols = append(out.Protocols, j)
	}
	out.Detail = portmapDetail(p, st, startErr, cut, san)
	return out
}

// protoDetail says in words what one protocol's result means.
func protoDetail(p portmapProbe, st portmap.Status, j portmapProtoJSON, cut bool) string {
	switch j.Result {
	case portmap.Answered.String():
		if st.Active && st.Protocol.String() == j.Protocol {
			return "ok: the router mapped the port"
		}
		return "ok: the router mapped the port; the mapping was lost again"
	case portmap.Refused.String():
		return "refused: the router answered with " + refusalText(j)
	case portmap.NoAnswer.String():
		return "no answer: nothing came back from the router before the request timed out"
	case portmap.Malformed.String():
		return "malformed: the router answered, but nothing it sent could be read as an answer"
	case portmap.Failed.String():
		return "error: the request failed here, or the router's answer was unusable (see last error)"
	case pmUnknown:
		return "unknown: no answer yet when diagnose stopped waiting"
	}
	switch {
	case p.mode == portmap.Off:
		return "not tried: " + p.off
	case p.mode != portmap.Auto && p.mode.String() != j.Protocol:
		return "not tried: --portmap " + p.mode.String()
	case st.Active:
		return "not tried: " + st.Protocol.String() + " mapped the port first"
	case cut && !st.Gateway.IsValid():
		return "not tried: no gateway found before diagnose stopped waiting"
	case cut:
		return "not tried before diagnose stopped waiting"
	}
	return "not tried: no request was sent (see last error)"
}

// refusalText is a refusal's result code with its name from the
// protocol's specification, where it names one.
func refusalText(j portmapProtoJSON) string {
	p, err := portmap.ParseProtocol(j.Protocol)
	if err != nil {
		return fmt.Sprintf("result code %d", j.Code)
	}
	re := &portmap.ResultError{Protocol: p, Code: j.Code}
	if name := re.Name(); name != "" {
		return fmt.Sprintf("result code %d (%s)", j.Code, name)
	}
	return fmt.Sprintf("result code %d", j.Code)
}

// portmapDetail is the probe's outcome in one line.
func portmapDetail(p portmapProbe, st portmap.Status, startErr error, cut bool, san *monitor.Sanitizer) string {
	switch {
	case p.mode == portmap.Off:
		return "not tried: " + p.off
	case startErr != nil:
		return "not tried: " + san.Text(errText(startErr))
	case st.Active:
		return fmt.Sprintf("%s mapped %s to %s for %v", st.Protocol, san.AddrPort(st.Internal), san.AddrPort(st.External), st.Lease)
	case cut:
		return "no mapping yet when diagnose stopped waiting"
	}
	return "no mapping: " + san.Text(errLine(st.LastError))
}

// errLine is an error text on one line.
func errLine(s string) string {
	return strings.Join(strings.Fields(strings.ReplaceAll(s, "\n", "; ")), " ")
}

// portmapVerdict is the evidence the probe gives diagnosis: each protocol
// the router refused is one observation (stated by the router, with its
// result code) that it refuses port mapping; none when a protocol mapped
// the port, since then the router does map it.
func portmapVerdict(pm portmapCheckJSON, now time.Time) []monitor.Probe {
	if pm.Granted {
		return nil
	}
	var out []monitor.Probe
	for _, j := range pm.Protocols {
		if j.Result != portmap.Refused.String() {
			continue
		}
		out = append(out, monitor.Probe{Cause: monitor.CausePortMapRefused, Scope: "node", Severity: monitor.SeverityInfo,
			Observation: monitor.Observation{Source: j.Protocol + " to the gateway", Strength: monitor.StrengthStated},
			Evidence:    monitor.Evidence{Time: now, Kind: "probe", Detail: fmt.Sprintf("%s: %s", j.Protocol, refusalText(j))}})
	}
	return out
}

// printPortmap prints the probe: the outcome, then each protocol (when
// it ran).
func printPortmap(w io.Writer, pm portmapCheckJSON) {
	head := "  portmap (" + pm.Mode
	if pm.Gateway != "" {
		head += ", gateway " + pm.Gateway
	}
	line := head + "): " + pm.Detail
	if pm.Granted {
		if pm.Deleted {
			line += "; deleted again"
		} else {
			line += "; NOT deleted: " + pm.DeleteError
		}
	}
	fmt.Fprintln(w, line)
	if !pm.Tried {
		return // the line says why nothing was tried
	}
	for _, j := range pm.Protocols {
		fmt.Fprintf(w, "    %-7s %s\n", j.Protocol, j.Detail)
	}
}
