package holepunch

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pion/stun/v3"

	"github.com/antnode/antnode/bootstrap/wire"
	"github.com/antnode/antnode/endpoint"
	"github.com/antnode/antnode/event"
)

// The birthday search connects a NAT whose mapping depends on the
// destination (a new, random port per destination: "symmetric") with a NAT
// whose mapping is fixed but filtered by address and port. The symmetric
// side opens many sockets, each sending checks to the other side's one
// mapping (creating many random public ports, each open for that mapping);
// the other side sends checks to random ports of the symmetric side's
// address (opening its filter for each). Once a port of one set equals a
// port of the other, packets pass both ways. With n sockets and m probes
// over R ports the chance is about 1-exp(-n*m/R): 256 sockets and 1000
// probes over 64512 ports give 98 %.
//
// Port prediction comes first: many symmetric NATs allocate ports in
// sequence (the next mapping gets the last port plus a small stride).
// When the symmetric side's observed mappings (one per bootstrap) lie a
// small stride apart, the spraying side's new sockets are likely to be
// mapped just above them, and the scan probes those ports before any
// random one (PredictPorts). A NAT that allocates at random gives
// observations far apart, and the scan is random from the start.

// BirthdayConfig bounds the search. Every field's zero value is a default.
type BirthdayConfig struct {
	// Sockets is how many sockets the spraying side opens. Zero: 256.
	Sockets int
	// Probes is the most checks the scanning side sends. Zero: 4096.
	Probes int
	// Rate is the scanning side's checks per second. Zero: 2000.
	Rate int
	// Budget ends the search. Zero: 8 s.
	Budget time.Duration
	// Resend is how often each spraying socket sends again (a check that
	// arrived before the other side opened its filter is lost). Zero: 500 ms.
	Resend time.Duration
	// PortMin and PortMax bound the scanned ports. Zero: 1024 and 65535.
	PortMin, PortMax uint16
	// Seed makes the scan order reproducible. Zero: random.
	Seed uint64
	// Predict is how many predicted ports the scan probes first when the
	// peer's mappings look sequential (see PredictPorts); they count
	// against Probes. Zero: twice Sockets. Negative: no prediction.
	Predict int
}

func (c BirthdayConfig) withDefaults() BirthdayConfig {
	if c.Sockets <= 0 {
		c.Sockets = 256
	}
	if c.Probes <= 0 {
		c.Probes = 4096
	}
	if c.Rate <= 0 {
		c.Rate = 2000
	}
	if c.Budget <= 0 {
		c.Budget = 8 * time.Second
	}
	if c.Resend <= 0 {
		c.Resend = 500 * time.Millisecond
	}
	if c.PortMin == 0 {
		c.PortMin = 1024
	}
	if c.PortMax == 0 {
		c.PortMax = 65535
	}
	if c.PortMax < c.PortMin {
		c.PortMin, c.PortMax = c.PortMax, c.PortMin
	}
	if c.Predict == 0 {
		c.Predict = 2 * c.Sockets
	}
	return c
}

// maxStride is the largest port stride between mappings that PredictPorts
// takes for sequential allocation.
const maxStride = 16

// PredictPorts returns up to n ports that a NAT allocating in sequence
// would give its next mappings, from the ports it gave the mappings
// observed so far: above the highest, at the stride the observations
// show (their span over their count, at most maxStride). Observations
// that are fewer than two, equal, or far apart (a NAT that allocates at
// random) predict nothing. It is a pure function.
func PredictPorts(observed []uint16, n int) []uint16 {
	if len(observed) < 2 || n <= 0 {
		return nil
	}
	lo, hi := observed[0], observed[0]
	for _, p := range observed[1:] {
		lo, hi = min(lo, p), max(hi, p)
	}
	span := int(hi) - int(lo)
	stride := (span + len(observed) - 2) / (len(observed) - 1) // rounded up
	if span == 0 || stride > maxStride {
		return nil
	}
	out := make([]uint16, 0, n)
	for p := int(hi) + stride; p <= 65535 && len(out) < n; p += stride {
		out = append(out, uint16(p))
	}
	return out
}

