package monitor

import "slices"

// Cause is a root cause. The set is closed; Causes documents it.
type Cause string

// Causes.
const (
	CauseBootstrapUnreachable Cause = "bootstrap_unreachable"
	CauseUDPBlocked           Cause = "udp_blocked"
	CauseBothSymmetric        Cause = "both_symmetric"
	// CauseNoCommonFamily: one side IPv6-only, the other IPv4-only.
	CauseNoCommonFamily    Cause = "no_common_family"
	CausePeerNotRegistered Cause = "peer_not_registered"
	CauseKeyMismatch       Cause = "key_mismatch"
	CausePunchFiltered     Cause = "punch_filtered"
	CauseMappingExpired    Cause = "mapping_expired"
	CauseRelayUnavailable  Cause = "relay_unavailable"
	CauseRelayQuota        Cause = "relay_quota"
	CauseRateLimited       Cause = "rate_limited"
	CausePathBlackholed    Cause = "path_blackholed"
	CauseNetworkChanged    Cause = "network_changed"
	CauseOverloaded        Cause = "overloaded"
	// CausePortMapRefused: the router answered a port-mapping request
	// with a refusal (antnode diagnose's probe).
	CausePortMapRefused Cause = "portmap_refused"
	// Refused service streams (package service).
	CauseUnknownService    Cause = "unknown_service"
	CauseNotAllowed        Cause = "not_allowed"
	CauseTargetUnreachable Cause = "target_unreachable"
	CauseStreamLimit       Cause = "stream_limit"
	// Attempts that failed in a phase whose failure names no deeper cause.
	CauseAttemptTimeout    Cause = "attempt_timeout"
	CauseHandshakeFailed   Cause = "handshake_failed"
	CauseNoCandidates      Cause = "no_candidates"
	CauseProtocolError     Cause = "protocol_error"
	CauseConnectionLost    Cause = "connection_lost"
	CausePeerDidNotAnswer  Cause = "peer_did_not_answer"
	CauseRefused           Cause = "refused"
	CauseSelf              Cause = "self"
	CauseInternal          Cause = "internal_error"
	CauseTransferMismatch  Cause = "transfer_mismatch"
	CauseBadCredentials    Cause = "bad_credentials"
	CauseCanceled          Cause = "canceled"
	CauseUnexplainedFailed Cause = "unexplained_failure"
)

// CauseInfo documents a cause.
type CauseInfo struct {
	Cause       Cause  `json:"cause"`
	Title       string `json:"title"`
	Explanation string `json:"explanation"`
	NextStep    string `json:"next_step"`
	// Unknown is what this cause's evidence does not establish.
	Unknown string `json:"unknown,omitempty"`
}

// Causes returns the documented set of causes.
func Causes() []CauseInfo {
	return slices.Concat(networkCauses(), peerCauses(), serviceCauses(), attemptCauses())
}

