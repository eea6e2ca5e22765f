package portmap

import (
	"context"
	"net"
	"net/netip"
	"sync"
	"syscall"

	"golang.org/x/sys/unix"
)

// listen starts the listener of the gateway's announcements: PCP's
// unsolicited ANNOUNCE (RFC 6887, section 14.1.3) and NAT-PMP's external
// address notice (RFC 6886, section 3.2.1), which a server multicasts to
// 224.0.0.1:5350 when it starts (having lost its mappings) or its
// external address changes. A valid one from the gateway's server port
// makes the loop check the gateway at once, or try to map at once if it
// is waiting to. It returns the function that
// stops the listener and waits for its goroutine. A listener that cannot
// be opened (the port is taken without SO_REUSEPORT) is logged and
// forgone: the checks find the same, later.
func (m *Mapper) listen(ctx context.Context) (stop func()) {
	if m.cfg.announceAddr == "-" {
		return func() {}
	}
	conn, err := m.listenAnnounce(ctx)
	if err != nil {
		m.log.Info("portmap: not listening for the gateway's announcements", "err", err)
		return func() {}
	}
	if ap, err := netip.ParseAddrPort(conn.LocalAddr().String()); err == nil {
		m.mu.Lock()
		m.annAddr = ap
		m.mu.Unlock()
	}
	var wg sync.WaitGroup
	wg.Go(func() { m.readAnnouncements(conn) })
	return func() {
		_ = conn.Close()
		wg.Wait()
	}
}

// listenAnnounce opens the announcements' socket: on the port of
// announceAddr, shared (SO_REUSEADDR, SO_REUSEPORT) with other listeners
// of the host, and joined to its group if it is a multicast address (on
// the interface of LocalAddr, or the kernel's choice). The join is best
// effort: Linux delivers the all-hosts group, which every interface
// joins, to a socket bound to the port anyway (IP_MULTICAST_ALL).
func (m *Mapper) listenAnnounce(ctx context.Context) (*net.UDPConn, error) {
	ap, err := netip.ParseAddrPort(m.cfg.announceAddr)
	if err != nil {
		return nil, err
	}
	bind := ap
	if ap.Addr().IsMulticast() {
		bind = netip.AddrPortFrom(netip.IPv4Unspecified(), ap.Port())
	}
	lc := net.ListenConfig{Control: func(_, _ string, rc syscall.RawConn) error {
		var serr error
		err := rc.Control(func(fd uintptr) {
			serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_REUSEADDR, 1)
			if serr == nil {
				serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_REUSEPORT, 1)
			}
		})
		if err != nil {
			return err
		}
		return serr
	}}
	pc, err := lc.ListenPacket(ctx, "udp4", bind.String())
	if err != nil {
		return nil, err
	}
	conn := pc.(*net.UDPConn)
	if ap.Addr().IsMulticast() {
		mreq := &unix.IPMreq{Multiaddr: ap.Addr().As4()}
		if m.cfg.LocalAddr.IsValid() {
			mreq.Interface = m.cfg.LocalAddr.As4()
		}
		if rc, err := conn.SyscallConn(); err == nil {
			_ = rc.Control(func(fd uintptr) {
				if err := unix.SetsockoptIPMreq(int(fd), unix.IPPROTO_IP, unix.IP_ADD_MEMBERSHIP, mreq); err != nil {
					m.log.Debug("portmap: joining the all-hosts group", "err", err)
				}
			})
		}
	}
	return conn, nil
}

// readAnnouncements reads until the socket is closed.
func (m *Mapper) readAnnouncements(conn *net.UDPConn) {
	buf := make([]byte, pcpMaxLen+1)
	for {
		n, from, err := conn.ReadFromUDPAddrPort(buf)
		if err != nil {
			return
		}
		m.announced(buf[:n], from)
	}
}

// announced handles one datagram of the listener.
func (m *Mapper) announced(b []byte, from netip.AddrPort) {
	proto := PCP
	if len(b) > 0 && b[0] == 0 {
		proto = NATPMP
	}
	gw := m.Status().Gateway
	if !gw.IsValid() || from.Addr().Unmap() != gw || from.Port() != m.cfg.serverPort {
		m.met.ignore(proto, ignoredForeign)
		return
	}
	if proto == PCP {
		r, err := decodePCPResponse(b)
		if err != nil || r.Version != pcpVersion {
			m.met.ignore(proto, ignoredMalformed)
			return
		}
		if r.Opcode != pcpOpAnnounce || r.Result != pcpSuccess {
			m.met.ignore(proto, ignoredUnexpected)
			return
		}
	} else {
		r, err := decodeNATPMPResponse(b)
		if err != nil {
			m.met.ignore(proto, ignoredMalformed)
			return
		}
		if r.Opcode != natpmpOpAddr || r.Result != 0 {
			m.met.ignore(proto, ignoredUnexpected)
			return
		}
	}
	m.log.Debug("portmap: the gateway announced a change", "protocol", proto)
	select {
	case m.notice <- struct{}{}:
	default:
	}
	m.mu.Lock()
	if m.kick != nil { // waiting to map: the gateway may just have started
		m.kick()
	}
	m.mu.Unlock()
}
