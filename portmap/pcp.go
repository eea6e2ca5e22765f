package portmap

import (
	"context"
	"fmt"
	"net/netip"
	"time"
)

// pcpClient maps the node's port by PCP's MAP opcode and checks the
// server's epoch by ANNOUNCE.
type pcpClient struct {
	ex    *udpExchanger
	local netip.Addr
	port  uint16
	nonce [pcpNonceLen]byte
}

// Map sends a MAP request for lease, suggesting prev (or the internal
// port).
func (c *pcpClient) Map(ctx context.Context, lease time.Duration, prev netip.AddrPort) (mapping, error) {
	req := c.request(leaseSeconds(lease), prev)
	r, err := c.exchangeMap(ctx, req)
	if err != nil {
		return mapping{}, err
	}
	if r.Lifetime == 0 || r.ExternalPort == 0 || !r.External.Is4() || r.External.IsUnspecified() {
		return mapping{}, fmt.Errorf("%w: pcp: granted %s:%d for %d s", ErrMalformed, r.External, r.ExternalPort, r.Lifetime)
	}
	return mapping{
		external: netip.AddrPortFrom(r.External, r.ExternalPort),
		lease:    grantedLease(r.Lifetime, lease),
		epoch:    r.Epoch,
		hasEpoch: true,
	}, nil
}

// Check sends an ANNOUNCE request, whose answer carries the epoch.
func (c *pcpClient) Check(ctx context.Context, _ mapping) (checkResult, error) {
	var r pcpResponse
	_, err := c.ex.exchange(ctx, encodePCPAnnounce(c.local), func(b []byte) verdict {
		d, err := decodePCPResponse(b)
		switch {
		case err != nil:
			return malformed
		case d.Version == pcpVersion && d.Opcode != pcpOpAnnounce:
			return unexpected
		}
		r = d
		return accept
	})
	if err == nil {
		err = pcpResult(r)
	}
	if err != nil {
		return checkResult{}, err
	}
	return checkResult{epoch: r.Epoch, hasEpoch: true}, nil
}

// Delete sends the MAP request of cur with lifetime 0.
func (c *pcpClient) Delete(ctx context.Context, cur mapping) error {
	_, err := c.exchangeMap(ctx, c.request(0, cur.external))
	return err
}

// request is the MAP request of the node's port for lifetime seconds.
func (c *pcpClient) request(lifetime uint32, prev netip.AddrPort) pcpMapRequest {
	req := pcpMapRequest{
		Lifetime:      lifetime,
		Client:        c.local,
		Nonce:         c.nonce,
		InternalPort:  c.port,
		SuggestedPort: c.port,
	}
	if prev.IsValid() {
		req.SuggestedPort = prev.Port()
		req.SuggestedAddr = prev.Addr()
	}
	return req
}

// exchangeMap sends req and takes the MAP answer with its nonce,
// protocol and internal port; it returns a refusal as a *ResultError.
func (c *pcpClient) exchangeMap(ctx context.Context, req pcpMapRequest) (pcpResponse, error) {
	var r pcpResponse
	_, err := c.ex.exchange(ctx, req.encode(), func(b []byte) verdict {
		d, err := decodePCPResponse(b)
		switch {
		case err != nil:
			return malformed
		case d.Version == pcpVersion && d.Opcode != pcpOpMap:
			return unexpected
		case d.HasMap && (d.Nonce != req.Nonce || d.Protocol != ipProtoUDP || d.InternalPort != req.InternalPort):
			return unexpected
		}
		r = d
		return accept
	})
	if err == nil {
		err = pcpResult(r)
	}
	return r, err
}

// pcpResult is the refusal an answer carries, or nil. A version 0 answer
// is a NAT-PMP-only server's UNSUPP_VERSION.
func pcpResult(r pcpResponse) error {
	switch {
	case r.Version != pcpVersion:
		return &ResultError{Protocol: PCP, Code: pcpUnsuppVersion}
	case r.Result != pcpSuccess:
		return &ResultError{Protocol: PCP, Code: int(r.Result)}
	}
	return nil
}
