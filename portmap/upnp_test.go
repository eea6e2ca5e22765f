package portmap

import (
	"context"
	"encoding/xml"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/antnode/antnode/internal/testkit"
)

// soapCall is a SOAP action the fake IGD received.
type soapCall struct {
	Action string
	Args   map[string]string
}

// fakeIGD is a UPnP IGD of the test: a device description with one WAN
// connection service, and its control endpoint, which checks each SOAP
// request and answers from fault (an action's UPnP error code) or as a
// router that grants would.
type fakeIGD struct {
	t       *testing.T
	service string // the service's type URN
	control string // its control URL as the description gives it
	fault   map[string]int

	mu    sync.Mutex
	calls []soapCall
}

const igdDescription = `<?xml version="1.0"?>
<root xmlns="urn:schemas-upnp-org:device-1-0">
<specVersion><major>1</major><minor>0</minor></specVersion>
<device>
<deviceType>urn:schemas-upnp-org:device:InternetGatewayDevice:2</deviceType>
<friendlyName>test IGD</friendlyName><UDN>uuid:igd</UDN>
<deviceList><device>
<deviceType>urn:schemas-upnp-org:device:WANDevice:2</deviceType><UDN>uuid:wan</UDN>
<deviceList><device>
<deviceType>urn:schemas-upnp-org:device:WANConnectionDevice:2</deviceType><UDN>uuid:wanconn</UDN>
<serviceList><service>
<serviceType>%s</serviceType>
<serviceId>urn:upnp-org:serviceId:WANConn1</serviceId>
<SCPDURL>/scpd.xml</SCPDURL><controlURL>%s</controlURL><eventSubURL>/evt</eventSubURL>
</service></serviceList>
</device></deviceList>
</device></deviceList>
</device>
</root>`

func (f *fakeIGD) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	switch r.URL.Path {
	case "/desc.xml":
		w.Header().Set("Content-Type", "text/xml")
		fmt.Fprintf(w, igdDescription, f.service, f.control)
	case "/ctl":
		f.serveControl(w, r)
	default:
		http.NotFound(w, r)
	}
}

func (f *fakeIGD) serveControl(w http.ResponseWriter, r *http.Request) {
	action, ok := strings.CutPrefix(strings.Trim(r.Header.Get("SOAPACTION"), `"`), f.service+"#")
	if r.Method != http.MethodPost || !ok {
		f.t.Errorf("%s with SOAPACTION %q", r.Method, r.Header.Get("SOAPACTION"))
		http.Error(w, "bad action", http.StatusBadRequest)
		return
	}
	args, err := soapArgs(r.Body, action)
	if err != nil {
		f.t.Errorf("%s: %v", action, err)
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	f.mu.Lock()
	f.calls = append(f.calls, soapCall{Action: action, Args: args})
	code := f.fault[action]
	f.mu.Unlock()
	if code != 0 {
		w.WriteHeader(http.StatusInternalServerError)
		fmt.Fprintf(w, `<?xml version="1.0"?><s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/envelope/" s:encodingStyle="http://schemas.xmlsoap.org/soap/encoding/"><s:Body><s:Fault><faultcode>s:Client</faultcode><faultstring>UPnPError</faultstring><detail><UPnPError xmlns="urn:schemas-upnp-org:control-1-0"><errorCode>%d</errorCode><errorDescription>scripted</errorDescription></UPnPError></detail></s:Fault></s:Body></s:Envelope>`, code)
		return
	}
	out := ""
	switch action {
	case "AddAnyPortMapping":
		out = "<NewReservedPort>40000</NewReservedPort>"
	case "GetExternalIPAddress":
		out = "<NewExternalIPAddress>198.51.100.9</NewExternalIPAddress>"
	case "GetSpecificPortMappingEntry":
		out = "<NewInternalPort>4242</NewInternalPort><NewInternalClient>127.0.0.1</NewInternalClient><NewEnabled>1</NewEnabled><NewPortMappingDescription>antnode</NewPortMappingDescription><NewLeaseDuration>7000</NewLeaseDuration>"
	}
	fmt.Fprintf(w, `<?xml version="1.0"?><s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/envelope/" s:encodingStyle="http://schemas.xmlsoap.org/soap/encoding/"><s:Body><u:%sResponse xmlns:u="%s">%s</u:%sResponse></s:Body></s:Envelope>`,
		action, f.service, out, action)
}

// soapArgs reads the arguments of action from a SOAP envelope, checking
// that the action element is in the body, in the service's namespace.
func soapArgs(body io.Reader, action string) (map[string]string, error) {
	var env struct {
		XMLName xml.Name `xml:"http://schemas.xmlsoap.org/soap/envelope/ Envelope"`
		Body    struct {
			Action struct {
				XMLName xml.Name
				Args    []struct {
					XMLName xml.Name
					Value   string `xml:",chardata"`
				} `xml:",any"`
			} `xml:",any"`
		} `xml:"http://schemas.xmlsoap.org/soap/envelope/ Body"`
	}
	if err := xml.NewDecoder(body).Decode(&env); err != nil {
		return nil, err
	}
	if env.Body.Action.XMLName.Local != action {
		return nil, fmt.Errorf("body holds %q, not %q", env.Body.Action.XMLName.Local, action)
	}
	args := map[string]string{}
	for _, a := range env.Body.Action.Args {
		args[a.XMLName.Local] = a.Value
	}
	return args, nil
}

func (f *fakeIGD) recorded() []soapCall {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]soapCall(nil), f.calls...)
}

