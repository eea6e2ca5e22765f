package bootstrap

import (
	"errors"
	"fmt"
	"net"
	"net/netip"

	"github.com/pion/stun/v3"
	"github.com/quic-go/quic-go"

	"github.com/antnode/antnode/bootstrap/wire"
	"github.com/antnode/antnode/endpoint"
)

// Sockets are the sockets of one more address family a bootstrap serves
// (ServerConfig.Also): peers of that family register over Endpoint and
// are observed there, answered STUN on it and on AltSTUN, and probed from
// ProbeAddr.
type Sockets struct {
	// Endpoint is the family's QUIC and STUN socket. Required. The
	// server does not close it.
	Endpoint *endpoint.Endpoint
	// AltSTUN is the family's alternate STUN socket (see
	// ServerConfig.AltSTUN). Nil: none. Closed by Close.
	AltSTUN net.PacketConn
	// ProbeAddr is the family's further address for "other address"
	// probes. Invalid: not offered to the family's peers.
	ProbeAddr netip.Addr
}

// ErrSockets is the error of a ServerConfig.Also that holds a socket
// without an endpoint, a second socket of one family, or a probe address
// of another family.
var ErrSockets = errors.New("bootstrap: invalid ServerConfig.Also")

// family is what the server runs for one family's Sockets.
type family struct {
	Sockets
	ln *quic.Listener
}

// families returns the sockets of every family the server serves: the
// primary ones (ServerConfig.Endpoint, AltSTUN, ProbeAddr), then Also.
func (c *ServerConfig) families() []Sockets {
	return append([]Sockets{{Endpoint: c.Endpoint, AltSTUN: c.AltSTUN, ProbeAddr: c.ProbeAddr}}, c.Also...)
}

// validateAlso checks that Also's sockets are each of another family
// than the ones before, with their probe address in that family.
func (c *ServerConfig) validateAlso() error {
	seen := map[string]bool{}
	for i, f := range c.families() {
		if f.Endpoint == nil {
			return fmt.Errorf("%w: Also[%d].Endpoint is required", ErrSockets, i-1)
		}
		fam := endpoint.Family(f.Endpoint.LocalAddr().Addr())
		if seen[fam] {
			return fmt.Errorf("%w: two sockets of IPv%s: Also holds one per further family", ErrSockets, fam)
		}
		seen[fam] = true
		if f.ProbeAddr.IsValid() && endpoint.Family(f.ProbeAddr) != fam {
			return fmt.Errorf("%w: probe address %s is not of its socket's family IPv%s", ErrSockets, f.ProbeAddr, fam)
		}
	}
	return nil
}

// listen starts the QUIC listener of every family and answers STUN on
// its socket. On an error it closes the listeners it started.
func (s *Server) listen(qconf *quic.Config) error {
	for _, f := range s.cfg.families() {
		ln, err := f.Endpoint.Transport().Listen(s.cfg.Identity.ServerTLS(wire.ALPN), qconf)
		if err != nil {
			for _, g := range s.fams {
				g.ln.Close()
			}
			return fmt.Errorf("bootstrap: listen on %s: %w", f.Endpoint.LocalAddr(), err)
		}
		s.fams = append(s.fams, &family{Sockets: f, ln: ln})
	}
	for _, f := range s.fams {
		ep := f.Endpoint
		ep.HandleRequests(func(req *stun.Message, from netip.AddrPort) { s.handleSTUN(ep, req, from) })
	}
	return nil
}

// familyOf returns the family that serves addresses of a's family; the
// primary one if none does (a peer reached it, so it serves the peer).
func (s *Server) familyOf(a netip.Addr) *family {
	fam := endpoint.Family(a)
	for _, f := range s.fams {
		if endpoint.Family(f.Endpoint.LocalAddr().Addr()) == fam {
			return f
		}
	}
	return s.fams[0]
}

// closeFamilies stops answering STUN and closes the listeners and the
// alternate STUN sockets.
func (s *Server) closeFamilies() {
	for _, f := range s.fams {
		f.Endpoint.HandleRequests(nil)
		f.ln.Close()
		if f.AltSTUN != nil {
			f.AltSTUN.Close()
		}
	}
}

// altSTUNAddrs is what Registered advertises to the family's peers: its
// alternate STUN address.
func (f *family) altSTUNAddrs() []netip.AddrPort {
	if f.AltSTUN == nil {
		return nil
	}
	ap, err := netip.ParseAddrPort(f.AltSTUN.LocalAddr().String())
	if err != nil {
		return nil
	}
	return []netip.AddrPort{netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())}
}

// otherSTUN is what Registered advertises to f's peers of the
// bootstrap's other family: its main STUN socket, then its alternate
// one (none: the bootstrap has one family).
func (s *Server) otherSTUN(f *family) []netip.AddrPort {
	for _, g := range s.fams {
		if g != f {
			main := g.Endpoint.LocalAddr()
			return append([]netip.AddrPort{netip.AddrPortFrom(main.Addr().Unmap(), main.Port())}, g.altSTUNAddrs()...)
		}
	}
	return nil
}

// otherProbeCaps is Registered.OtherProbes for f's peers: the probe
// capabilities of the bootstrap's other family (none: it has one).
func (s *Server) otherProbeCaps(f *family) uint64 {
	for _, g := range s.fams {
		if g != f {
			return g.probeCaps()
		}
	}
	return 0
}

// probeCaps is the Probes bitmask of Registered for the family's peers.
func (f *family) probeCaps() uint64 {
	caps := wire.ProbeOtherPort
	if f.ProbeAddr.IsValid() {
		caps |= wire.ProbeOtherAddr
	}
	return caps
}

// probeSource is the address a probe of kind to a peer of f leaves from.
func (f *family) probeSource(kind uint64) (netip.Addr, error) {
	switch kind {
	case wire.ProbeOtherPort:
		return f.Endpoint.LocalAddr().Addr(), nil
	case wire.ProbeOtherAddr:
		if f.ProbeAddr.IsValid() {
			return f.ProbeAddr, nil
		}
	}
	return netip.Addr{}, errors.New("probe kind not offered")
}