func networkCauses() []CauseInfo {
	return []CauseInfo{
		{CauseBootstrapUnreachable, "Bootstrap unreachable",
			"The node cannot keep a registration with a bootstrap node: no answer to the QUIC handshake or to the heartbeat.",
			"Check that the bootstrap runs and listens on its UDP port (and TCP, same port, for the fallback); check firewalls between this node and it; `antnode diagnose` shows the RTT to each bootstrap.",
			"Whether the bootstrap is down or the path to it is cut: only a test from another network tells."},
		{CauseUDPBlocked, "UDP blocked",
			"This network lets no UDP out (or nothing back): a bootstrap that answers over TCP did not answer over UDP, or the node registered over TCP only.",
			"Allow outgoing UDP (any port) and its answers if direct connections are wanted; meanwhile connections work through the relay's TCP port.",
			"Which device drops the UDP (this host's firewall, the local network, the provider)."},
		{CauseMappingExpired, "NAT mapping expired",
			"The NAT forgot the node's UDP mapping while it was idle and mapped it anew: its UDP timeout is shorter than the keepalive interval was.",
			"The node now sends keepalives faster (see the event's learned lifetime); raising the NAT's UDP timeout saves traffic.",
			"The NAT's exact UDP timeout: the node learns a bound, not the value."},
		{CauseRelayUnavailable, "Relay unavailable",
			"A connection needed the relay (no direct path) but no relay could be allocated: none configured, unreachable, or refusing.",
			"Run the bootstraps with their built-in relay (default; not --no-relay) or give --turn-server; check that the relay port (listen port + 2, UDP and TCP) is reachable.",
			"Whether the relay is down, refusing or unreachable, unless its answer is in the evidence."},
		{CauseRelayQuota, "Relay quota exceeded",
			"The relay refused an allocation because this peer holds as many as its quota allows.",
			"Close idle relayed connections, or raise --relay-max-allocations on the bootstrap.", ""},
		{CauseRateLimited, "Rate limited",
			"A bootstrap (or the monitoring surface) refused requests because they came too fast.",
			"Slow down repeated connects; the limits protect the bootstrap. If legitimate load needs more, run more bootstraps.", ""},
		{CausePathBlackholed, "Direct path blackholed",
			"A working direct path stopped carrying anything back (a firewall change, a NAT dropping the mapping's traffic); the connection moved to the relay.",
			"Look for a firewall or NAT change on the path at the time of the event; the node tries the direct path again with backoff.",
			"Which hop stopped carrying the packets."},
		{CauseNetworkChanged, "Local network changed",
			"The host's addresses changed (new network, new DHCP lease); the node re-registered and moved its connections.",
			"Nothing to do if the connections carried on; frequent changes point at an unstable link.", ""},
		{CauseOverloaded, "Overloaded",
			"The node or a bootstrap shed work because too many attempts ran at once.",
			"Reduce concurrent attempts or spread peers over more bootstraps.", ""},
		{CausePortMapRefused, "Router refuses port mapping",
			"The router answered the node's port-mapping request (PCP, NAT-PMP or UPnP IGD) with a refusal and its result code, and no protocol mapped the port: the node has no mapped candidate, so peers whose NAT and this one's admit no direct path use the relay.",
			"Allow port mapping for this host on the router (miniupnpd: enable_pcp_pmp, enable_upnp and an allow rule for the host and its UDP port), or forward the node's UDP port by hand; `antnode diagnose` shows each protocol's result code.",
			"Why the router refuses (a policy, an access list, a full mapping table) beyond what the result code names; and the protocols that did not answer say nothing either way."},
	}
}

func peerCauses() []CauseInfo {
	return []CauseInfo{
		{CauseBothSymmetric, "Both sides map per destination",
			"Both NATs give every destination a new port (address-and-port-dependent mapping): no direct path can exist between them, so the connection uses the relay.",
			"Nothing is broken. For direct connections, put one side behind an endpoint-independent NAT (enable UPnP/NAT-PMP, or a port forward for the node's UDP port).",
			"The classes are each side's own measurement; a class measured under loss may be wrong."},
		{CauseNoCommonFamily, "No address family in common",
			"One side has only IPv6 addresses and the other only IPv4 ones: no direct path can exist between them, so the connection needs a relay that carries one family to the other.",
			"Nothing is broken. Give the bootstrap an address in each family (--listen 0.0.0.0:4433,[::]:4433): its relay then serves both; for direct connections, give one side both families.",
			"The families are those of the candidates each side announced."},
		{CausePeerNotRegistered, "Peer not registered",
			"The bootstrap does not know the requested peer ID: the peer is offline, registered with other bootstraps, or the ID is wrong.",
			"Check the peer ID (`antnode id --key` on the peer) and that the peer runs with at least one of the same --bootstrap-nodes.",
			"Which of the three it is: the bootstrap only knows the ID is not registered with it."},
		{CauseKeyMismatch, "Key mismatch",
			"The node at the address presented another key than the peer ID expected: a wrong ID in the configuration, a re-keyed node, or someone else at that address.",
			"Compare the expected ID with `antnode id --key` on the remote node and fix --bootstrap-nodes (PEERID@HOST:PORT) or the peer ID you connect to.", ""},
		{CausePunchFiltered, "Hole punch timed out on filtering",
			"Connectivity checks were sent but none came back within the punch budget: a NAT or firewall on the path drops unsolicited packets.",
			"Check for a firewall that drops UDP from unknown sources on either side; the relay carries the connection meanwhile. A port forward for the node's UDP port on either side makes direct connections possible.",
			"Which side's NAT or firewall dropped the checks."},
		{CausePeerDidNotAnswer, "Peer did not answer the introduction",
			"The bootstrap forwarded the request, but the peer did not answer it in time (the bootstrap said: expired).",
			"Check that the peer runs and is registered (its /api/v1/status); a peer that is overloaded or on a lossy link answers late.",
			"Whether the peer was down, overloaded, or its answer was lost."},
		{CauseRefused, "Refused",
			"The remote side declined the request: the peer refused the introduction, or the bootstrap refused it.",
			"Look at the peer's and the bootstrap's audit log at that time for why it refused.",
			"Why it refused: the refusal carries no detail."},
		{CauseSelf, "Connect to self",
			"The node was asked to connect to its own peer ID.",
			"Use the other peer's ID (`antnode id --key` on that peer).", ""},
	}
}

