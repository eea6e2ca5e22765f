package main

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"time"

	"github.com/antnode/antnode/bootstrap/wire"
	"github.com/antnode/antnode/endpoint"
	"github.com/antnode/antnode/identity"
	"github.com/antnode/antnode/monitor"
	"github.com/antnode/antnode/traversal"
)

// Reachability of the bootstraps, by UDP and by TCP: what tells "UDP
// blocked" from "bootstrap down". A bootstrap serves its TCP fallback (TLS
// on TCP) on its listen port, the port its UDP serves; so a bootstrap that
// answers over TCP and not over UDP shows UDP blocked on the way (or its
// UDP port down, if another bootstrap answers over UDP), and one that
// answers over neither shows nothing about UDP: it is down, or the path to
// it is cut.

// errNotTested: the run's time was up before the probe could run.
var errNotTested = errors.New("not tested: the run's time was up")

// tcpProbeTimeout bounds one TCP probe (connect and TLS handshake).
const tcpProbeTimeout = 2 * time.Second

// bootReach is what the probes to one bootstrap found.
type bootReach struct {
	Label  string
	UDP    bool // answered STUN over UDP
	Mapped netip.AddrPort
	UDPRTT time.Duration
	UDPErr error
	TCP    bool // completed a TLS handshake over TCP on the same port, as the bootstrap
	TCPRTT time.Duration
	TCPErr error
}

// udpCheckJSON is the UDP check: ok (some bootstrap answered over UDP),
// blocked (none did, and one answered over TCP on the same port) or
// unknown (none answered over anything: nothing to compare with).
type udpCheckJSON struct {
	OK     bool   `json:"ok"`
	Status string `json:"status"`
	Detail string `json:"detail"`
}

// UDP check states.
const (
	udpOK      = "ok"
	udpBlocked = "blocked"
	udpUnknown = "unknown"
)

// probeBootstraps sends STUN over UDP from ep and TLS over TCP to every
// bootstrap, as id.
func probeBootstraps(ctx context.Context, ep *endpoint.Endpoint, id *identity.Identity, bs []traversal.Bootstrap) []bootReach {
	out := make([]bootReach, len(bs))
	for i, b := range bs {
		r := bootReach{Label: fmt.Sprint(i), UDPErr: errNotTested, TCPErr: errNotTested}
		if ctx.Err() == nil {
			r.Mapped, r.UDPRTT, r.UDPErr = stunProbe(ctx, ep, b.Addr)
			r.UDP = r.UDPErr == nil
		}
		if ctx.Err() == nil {
			r.TCPRTT, r.TCPErr = tcpProbe(ctx, id, b)
			r.TCP = r.TCPErr == nil
		}
		if ctx.Err() != nil && !r.UDP && !r.TCP {
			// Timed out with the run: the silence is not an answer.
			r.UDPErr, r.TCPErr = tested(r.UDPErr), tested(r.TCPErr)
		}
		out[i] = r
	}
	return out
}

// tested marks an error as not an answer: the run's time ran out.
func tested(err error) error {
	if errors.Is(err, errNotTested) {
		return err
	}
	return fmt.Errorf("%w: %w", errNotTested, err)
}

// tcpProbe connects to the bootstrap's TCP fallback (its address and
// port) and completes a TLS handshake with the control protocol's ALPN,
// checking its key when b names one, as bootstrap.Client's fallback does;
// it returns the time the handshake took.
func tcpProbe(ctx context.Context, id *identity.Identity, b traversal.Bootstrap) (time.Duration, error) {
	ctx, cancel := context.WithTimeout(ctx, tcpProbeTimeout)
	defer cancel()
	start := time.Now()
	var d net.Dialer
	raw, err := d.DialContext(ctx, "tcp", b.Addr.String())
	if err != nil {
		return 0, fmt.Errorf("TCP: %w", err)
	}
	defer raw.Close()
	tc := tls.Client(raw, id.ClientTLS(b.ID, wire.ALPN))
	if err := tc.HandshakeContext(ctx); err != nil {
		return 0, fmt.Errorf("TLS over TCP: %w", err)
	}
	return time.Since(start), nil
}