// serveIGD serves f on 127.0.0.1 and returns its description's URL.
func serveIGD(t *testing.T, f *fakeIGD) string {
	t.Helper()
	f.t = t
	if f.control == "" {
		f.control = "/ctl"
	}
	srv := httptest.NewServer(f)
	t.Cleanup(srv.Close)
	return srv.URL + "/desc.xml"
}

func upnpConfig(desc string) Config {
	cfg := socketConfig(UPnP, 0, nil)
	cfg.UPnPDescription = desc
	return cfg
}

// wantMappingArgs checks the arguments of an AddPortMapping or
// AddAnyPortMapping of the node's port.
func wantMappingArgs(t *testing.T, c soapCall, external string) {
	t.Helper()
	want := map[string]string{
		"NewRemoteHost":             "",
		"NewExternalPort":           external,
		"NewProtocol":               "UDP",
		"NewInternalPort":           "4242",
		"NewInternalClient":         "127.0.0.1",
		"NewEnabled":                "1",
		"NewPortMappingDescription": "antnode",
	}
	for k, v := range want {
		if c.Args[k] != v {
			t.Errorf("%s %s = %q, want %q", c.Action, k, c.Args[k], v)
		}
	}
	lease, err := strconv.ParseUint(c.Args["NewLeaseDuration"], 10, 32)
	if err != nil || lease == 0 || time.Duration(lease)*time.Second > MaxLease {
		t.Errorf("%s NewLeaseDuration = %q, want 1 to %d", c.Action, c.Args["NewLeaseDuration"], int(MaxLease.Seconds()))
	}
}

func TestUPnP(t *testing.T) {
	tests := []struct {
		name     string
		service  string
		add      string // the mapping action
		external netip.AddrPort
	}{
		{"IGD v2 WANIPConnection:2", "urn:schemas-upnp-org:service:WANIPConnection:2", "AddAnyPortMapping",
			netip.MustParseAddrPort("198.51.100.9:40000")},
		{"IGD v1 WANIPConnection:1", "urn:schemas-upnp-org:service:WANIPConnection:1", "AddPortMapping",
			netip.MustParseAddrPort("198.51.100.9:4242")},
		{"IGD v1 WANPPPConnection:1", "urn:schemas-upnp-org:service:WANPPPConnection:1", "AddPortMapping",
			netip.MustParseAddrPort("198.51.100.9:4242")},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			igd := &fakeIGD{service: tt.service}
			m := startMapper(t, upnpConfig(serveIGD(t, igd)))
			st := waitActive(t, m)
			if st.External != tt.external || st.Protocol != UPnP || st.Lease != MaxLease {
				t.Errorf("status %+v", st)
			}
			if err := m.Close(); err != nil {
				t.Fatal(err)
			}
			calls := igd.recorded()
			if len(calls) != 3 {
				t.Fatalf("calls %+v; want %s, GetExternalIPAddress, DeletePortMapping", calls, tt.add)
			}
			if calls[0].Action != tt.add || calls[1].Action != "GetExternalIPAddress" || calls[2].Action != "DeletePortMapping" {
				t.Fatalf("calls %+v", calls)
			}
			wantMappingArgs(t, calls[0], "4242")
			del := calls[2].Args
			if del["NewRemoteHost"] != "" || del["NewExternalPort"] != strconv.Itoa(int(tt.external.Port())) || del["NewProtocol"] != "UDP" {
				t.Errorf("DeletePortMapping %v", del)
			}
		})
	}
}

