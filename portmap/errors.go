package portmap

import (
	"errors"
	"fmt"
)

// Errors of the package. Errors from the protocols wrap ErrNoAnswer,
// ErrMalformed or a *ResultError (which is ErrRefused); match them with
// errors.Is and errors.As.
var (
	// ErrConfig is wrapped by every error New returns for a bad Config.
	ErrConfig = errors.New("portmap: invalid config")
	// ErrClosed is returned by Start after Close.
	ErrClosed = errors.New("portmap: mapper closed")
	// ErrStarted is returned by a second Start.
	ErrStarted = errors.New("portmap: mapper already started")
	// ErrNoGateway: no default IPv4 gateway was found.
	ErrNoGateway = errors.New("portmap: no default IPv4 gateway")
	// ErrNoAnswer: the gateway did not answer (validly) in time.
	ErrNoAnswer = errors.New("portmap: no answer")
	// ErrMalformed: the gateway answered, but nothing it sent could be
	// read as an answer to the request.
	ErrMalformed = errors.New("portmap: malformed answer")
	// ErrRefused: the gateway answered with an error code; the error is a
	// *ResultError that says which.
	ErrRefused = errors.New("portmap: refused")
	// ErrNoDevice: no UPnP Internet Gateway Device with a WAN connection
	// service was found at the gateway.
	ErrNoDevice = errors.New("portmap: no UPnP IGD at the gateway")
)

// ResultError is a gateway's refusal: the result code of a PCP or
// NAT-PMP answer, or the UPnP error code of a SOAP fault.
type ResultError struct {
	Protocol Protocol
	Code     int
}

// Error names the code where the protocol's specification does.
func (e *ResultError) Error() string {
	if name := resultName(e.Protocol, e.Code); name != "" {
		return fmt.Sprintf("portmap: %s: refused with %d (%s)", e.Protocol, e.Code, name)
	}
	return fmt.Sprintf("portmap: %s: refused with %d", e.Protocol, e.Code)
}

// Unwrap makes every ResultError ErrRefused.
func (e *ResultError) Unwrap() error { return ErrRefused }

// Is matches a *ResultError target of the same protocol and code, so
// that errors.Is(err, &ResultError{Protocol: PCP, Code: 2}) asks for a
// PCP NOT_AUTHORIZED.
func (e *ResultError) Is(target error) bool {
	t, ok := target.(*ResultError)
	return ok && t.Protocol == e.Protocol && t.Code == e.Code
}

// PCP result codes (RFC 6887, section 7.4) that this package acts on.
const (
	pcpSuccess        = 0
	pcpUnsuppVersion  = 1
	pcpNotAuthorized  = 2
	pcpNetworkFailure = 7
	pcpNoResources    = 8
)

var pcpResultNames = [...]string{
	"SUCCESS", "UNSUPP_VERSION", "NOT_AUTHORIZED", "MALFORMED_REQUEST",
	"UNSUPP_OPCODE", "UNSUPP_OPTION", "MALFORMED_OPTION", "NETWORK_FAILURE",
	"NO_RESOURCES", "UNSUPP_PROTOCOL", "USER_EX_QUOTA",
	"CANNOT_PROVIDE_EXTERNAL", "ADDRESS_MISMATCH", "EXCESSIVE_REMOTE_PEERS",
}

var natpmpResultNames = [...]string{
	"Success", "Unsupported Version", "Not Authorized/Refused",
	"Network Failure", "Out of resources", "Unsupported opcode",
}

// UPnP error codes of WANIPConnection (IGD v1 and v2) this package
// acts on or names.
const (
	upnpNoSuchEntry         = 714
	upnpConflict            = 718
	upnpOnlyPermanentLeases = 725
)

// upnpResultName is the name of a UPnP error code of WANIPConnection.
func upnpResultName(code int) string {
	switch code {
	case 401:
		return "Invalid Action"
	case 402:
		return "Invalid Args"
	case 501:
		return "Action Failed"
	case 606:
		return "Action not authorized"
	case 713:
		return "SpecifiedArrayIndexInvalid"
	case upnpNoSuchEntry:
		return "NoSuchEntryInArray"
	case upnpConflict:
		return "ConflictInMappingEntry"
	case 724:
		return "SamePortValuesRequired"
	case upnpOnlyPermanentLeases:
		return "OnlyPermanentLeasesSupported"
	case 726:
		return "RemoteHostOnlySupportsWildcard"
	case 727:
		return "ExternalPortOnlySupportsWildcard"
	case 728:
		return "NoPortMapsAvailable"
	case 729:
		return "ConflictWithOtherMechanisms"
	case 732:
		return "WildCardNotPermittedInIntPort"
	}
	return ""
}

// resultName is the specification's name of a result code, or "".
func resultName(p Protocol, code int) string {
	switch {
	case p == PCP && code >= 0 && code < len(pcpResultNames):
		return pcpResultNames[code]
	case p == NATPMP && code >= 0 && code < len(natpmpResultNames):
		return natpmpResultNames[code]
	case p == UPnP:
		return upnpResultName(code)
	}
	return ""
}

// Name is the name the protocol's specification gives the code
// (NOT_AUTHORIZED, ConflictInMappingEntry, ...), or "" where it gives
// none.
func (e *ResultError) Name() string { return resultName(e.Protocol, e.Code) }
