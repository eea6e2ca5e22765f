package testnet

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"sync"
	"time"

	"github.com/pion/stun/v3"

	"github.com/antnode/antnode/nat64"
)

// Observation is what the probes of one site saw.
type Observation struct {
	Local netip.AddrPort // the probing socket's local address
	// Mapped are the addresses S1:3478, S1:3479 and S2:3478 saw the
	// mapping socket at (invalid: no answer).
	Mapped [3]netip.AddrPort
	// FromOtherPort and FromOtherAddr report whether an unsolicited packet
	// from S1:3479 and from S3 reached a socket that had only talked to
	// S1:3478.
	FromOtherPort, FromOtherAddr bool
	// TCP reports whether a TCP connection to S1 succeeded.
	TCP bool
	// Hairpin is set when the site has two hosts behind one NAT: whether a
	// packet from the second host to the first's public mapping arrived.
	Hairpin *bool
}

// Classify derives RFC 4787 mapping and filtering behaviour from an
// observation. It is a pure function.
func Classify(o Observation) (mapping, filtering string) {
	m := o.Mapped
	if !m[0].IsValid() && !m[1].IsValid() && !m[2].IsValid() {
		if o.TCP {
			return "-", "blocked"
		}
		return "-", "unreachable"
	}
	if !m[0].IsValid() || !m[1].IsValid() || !m[2].IsValid() {
		return "inconsistent", "inconsistent"
	}
	switch {
	case m[0] == o.Local && m[1] == o.Local && m[2] == o.Local:
		mapping = "none"
	case m[0] == m[1] && m[1] == m[2]:
		mapping = "EIM"
	case m[0] == m[1]:
		mapping = "ADM"
	default:
		mapping = "APDM"
	}
	switch {
	case o.FromOtherAddr && mapping == "none":
		filtering = "none"
	case o.FromOtherAddr:
		filtering = "EIF"
	case o.FromOtherPort:
		filtering = "ADF"
	default:
		filtering = "APDF"
	}
	return mapping, filtering
}

// Measured is a site's verified behaviour, as the report shows it.
type Measured struct {
	Mapping   string `json:"mapping"`
	Filtering string `json:"filtering"`
	Hairpin   *bool  `json:"hairpin,omitempty"`
	Verified  bool   `json:"verified"`
	Detail    string `json:"detail,omitempty"`
	// Portmap is what answered the port-mapping check of an apdm-portmap
	// site (its router's miniupnpd, with no mapping yet).
	Portmap string `json:"portmap,omitempty"`
	// Antnode is the class antnode measured there (from its connects),
	// and AntnodeAgrees whether that is the class's expected one.
	Antnode       string `json:"antnode,omitempty"`
	AntnodeAgrees *bool  `json:"antnode_agrees,omitempty"`
	// AntnodeSeen counts the classes antnode measured there, one per
	// connect made from the site.
	AntnodeSeen map[string]int `json:"antnode_seen,omitempty"`
}

// probeServers are the verification servers in the server namespace:
// STUN Binding responders on S1:3478, S1:3479, S2:3478 and S3:3478 that
// can also send unsolicited packets, and a TCP listener on S1:3478.
type probeServers struct {
	udp map[netip.AddrPort]*net.UDPConn
	tcp []net.Listener
	wg  sync.WaitGroup
}

// probeServerAddrs are S1:3478, S1:3479, S2:3478 and S3:3478, at the
// servers' IPv6 addresses for v6.
func probeServerAddrs(v6 bool) []netip.AddrPort {
	addr := ServerAddr
	if v6 {
		addr = ServerAddr6
	}
	return []netip.AddrPort{
		netip.AddrPortFrom(addr(1), 3478), netip.AddrPortFrom(addr(1), 3479),
		netip.AddrPortFrom(addr(2), 3478), netip.AddrPortFrom(addr(3), 3478),
	}
}

