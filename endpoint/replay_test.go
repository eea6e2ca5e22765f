package endpoint

import (
	"bytes"
	"net"
	"testing"
	"time"
)

// TestReplay: a remembered destination's last QUIC packet sent directly
// goes again through the route set since; STUN is not kept, and nothing
// is after Forget.
func TestReplay(t *testing.T) {
	ep := listen(t)
	sink, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer sink.Close()
	dst := sink.LocalAddr().(*net.UDPAddr).AddrPort()
	write := func(b []byte) {
		t.Helper()
		if _, err := ep.tr.Conn.WriteTo(b, net.UDPAddrFromAddrPort(dst)); err != nil {
			t.Fatal(err)
		}
	}
	var via [][]byte
	route := func(b []byte) error { via = append(via, append([]byte(nil), b...)); return nil }

	write([]byte{0x40, 0}) // before Remember: not kept
	ep.Remember(dst)
	first, last := []byte{0x40, 1, 1}, []byte{0x41, 2, 2, 2}
	write(first)
	write(last)
	write([]byte{0x00, 0x01, 0, 0}) // STUN: not QUIC, not kept
	if ep.Replay(dst) {
		t.Fatal("replayed with no route set")
	}
	if _, err := ep.Reroute(dst, route); err != nil {
		t.Fatal(err)
	}
	if !ep.Replay(dst) || !ep.Replay(dst) {
		t.Fatal("nothing replayed")
	}
	if len(via) != 2 || !bytes.Equal(via[0], last) || !bytes.Equal(via[1], last) {
		t.Fatalf("the route got %x, want the last QUIC packet (%x) twice", via, last)
	}
	ep.Forget(dst)
	if ep.Replay(dst) {
		t.Fatal("replayed after Forget")
	}
	// What went directly did arrive, all four.
	buf := make([]byte, 64)
	for i := range 4 {
		sink.SetReadDeadline(time.Now().Add(2 * time.Second))
		if _, _, err := sink.ReadFromUDP(buf); err != nil {
			t.Fatalf("direct packet %d: %v", i, err)
		}
	}
}