func TestUPnPRefusal(t *testing.T) {
	igd := &fakeIGD{
		service: "urn:schemas-upnp-org:service:WANIPConnection:1",
		fault:   map[string]int{"AddPortMapping": upnpOnlyPermanentLeases},
	}
	m := startMapper(t, upnpConfig(serveIGD(t, igd)))
	waitProbe(t, m, 2)
	if p := m.Status().Probes[2]; p.Result != Refused || p.Code != upnpOnlyPermanentLeases {
		t.Errorf("probe %+v, want refused 725", p)
	}
	for _, c := range igd.recorded() {
		if c.Action == "AddPortMapping" && c.Args["NewLeaseDuration"] == "0" {
			t.Error("asked for a permanent mapping")
		}
	}
}

func waitProbe(t *testing.T, m *Mapper, i int) {
	t.Helper()
	testkit.WaitFor(t, 10*time.Second, "the probe", func() bool { return m.Status().Probes[i].Result != NotTried })
}

// TestUPnPOnlyTheGateway: a description or a control URL that is not on
// the gateway is not used.
func TestUPnPOnlyTheGateway(t *testing.T) {
	t.Run("description elsewhere", func(t *testing.T) {
		igd := &fakeIGD{service: "urn:schemas-upnp-org:service:WANIPConnection:2"}
		desc := strings.Replace(serveIGD(t, igd), "127.0.0.1", "127.0.0.2", 1)
		_, err := upnpDialer{t: target{gateway: loopback, local: loopback}, port: 4242,
			description: desc, timeout: time.Second, met: testMetrics(t)}.dial(t.Context())
		if err == nil {
			t.Fatal("used a description that is not on the gateway")
		}
		if len(igd.recorded()) != 0 {
			t.Error("talked to the device")
		}
	})
	t.Run("control URL elsewhere", func(t *testing.T) {
		igd := &fakeIGD{service: "urn:schemas-upnp-org:service:WANIPConnection:2", control: "http://127.0.0.2:9/ctl"}
		_, err := upnpDialer{t: target{gateway: loopback, local: loopback}, port: 4242,
			description: serveIGD(t, igd), timeout: time.Second, met: testMetrics(t)}.dial(t.Context())
		if !errors.Is(err, ErrNoDevice) {
			t.Fatalf("err = %v, want ErrNoDevice", err)
		}
	})
}

func TestUPnPCheck(t *testing.T) {
	igd := &fakeIGD{service: "urn:schemas-upnp-org:service:WANIPConnection:2"}
	d := upnpDialer{t: target{gateway: loopback, local: loopback}, port: 4242,
		description: serveIGD(t, igd), timeout: time.Second, met: testMetrics(t)}
	c, err := d.dial(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	cur := mapping{external: netip.MustParseAddrPort("198.51.100.9:40000")}
	cr, err := c.Check(ctx, cur)
	if err != nil || cr.gone || cr.external != cur.external.Addr() {
		t.Errorf("check of a held mapping: %+v, %v", cr, err)
	}
	igd.mu.Lock()
	igd.fault = map[string]int{"GetSpecificPortMappingEntry": upnpNoSuchEntry}
	igd.mu.Unlock()
	if cr, err := c.Check(ctx, cur); err != nil || !cr.gone {
		t.Errorf("check of a mapping the router lost: %+v, %v", cr, err)
	}
	calls := igd.recorded()
	if calls[0].Action != "GetSpecificPortMappingEntry" || calls[0].Args["NewExternalPort"] != "40000" || calls[0].Args["NewProtocol"] != "UDP" {
		t.Errorf("calls %+v", calls)
	}
}

func testMetrics(t *testing.T) *metrics {
	t.Helper()
	met, err := newMetrics(nil)
	if err != nil {
		t.Fatal(err)
	}
	return met
}
