package traversal

import (
	"context"
	"net/netip"
	"testing"
	"testing/synctest"
	"time"

	"github.com/antnode/antnode/bootstrap"
	"github.com/antnode/antnode/endpoint"
	"github.com/antnode/antnode/identity"
	"github.com/antnode/antnode/nattype"
	"github.com/antnode/antnode/testnet"
)

// modelNet is a bootstrap on the public model network and peers behind
// modelled NATs.
type modelNet struct {
	t    testing.TB
	m    *testnet.Model
	boot Bootstrap
}

func newModelNet(t testing.TB) *modelNet {
	m := testnet.NewModel()
	id, _ := identity.Generate()
	c, err := m.Listen(netip.MustParseAddrPort("203.0.113.1:4433"), nil, 0)
	if err != nil {
		t.Fatal(err)
	}
	ep, err := endpoint.New(endpoint.Config{Conn: c})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ep.Close() })
	srv, err := bootstrap.NewServer(bootstrap.ServerConfig{Identity: id, Endpoint: ep})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close() })
	return &modelNet{t: t, m: m, boot: Bootstrap{Addr: srv.Addr(), ID: id.ID()}}
}

// peer starts a node behind a new NAT of class nat (zero Type: public)
// with the given one-way access delay.
func (mn *modelNet) peer(i int, nat nattype.Type, delay time.Duration) *Node {
	t := mn.t
	var n *testnet.ModelNAT
	local := netip.AddrPortFrom(netip.AddrFrom4([4]byte{198, 51, 100, byte(100 + i)}), 4000)
	if nat.Mapping != nattype.MappingNone {
		var err error
		n, err = mn.m.AddNAT(testnet.NATConfig{Public: netip.AddrFrom4([4]byte{198, 51, 100, byte(i)}),
			Mapping: nat.Mapping, Filtering: nat.Filtering, Delay: delay})
		if err != nil {
			t.Fatal(err)
		}
		local = netip.AddrPortFrom(netip.AddrFrom4([4]byte{192, 168, byte(i), 10}), 4000)
	}
	c, err := mn.m.Listen(local, n, delay)
	if err != nil {
		t.Fatal(err)
	}
	ep, err := endpoint.New(endpoint.Config{Conn: c})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ep.Close() })
	id, _ := identity.Generate()
	node, err := New(Config{Identity: id, Endpoint: ep, Bootstraps: []Bootstrap{mn.boot}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { node.Close() })
	if err := node.WaitReady(context.Background()); err != nil {
		t.Fatal(err)
	}
	return node
}

var (
	eimAPDF = nattype.Type{Mapping: nattype.MappingEIM, Filtering: nattype.FilteringAPDF}
	public  = nattype.Type{Mapping: nattype.MappingNone}
)

func TestModelConnectThroughNATs(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		mn := newModelNet(t)
		delay := 20 * time.Millisecond
		a, b := mn.peer(1, eimAPDF, delay), mn.peer(2, eimAPDF, delay)
		c, err := a.Connect(context.Background(), b.ID())
		if err != nil {
			t.Fatal(err)
		}
		rtt := 4 * delay // peer to peer: two access links each way
		t.Logf("time to connect %v = %.2f RTT", c.TimeToConnect(), float64(c.TimeToConnect())/float64(rtt))
		if _, err := c.SendVerified(context.Background(), 64<<10); err != nil {
			t.Fatal(err)
		}
		c.Close()
		a.Close()
		b.Close()
	})
}
