package portmap

import (
	"context"
	"encoding/xml"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"strconv"
	"time"

	"github.com/huin/goupnp"
	"github.com/huin/goupnp/dcps/internetgateway2"
	"github.com/huin/goupnp/httpu"
	"github.com/huin/goupnp/soap"
	"github.com/huin/goupnp/ssdp"
)

// UPnP's limits as this client keeps them.
const (
	ssdpWait        = 2 * time.Second // how long SSDP answers are awaited
	ssdpSends       = 2               // how many times the search is sent
	maxUPnPBody     = 1 << 20         // the largest description or SOAP answer read
	upnpProtocolUDP = "UDP"
)

// igdService is what this client asks of a WAN connection service; the
// three kinds (WANIPConnection:2 and :1, WANPPPConnection:1) have it.
type igdService interface {
	AddPortMappingCtx(ctx context.Context, remoteHost string, externalPort uint16, protocol string, internalPort uint16, internalClient string, enabled bool, description string, leaseSeconds uint32) error
	DeletePortMappingCtx(ctx context.Context, remoteHost string, externalPort uint16, protocol string) error
	GetExternalIPAddressCtx(ctx context.Context) (string, error)
	GetSpecificPortMappingEntryCtx(ctx context.Context, remoteHost string, externalPort uint16, protocol string) (internalPort uint16, internalClient string, enabled bool, description string, leaseSeconds uint32, err error)
}

// upnpClient maps the node's port through one WAN connection service of
// the gateway's IGD.
type upnpClient struct {
	svc     igdService
	v2      *internetgateway2.WANIPConnection2 // the same service when it is IGD v2
	kind    string                             // the service's type, for logs
	local   netip.Addr
	port    uint16
	timeout time.Duration
	met     *metrics
}

// Map adds the mapping for lease: by AddAnyPortMapping on IGD v2, which
// picks a free external port if the suggested one is taken, by
// AddPortMapping on v1. The lease is never 0 (permanent): a router that
// only offers permanent leases refuses (725). The external address is
// then asked for.
func (c *upnpClient) Map(ctx context.Context, lease time.Duration, prev netip.AddrPort) (mapping, error) {
	ext := c.port
	if prev.IsValid() {
		ext = prev.Port()
	}
	secs := leaseSeconds(lease)
	err := c.call(ctx, func(ctx context.Context) error {
		if c.v2 != nil {
			got, err := c.v2.AddAnyPortMappingCtx(ctx, "", ext, upnpProtocolUDP, c.port, c.local.String(), true, description, secs)
			ext = got
			return err
		}
		return c.svc.AddPortMappingCtx(ctx, "", ext, upnpProtocolUDP, c.port, c.local.String(), true, description, secs)
	})
	if err != nil {
		return mapping{}, err
	}
	if ext == 0 {
		return mapping{}, fmt.Errorf("%w: upnp: reserved port 0", ErrMalformed)
	}
	addr, err := c.externalAddr(ctx)
	if err != nil {
		return mapping{}, err
	}
	return mapping{external: netip.AddrPortFrom(addr, ext), lease: time.Duration(secs) * time.Second}, nil
}

// Check looks the mapping up (NoSuchEntryInArray, or another client's
// entry: gone) and asks for the external address.
func (c *upnpClient) Check(ctx context.Context, cur mapping) (checkResult, error) {
	var (
		port   uint16
		client string
	)
	err := c.call(ctx, func(ctx context.Context) (err error) {
		port, client, _, _, _, err = c.svc.GetSpecificPortMappingEntryCtx(ctx, "", cur.external.Port(), upnpProtocolUDP)
		return err
	})
	if errors.Is(err, &ResultError{Protocol: UPnP, Code: upnpNoSuchEntry}) {
		return checkResult{gone: true}, nil
	}
	if err != nil {
		return checkResult{}, err
	}
	if a, perr := netip.ParseAddr(client); perr != nil || a.Unmap() != c.local || port != c.port {
		return checkResult{gone: true}, nil
	}
	addr, err := c.externalAddr(ctx)
	if err != nil {
		return checkResult{}, err
	}
	return checkResult{external: addr}, nil
}

// Delete deletes the mapping of cur's external port.
func (c *upnpClient) Delete(ctx context.Context, cur mapping) error {
	return c.call(ctx, func(ctx context.Context) error {
		return c.svc.DeletePortMappingCtx(ctx, "", cur.external.Port(), upnpProtocolUDP)
	})
}

