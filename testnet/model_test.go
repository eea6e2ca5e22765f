package testnet

import (
	"net"
	"net/netip"
	"slices"
	"testing"
	"testing/synctest"
	"time"

	"github.com/antnode/antnode/nattype"
)

// modelObserve runs the verification probes against a host behind a chain
// of modelled NATs (chain[0] on the public network, each next one behind
// the one before; none: a public host) and returns what they saw.
func modelObserve(t *testing.T, chain ...NATConfig) Observation {
	m := NewModel()
	srvAddrs := probeServerAddrs(false)
	servers := map[netip.AddrPort]*ModelConn{}
	for _, a := range srvAddrs {
		c, err := m.Listen(a, nil, 0)
		if err != nil {
			t.Fatal(err)
		}
		servers[a] = c
		go func() { // a reflector: answers with the source address
			buf := make([]byte, 1500)
			for {
				n, from, err := c.ReadFrom(buf)
				if err != nil {
					return
				}
				if string(buf[:n]) == "who" {
					c.WriteTo([]byte(from.String()), from)
				}
			}
		}()
	}
	defer func() {
		for _, c := range servers {
			c.Close()
		}
	}()
	local := netip.MustParseAddrPort("198.51.100.77:5000")
	var nat *ModelNAT
	for _, cfg := range chain {
		cfg.Behind = nat
		var err error
		if nat, err = m.AddNAT(cfg); err != nil {
			t.Fatal(err)
		}
		local = netip.MustParseAddrPort("192.168.1.10:5000")
	}
	ask := func(c *ModelConn, to netip.AddrPort) netip.AddrPort {
		c.WriteTo([]byte("who"), net.UDPAddrFromAddrPort(to))
		c.SetReadDeadline(time.Now().Add(time.Second))
		buf := make([]byte, 100)
		n, _, err := c.ReadFrom(buf)
		if err != nil {
			return netip.AddrPort{}
		}
		return netip.MustParseAddrPort(string(buf[:n]))
	}
	c, err := m.Listen(local, nat, 10*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	o := Observation{Local: local}
	for i := range 3 {
		o.Mapped[i] = ask(c, srvAddrs[i])
	}
	f, _ := m.Listen(netip.AddrPortFrom(local.Addr(), 6000), nat, 10*time.Millisecond)
	defer f.Close()
	fm := ask(f, srvAddrs[0])
	servers[srvAddrs[1]].WriteTo([]byte("other-port"), net.UDPAddrFromAddrPort(fm))
	servers[srvAddrs[3]].WriteTo([]byte("other-addr"), net.UDPAddrFromAddrPort(fm))
	buf := make([]byte, 100)
	for {
		f.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
		n, _, err := f.ReadFrom(buf)
		if err != nil {
			break
		}
		switch string(buf[:n]) {
		case "other-port":
			o.FromOtherPort = true
		case "other-addr":
			o.FromOtherAddr = true
		}
	}
	return o
}

// TestModelClasses checks that each modelled NAT shows the behaviour of its
// class to the same probes (and the same Classify) as the namespace
// testbed uses.
func TestModelClasses(t *testing.T) {
	pub := netip.MustParseAddr("198.51.100.1")
	home := netip.MustParseAddr("100.64.0.2")
	tests := []struct {
		name  string
		chain []NATConfig
		want  Class
		// udpOnly: the class's filtering is "blocked" (UDP dropped, TCP
		// passes); the Model carries no TCP, so Classify says "unreachable".
		udpOnly bool
	}{
		{"public", nil, ClassPublic, false},
		{"full cone", []NATConfig{{Public: pub, Mapping: nattype.MappingEIM, Filtering: nattype.FilteringEIF}}, ClassEIMEIF, false},
		{"restricted", []NATConfig{{Public: pub, Mapping: nattype.MappingEIM, Filtering: nattype.FilteringADF}}, ClassEIMADF, false},
		{"port restricted", []NATConfig{{Public: pub, Mapping: nattype.MappingEIM, Filtering: nattype.FilteringAPDF}}, ClassEIMAPDF, false},
		{"symmetric", []NATConfig{{Public: pub, Mapping: nattype.MappingAPDM, Filtering: nattype.FilteringAPDF}}, ClassAPDM, false},
		{"symmetric, sequential ports", []NATConfig{{Public: pub, Mapping: nattype.MappingAPDM, Filtering: nattype.FilteringAPDF, Sequential: true}}, ClassAPDM, false},
		{"cgnat: home behind a hairpinning carrier", []NATConfig{
			{Public: pub, Mapping: nattype.MappingEIM, Filtering: nattype.FilteringAPDF, Hairpin: true, Delay: 5 * time.Millisecond},
			{Public: home, Mapping: nattype.MappingEIM, Filtering: nattype.FilteringAPDF, Delay: 2 * time.Millisecond},
		}, ClassCGNAT, false},
		{"cgnat: full-cone home behind the carrier", []NATConfig{
			{Public: pub, Mapping: nattype.MappingEIM, Filtering: nattype.FilteringAPDF},
			{Public: home, Mapping: nattype.MappingEIM, Filtering: nattype.FilteringEIF},
		}, ClassCGNAT, false},
		{"udp-blocked", []NATConfig{{Public: pub, Mapping: nattype.MappingEIM, Filtering: nattype.FilteringAPDF, BlockUDP: true}}, ClassUDPBlocked, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				o := modelObserve(t, tc.chain...)
				m, f := Classify(o)
				wm, wf := tc.want.Behaviour()
				if tc.udpOnly {
					wf = "unreachable"
				}
				if m != wm || f != wf {
					t.Fatalf("measured %s/%s, want %s/%s (%+v)", m, f, wm, wf, o)
				}
			})
		})
	}
}

