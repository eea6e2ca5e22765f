package testnet

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"sync"
	"time"

	"github.com/pion/stun/v3"
	"github.com/quic-go/quic-go/quicvarint"

	"github.com/antnode/antnode/bootstrap/wire"
	"github.com/antnode/antnode/identity"
)

// The attack scenario's floods (see attack.go).

// dialMany opens n TCP connections to dst from namespace ns, spread over
// the attacker's addresses. It stops at the first that fails and returns
// those it opened with the error.
func dialMany(ctx context.Context, ns string, dst netip.AddrPort, n int) ([]net.Conn, error) {
	var conns []net.Conn
	err := InNS(ns, func() error {
		for i := range n {
			d := net.Dialer{Timeout: 2 * time.Second,
				LocalAddr: net.TCPAddrFromAddrPort(netip.AddrPortFrom(attackSource(i%attackSources), 0))}
			c, err := d.DialContext(ctx, "tcp4", dst.String())
			if err != nil {
				return fmt.Errorf("testnet: connection %d to %s: %w", i, dst, err)
			}
			conns = append(conns, c)
		}
		return nil
	})
	return conns, err
}

func closeAll(conns []net.Conn) {
	for _, c := range conns {
		c.Close()
	}
}

// until calls ok every 50 ms until it says true or within passes, and
// returns how long after start it said true (-1: never).
func until(ctx context.Context, start time.Time, within time.Duration, ok func() bool) time.Duration {
	for time.Since(start) < within && ctx.Err() == nil {
		if ok() {
			return time.Since(start)
		}
		time.Sleep(50 * time.Millisecond)
	}
	return -1
}

func msOf(d time.Duration) string {
	if d < 0 {
		return "never"
	}
	return fmt.Sprintf("%d ms", d.Milliseconds())
}

// idleFlood holds attackIdleConns idle connections to the relay's TCP
// port, past the bootstrap's descriptors, then lets them go and measures
// how soon its listeners and /readyz are back.
func (a *attack) idleFlood(ctx context.Context) {
	conns, err := dialMany(ctx, a.ns, a.relay(), attackIdleConns)
	defer closeAll(conns)
	if !a.check(err == nil, "idle flood: %v", err) {
		return
	}
	during := 0
	until(ctx, time.Now(), 5*time.Second, func() bool {
		during = a.readyz(ctx)
		return during == http.StatusServiceUnavailable
	})
	closeAll(conns)
	start := time.Now()
	tlsBack := until(ctx, start, 10*time.Second, func() bool { return a.controlHandshake(ctx) == nil })
	relayBack := until(ctx, start, 10*time.Second, func() bool { return a.relayBinding() == nil })
	readyBack := until(ctx, start, 10*time.Second, func() bool { return a.readyz(ctx) == http.StatusOK })
	a.notef("idle flood: %d connections under nofile %d, /readyz %d during; after it control TLS in %s, relay TCP STUN in %s, /readyz 200 in %s",
		len(conns), attackFDLimit, during, msOf(tlsBack), msOf(relayBack), msOf(readyBack))
	a.check(during == http.StatusServiceUnavailable, "idle flood: /readyz %d while the descriptors were exhausted, want 503", during)
	if readyBack < 0 {
		code, body := a.readiness(ctx)
		a.notef("idle flood: /readyz %d 10 s after: %s", code, body)
	}
	for what, d := range map[string]time.Duration{"control TLS": tlsBack, "relay TCP": relayBack, "/readyz": readyBack} {
		a.check(d >= 0 && d <= attackBackWithin, "idle flood: %s back after %s, want within %v", what, msOf(d), attackBackWithin)
	}
}

