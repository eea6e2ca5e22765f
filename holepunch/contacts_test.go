package holepunch

import (
	"context"
	"net/netip"
	"testing"
	"time"
)

func TestContacts(t *testing.T) {
	t0 := time.Unix(1_000_000, 0)
	a, b := netip.MustParseAddrPort("198.51.100.1:4000"), netip.MustParseAddrPort("198.51.100.1:5000")
	c := netip.MustParseAddrPort("203.0.113.9:4000")
	tests := []struct {
		name                     string
		sent                     []netip.AddrPort
		src                      netip.AddrPort
		at                       time.Duration // after t0
		endpoint, address, known bool
	}{
		{"never sent", nil, a, 0, false, false, true},
		{"sent to that endpoint", []netip.AddrPort{a}, a, time.Second, true, true, true},
		{"sent to another port of the address", []netip.AddrPort{a}, b, time.Second, false, true, true},
		{"sent elsewhere", []netip.AddrPort{c}, a, time.Second, false, false, true},
		{"sent long ago", []netip.AddrPort{a}, a, ContactMemory + time.Second, false, false, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			m := newContacts()
			for _, d := range tc.sent {
				m.sent(d, t0)
			}
			ep, addr, known := m.contacted(tc.src, t0.Add(tc.at))
			if ep != tc.endpoint || addr != tc.address || known != tc.known {
				t.Fatalf("contacted = %v %v %v, want %v %v %v", ep, addr, known, tc.endpoint, tc.address, tc.known)
			}
		})
	}
	t.Run("full memory concludes nothing until it expires", func(t *testing.T) {
		m := newContacts()
		for i := range maxContacts + 1 {
			m.sent(netip.AddrPortFrom(netip.MustParseAddr("10.0.0.1"), uint16(i)), t0)
		}
		if _, _, known := m.contacted(c, t0.Add(time.Second)); known {
			t.Fatal("a full memory claimed to know")
		}
		if _, _, known := m.contacted(c, t0.Add(2*ContactMemory+time.Second)); !known {
			t.Fatal("the memory stayed unknown after its entries expired")
		}
	})
}

// TestOnUnsolicited checks that a peer's check from an endpoint this side
// never sent to is reported (with whether its address was contacted), and
// one from an endpoint it punched towards is not.
func TestOnUnsolicited(t *testing.T) {
	type report struct {
		from             netip.AddrPort
		addressContacted bool
	}
	got := make(chan report, 16)
	a, epA := agentOn(t)
	a.onUnsolicited = func(from netip.AddrPort, addr bool) { got <- report{from, addr} }
	b, epB := agentOn(t)
	c, epC := agentOn(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	// B checks A unsolicited: A has sent nothing anywhere.
	ca, cb := NewCreds(), NewCreds()
	sa, _ := a.Open(ca, cb, nil)
	sb, _ := b.Open(cb, ca, nil)
	if _, err := sb.Punch(ctx, hostOf(epA), PunchConfig{}); err != nil {
		t.Fatal(err)
	}
	r := <-got
	if r.from != epB.LocalAddr() || r.addressContacted {
		t.Fatalf("report %+v, want %v with its address uncontacted", r, epB.LocalAddr())
	}
	// A punches towards B: B's checks of a new session are solicited.
	sa.Close()
	sb.Close()
	ca, cb = NewCreds(), NewCreds()
	sa, _ = a.Open(ca, cb, nil)
	defer sa.Close()
	sb, _ = b.Open(cb, ca, nil)
	defer sb.Close()
	done := make(chan error, 1)
	go func() { _, err := sa.Punch(ctx, hostOf(epB), PunchConfig{}); done <- err }()
	if _, err := sb.Punch(ctx, hostOf(epA), PunchConfig{}); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	// C, another port of the contacted address, checks A unsolicited.
	cc := NewCreds()
	sa2, _ := a.Open(NewCreds(), cc, nil)
	defer sa2.Close()
	sc, _ := c.Open(cc, sa2.local, nil)
	defer sc.Close()
	if _, err := sc.Punch(ctx, hostOf(epA), PunchConfig{}); err != nil {
		t.Fatal(err)
	}
	r = <-got
	if r.from != epC.LocalAddr() || !r.addressContacted {
		t.Fatalf("report %+v, want %v with its address contacted (B's session made no report)", r, epC.LocalAddr())
	}
}