// externalAddr asks for the gateway's external IPv4 address.
func (c *upnpClient) externalAddr(ctx context.Context) (netip.Addr, error) {
	var s string
	err := c.call(ctx, func(ctx context.Context) (err error) {
		s, err = c.svc.GetExternalIPAddressCtx(ctx)
		return err
	})
	if err != nil {
		return netip.Addr{}, err
	}
	a, err := netip.ParseAddr(s)
	if err != nil || !a.Unmap().Is4() || a.IsUnspecified() {
		return netip.Addr{}, fmt.Errorf("%w: upnp: external address %q", ErrMalformed, s)
	}
	return a.Unmap(), nil
}

// call runs one SOAP action within the request timeout, counts it, and
// turns its failure into this package's errors: a SOAP fault into a
// *ResultError, a timeout into ErrNoAnswer.
func (c *upnpClient) call(ctx context.Context, action func(context.Context) error) error {
	actx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	err := soapError(actx, action(actx))
	if !errors.Is(err, context.Canceled) {
		c.met.request(UPnP, err)
	}
	return err
}

// soapError classifies the error of a SOAP action run under ctx.
func soapError(ctx context.Context, err error) error {
	if err == nil {
		return nil
	}
	if fault, ok := errors.AsType[*soap.SOAPFaultError](err); ok {
		if code := fault.Detail.UPnPError.Errorcode; code != 0 {
			return &ResultError{Protocol: UPnP, Code: code}
		}
		return fmt.Errorf("%w: upnp: SOAP fault without a UPnP error code: %w", ErrMalformed, err)
	}
	switch cerr := ctx.Err(); {
	case errors.Is(cerr, context.DeadlineExceeded):
		return fmt.Errorf("%w: upnp: %w", ErrNoAnswer, err)
	case errors.Is(cerr, context.Canceled):
		return fmt.Errorf("portmap: upnp: %w", cerr)
	}
	return fmt.Errorf("portmap: upnp: %w", err)
}

// upnpDialer finds the gateway's IGD and makes its client.
type upnpDialer struct {
	t           target
	port        uint16
	description string // the description's URL; empty: SSDP
	timeout     time.Duration
	met         *metrics
}

// dial finds the description (by SSDP unless given), reads it, and picks
// the first WAN connection service of WANIPConnection:2,
// WANIPConnection:1 and WANPPPConnection:1 whose control URL is on the
// gateway. The discovery counts as one request.
func (d upnpDialer) dial(ctx context.Context) (*upnpClient, error) {
	c, err := d.discover(ctx)
	if !errors.Is(err, context.Canceled) {
		d.met.request(UPnP, err)
	}
	return c, err
}

func (d upnpDialer) discover(ctx context.Context) (*upnpClient, error) {
	hc := d.httpClient()
	loc, err := d.locate(ctx)
	if err != nil {
		return nil, err
	}
	root, err := d.fetch(ctx, hc, loc)
	if err != nil {
		return nil, err
	}
	return d.pick(root, loc, hc)
}

// locate is the description's URL, given or found by SSDP; its host must
// be the gateway.
func (d upnpDialer) locate(ctx context.Context) (*url.URL, error) {
	if d.description != "" {
		u, err := url.Parse(d.description)
		if err != nil {
			return nil, fmt.Errorf("portmap: upnp: %w", err)
		}
		if !onGateway(u, d.t.gateway) {
			return nil, fmt.Errorf("portmap: upnp: description %s is not on the gateway %s", u.Redacted(), d.t.gateway)
		}
		return u, nil
	}
	hu, err := httpu.NewHTTPUClientAddr(d.t.local.String())
	if err != nil {
		return nil, fmt.Errorf("portmap: upnp: %w", err)
	}
	defer hu.Close()
	sctx, cancel := context.WithTimeout(ctx, ssdpWait)
	defer cancel()
	resps, err := ssdp.RawSearch(sctx, hu, ssdp.UPNPRootDevice, ssdpSends) //nolint:bodyclose // a slice: gatewayLocation closes each
	if err != nil {
		return nil, fmt.Errorf("portmap: upnp: ssdp: %w", err)
	}
	found := gatewayLocation(resps, d.t.gateway)
	if found == nil {
		return nil, fmt.Errorf("%w: upnp: no SSDP answer from the gateway %s", ErrNoAnswer, d.t.gateway)
	}
	return found, nil
}