func startProbeServers(ns string) (*probeServers, error) {
	ps := &probeServers{udp: map[netip.AddrPort]*net.UDPConn{}}
	for _, a := range append(probeServerAddrs(false), probeServerAddrs(true)...) {
		c, err := ListenUDP(ns, a)
		if err != nil {
			ps.close()
			return nil, err
		}
		ps.udp[a] = c
		ps.wg.Add(1)
		go func() {
			defer ps.wg.Done()
			serveSTUN(c, func(from netip.AddrPort) netip.AddrPort { return from })
		}()
	}
	for _, v6 := range []bool{false, true} {
		if err := ps.listenTCP(ns, probeServerAddrs(v6)[0]); err != nil {
			ps.close()
			return nil, err
		}
	}
	return ps, nil
}

// listenTCP accepts (and closes) TCP connections on a in namespace ns.
func (ps *probeServers) listenTCP(ns string, a netip.AddrPort) error {
	var l net.Listener
	err := InNS(ns, func() error {
		var err error
		l, err = net.Listen("tcp", a.String())
		return err
	})
	if err != nil {
		return err
	}
	ps.tcp = append(ps.tcp, l)
	ps.wg.Add(1)
	go func() {
		defer ps.wg.Done()
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	return nil
}

func (ps *probeServers) close() {
	for _, c := range ps.udp {
		c.Close()
	}
	for _, l := range ps.tcp {
		l.Close()
	}
	ps.wg.Wait()
}

// send makes server `from` send an unsolicited datagram to `to`.
func (ps *probeServers) send(from, to netip.AddrPort, payload []byte) {
	if c := ps.udp[from]; c != nil {
		c.WriteToUDPAddrPort(payload, to)
	}
}

// binding sends Binding requests from c to server until one is answered
// (at most tries times, wait apart) and returns the mapped address.
func binding(c *net.UDPConn, server netip.AddrPort, tries int, wait time.Duration) netip.AddrPort {
	buf := make([]byte, 1500)
	for range tries {
		req := stun.MustBuild(stun.TransactionID, stun.BindingRequest)
		c.WriteToUDPAddrPort(req.Raw, server)
		deadline := time.Now().Add(wait)
		for {
			c.SetReadDeadline(deadline)
			n, _, err := c.ReadFromUDPAddrPort(buf)
			if err != nil {
				break
			}
			resp := &stun.Message{Raw: buf[:n]}
			if resp.Decode() != nil || resp.TransactionID != req.TransactionID {
				continue
			}
			var x stun.XORMappedAddress
			if x.GetFrom(resp) != nil {
				continue
			}
			a, _ := netip.AddrFromSlice(x.IP)
			return netip.AddrPortFrom(a.Unmap(), uint16(x.Port))
		}
	}
	return netip.AddrPort{}
}

// receives reports which of the marker payloads arrive on c within wait.
func receives(c *net.UDPConn, wait time.Duration, markers ...string) map[string]bool {
	got := map[string]bool{}
	buf := make([]byte, 1500)
	deadline := time.Now().Add(wait)
	for {
		c.SetReadDeadline(deadline)
		n, _, err := c.ReadFromUDPAddrPort(buf)
		if err != nil {
			return got
		}
		for _, m := range markers {
			if string(buf[:n]) == m {
				got[m] = true
			}
		}
	}
}

// The repetition of the verification's probes, so that it holds on lossy
// links: each unsolicited packet is sent unsolicitedSends times,
// unsolicitedPace apart, and a site that does not verify is measured
// again, verifyTries times in all.
const (
	unsolicitedSends = 4
	unsolicitedPace  = 20 * time.Millisecond
	verifyTries      = 3
)

// observe runs the probes of one host. rtt is the expected round trip
// to the servers (twice the access link delay).
func observe(ps *probeServers, host Host, rtt time.Duration) (Observation, error) {
	var o Observation
	wait := rtt + 300*time.Millisecond
	srv := probeServerAddrs(host.Addr.Is6() && host.Class != ClassV6NAT64)
	via := reachVia(host) // where the host sends to reach a server
	m, err := ListenUDP(host.NS, netip.AddrPortFrom(host.Addr, 0))
	if err != nil {
		return o, err
	}
	defer m.Close()
	local := m.LocalAddr().(*net.UDPAddr).AddrPort()
	o.Local = netip.AddrPortFrom(local.Addr().Unmap(), local.Port())
	o.Mapped[0] = binding(m, via(srv[0]), 3, wait)
	o.Mapped[1] = binding(m, via(srv[1]), 3, wait)
	o.Mapped[2] = binding(m, via(srv[2]), 3, wait)

	f, err := ListenUDP(host.NS, netip.AddrPortFrom(host.Addr, 0))
	if err != nil {
		return o, err
	}
	defer f.Close()
	if fm := binding(f, via(srv[0]), 3, wait); fm.IsValid() {
		// Several unsolicited packets of each kind, paced: on a lossy link
		// one lost packet is not a filter.
		for i := range unsolicitedSends {
			if i > 0 {
				<-time.After(unsolicitedPace)
			}
			ps.send(srv[1], fm, []byte("other-port"))
			ps.send(srv[3], fm, []byte("other-addr"))
		}
		got := receives(f, wait, "other-port", "other-addr")
		o.FromOtherPort, o.FromOtherAddr = got["other-port"], got["other-addr"]
	}
	err = InNS(host.NS, func() error {
		d := net.Dialer{Timeout: wait + time.Second}
		c, err := d.Dial("tcp", via(srv[0]).String())
		if err == nil {
			o.TCP = true
			c.Close()
		}
		return nil
	})
	return o, err
}

// reachVia returns where host h sends to reach a server at an address:
// the address itself, or for a host behind NAT64 an IPv4 address's
// synthesised one.
func reachVia(h Host) func(netip.AddrPort) netip.AddrPort {
	if h.Class != ClassV6NAT64 {
		return func(a netip.AddrPort) netip.AddrPort { return a }
	}
	p, _ := nat64.ParsePrefix(NAT64Prefix) // a valid constant
	return p.Map
}

// hairpin reports whether two hosts behind one NAT reach each other through
// their public mappings. Both send (a punch), because a filtering NAT in
// front of either host (a home NAT behind a carrier NAT) drops what its
// host did not send to first.
func hairpin(a, b Host, rtt time.Duration) (bool, error) {
	wait := rtt + 300*time.Millisecond
	ca, err := ListenUDP(a.NS, netip.AddrPortFrom(a.Addr, 0))
	if err != nil {
		return false, err
	}
	defer ca.Close()
	cb, err := ListenUDP(b.NS, netip.AddrPortFrom(b.Addr, 0))
	if err != nil {
		return false, err
	}
	defer cb.Close()
	ma := binding(ca, probeServerAddrs(a.Addr.Is6())[0], 3, wait)
	mb := binding(cb, probeServerAddrs(b.Addr.Is6())[0], 3, wait)
	if !ma.IsValid() || !mb.IsValid() {
		return false, errors.New("no mapping for the hairpin probe")
	}
	for range 3 {
		ca.WriteToUDPAddrPort([]byte("punch"), mb)
		cb.WriteToUDPAddrPort([]byte("hairpin"), ma)
		if receives(ca, wait, "hairpin")["hairpin"] {
			return true, nil
		}
	}
	return false, nil
}

// Verify measures every site's NAT behaviour and compares it with its
// class. The map is keyed by site name; err lists the sites that do not
// behave as their class says.
func (tb *Testbed) Verify(ctx context.Context, spec Spec) (map[string]Measured, error) {
	spec, err := spec.Validate()
	if err != nil {
		return nil, err
	}
	ps, err := startProbeServers(tb.Server())
	if err != nil {
		return nil, fmt.Errorf("testnet: probe servers: %w", err)
	}
	defer ps.close()
	out := make(map[string]Measured, len(spec.Sites))
	var mu sync.Mutex
	var wg sync.WaitGroup
	var errs []error
	for _, site := range spec.Sites {
		wg.Add(1)
		go func() {
			defer wg.Done()
			meas, err := tb.verifySite(ctx, ps, site)
			mu.Lock()
			defer mu.Unlock()
			out[site.Name] = meas
			if err != nil {
				errs = append(errs, fmt.Errorf("site %s: %w", site.Name, err))
			} else if !meas.Verified {
				errs = append(errs, fmt.Errorf("site %s (%s) measured %s/%s: %s", site.Name, site.Class, meas.Mapping, meas.Filtering, meas.Detail))
			}
		}()
	}
	wg.Wait()
	if ctx.Err() != nil {
		return out, ctx.Err()
	}
	return out, errors.Join(errs...)
}

// verifySite measures site, again when it does not behave as its class
// says (a probe lost on a lossy link), verifyTries times at most; the
// last measurement is returned, with the number of tries in its Detail
// when it took more than one.
func (tb *Testbed) verifySite(ctx context.Context, ps *probeServers, site SiteSpec) (Measured, error) {
	var meas Measured
	var err error
	var failed []string
	for try := 1; try <= verifyTries && ctx.Err() == nil; try++ {
		meas, err = tb.verifySiteOnce(ctx, ps, site)
		if err == nil && meas.Verified {
			if len(failed) > 0 {
				meas.Detail = fmt.Sprintf("verified on try %d of %d; before: %s", try, verifyTries, strings.Join(failed, "; "))
			}
			return meas, nil
		}
		if err != nil {
			failed = append(failed, err.Error())
		} else {
			failed = append(failed, meas.Detail)
		}
	}
	if err == nil && len(failed) > 1 {
		meas.Detail = fmt.Sprintf("%d tries: %s", len(failed), strings.Join(failed, "; "))
	}
	return meas, err
}

// verifySiteOnce measures site once: its NAT's mapping and filtering
// from its first host (a dual-stack host's IPv6 firewall too), its hairpin when it has two, and, for
// apdm-portmap, that its router answers port-mapping requests (before
// any mapping: the NAT still measures as apdm).
func (tb *Testbed) verifySiteOnce(ctx context.Context, ps *probeServers, site SiteSpec) (Measured, error) {
	hosts := tb.HostsOf(site.Name)
	if len(hosts) == 0 {
		return Measured{}, errors.New("no hosts")
	}
	rtt := 2 * site.Link.Delay
	o, err := observe(ps, hosts[0], rtt)
	if err != nil {
		return Measured{}, err
	}
	var meas Measured
	meas.Mapping, meas.Filtering = Classify(o)
	wantM, wantF := site.Class.Behaviour()
	meas.Verified = meas.Mapping == wantM && meas.Filtering == wantF
	if !meas.Verified {
		meas.Detail = fmt.Sprintf("want %s/%s; mapped %v from local %v, other port %v, other address %v, tcp %v",
			wantM, wantF, o.Mapped, o.Local, o.FromOtherPort, o.FromOtherAddr, o.TCP)
	}
	if h := hosts[0]; h.Addr6.IsValid() {
		// A dual-stack host's IPv6: no NAT, the v6-firewall's filter.
		v6 := h
		v6.Addr, v6.Class = h.Addr6, ClassV6Firewall
		o6, err := observe(ps, v6, rtt)
		if err != nil {
			return meas, err
		}
		m6, f6 := Classify(o6)
		wantM6, wantF6 := ClassV6Firewall.Behaviour()
		if m6 != wantM6 || f6 != wantF6 {
			meas.Verified = false
			meas.Detail += fmt.Sprintf(" IPv6: want %s/%s, measured %s/%s; mapped %v from local %v, other port %v, other address %v",
				wantM6, wantF6, m6, f6, o6.Mapped, o6.Local, o6.FromOtherPort, o6.FromOtherAddr)
		}
	}
	if len(hosts) == 2 && site.Class != ClassUDPBlocked {
		hp, err := hairpin(hosts[0], hosts[1], rtt)
		if err != nil {
			return meas, err
		}
		meas.Hairpin = &hp
		if hp != site.Hairpin {
			meas.Verified = false
			meas.Detail += fmt.Sprintf(" hairpin measured %v, configured %v", hp, site.Hairpin)
		}
	}
	if site.Class == ClassAPDMPortmap {
		got, err := tb.verifyPortmap(ctx, hosts[0])
		meas.Portmap = got
		if err != nil {
			meas.Verified = false
			meas.Detail += fmt.Sprintf(" port mapping: %v; miniupnpd: %s", err, tail(tb.PortmapLog(site.Name), 600))
		}
	}
	return meas, nil
}
