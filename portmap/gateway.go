package portmap

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strconv"
	"strings"
)

// procRoute is the kernel's IPv4 routing table.
const procRoute = "/proc/net/route"

// Route flags of /proc/net/route (linux/route.h).
const (
	rtfUp      = 0x1
	rtfGateway = 0x2
)

// parseDefaultGateway finds the default IPv4 gateway in the text of
// /proc/net/route: among the routes that are up, go through a gateway,
// and have destination and mask 0, the one of the lowest metric (the
// first of equals). Addresses there are hexadecimal in the host's byte
// order. It returns ErrNoGateway when there is none; lines it cannot read
// are skipped.
func parseDefaultGateway(table []byte) (netip.Addr, error) {
	var (
		best       netip.Addr
		bestMetric uint64
	)
	sc := bufio.NewScanner(bytes.NewReader(table))
	first := true
	for sc.Scan() {
		if first { // the header line
			first = false
			continue
		}
		f := strings.Fields(sc.Text())
		if len(f) < 8 {
			continue
		}
		dst, ok1 := routeAddr(f[1])
		gw, ok2 := routeAddr(f[2])
		mask, ok3 := routeAddr(f[7])
		flags, err1 := strconv.ParseUint(f[3], 16, 16)
		metric, err2 := strconv.ParseUint(f[6], 10, 32)
		if !ok1 || !ok2 || !ok3 || err1 != nil || err2 != nil {
			continue
		}
		if flags&(rtfUp|rtfGateway) != rtfUp|rtfGateway || !dst.IsUnspecified() || !mask.IsUnspecified() || gw.IsUnspecified() {
			continue
		}
		if !best.IsValid() || metric < bestMetric {
			best, bestMetric = gw, metric
		}
	}
	if !best.IsValid() {
		return netip.Addr{}, ErrNoGateway
	}
	return best, nil
}

// routeAddr reads an address of /proc/net/route: 8 hex digits of a
// 32-bit number in the host's byte order.
func routeAddr(s string) (netip.Addr, bool) {
	if len(s) != 8 {
		return netip.Addr{}, false
	}
	var raw [4]byte
	if _, err := hex.Decode(raw[:], []byte(s)); err != nil {
		return netip.Addr{}, false
	}
	var a [4]byte
	binary.NativeEndian.PutUint32(a[:], binary.BigEndian.Uint32(raw[:]))
	return netip.AddrFrom4(a), true
}

// defaultGateway reads the host's default IPv4 gateway.
func defaultGateway() (netip.Addr, error) {
	table, err := os.ReadFile(procRoute)
	if err != nil {
		return netip.Addr{}, fmt.Errorf("portmap: %w", err)
	}
	return parseDefaultGateway(table)
}

// localAddrFor is the local address the host would send from to gw: that
// of a UDP socket connected to it (connecting a UDP socket sends
// nothing).
func localAddrFor(ctx context.Context, gw netip.Addr) (netip.Addr, error) {
	var d net.Dialer
	c, err := d.DialContext(ctx, "udp4", netip.AddrPortFrom(gw, defaultServerPort).String())
	if err != nil {
		return netip.Addr{}, fmt.Errorf("portmap: no route to the gateway %s: %w", gw, err)
	}
	defer c.Close()
	ap, err := netip.ParseAddrPort(c.LocalAddr().String())
	if err != nil {
		return netip.Addr{}, fmt.Errorf("portmap: local address: %w", err)
	}
	return ap.Addr().Unmap(), nil
}
