package portmap

import (
	"fmt"
	"strconv"
)

// Protocol names a port-mapping protocol, or the choice among them that
// Config.Protocol makes. Its zero value is Auto.
type Protocol uint8

// Protocols, and the choices of Config.Protocol.
const (
	Auto   Protocol = iota // PCP, then NAT-PMP, then UPnP IGD
	PCP                    // Port Control Protocol, RFC 6887
	NATPMP                 // NAT Port Mapping Protocol, RFC 6886
	UPnP                   // UPnP Internet Gateway Device (v2, then v1)
	Off                    // never send anything
)

// mappingProtocols are the protocols that map, in the order Auto tries them.
var mappingProtocols = [...]Protocol{PCP, NATPMP, UPnP}

var protocolNames = [...]string{
	Auto:   "auto",
	PCP:    "pcp",
	NATPMP: "natpmp",
	UPnP:   "upnp",
	Off:    "off",
}

// String is the protocol's name as the --portmap flag spells it.
func (p Protocol) String() string {
	if int(p) < len(protocolNames) {
		return protocolNames[p]
	}
	return "protocol(" + strconv.Itoa(int(p)) + ")"
}

// ParseProtocol reads a name as String spells it: auto, pcp, natpmp,
// upnp or off.
func ParseProtocol(s string) (Protocol, error) {
	for p, name := range protocolNames {
		if s == name {
			return Protocol(p), nil
		}
	}
	return Auto, fmt.Errorf("%w: protocol %q is not auto, pcp, natpmp, upnp or off", ErrConfig, s)
}

// MarshalText spells the protocol as String does (for JSON and flags).
func (p Protocol) MarshalText() ([]byte, error) {
	if int(p) >= len(protocolNames) {
		return nil, fmt.Errorf("%w: unknown protocol %d", ErrConfig, uint8(p))
	}
	return []byte(p.String()), nil
}

// UnmarshalText reads a name as ParseProtocol does, so that a Protocol
// can be a flag.TextVar.
func (p *Protocol) UnmarshalText(b []byte) error {
	v, err := ParseProtocol(string(b))
	if err != nil {
		return err
	}
	*p = v
	return nil
}

// valid reports whether p is one of the named values.
func (p Protocol) valid() bool { return int(p) < len(protocolNames) }

// ProbeResult is what a protocol's last attempt observed of the gateway.
type ProbeResult uint8

// Probe results.
const (
	NotTried  ProbeResult = iota // the protocol was not tried
	Answered                     // the gateway granted the mapping
	Refused                      // the gateway answered with an error code (Probe.Code)
	NoAnswer                     // nothing (valid) came back in time
	Malformed                    // only malformed answers came back
	Failed                       // a local failure: no socket, no route, bad description
)

var probeNames = [...]string{
	NotTried:  "not-tried",
	Answered:  "ok",
	Refused:   "refused",
	NoAnswer:  "no-answer",
	Malformed: "malformed",
	Failed:    "error",
}

// String names the result for logs, JSON and antnode diagnose.
func (r ProbeResult) String() string {
	if int(r) < len(probeNames) {
		return probeNames[r]
	}
	return "result(" + strconv.Itoa(int(r)) + ")"
}

// MarshalText spells the result as String does.
func (r ProbeResult) MarshalText() ([]byte, error) { return []byte(r.String()), nil }
