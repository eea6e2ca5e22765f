package portmap

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"time"
)

// verdict is what a request's matcher makes of a datagram from the
// gateway.
type verdict uint8

const (
	accept     verdict = iota // the answer: the exchange ends
	malformed                 // unreadable: ignored and counted
	unexpected                // readable but not the answer: ignored and counted
)

// udpExchanger sends PCP and NAT-PMP requests to the gateway's server
// port from LocalAddr, and takes answers only from there.
type udpExchanger struct {
	proto   Protocol
	local   netip.Addr
	server  netip.AddrPort
	timeout time.Duration
	rto     time.Duration
	met     *metrics
}

// exchange sends req, retransmitting it after rto, doubled each time,
// until match accepts a datagram from the server or the timeout (or ctx)
// ends it. Datagrams from elsewhere, and those match rejects, are counted
// and ignored. The request is counted with its outcome. It returns the
// accepted datagram; with none, an error wrapping ErrNoAnswer, or
// ErrMalformed if what the server sent could not be read.
func (u *udpExchanger) exchange(ctx context.Context, req []byte, match func([]byte) verdict) ([]byte, error) {
	b, err := u.roundTrip(ctx, req, match)
	if !errors.Is(err, context.Canceled) { // an aborted request is no outcome
		u.met.request(u.proto, err)
	}
	return b, err
}

func (u *udpExchanger) roundTrip(ctx context.Context, req []byte, match func([]byte) verdict) ([]byte, error) {
	ctx, cancel := context.WithTimeout(ctx, u.timeout)
	defer cancel()
	conn, err := net.ListenUDP("udp4", net.UDPAddrFromAddrPort(netip.AddrPortFrom(u.local, 0)))
	if err != nil {
		return nil, fmt.Errorf("portmap: %s: %w", u.proto, err)
	}
	defer conn.Close()
	stop := context.AfterFunc(ctx, func() { _ = conn.SetReadDeadline(time.Unix(1, 0)) })
	defer stop()

	buf := make([]byte, pcpMaxLen+1)
	rto := u.rto
	sawMalformed := false
	for ctx.Err() == nil {
		if _, err := conn.WriteToUDPAddrPort(req, u.server); err != nil {
			return nil, fmt.Errorf("portmap: %s: %w", u.proto, err)
		}
		resend := time.Now().Add(rto)
		rto *= 2
		for ctx.Err() == nil {
			_ = conn.SetReadDeadline(resend)
			n, from, err := conn.ReadFromUDPAddrPort(buf)
			if errors.Is(err, os.ErrDeadlineExceeded) {
				break // retransmit
			}
			if err != nil {
				if ctx.Err() != nil {
					break
				}
				return nil, fmt.Errorf("portmap: %s: %w", u.proto, err)
			}
			if from.Addr().Unmap() != u.server.Addr() || from.Port() != u.server.Port() {
				u.met.ignore(u.proto, ignoredForeign)
				continue
			}
			switch match(buf[:n]) {
			case accept:
				return append([]byte(nil), buf[:n]...), nil
			case malformed:
				sawMalformed = true
				u.met.ignore(u.proto, ignoredMalformed)
			case unexpected:
				u.met.ignore(u.proto, ignoredUnexpected)
			}
		}
	}
	if err := ctx.Err(); errors.Is(err, context.Canceled) {
		return nil, fmt.Errorf("portmap: %s: %w", u.proto, err)
	}
	if sawMalformed {
		return nil, fmt.Errorf("%w from %s (%s)", ErrMalformed, u.server, u.proto)
	}
	return nil, fmt.Errorf("%w from %s (%s) in %v", ErrNoAnswer, u.server, u.proto, u.timeout)
}
