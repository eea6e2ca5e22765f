package endpoint

import (
	"net"
	"net/netip"
	"slices"
	"testing"
)

// TestRouteOwnership: a route's owner removes its own route and no
// other: a route set since (a proven redirect that replaced a relay's)
// stays when the older owner cleans up, and a replaced route can be set
// again. Packets go through the real socket's write path.
func TestRouteOwnership(t *testing.T) {
	ep := listen(t)
	sink, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer sink.Close()
	dst := sink.LocalAddr().(*net.UDPAddr).AddrPort()
	var via []string
	route := func(name string) func([]byte) error {
		return func([]byte) error { via = append(via, name); return nil }
	}
	send := func() {
		t.Helper()
		if _, err := ep.tr.Conn.WriteTo([]byte{0x40, 1, 2, 3}, net.UDPAddrFromAddrPort(dst)); err != nil {
			t.Fatal(err)
		}
	}
	relay, err := ep.Reroute(dst, route("relay"))
	if err != nil {
		t.Fatal(err)
	}
	send()
	redirect, err := ep.Reroute(netip.AddrPortFrom(netip.AddrFrom16(dst.Addr().As16()), dst.Port()), route("redirect")) // the mapped form is the same destination
	if err != nil {
		t.Fatal(err)
	}
	send()
	if ep.Unroute(dst, relay) {
		t.Fatal("the relay's cleanup removed the redirect's route")
	}
	send()
	if ep.Route(dst) != redirect {
		t.Fatal("the redirect's route is gone")
	}
	if !ep.Unroute(dst, redirect) || ep.Rerouted(dst) {
		t.Fatal("the redirect's owner could not remove it")
	}
	send() // directly: nothing recorded
	if err := ep.SetRoute(dst, relay); err != nil || ep.Route(dst) != relay {
		t.Fatalf("setting the replaced route again: %v", err)
	}
	send()
	if !ep.Unroute(dst, nil) || ep.Unroute(dst, nil) {
		t.Fatal("Unroute(nil) removes whatever route there is, once")
	}
	want := []string{"relay", "redirect", "redirect", "relay"}
	if !slices.Equal(via, want) {
		t.Fatalf("packets went via %q, want %q", via, want)
	}
}