// tlsControl completes a TLS handshake on raw as a fresh identity.
func tlsControl(ctx context.Context, raw net.Conn) (*tls.Conn, error) {
	id, err := identity.Generate()
	if err != nil {
		return nil, fmt.Errorf("testnet: identity: %w", err)
	}
	tc := tls.Client(raw, id.ClientTLS(identity.PeerID{}, wire.ALPN))
	hctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	if err := tc.HandshakeContext(hctx); err != nil {
		return nil, fmt.Errorf("testnet: control handshake: %w", err)
	}
	return tc, nil
}

// controlHandshake completes a TLS handshake on the control TCP port from
// the server's own address.
func (a *attack) controlHandshake(ctx context.Context) error {
	raw, err := dialIn(ctx, a.ns, netip.Addr{}, a.control().String())
	if err != nil {
		return err
	}
	defer raw.Close()
	_, err = tlsControl(ctx, raw)
	return err
}

// errNoSTUN is an answer that is no STUN message.
var errNoSTUN = errors.New("testnet: not a STUN answer")

// relayBinding sends a STUN Binding request over TCP to the relay and
// waits a second for an answer.
func (a *attack) relayBinding() error {
	c, err := dialIn(context.Background(), a.ns, netip.Addr{}, a.relay().String())
	if err != nil {
		return err
	}
	defer c.Close()
	m, err := stun.Build(stun.TransactionID, stun.BindingRequest, stun.Fingerprint)
	if err != nil {
		return fmt.Errorf("testnet: stun: %w", err)
	}
	c.SetDeadline(time.Now().Add(time.Second))
	if _, err := c.Write(m.Raw); err != nil {
		return fmt.Errorf("testnet: relay binding: %w", err)
	}
	buf := make([]byte, 1500)
	n, err := io.ReadAtLeast(c, buf, 20)
	if err != nil {
		return fmt.Errorf("testnet: relay binding: %w", err)
	}
	if !stun.IsMessage(buf[:n]) {
		return errNoSTUN
	}
	return nil
}

// partialFlood opens attackPartialConns connections to each TCP port and
// leaves a frame incomplete on each (control: a frame of the largest
// payload, wire.MaxPayload, after the TLS handshake, half sent; relay: a
// 1 520-byte STUN frame, 720 bytes sent: the largest frames the ports
// take). The bootstrap must close each in time: at the frame deadline,
// or for control connections that never registered the pre-registration
// deadline (--auth-timeout, 10 s).
func (a *attack) partialFlood(ctx context.Context) {
	start := time.Now()
	ctl, err := dialMany(ctx, a.ns, a.control(), attackPartialConns)
	defer closeAll(ctl)
	if !a.check(err == nil, "partial frames: %v", err) {
		return
	}
	rel, err := dialMany(ctx, a.ns, a.relay(), attackPartialConns)
	defer closeAll(rel)
	if !a.check(err == nil, "partial frames: %v", err) {
		return
	}
	frame := quicvarint.Append(quicvarint.Append(nil, uint64(wire.TypeRegister)), wire.MaxPayload)
	frame = append(frame, make([]byte, wire.MaxPayload/2)...)
	for i, c := range ctl {
		tc, err := tlsControl(ctx, c)
		if err == nil {
			ctl[i] = tc
			_, err = tc.Write(frame)
		}
		if !a.check(err == nil, "partial frames: control connection %d: %v", i, err) {
			return
		}
	}
	stunHead := partialSTUN(1500, 700)
	for i, c := range rel {
		if _, err := c.Write(stunHead); !a.check(err == nil, "partial frames: relay connection %d: %v", i, err) {
			return
		}
	}
	var (
		relMax  time.Duration
		relOpen int
		wg      sync.WaitGroup
	)
	wg.Go(func() { relMax, relOpen = waitAllClosed(rel, start, start.Add(attackFrameDeadline+3*time.Second)) })
	ctlMax, ctlOpen := waitAllClosed(ctl, start, start.Add(attackAuthDeadline+3*time.Second))
	wg.Wait()
	a.notef("partial frames: %d control connections closed %.1f s after they opened (%d left open), %d relay %.1f s after (%d left open)",
		len(ctl), ctlMax.Seconds(), ctlOpen, len(rel), relMax.Seconds(), relOpen)
	a.check(ctlOpen == 0 && relOpen == 0, "partial frames: %d control and %d relay connections outlived their deadlines", ctlOpen, relOpen)
}