// gatewayLocation closes the SSDP answers and returns the first location
// on the gateway among them (nil: none).
func gatewayLocation(resps []*http.Response, gw netip.Addr) *url.URL {
	var found *url.URL
	for _, r := range resps {
		_ = r.Body.Close()
		if u, err := r.Location(); err == nil && found == nil && onGateway(u, gw) {
			found = u
		}
	}
	return found
}

// fetch reads the root device description at loc.
func (d upnpDialer) fetch(ctx context.Context, hc *http.Client, loc *url.URL) (*goupnp.RootDevice, error) {
	ctx, cancel := context.WithTimeout(ctx, d.timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, loc.String(), nil)
	if err != nil {
		return nil, fmt.Errorf("portmap: upnp: %w", err)
	}
	resp, err := hc.Do(req)
	if err != nil {
		return nil, soapError(ctx, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("%w: upnp: description: HTTP %s", ErrMalformed, resp.Status)
	}
	root := new(goupnp.RootDevice)
	dec := xml.NewDecoder(io.LimitReader(resp.Body, maxUPnPBody))
	dec.DefaultSpace = goupnp.DeviceXMLNamespace
	if err := dec.Decode(root); err != nil {
		return nil, fmt.Errorf("%w: upnp: description: %w", ErrMalformed, err)
	}
	base := loc
	if root.URLBaseStr != "" {
		if base, err = url.Parse(root.URLBaseStr); err != nil {
			return nil, fmt.Errorf("%w: upnp: URLBase: %w", ErrMalformed, err)
		}
	}
	root.SetURLBase(base)
	return root, nil
}

// pick makes the client of the first service the gateway offers.
func (d upnpDialer) pick(root *goupnp.RootDevice, loc *url.URL, hc *http.Client) (*upnpClient, error) {
	c := &upnpClient{local: d.t.local, port: d.port, timeout: d.timeout, met: d.met}
	usable := func(sc *goupnp.ServiceClient) bool {
		if !onGateway(&sc.SOAPClient.EndpointURL, d.t.gateway) {
			return false
		}
		sc.SOAPClient.HTTPClient = *hc
		c.kind = sc.Service.ServiceType
		return true
	}
	v2, _ := internetgateway2.NewWANIPConnection2ClientsFromRootDevice(root, loc)
	for _, s := range v2 {
		if usable(&s.ServiceClient) {
			c.svc, c.v2 = s, s
			return c, nil
		}
	}
	v1, _ := internetgateway2.NewWANIPConnection1ClientsFromRootDevice(root, loc)
	for _, s := range v1 {
		if usable(&s.ServiceClient) {
			c.svc = s
			return c, nil
		}
	}
	ppp, _ := internetgateway2.NewWANPPPConnection1ClientsFromRootDevice(root, loc)
	for _, s := range ppp {
		if usable(&s.ServiceClient) {
			c.svc = s
			return c, nil
		}
	}
	return nil, fmt.Errorf("%w (%s)", ErrNoDevice, d.t.gateway)
}

// httpClient is the client of the description and the SOAP actions: no
// proxy, from the node's LAN address, no kept connections, bounded
// bodies.
func (d upnpDialer) httpClient() *http.Client {
	dialer := &net.Dialer{LocalAddr: net.TCPAddrFromAddrPort(netip.AddrPortFrom(d.t.local, 0))}
	return &http.Client{
		Transport: limitedBody{&http.Transport{
			Proxy:             nil,
			DialContext:       dialer.DialContext,
			DisableKeepAlives: true,
		}},
		Timeout: d.timeout,
		CheckRedirect: func(*http.Request, []*http.Request) error {
			return http.ErrUseLastResponse // the gateway answers itself
		},
	}
}

// limitedBody bounds the body of every response.
type limitedBody struct{ rt http.RoundTripper }

func (l limitedBody) RoundTrip(req *http.Request) (*http.Response, error) {
	resp, err := l.rt.RoundTrip(req)
	if err != nil {
		return nil, err
	}
	resp.Body = struct {
		io.Reader
		io.Closer
	}{io.LimitReader(resp.Body, maxUPnPBody), resp.Body}
	return resp, nil
}

// onGateway reports whether u's host is the gateway's address.
func onGateway(u *url.URL, gw netip.Addr) bool {
	a, err := netip.ParseAddr(u.Hostname())
	if err != nil || a.Unmap() != gw {
		return false
	}
	if p := u.Port(); p != "" {
		if _, err := strconv.ParseUint(p, 10, 16); err != nil {
			return false
		}
	}
	return u.Scheme == "http" || u.Scheme == "https"
}