func TestModelDelayAndExpiry(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		m := NewModel()
		nat, _ := m.AddNAT(NATConfig{Public: netip.MustParseAddr("198.51.100.1"), Mapping: nattype.MappingEIM,
			Filtering: nattype.FilteringAPDF, Timeout: 5 * time.Second, Delay: 20 * time.Millisecond})
		srv, _ := m.Listen(netip.MustParseAddrPort("203.0.113.1:3478"), nil, 0)
		host, _ := m.Listen(netip.MustParseAddrPort("192.168.1.10:4000"), nat, 0)
		buf := make([]byte, 10)
		start := time.Now()
		host.WriteTo([]byte("hi"), srv.LocalAddr())
		_, from, err := srv.ReadFrom(buf)
		if err != nil {
			t.Fatal(err)
		}
		if d := time.Since(start); d != 20*time.Millisecond {
			t.Fatalf("one-way delay %v, want 20ms", d)
		}
		if from.String() != "198.51.100.1:4000" {
			t.Fatalf("mapped to %v", from)
		}
		srv.WriteTo([]byte("back"), from)
		if _, _, err := host.ReadFrom(buf); err != nil {
			t.Fatal(err)
		}
		time.Sleep(6 * time.Second) // the mapping expires
		srv.WriteTo([]byte("late"), from)
		host.SetReadDeadline(time.Now().Add(time.Second))
		if _, _, err := host.ReadFrom(buf); err == nil {
			t.Fatal("packet delivered through an expired mapping")
		}
		if m.Dropped() != 1 {
			t.Fatalf("dropped %d", m.Dropped())
		}
	})
}

// recvFrom reads one packet within d and returns its payload and source
// (ok false: none arrived).
func recvFrom(c *ModelConn, d time.Duration) (string, netip.AddrPort, bool) {
	buf := make([]byte, 100)
	c.SetReadDeadline(time.Now().Add(d))
	n, from, err := c.ReadFrom(buf)
	if err != nil {
		return "", netip.AddrPort{}, false
	}
	return string(buf[:n]), from.(*net.UDPAddr).AddrPort(), true
}

func send(c *ModelConn, to netip.AddrPort, msg string) {
	c.WriteTo([]byte(msg), net.UDPAddrFromAddrPort(to))
}