// reachVerdict turns the probes into the UDP check and the observations
// diagnosis weighs: UDP blocked only where a bootstrap answered over TCP
// and none over UDP; a bootstrap that answered over neither is
// unreachable, and says nothing about UDP.
//
// redact renders error texts (addresses hidden with --redact).
func reachVerdict(rs []bootReach, now time.Time, redact func(string) string) (udpCheckJSON, []monitor.Probe) {
	var answered, tcpOnly, silent []bootReach
	for _, r := range rs {
		switch {
		case r.UDP:
			answered = append(answered, r)
		case errors.Is(r.UDPErr, errNotTested):
			// Not tested over UDP: no evidence either way.
		case r.TCP:
			tcpOnly = append(tcpOnly, r)
		case !errors.Is(r.TCPErr, errNotTested):
			silent = append(silent, r)
		}
	}
	var probes []monitor.Probe
	probe := func(c monitor.Cause, scope string, sev monitor.Severity, src string, against bool, detail string) {
		probes = append(probes, monitor.Probe{Cause: c, Scope: scope, Severity: sev,
			Observation: monitor.Observation{Source: src, Strength: monitor.StrengthMeasured, Against: against},
			Evidence:    monitor.Evidence{Time: now, Kind: "probe", Detail: detail}})
	}
	for _, r := range answered {
		probe(monitor.CauseUDPBlocked, "node", monitor.SeverityWarning, "UDP to bootstrap "+r.Label, true,
			fmt.Sprintf("bootstrap %s answered STUN over UDP in %s", r.Label, msText(msFloat(r.UDPRTT))))
	}
	for _, r := range tcpOnly {
		if len(answered) > 0 {
			probe(monitor.CauseBootstrapUnreachable, "bootstrap "+r.Label, monitor.SeverityWarning, "probes to bootstrap "+r.Label, false,
				fmt.Sprintf("bootstrap %s: no STUN answer over UDP while bootstrap %s answered over UDP; TLS over TCP to it answered in %s: its UDP port is down or filtered",
					r.Label, answered[0].Label, msText(msFloat(r.TCPRTT))))
			continue
		}
		probe(monitor.CauseUDPBlocked, "node", monitor.SeverityWarning, "UDP and TCP to bootstrap "+r.Label, false,
			fmt.Sprintf("bootstrap %s: no STUN answer over UDP; TLS over TCP to the same port answered in %s", r.Label, msText(msFloat(r.TCPRTT))))
	}
	for _, r := range silent {
		detail := fmt.Sprintf("bootstrap %s: no STUN answer over UDP (%s); %s", r.Label, redact(errText(r.UDPErr)), redact(errText(r.TCPErr)))
		probe(monitor.CauseBootstrapUnreachable, "bootstrap "+r.Label, monitor.SeverityWarning, "probes to bootstrap "+r.Label, false, detail)
		if len(silent) == len(rs) {
			probe(monitor.CauseBootstrapUnreachable, "node", monitor.SeverityError, "probes to bootstrap "+r.Label, false, detail)
		}
	}
	return udpCheck(len(rs), len(answered), len(tcpOnly), len(silent)), probes
}

func udpCheck(total, answered, tcpOnly, silent int) udpCheckJSON {
	switch {
	case answered > 0:
		return udpCheckJSON{OK: true, Status: udpOK, Detail: fmt.Sprintf("%d of %d bootstraps answered STUN over UDP", answered, total)}
	case tcpOnly > 0:
		return udpCheckJSON{Status: udpBlocked, Detail: fmt.Sprintf("no bootstrap answered STUN over UDP; %d of %d answered over TCP on the same port", tcpOnly, total)}
	}
	if silent < total {
		return udpCheckJSON{Status: udpUnknown, Detail: fmt.Sprintf("unknown: %d of %d bootstraps not tested before the run's time was up, none answered", total-silent, total)}
	}
	return udpCheckJSON{Status: udpUnknown, Detail: fmt.Sprintf("unknown: none of %d bootstraps answered over UDP or over TCP, so nothing tells blocked UDP from a bootstrap down", total)}
}

// msFloat is a duration in milliseconds, to the nanosecond.
func msFloat(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// msText renders milliseconds with the precision they need: "12.3 ms",
// "0.042 ms" (a loopback round trip is not "0.0 ms").
func msText(ms float64) string {
	if ms >= 1 {
		return fmt.Sprintf("%.1f ms", ms)
	}
	return fmt.Sprintf("%.3f ms", ms)
}

// errText is an error's text on one line (joined errors joined with
// "; "), "no answer" for none.
func errText(err error) string {
	if err == nil {
		return "no answer"
	}
	return strings.Join(strings.Fields(strings.ReplaceAll(err.Error(), "\n", "; ")), " ")
}