func serviceCauses() []CauseInfo {
	return []CauseInfo{
		{CauseUnknownService, "Stream to an unknown service",
			"A stream named a service that the node at the other end does not serve.",
			"Check the service name against the serving node's --expose NAME=HOST:PORT (or its Listen); names are case-sensitive.", ""},
		{CauseNotAllowed, "Peer not allowed to use a service",
			"A peer opened a stream to a service whose allow list does not name it; the stream was refused (and audited).",
			"If that peer should use the service, add its ID to --allow (or the service's allow=... in --expose); if not, nothing is wrong: the audit log names it.", ""},
		{CauseTargetUnreachable, "Service target unreachable",
			"An exposed service's local TCP target refused the connection or did not answer, so the stream was refused.",
			"Start the local service, or fix the HOST:PORT in --expose; `curl` or `nc` to it from the serving host shows the same error.", ""},
		{CauseStreamLimit, "Per-peer stream limit reached",
			"A peer had as many streams open to this node's services as --max-streams allows; further streams were refused while the others kept flowing.",
			"If the load is legitimate, raise --max-streams (each open stream costs memory); otherwise find what opens so many streams on that peer.", ""},
	}
}

func attemptCauses() []CauseInfo {
	return []CauseInfo{
		{CauseAttemptTimeout, "Attempt timed out",
			"The attempt did not finish within its deadline; the evidence names the last phase it reached.",
			"Run `antnode diagnose` on both hosts; a timeout in punch or validate points at filtering, in coordinate at the bootstrap or the peer.",
			"Which side or hop lost the packets: a timeout says only that nothing came back in time."},
		{CauseHandshakeFailed, "QUIC handshake failed",
			"A path was found, but the QUIC/TLS handshake over it did not complete in time.",
			"Check that both sides run compatible antnode versions (`antnode version`) and that the path carries full-size (1200-byte) UDP packets: `antnode diagnose` checks the MTU.",
			"Whether the handshake's packets were lost or refused."},
		{CauseNoCandidates, "No candidate addresses",
			"Neither side had an address the other could try: the peer announced no candidates usable from here.",
			"Check that the peer registered with its addresses (its /api/v1/status) and shares an address family (IPv4/IPv6) with this node.", ""},
		{CauseProtocolError, "Protocol error",
			"A peer or bootstrap sent a message this node could not accept: incompatible versions, or a broken or hostile implementation.",
			"Run the same antnode version on the nodes involved (`antnode version`); the log at debug level names the message.", ""},
		{CauseConnectionLost, "Connection lost",
			"A connection the attempt relied on (to the peer, or the peer's to the bootstrap) closed before it finished.",
			"Check whether the peer or the bootstrap restarted at that time; repeated losses point at an unstable link.",
			"Whether the remote side closed or the network dropped it."},
		{CauseInternal, "Internal error",
			"The attempt failed on an error that antnode does not classify: a local failure (a socket that could not open) or a bug.",
			"Look at the error text of the attempt (`antnode connect --json`, the log); if it is not local, report it with the log.",
			"What failed: the error is not one antnode knows."},
		{CauseTransferMismatch, "Transfer did not verify",
			"The bytes the other side verified differ from those sent: data was corrupted or truncated end to end.",
			"Retry; if it repeats, capture the attempt's qlog and report it: QUIC protects every packet, so this points at a bug.", ""},
		{CauseBadCredentials, "Bad relay credentials",
			"The relay refused credentials that did not verify or had expired.",
			"Check the TURN secret (--turn-server) against the relay's, and the clocks of both hosts (expiry is in wall-clock time).", ""},
		{CauseCanceled, "Attempt canceled",
			"The attempt was stopped before it finished: by its caller (an interrupt, a closed API request) or the peer canceled its side.",
			"Nothing is broken if the cancel was meant; otherwise give the attempt more time (--timeout).", ""},
		{CauseUnexplainedFailed, "Attempt failed for no recorded reason",
			"An attempt failed and recorded no reason this engine knows.",
			"Read the attempt's events (/api/v1/attempts/ID) and the log; report it: every failure should carry a reason.",
			"The cause: nothing in the evidence names one."},
	}
}