// partialSTUN is the start of a STUN Allocate frame of length bytes of
// attributes, with sent of them.
func partialSTUN(length, sent int) []byte {
	b := []byte{0x00, 0x03, byte(length >> 8), byte(length), 0x21, 0x12, 0xA4, 0x42}
	b = append(b, make([]byte, 12)...) // transaction ID
	return append(b, make([]byte, sent)...)
}

// waitAllClosed waits, until deadline at most, for the peer to close
// every connection; it returns when the last closed, measured from start,
// and how many were still open at the deadline.
func waitAllClosed(conns []net.Conn, start, deadline time.Time) (time.Duration, int) {
	var (
		mu   sync.Mutex
		last time.Duration
		open int
		wg   sync.WaitGroup
	)
	for _, c := range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c.SetReadDeadline(deadline)
			_, err := io.Copy(io.Discard, c)
			var ne net.Error
			mu.Lock()
			defer mu.Unlock()
			if errors.As(err, &ne) && ne.Timeout() {
				open++
				return
			}
			last = max(last, time.Since(start))
		}()
	}
	wg.Wait()
	return last, open
}

// registryFlood registers attackRegistrations fresh identities over TCP
// from one address. Exactly attackPerIP must be registered, the rest
// refused as rate_limited. It returns the registered connections, which
// the caller holds until the attack ends.
func (a *attack) registryFlood(ctx context.Context) []net.Conn {
	var held []net.Conn
	registered, limited, other := 0, 0, ""
	for range attackRegistrations {
		c, what := a.register(ctx, attackSource(0))
		switch {
		case c != nil:
			registered++
			held = append(held, c)
		case what == wire.CodeRateLimited.String():
			limited++
		default:
			other = what
		}
	}
	a.notef("registry flood: %d registrations from %s: %d registered, %d refused rate_limited", attackRegistrations, attackSource(0), registered, limited)
	a.check(registered == attackPerIP && limited == attackRegistrations-attackPerIP,
		"registry flood: %d registered and %d rate_limited, want %d and %d (other: %s)", registered, limited, attackPerIP, attackRegistrations-attackPerIP, other)
	return held
}

// register registers a fresh identity over TCP from src. It returns the
// connection when registered, else what the bootstrap answered (a code's
// name, or the error).
func (a *attack) register(ctx context.Context, src netip.Addr) (net.Conn, string) {
	raw, err := dialIn(ctx, a.ns, src, a.control().String())
	if err != nil {
		return nil, err.Error()
	}
	tc, err := tlsControl(ctx, raw)
	if err != nil {
		raw.Close()
		return nil, err.Error()
	}
	reg, err := wire.Marshal(&wire.Register{Version: wire.Version})
	if err == nil {
		_, err = tc.Write(reg)
	}
	var m wire.Message
	if err == nil {
		tc.SetReadDeadline(time.Now().Add(3 * time.Second))
		m, err = wire.NewReader(tc).Read()
		tc.SetReadDeadline(time.Time{})
	}
	switch m := m.(type) {
	case *wire.Registered:
		return tc, ""
	case *wire.Error:
		tc.Close()
		return nil, m.Code.String()
	}
	tc.Close()
	return nil, fmt.Sprintf("no answer (%v)", err)
}