// ScanPlan returns the scanning side's probes to addr: first the predicted
// ports (at most Predict of them, those in [PortMin, PortMax]), then
// distinct random ports in that range, Rate per second, at most Probes in
// all and within Budget. It is a pure function of its arguments (and Seed).
func ScanPlan(addr netip.Addr, predicted []uint16, cfg BirthdayConfig) []Probe {
	cfg = cfg.withDefaults()
	seed := cfg.Seed
	if seed == 0 {
		seed = rand.Uint64()
	}
	rng := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	span := int(cfg.PortMax) - int(cfg.PortMin) + 1
	n := min(cfg.Probes, span, int(cfg.Budget.Seconds()*float64(cfg.Rate)))
	gap := time.Second / time.Duration(cfg.Rate)
	out := make([]Probe, 0, n)
	seen := make(map[uint16]bool, min(len(predicted), max(cfg.Predict, 0)))
	add := func(port uint16) {
		out = append(out, Probe{At: time.Duration(len(out)) * gap, Target: netip.AddrPortFrom(addr, port), Kind: wire.KindPeerReflexive})
	}
	for _, port := range predicted {
		if len(seen) >= cfg.Predict || len(out) >= n {
			break
		}
		if port >= cfg.PortMin && port <= cfg.PortMax && !seen[port] {
			seen[port] = true
			add(port)
		}
	}
	// A partial Fisher-Yates shuffle of the port range: distinct ports,
	// skipping the predicted ones.
	ports := make(map[int]int, n)
	at := func(i int) int {
		if v, ok := ports[i]; ok {
			return v
		}
		return i
	}
	for i := 0; i < span && len(out) < n; i++ {
		j := i + rng.IntN(span-i)
		vi, vj := at(i), at(j)
		ports[i], ports[j] = vj, vi
		if port := uint16(int(cfg.PortMin) + vj); !seen[port] {
			add(port)
		}
	}
	return out
}

// checkRequest builds this session's connectivity check.
func (s *Session) checkRequest(priority uint32) (*stun.Message, error) {
	var pri [4]byte
	binary.BigEndian.PutUint32(pri[:], priority)
	return stun.Build(stun.TransactionID, stun.BindingRequest,
		stun.NewUsername(s.remote.Ufrag+":"+s.local.Ufrag),
		rawAttr{stun.AttrPriority, pri[:]},
		stun.NewShortTermIntegrity(s.remote.Pwd), stun.Fingerprint)
}

// ErrBirthdayFailed is returned when the birthday search found no port
// collision within its budget.
var ErrBirthdayFailed = errors.New("holepunch: birthday search found no path")

