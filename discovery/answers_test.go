package discovery

import (
	"errors"
	"net/netip"
	"slices"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/antnode/antnode/identity"
	"github.com/antnode/antnode/internal/testkit"
	"github.com/antnode/antnode/traversal"
)

func rr(t *testing.T, s string) dns.RR {
	t.Helper()
	r, err := dns.NewRR(s)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func TestEntries(t *testing.T) {
	id1, id2 := testkit.Identity(t).ID(), testkit.Identity(t).ID()
	srv := func(ttl, prio, port, target string) string {
		return "_antnode._udp.fleet.test. " + ttl + " IN SRV " + prio + " 10 " + port + " " + target
	}
	cases := []struct {
		name     string
		rrs      []string
		want     []traversal.Bootstrap
		ttl      time.Duration
		problems int
		err      error
	}{
		{name: "two targets, priority order", rrs: []string{
			srv("300", "20", "4433", "b.fleet.test."), srv("60", "10", "4434", "a.fleet.test."),
			"a.fleet.test. 120 IN A 192.0.2.1", "b.fleet.test. 120 IN A 192.0.2.2",
			"a.fleet.test. 30 IN TXT \"antnode-id=" + id1.String() + "\"",
			"b.fleet.test. 600 IN TXT \"other=x\" \"antnode-id=" + id2.String() + "\"",
		}, want: []traversal.Bootstrap{
			{Addr: netip.MustParseAddrPort("192.0.2.1:4434"), ID: id1},
			{Addr: netip.MustParseAddrPort("192.0.2.2:4433"), ID: id2},
		}, ttl: 30 * time.Second},
		{name: "missing TXT: pinned on first contact", rrs: []string{
			srv("60", "10", "4433", "a.fleet.test."), "a.fleet.test. 60 IN A 192.0.2.1",
		}, want: []traversal.Bootstrap{{Addr: netip.MustParseAddrPort("192.0.2.1:4433")}}, ttl: time.Minute},
		{name: "bad ID: target refused", rrs: []string{
			srv("60", "10", "4433", "a.fleet.test."), srv("60", "10", "4434", "b.fleet.test."),
			"a.fleet.test. 60 IN A 192.0.2.1", "a.fleet.test. 60 IN TXT \"antnode-id=nope\"",
			"b.fleet.test. 60 IN A 192.0.2.2",
		}, want: []traversal.Bootstrap{{Addr: netip.MustParseAddrPort("192.0.2.2:4434")}}, ttl: time.Minute, problems: 1},
		{name: "two IDs: target refused", rrs: []string{
			srv("60", "10", "4433", "a.fleet.test."), "a.fleet.test. 60 IN A 192.0.2.1",
			"a.fleet.test. 60 IN TXT \"antnode-id=" + id1.String() + "\"",
			"a.fleet.test. 60 IN TXT \"antnode-id=" + id2.String() + "\"",
		}, problems: 1, ttl: time.Minute},
		{name: "target with no address", rrs: []string{
			srv("60", "10", "4433", "a.fleet.test."), "a.fleet.test. 60 IN TXT \"antnode-id=" + id1.String() + "\"",
		}, problems: 1, ttl: time.Minute},
		{name: "IPv6 only target", rrs: []string{
			srv("60", "10", "4433", "a.fleet.test."), "a.fleet.test. 60 IN AAAA 2001:db8::1",
		}, want: []traversal.Bootstrap{{Addr: netip.MustParseAddrPort("[2001:db8::1]:4433")}}, ttl: time.Minute},
		{name: "zero targets", rrs: []string{"a.fleet.test. 60 IN A 192.0.2.1"}, err: ErrNoTargets},
		{name: "no service (target .)", rrs: []string{srv("60", "0", "0", ".")}, err: ErrNoTargets},
		{name: "another name's SRV ignored", rrs: []string{
			"_antnode._udp.other.test. 60 IN SRV 0 0 4433 a.fleet.test.", "a.fleet.test. 60 IN A 192.0.2.1",
		}, err: ErrNoTargets},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var rrs []dns.RR
			for _, s := range tc.rrs {
				rrs = append(rrs, rr(t, s))
			}
			got, ttl, problems, err := Entries("fleet.test", rrs)
			if !errors.Is(err, tc.err) {
				t.Fatalf("err %v, want %v", err, tc.err)
			}
			if !slices.Equal(got, tc.want) || ttl != tc.ttl || len(problems) != tc.problems {
				t.Fatalf("got %v ttl %v problems %v; want %v ttl %v %d problems", got, ttl, problems, tc.want, tc.ttl, tc.problems)
			}
		})
	}
}

func TestEntriesProblemsMatch(t *testing.T) {
	rrs := []dns.RR{rr(t, "_antnode._udp.f.test. 60 IN SRV 0 0 1 a.f.test."), rr(t, "a.f.test. 60 IN TXT \"antnode-id=zz\"")}
	_, _, problems, _ := Entries("f.test", rrs)
	if len(problems) != 1 || !errors.Is(problems[0], ErrBadID) || !errors.Is(problems[0], identity.ErrInvalidPeerID) {
		t.Fatalf("problems %v", problems)
	}
}

func TestSplit(t *testing.T) {
	names, rest := Split(" dns:fleet.test. , ID@1.2.3.4:5,dns:b.test,, 5.6.7.8:9")
	if !slices.Equal(names, []string{"fleet.test", "b.test"}) || rest != "ID@1.2.3.4:5,5.6.7.8:9" {
		t.Fatalf("names %q rest %q", names, rest)
	}
}