func causeInfo(c Cause) CauseInfo {
	for _, ci := range Causes() {
		if ci.Cause == c {
			return ci
		}
	}
	return CauseInfo{Cause: c, Title: string(c)}
}

// NextStep returns the next step of the cause a failure's reason points
// to, and false when the reason names none of the documented causes.
func NextStep(r Reason) (string, bool) {
	c, _, ok := causeOfReason(r)
	if !ok {
		return "", false
	}
	return causeInfo(c).NextStep, true
}

// causeOfReason maps the reason an attempt failed or detoured with to a
// cause and how directly the reason shows it (a Strength).
func causeOfReason(r Reason) (Cause, float64, bool) {
	if c, ok := streamCause(r); ok {
		return c, StrengthStated, true
	}
	switch r {
	case ReasonUnknownPeer:
		return CausePeerNotRegistered, StrengthStated, true
	case ReasonKeyMismatch:
		return CauseKeyMismatch, StrengthStated, true
	case ReasonBootstrapUnreachable, ReasonNoBootstrap:
		return CauseBootstrapUnreachable, StrengthInferred, true
	case ReasonUDPBlocked:
		return CauseUDPBlocked, StrengthMeasured, true
	case ReasonBothSymmetric:
		return CauseBothSymmetric, StrengthMeasured, true
	case ReasonNoCommonFamily:
		return CauseNoCommonFamily, StrengthMeasured, true
	case ReasonPunchTimeout:
		return CausePunchFiltered, StrengthInferred, true
	case ReasonRelayUnavailable:
		return CauseRelayUnavailable, StrengthInferred, true
	case ReasonRelayQuota:
		return CauseRelayQuota, StrengthStated, true
	case ReasonRateLimited:
		return CauseRateLimited, StrengthStated, true
	case ReasonPathBlackholed:
		return CausePathBlackholed, StrengthInferred, true
	case ReasonMappingExpired:
		return CauseMappingExpired, StrengthInferred, true
	case ReasonNetworkChanged:
		return CauseNetworkChanged, StrengthStated, true
	case ReasonOverloaded, ReasonRegistryFull:
		return CauseOverloaded, StrengthStated, true
	}
	return attemptCauseOfReason(r)
}

// attemptCauseOfReason: the reasons that end an attempt in one of its own
// phases.
func attemptCauseOfReason(r Reason) (Cause, float64, bool) {
	switch r {
	case ReasonTimeout:
		return CauseAttemptTimeout, StrengthInferred, true
	case ReasonHandshakeFailed:
		return CauseHandshakeFailed, StrengthInferred, true
	case ReasonNoCandidates:
		return CauseNoCandidates, StrengthMeasured, true
	case ReasonProtocolError:
		return CauseProtocolError, StrengthStated, true
	case ReasonConnectionLost:
		return CauseConnectionLost, StrengthMeasured, true
	case ReasonExpired:
		return CausePeerDidNotAnswer, StrengthStated, true
	case ReasonRefused:
		return CauseRefused, StrengthStated, true
	case ReasonSelf:
		return CauseSelf, StrengthStated, true
	case ReasonInternal:
		return CauseInternal, StrengthInferred, true
	case ReasonTransferMismatch:
		return CauseTransferMismatch, StrengthMeasured, true
	case ReasonBadCredentials:
		return CauseBadCredentials, StrengthStated, true
	case ReasonCanceled:
		return CauseCanceled, StrengthStated, true
	}
	return "", 0, false
}

// streamCause is the cause of a refused service stream, by its reason.
func streamCause(r Reason) (Cause, bool) {
	switch r {
	case ReasonUnknownService:
		return CauseUnknownService, true
	case ReasonNotAllowed:
		return CauseNotAllowed, true
	case ReasonTargetUnreachable:
		return CauseTargetUnreachable, true
	case ReasonStreamLimit:
		return CauseStreamLimit, true
	}
	return "", false
}