// Scan runs the scanning side: one check (a single transaction) sent from
// the session's socket to many ports of addr, paced: first those that
// observed, the ports at which the peer's NAT mapped it so far, predict
// (PredictPorts), then random ones. It returns the first validated pair.
// The peer's checks are answered all along by the Agent.
func (s *Session) Scan(ctx context.Context, addr netip.Addr, observed []uint16, cfg BirthdayConfig) (Pair, error) {
	cfg = cfg.withDefaults()
	predicted := PredictPorts(observed, cfg.Predict)
	plan := ScanPlan(addr, predicted, cfg)
	req, err := s.checkRequest(Priority(wire.KindPeerReflexive, 0))
	if err != nil {
		return Pair{}, err
	}
	resp := make(chan endpoint.Response, 16)
	release, err := s.a.ep.ExpectInto(req.TransactionID, resp)
	if err != nil {
		return Pair{}, err
	}
	defer release()
	ctx, cancel := context.WithTimeout(ctx, cfg.Budget)
	defer cancel()
	s.att.Begin(event.PhasePunch)
	start := time.Now()
	sent := map[netip.AddrPort]time.Time{}
	t := time.NewTimer(0)
	defer t.Stop()
	next := 0
	for {
		select {
		case <-ctx.Done():
			s.att.End(event.PhasePunch, event.OutcomeFail, event.ReasonPunchTimeout)
			if err := context.Cause(ctx); errors.Is(err, context.DeadlineExceeded) {
				return Pair{}, fmt.Errorf("%w: scanned %d ports", ErrBirthdayFailed, next)
			}
			return Pair{}, context.Cause(ctx)
		case <-t.C:
			now := time.Since(start)
			for next < len(plan) && plan[next].At <= now {
				p := plan[next]
				sent[p.Target] = time.Now()
				s.a.sendTo(req.Raw, p.Target)
				next++
			}
			if next < len(plan) {
				t.Reset(plan[next].At - time.Since(start))
			}
		case r := <-resp:
			if r.Msg.Type != stun.BindingSuccess || stun.NewShortTermIntegrity(s.remote.Pwd).Check(r.Msg) != nil {
				release()
				if release, err = s.a.ep.ExpectInto(req.TransactionID, resp); err != nil {
					return Pair{}, err
				}
				continue
			}
			p := Pair{Remote: r.From, Kind: wire.KindPeerReflexive, Priority: Priority(wire.KindPeerReflexive, 0), At: r.At}
			if at, ok := sent[r.From]; ok {
				p.RTT = r.At.Sub(at)
			}
			s.att.End(event.PhasePunch, event.OutcomeOK, event.ReasonNone)
			how := "birthday scan"
			if slices.Contains(predicted, r.From.Port()) {
				how = "port prediction"
			}
			s.att.Record(event.Event{Kind: event.KindPathValidated, Addr: p.Remote, Duration: p.RTT,
				Path: event.PathDirect, Value: float64(next), Detail: how})
			return p, nil
		}
	}
}

// Listener opens a UDP socket on a local address (port 0: any).
type Listener func(netip.AddrPort) (net.PacketConn, error)

// ListenUDP is the Listener of real sockets.
func ListenUDP(ap netip.AddrPort) (net.PacketConn, error) { return endpoint.ListenUDP(ap) }

// Spray runs the spraying side: it opens cfg.Sockets sockets on local with
// listen, sends a check from each to target (again every Resend), answers
// the peer's checks that arrive on them, and returns the first socket on
// which a check got through either way, with the pair. Every other socket
// is closed; the caller owns the returned one (its readers have stopped).
func (s *Session) Spray(ctx context.Context, listen Listener, local netip.Addr, target netip.AddrPort, cfg BirthdayConfig) (net.PacketConn, Pair, error) {
	cfg = cfg.withDefaults()
	if listen == nil {
		listen = ListenUDP
	}
	ctx, cancel := context.WithTimeout(ctx, cfg.Budget)
	defer cancel()
	s.att.Begin(event.PhasePunch)
	sp := &sprayer{s: s, target: target, winner: make(chan sprayWin, 1)}
	var socks []net.PacketConn
	defer func() {
		sp.stopping.Store(true)
		for _, c := range socks {
			if c != sp.won {
				c.Close()
			}
		}
		sp.wg.Wait()
	}()
	for range cfg.Sockets {
		c, err := listen(netip.AddrPortFrom(local, 0))
		if err != nil {
			break // out of sockets or ports: spray with what there is
		}
		socks = append(socks, c)
	}
	if len(socks) == 0 {
		s.att.End(event.PhasePunch, event.OutcomeFail, event.ReasonInternal)
		return nil, Pair{}, errors.New("holepunch: spray: no socket")
	}
	for _, c := range socks {
		sp.wg.Add(1)
		go sp.read(c)
	}
	tick := time.NewTicker(cfg.Resend)
	defer tick.Stop()
	sendAll := func() {
		for _, c := range socks {
			sp.send(c)
		}
	}
	sendAll()
	for {
		select {
		case w := <-sp.winner:
			sp.won = w.conn
			// Stop every reader without closing the winner's socket: a
			// read deadline in the past unblocks them.
			sp.stopping.Store(true)
			for _, c := range socks {
				c.SetReadDeadline(time.Now())
			}
			sp.wg.Wait()
			w.conn.SetReadDeadline(time.Time{})
			s.att.End(event.PhasePunch, event.OutcomeOK, event.ReasonNone)
			s.att.Record(event.Event{Kind: event.KindPathValidated, Addr: w.pair.Remote, Duration: w.pair.RTT,
				Path: event.PathDirect, Value: float64(len(socks)), Detail: "birthday spray"})
			return w.conn, w.pair, nil
		case <-tick.C:
			sendAll()
		case <-ctx.Done():
			s.att.End(event.PhasePunch, event.OutcomeFail, event.ReasonPunchTimeout)
			if err := context.Cause(ctx); errors.Is(err, context.DeadlineExceeded) {
				return nil, Pair{}, fmt.Errorf("%w: %d sockets", ErrBirthdayFailed, len(socks))
			}
			return nil, Pair{}, context.Cause(ctx)
		}
	}
}