// TestModelCGNAT puts two homes (port-restricted cone NATs on 100.64/10)
// behind one port-restricted carrier NAT: both hosts are seen at the
// carrier's address (the second at a new port, since the carrier keeps
// the source port only while it is free), a packet pays both NATs' delays,
// and the homes reach each other through the carrier's mappings only when
// the carrier hairpins.
func TestModelCGNAT(t *testing.T) {
	carrierAddr := netip.MustParseAddr("198.51.100.1")
	tests := []struct {
		name    string
		hairpin bool
	}{
		{"carrier hairpins", true},
		{"carrier does not hairpin", false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				m := NewModel()
				var drops []string
				m.OnDrop = func(_, _ netip.AddrPort, why string) { drops = append(drops, why) }
				carrier, err := m.AddNAT(NATConfig{Public: carrierAddr, Mapping: nattype.MappingEIM,
					Filtering: nattype.FilteringAPDF, Hairpin: tc.hairpin, Delay: 5 * time.Millisecond})
				if err != nil {
					t.Fatal(err)
				}
				var homes [2]*ModelNAT
				for i := range homes {
					if homes[i], err = m.AddNAT(NATConfig{Public: netip.AddrFrom4([4]byte{100, 64, 0, byte(2 + i)}),
						Mapping: nattype.MappingEIM, Filtering: nattype.FilteringAPDF, Delay: 2 * time.Millisecond, Behind: carrier}); err != nil {
						t.Fatal(err)
					}
				}
				if _, err := m.AddNAT(NATConfig{Public: netip.MustParseAddr("100.64.0.2"), Behind: carrier}); err == nil {
					t.Fatal("a second NAT at 100.64.0.2 behind the carrier was accepted")
				}
				refl, _ := m.Listen(netip.MustParseAddrPort("203.0.113.1:3478"), nil, 0)
				defer refl.Close()
				// Both hosts use the same private address in their homes.
				a, _ := m.Listen(netip.MustParseAddrPort("192.168.1.10:4000"), homes[0], 0)
				defer a.Close()
				b, _ := m.Listen(netip.MustParseAddrPort("192.168.1.10:4000"), homes[1], 0)
				defer b.Close()
				if n := m.OpenSockets(); n != 3 {
					t.Fatalf("%d open sockets, want 3 (nested NATs' sockets count)", n)
				}
				mapped := func(c *ModelConn) netip.AddrPort {
					start := time.Now()
					send(c, refl.LocalAddr().(*net.UDPAddr).AddrPort(), "who")
					_, from, ok := recvFrom(refl, time.Second)
					if !ok {
						t.Fatal("the reflector got nothing")
					}
					if d := time.Since(start); d != 7*time.Millisecond {
						t.Fatalf("one-way delay home -> carrier -> internet %v, want 2 ms + 5 ms", d)
					}
					return from
				}
				ma, mb := mapped(a), mapped(b)
				if ma != netip.AddrPortFrom(carrierAddr, 4000) {
					t.Fatalf("a seen at %v, want the carrier's address, port preserved through both NATs", ma)
				}
				if mb.Addr() != carrierAddr || mb.Port() == 4000 {
					t.Fatalf("b seen at %v, want the carrier's address at another port than a's", mb)
				}
				// Unsolicited from the internet: port-restricted at the carrier.
				other, _ := m.Listen(netip.MustParseAddrPort("203.0.113.3:3478"), nil, 0)
				defer other.Close()
				send(other, ma, "unsolicited")
				if msg, _, ok := recvFrom(a, 100*time.Millisecond); ok {
					t.Fatalf("a received %q from an address it never sent to", msg)
				}
				// Punch through the carrier: a to b's carrier mapping, b to
				// a's, a to b's again.
				send(a, mb, "1")
				send(b, ma, "2")
				start := time.Now()
				msg, from, ok := recvFrom(a, time.Second)
				if tc.hairpin {
					if !ok || msg != "2" || from != mb {
						t.Fatalf("a got %q from %v (ok %v), want \"2\" from %v", msg, from, ok, mb)
					}
					if d := time.Since(start); d != 4*time.Millisecond {
						t.Fatalf("home to home through the carrier took %v, want 2 ms + 2 ms", d)
					}
				} else if ok {
					t.Fatalf("a got %q from %v with hairpinning off", msg, from)
				}
				send(a, mb, "3")
				msg, from, ok = recvFrom(b, time.Second)
				if tc.hairpin && (!ok || msg != "3" || from != ma) {
					t.Fatalf("b got %q from %v (ok %v), want \"3\" from %v", msg, from, ok, ma)
				}
				if !tc.hairpin && ok {
					t.Fatalf("b got %q from %v with hairpinning off", msg, from)
				}
				want := map[bool][]string{
					true:  {"filtered", "hairpin filtered"},                          // the unsolicited packet; a's first, before b's mapping allowed it
					false: {"filtered", "hairpin off", "hairpin off", "hairpin off"}, // every packet between the homes
				}[tc.hairpin]
				if !slices.Equal(drops, want) {
					t.Fatalf("drops %v, want %v", drops, want)
				}
			})
		})
	}
}

// TestModelUDPBlocked checks that a udp-blocked NAT lets no packet out,
// not even to its own address, and none in, while its LAN still works.
func TestModelUDPBlocked(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		m := NewModel()
		var drops []string
		m.OnDrop = func(_, _ netip.AddrPort, why string) { drops = append(drops, why) }
		pub := netip.MustParseAddr("198.51.100.1")
		nat, _ := m.AddNAT(NATConfig{Public: pub, Mapping: nattype.MappingEIM, Filtering: nattype.FilteringEIF, Hairpin: true, BlockUDP: true})
		srv, _ := m.Listen(netip.MustParseAddrPort("203.0.113.1:3478"), nil, 0)
		defer srv.Close()
		h1, _ := m.Listen(netip.MustParseAddrPort("192.168.1.10:4000"), nat, 0)
		defer h1.Close()
		h2, _ := m.Listen(netip.MustParseAddrPort("192.168.1.11:4000"), nat, 0)
		defer h2.Close()

		send(h1, srv.LocalAddr().(*net.UDPAddr).AddrPort(), "out")
		if msg, _, ok := recvFrom(srv, time.Second); ok {
			t.Fatalf("the server received %q from behind a udp-blocked NAT", msg)
		}
		send(h1, netip.AddrPortFrom(pub, 4000), "own address")
		send(srv, netip.AddrPortFrom(pub, 4000), "in") // no mapping was ever made
		if msg, _, ok := recvFrom(h1, time.Second); ok {
			t.Fatalf("h1 received %q", msg)
		}
		send(h1, h2.LocalAddr().(*net.UDPAddr).AddrPort(), "lan")
		if msg, from, ok := recvFrom(h2, time.Second); !ok || msg != "lan" || from != h1.LocalAddr().(*net.UDPAddr).AddrPort() {
			t.Fatalf("LAN packet: got %q from %v (ok %v)", msg, from, ok)
		}
		if want := []string{"udp blocked", "udp blocked", "filtered"}; !slices.Equal(drops, want) {
			t.Fatalf("drops %v, want %v", drops, want)
		}
	})
}

