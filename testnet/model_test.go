package testnet

import (
	"net"
	"net/netip"
	"testing"
	"testing/synctest"
	"time"

	"github.com/antnode/antnode/nattype"
)

// modelObserve runs the verification probes against a modelled NAT and
// returns what they saw.
func modelObserve(t *testing.T, cfg NATConfig) Observation {
	m := NewModel()
	srvAddrs := probeServerAddrs()
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
	var local netip.AddrPort
	var nat *ModelNAT
	if cfg.Public.IsValid() {
		var err error
		if nat, err = m.AddNAT(cfg); err != nil {
			t.Fatal(err)
		}
		local = netip.MustParseAddrPort("192.168.1.10:5000")
	} else {
		local = netip.MustParseAddrPort("198.51.100.77:5000")
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
	tests := []struct {
		name string
		cfg  NATConfig
		want Class
	}{
		{"public", NATConfig{}, ClassPublic},
		{"full cone", NATConfig{Public: pub, Mapping: nattype.MappingEIM, Filtering: nattype.FilteringEIF}, ClassEIMEIF},
		{"restricted", NATConfig{Public: pub, Mapping: nattype.MappingEIM, Filtering: nattype.FilteringADF}, ClassEIMADF},
		{"port restricted", NATConfig{Public: pub, Mapping: nattype.MappingEIM, Filtering: nattype.FilteringAPDF}, ClassEIMAPDF},
		{"symmetric", NATConfig{Public: pub, Mapping: nattype.MappingAPDM, Filtering: nattype.FilteringAPDF}, ClassAPDM},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				o := modelObserve(t, tc.cfg)
				m, f := Classify(o)
				wm, wf := tc.want.Behaviour()
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