// stunFlood sends attackSTUNPackets Binding requests from one address,
// alternately to both STUN ports, as fast as it can (10 s at most), and
// counts the answers; afterwards a Binding from another address must be
// answered.
func (a *attack) stunFlood(ctx context.Context) {
	c, err := ListenUDP(a.ns, netip.AddrPortFrom(attackSource(0), 0))
	if !a.check(err == nil, "STUN flood: %v", err) {
		return
	}
	defer c.Close()
	var answered int
	done := make(chan struct{})
	go func() {
		defer close(done)
		buf := make([]byte, 1500)
		for {
			n, _, err := c.ReadFromUDPAddrPort(buf)
			if err != nil {
				return
			}
			if stun.IsMessage(buf[:n]) {
				answered++
			}
		}
	}()
	start := time.Now()
	sent := 0
	for ; sent < attackSTUNPackets && time.Since(start) < 10*time.Second && ctx.Err() == nil; sent++ {
		dst := a.control()
		if sent%2 == 1 {
			dst = a.stunAlt()
		}
		m, err := stun.Build(stun.TransactionID, stun.BindingRequest)
		if err != nil {
			break
		}
		c.WriteToUDPAddrPort(m.Raw, dst)
	}
	took := time.Since(start)
	time.Sleep(500 * time.Millisecond)
	c.Close()
	<-done
	after := until(ctx, time.Now(), 3*time.Second, func() bool { return a.udpBinding() == nil })
	a.notef("STUN flood: %d Binding requests in %.2f s (%.0f/s), %d answered; a Binding answered %s after",
		sent, took.Seconds(), float64(sent)/took.Seconds(), answered, msOf(after))
	a.check(sent == attackSTUNPackets, "STUN flood: sent only %d", sent)
	a.check(after >= 0, "STUN flood: no Binding answered after the flood")
}

// udpBinding sends a Binding request to the control port from the server's
// own address and waits 300 ms for the answer.
func (a *attack) udpBinding() error {
	c, err := ListenUDP(a.ns, netip.AddrPortFrom(ServerAddr(1), 0))
	if err != nil {
		return err
	}
	defer c.Close()
	m, err := stun.Build(stun.TransactionID, stun.BindingRequest)
	if err != nil {
		return fmt.Errorf("testnet: stun: %w", err)
	}
	if _, err := c.WriteToUDPAddrPort(m.Raw, a.control()); err != nil {
		return fmt.Errorf("testnet: binding: %w", err)
	}
	c.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
	buf := make([]byte, 1500)
	n, err := c.Read(buf)
	if err != nil {
		return fmt.Errorf("testnet: binding: %w", err)
	}
	if !stun.IsMessage(buf[:n]) {
		return errNoSTUN
	}
	return nil
}

// crossOrigin asks from's daemon, with its token but from a foreign
// origin, to connect to to's daemon: the answer must be 403 and neither
// daemon may count a connection attempt.
func (a *attack) crossOrigin(ctx context.Context, from, to Host) {
	attempts := func() float64 {
		x, err1 := scrapeValue(ctx, from.NS, metricsPort, "nat_attempts_total")
		y, err2 := scrapeValue(ctx, to.NS, metricsPort, "nat_attempts_total")
		if err1 != nil || err2 != nil {
			return -1
		}
		return x + y
	}
	before := attempts()
	args := append(append([]string{"curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "--max-time", "5", "-X", "POST"}, apiAuth()...),
		"-H", "Origin: https://evil.example", "-H", "Content-Type: application/json",
		apiURL(fmt.Sprintf("/api/v1/connect?peer=%s&send=%d", a.e.PeerIDs[to.NS], 1<<20)))
	out, err := runIn(ctx, from.NS, args...)
	code, _ := strconv.Atoi(out)
	time.Sleep(time.Second) // an attempt, if one started, is counted by now
	after := attempts()
	a.notef("cross-origin POST: %d, connection attempts %+.0f", code, after-before)
	a.check(err == nil && code == http.StatusForbidden, "cross-origin POST: status %q (%v), want 403", out, err)
	a.check(before >= 0 && after == before, "cross-origin POST: connection attempts went from %.0f to %.0f", before, after)
}