// TestModelSequentialPorts checks the port allocation of destination-
// dependent mappings: with Sequential each new mapping (from any host of
// the NAT) takes the port after the last one, a packet on an existing
// mapping takes none, and EIM still keeps the source port; without it the
// ports are random.
func TestModelSequentialPorts(t *testing.T) {
	tests := []struct {
		name       string
		mapping    nattype.Mapping
		sequential bool
		want       func(ports []uint16) bool
	}{
		{"apdm sequential", nattype.MappingAPDM, true, func(ps []uint16) bool {
			return slices.Equal(ps, []uint16{20000, 20001, 20002, 20002, 20003, 20004, 20005})
		}},
		{"apdm random", nattype.MappingAPDM, false, func(ps []uint16) bool {
			consecutive := 0
			for i := 1; i < len(ps); i++ {
				if ps[i] == ps[i-1]+1 {
					consecutive++
				}
			}
			return consecutive == 0 && ps[2] == ps[3] // the repeat reuses its mapping
		}},
		{"eim sequential keeps the source port", nattype.MappingEIM, true, func(ps []uint16) bool {
			return slices.Equal(ps, []uint16{4000, 4000, 4000, 4000, 4000, 4000, 4001})
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				m := NewModel()
				nat, _ := m.AddNAT(NATConfig{Public: netip.MustParseAddr("198.51.100.1"), Mapping: tc.mapping,
					Filtering: nattype.FilteringAPDF, Sequential: tc.sequential})
				h1, _ := m.Listen(netip.MustParseAddrPort("192.168.1.10:4000"), nat, 0)
				defer h1.Close()
				h2, _ := m.Listen(netip.MustParseAddrPort("192.168.1.11:4001"), nat, 0)
				defer h2.Close()
				var dsts []*ModelConn
				for _, a := range []string{"203.0.113.1:3478", "203.0.113.1:3479", "203.0.113.2:3478", "203.0.113.3:9", "203.0.113.4:9"} {
					c, err := m.Listen(netip.MustParseAddrPort(a), nil, 0)
					if err != nil {
						t.Fatal(err)
					}
					defer c.Close()
					dsts = append(dsts, c)
				}
				// h1 to four destinations, the third twice; then h1 to a
				// fifth and h2 to the first.
				var ports []uint16
				for _, step := range []struct {
					from *ModelConn
					to   int
				}{{h1, 0}, {h1, 1}, {h1, 2}, {h1, 2}, {h1, 3}, {h1, 4}, {h2, 0}} {
					send(step.from, dsts[step.to].LocalAddr().(*net.UDPAddr).AddrPort(), "x")
					_, from, ok := recvFrom(dsts[step.to], time.Second)
					if !ok {
						t.Fatal("nothing arrived")
					}
					ports = append(ports, from.Port())
				}
				if !tc.want(ports) {
					t.Fatalf("mapped ports %v", ports)
				}
			})
		})
	}
}

func TestNextSeqPort(t *testing.T) {
	takenSet := func(ps ...uint16) func(uint16) bool {
		return func(p uint16) bool { return slices.Contains(ps, p) }
	}
	tests := []struct {
		name  string
		last  uint16
		taken func(uint16) bool
		want  uint16
	}{
		{"first", 0, takenSet(), 20000},
		{"next", 20000, takenSet(), 20001},
		{"skips ports in use", 20000, takenSet(20001, 20002), 20003},
		{"wraps", 65535, takenSet(), 1024},
		{"wraps past ports in use", 65534, takenSet(65535, 1024), 1025},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := nextSeqPort(tc.last, tc.taken); got != tc.want {
				t.Fatalf("nextSeqPort(%d) = %d, want %d", tc.last, got, tc.want)
			}
		})
	}
}