type sprayWin struct {
	conn net.PacketConn
	pair Pair
}

type sprayer struct {
	s        *Session
	target   netip.AddrPort
	winner   chan sprayWin
	stopping atomic.Bool
	won      net.PacketConn
	wg       sync.WaitGroup

	mu   sync.Mutex
	sent map[[stun.TransactionIDSize]byte]time.Time
}

func (sp *sprayer) send(c net.PacketConn) {
	req, err := sp.s.checkRequest(Priority(wire.KindPeerReflexive, 0))
	if err != nil {
		return
	}
	sp.mu.Lock()
	if sp.sent == nil {
		sp.sent = map[[stun.TransactionIDSize]byte]time.Time{}
	}
	sp.sent[req.TransactionID] = time.Now()
	sp.mu.Unlock()
	c.WriteTo(req.Raw, net.UDPAddrFromAddrPort(sp.target))
}

func (sp *sprayer) win(c net.PacketConn, p Pair) {
	select {
	case sp.winner <- sprayWin{conn: c, pair: p}:
	default: // another socket won first
	}
}

// read serves one spraying socket: answers to its checks and the peer's
// checks both mean the path through this socket works.
func (sp *sprayer) read(c net.PacketConn) {
	defer sp.wg.Done()
	buf := make([]byte, 1500)
	for {
		n, from, err := c.ReadFrom(buf)
		if err != nil {
			if errors.Is(err, os.ErrDeadlineExceeded) && !sp.stopping.Load() {
				continue
			}
			return // closed, or stopping
		}
		ua, ok := from.(*net.UDPAddr)
		if !ok || !stun.IsMessage(buf[:n]) {
			continue
		}
		src := ua.AddrPort()
		src = netip.AddrPortFrom(src.Addr().Unmap(), src.Port())
		m := &stun.Message{Raw: append([]byte(nil), buf[:n]...)}
		if m.Decode() != nil {
			continue
		}
		s := sp.s
		switch {
		case m.Type == stun.BindingSuccess:
			if stun.NewShortTermIntegrity(s.remote.Pwd).Check(m) != nil {
				continue
			}
			p := Pair{Remote: src, Kind: wire.KindServerReflexive, Priority: Priority(wire.KindServerReflexive, 0), At: time.Now()}
			sp.mu.Lock()
			if at, ok := sp.sent[m.TransactionID]; ok {
				p.RTT = p.At.Sub(at)
			}
			sp.mu.Unlock()
			sp.win(c, p)
		case m.Type == stun.BindingRequest:
			if stun.NewShortTermIntegrity(s.local.Pwd).Check(m) != nil {
				continue
			}
			resp, err := endpoint.BindingSuccess(m, src, stun.NewShortTermIntegrity(s.local.Pwd), stun.Fingerprint)
			if err == nil {
				c.WriteTo(resp.Raw, ua)
			}
			s.answered.Add(1)
			sp.win(c, Pair{Remote: src, Kind: wire.KindServerReflexive, Priority: Priority(wire.KindServerReflexive, 0), At: time.Now()})
		}
	}
}
