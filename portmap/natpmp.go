package portmap

import (
	"context"
	"fmt"
	"net/netip"
	"time"
)

// natpmpClient maps the node's port by NAT-PMP: the external address
// request, then the UDP mapping request.
type natpmpClient struct {
	ex   *udpExchanger
	port uint16
}

// Map asks for the external address, then for the mapping for lease,
// suggesting prev's port (or the internal port).
func (c *natpmpClient) Map(ctx context.Context, lease time.Duration, prev netip.AddrPort) (mapping, error) {
	addr, err := c.exchange(ctx, encodeNATPMPAddr(), natpmpOpAddr)
	if err != nil {
		return mapping{}, err
	}
	if addr.External.IsUnspecified() {
		return mapping{}, fmt.Errorf("%w: nat-pmp: external address 0.0.0.0", ErrMalformed)
	}
	suggested := c.port
	if prev.IsValid() {
		suggested = prev.Port()
	}
	r, err := c.exchange(ctx, encodeNATPMPMap(c.port, suggested, leaseSeconds(lease)), natpmpOpMapUDP)
	if err != nil {
		return mapping{}, err
	}
	if r.Lifetime == 0 || r.ExternalPort == 0 {
		return mapping{}, fmt.Errorf("%w: nat-pmp: granted port %d for %d s", ErrMalformed, r.ExternalPort, r.Lifetime)
	}
	return mapping{
		external: netip.AddrPortFrom(addr.External, r.ExternalPort),
		lease:    grantedLease(r.Lifetime, lease),
		epoch:    r.Epoch,
		hasEpoch: true,
	}, nil
}

// Check asks for the external address, whose answer carries the epoch.
func (c *natpmpClient) Check(ctx context.Context, _ mapping) (checkResult, error) {
	r, err := c.exchange(ctx, encodeNATPMPAddr(), natpmpOpAddr)
	if err != nil {
		return checkResult{}, err
	}
	return checkResult{epoch: r.Epoch, hasEpoch: true, external: r.External}, nil
}

// Delete sends the mapping request of the internal port with lifetime 0
// and suggested port 0 (RFC 6886, section 3.4).
func (c *natpmpClient) Delete(ctx context.Context, _ mapping) error {
	_, err := c.exchange(ctx, encodeNATPMPMap(c.port, 0, 0), natpmpOpMapUDP)
	return err
}

// exchange sends req and takes the answer of opcode op (for a mapping,
// of the node's internal port); it returns a refusal as a *ResultError.
func (c *natpmpClient) exchange(ctx context.Context, req []byte, op uint8) (natpmpResponse, error) {
	var r natpmpResponse
	_, err := c.ex.exchange(ctx, req, func(b []byte) verdict {
		d, err := decodeNATPMPResponse(b)
		switch {
		case err != nil:
			return malformed
		case d.Opcode != op:
			return unexpected
		case op == natpmpOpMapUDP && d.Result == 0 && d.InternalPort != c.port:
			return unexpected
		}
		r = d
		return accept
	})
	if err == nil && r.Result != 0 {
		err = &ResultError{Protocol: NATPMP, Code: int(r.Result)}
	}
	return r, err
}
