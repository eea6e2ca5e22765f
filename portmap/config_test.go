package portmap

import (
	"encoding/json"
	"errors"
	"net/netip"
	"testing"
	"time"
)

func TestConfigValidate(t *testing.T) {
	ok := Config{Port: 4242}
	tests := []struct {
		name   string
		change func(*Config)
		ok     bool
	}{
		{"defaults", func(*Config) {}, true},
		{"off needs nothing", func(c *Config) { *c = Config{Protocol: Off} }, true},
		{"no port", func(c *Config) { c.Port = 0 }, false},
		{"unknown protocol", func(c *Config) { c.Protocol = 9 }, false},
		{"IPv6 gateway", func(c *Config) { c.Gateway = netip.MustParseAddr("fe80::1") }, false},
		{"unspecified gateway", func(c *Config) { c.Gateway = netip.IPv4Unspecified() }, false},
		{"IPv4-mapped gateway", func(c *Config) { c.Gateway = netip.MustParseAddr("::ffff:192.168.1.1") }, true},
		{"IPv6 local address", func(c *Config) { c.LocalAddr = netip.MustParseAddr("2001:db8::1") }, false},
		{"lease of 2 h", func(c *Config) { c.Lease = MaxLease }, true},
		{"lease over 2 h", func(c *Config) { c.Lease = MaxLease + time.Second }, false},
		{"lease under a minute", func(c *Config) { c.Lease = 30 * time.Second }, false},
		{"negative lease", func(c *Config) { c.Lease = -time.Hour }, false},
		{"description URL", func(c *Config) { c.UPnPDescription = "http://192.168.1.1:5000/rootDesc.xml" }, true},
		{"description not http", func(c *Config) { c.UPnPDescription = "file:///etc/passwd" }, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := ok
			tt.change(&c)
			m, err := New(c)
			if tt.ok != (err == nil) {
				t.Fatalf("New: %v, want ok %v", err, tt.ok)
			}
			if err != nil {
				if !errors.Is(err, ErrConfig) {
					t.Errorf("error %v is not ErrConfig", err)
				}
				return
			}
			if c.Protocol != Off && (m.cfg.Lease == 0 || m.cfg.Lease > MaxLease || m.cfg.Check == 0 || m.cfg.serverPort != 5351) {
				t.Errorf("defaults not filled: %+v", m.cfg)
			}
			if c.Gateway.IsValid() && !m.cfg.Gateway.Is4() {
				t.Errorf("gateway %v kept mapped", m.cfg.Gateway)
			}
		})
	}
}

func TestParseProtocol(t *testing.T) {
	for _, tt := range []struct {
		in   string
		want Protocol
		ok   bool
	}{
		{"auto", Auto, true}, {"pcp", PCP, true}, {"natpmp", NATPMP, true},
		{"upnp", UPnP, true}, {"off", Off, true}, {"", Auto, false}, {"PCP", Auto, false}, {"nat-pmp", Auto, false},
	} {
		got, err := ParseProtocol(tt.in)
		if (err == nil) != tt.ok || got != tt.want {
			t.Errorf("ParseProtocol(%q) = %v, %v", tt.in, got, err)
		}
		if tt.ok && got.String() != tt.in {
			t.Errorf("%v.String() = %q, want %q", got, got.String(), tt.in)
		}
	}
	var p Protocol
	if err := p.UnmarshalText([]byte("upnp")); err != nil || p != UPnP {
		t.Errorf("UnmarshalText: %v, %v", p, err)
	}
}

func TestStatusJSON(t *testing.T) {
	b, err := json.Marshal(Status{Mode: Auto, Protocol: PCP, Probes: [3]Probe{{Protocol: PCP, Result: Refused, Code: 2}}})
	if err != nil {
		t.Fatal(err)
	}
	var back map[string]any
	if err := json.Unmarshal(b, &back); err != nil {
		t.Fatal(err)
	}
	if back["Mode"] != "auto" || back["Protocol"] != "pcp" || back["Probes"].([]any)[0].(map[string]any)["Result"] != "refused" {
		t.Errorf("JSON %s", b)
	}
}

func TestResultError(t *testing.T) {
	err := error(&ResultError{Protocol: PCP, Code: pcpNotAuthorized})
	if !errors.Is(err, ErrRefused) || !errors.Is(err, &ResultError{Protocol: PCP, Code: 2}) || errors.Is(err, &ResultError{Protocol: NATPMP, Code: 2}) {
		t.Errorf("errors.Is on %v", err)
	}
	if got := err.Error(); got != "portmap: pcp: refused with 2 (NOT_AUTHORIZED)" {
		t.Errorf("Error() = %q", got)
	}
	for _, tt := range []struct {
		err  error
		want string
	}{
		{nil, outcomeOK}, {err, outcomeRefused}, {ErrNoAnswer, outcomeTimeout},
		{ErrMalformed, outcomeMalformed}, {errors.New("socket"), outcomeError},
	} {
		if got := outcome(tt.err); got != tt.want {
			t.Errorf("outcome(%v) = %q, want %q", tt.err, got, tt.want)
		}
	}
}

func TestResultErrorName(t *testing.T) {
	tests := []struct {
		name string
		err  *ResultError
		want string
	}{
		{"PCP NOT_AUTHORIZED", &ResultError{Protocol: PCP, Code: 2}, "NOT_AUTHORIZED"},
		{"NAT-PMP refused", &ResultError{Protocol: NATPMP, Code: 2}, "Not Authorized/Refused"},
		{"UPnP conflict", &ResultError{Protocol: UPnP, Code: 718}, "ConflictInMappingEntry"},
		{"PCP code beyond the RFC's", &ResultError{Protocol: PCP, Code: 99}, ""},
		{"UPnP code without a name", &ResultError{Protocol: UPnP, Code: 899}, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.err.Name(); got != tt.want {
				t.Errorf("Name() = %q, want %q", got, tt.want)
			}
		})
	}
}
