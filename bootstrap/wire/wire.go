// Package wire is antnode's control protocol between peers and bootstrap
// nodes: small, versioned, length-delimited binary messages carried on one
// bidirectional QUIC stream per peer-to-bootstrap connection.
//
// A frame is a QUIC varint message type, a QUIC varint payload length and the
// payload. Payload fields are QUIC varints, fixed-size byte strings and
// length-prefixed lists; decoders ignore bytes after the fields they know, so
// later versions can append fields. Decoders enforce MaxPayload, MaxCandidates
// and field ranges and never panic on any input (see the Fuzz targets).
//
// The model is the frame set of draft-seemann-quic-nat-traversal (ADD_ADDRESS,
// REMOVE_ADDRESS, PUNCH_ME_NOW) and draft-ietf-quic-address-discovery
// (OBSERVED_ADDRESS), carried at the application layer because quic-go does
// not expose extension frames. The package starts no goroutines.
package wire

import (
	"bufio"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"strings"

	"github.com/quic-go/quic-go/quicvarint"

	"github.com/antnode/antnode/identity"
	"github.com/antnode/antnode/nattype"
)

// Version is the protocol version this package speaks.
const Version = 1

// ALPN is the TLS application protocol of control connections.
const ALPN = "antnode-control/1"

// Limits enforced by the decoders.
const (
	MaxPayload    = 4096 // bytes of one frame's payload
	MaxCandidates = 32   // candidates in one message
	MaxErrorText  = 256  // bytes of Error.Text
	MaxUfrag      = 32   // bytes of Creds.Ufrag
	MaxPwd        = 64   // bytes of Creds.Pwd
	MaxUsername   = 128  // bytes of RelayGrant.Username
	MaxPassword   = 128  // bytes of RelayGrant.Password
)

// Type is a message type.
type Type uint64

// Message types.
const (
	TypeRegister        Type = 0x01
	TypeRegistered      Type = 0x02
	TypeObservedAddress Type = 0x03
	TypeAddAddress      Type = 0x04
	TypeRemoveAddress   Type = 0x05
	TypeConnectRequest  Type = 0x06
	TypeConnectOffer    Type = 0x07
	TypeConnectAnswer   Type = 0x08
	TypeConnectResult   Type = 0x09
	TypePunchNow        Type = 0x0a
	TypePunchRequest    Type = 0x0b
	TypeError           Type = 0x0c
	TypeProbeRequest    Type = 0x0d
	TypeRelayRequest    Type = 0x0e
	TypeRelayGrant      Type = 0x0f
	TypeRelayAddress    Type = 0x10
	TypeConnectAck      Type = 0x11
	TypePing            Type = 0x12
	TypePong            Type = 0x13
	TypeConnectCancel   Type = 0x14
	TypeConnectEarly    Type = 0x15
	TypeNATType         Type = 0x16
)

func (t Type) String() string {
	switch t {
	case TypeRegister:
		return "register"
	case TypeRegistered:
		return "registered"
	case TypeObservedAddress:
		return "observed_address"
	case TypeAddAddress:
		return "add_address"
	case TypeRemoveAddress:
		return "remove_address"
	case TypeConnectRequest:
		return "connect_request"
	case TypeConnectOffer:
		return "connect_offer"
	case TypeConnectAnswer:
		return "connect_answer"
	case TypeConnectResult:
		return "connect_result"
	case TypePunchNow:
		return "punch_now"
	case TypePunchRequest:
		return "punch_request"
	case TypeError:
		return "error"
	case TypeProbeRequest:
		return "probe_request"
	case TypeRelayRequest:
		return "relay_request"
	case TypeRelayGrant:
		return "relay_grant"
	case TypeRelayAddress:
		return "relay_address"
	case TypeConnectAck:
		return "connect_ack"
	case TypePing:
		return "ping"
	case TypePong:
		return "pong"
	case TypeConnectCancel:
		return "connect_cancel"
	case TypeConnectEarly:
		return "connect_early"
	case TypeNATType:
		return "nat_type"
	}
	return fmt.Sprintf("type(%#x)", uint64(t))
}

// Code is the outcome of a connect request, or the code of an Error message.
type Code uint64

// Codes.
const (
	CodeOK          Code = 0
	CodeUnknownPeer Code = 1  // the target is not registered with this bootstrap
	CodeRateLimited Code = 2  // the requester exceeded its request rate
	CodeExpired     Code = 3  // the target did not answer in time
	CodeRefused     Code = 4  // the target declined
	CodeOverloaded  Code = 5  // the bootstrap sheds load
	CodeSelf        Code = 6  // a peer asked to connect to itself
	CodeGone        Code = 7  // the target's connection went away meanwhile
	CodeBadRequest  Code = 8  // a malformed or out-of-order message
	CodeVersion     Code = 9  // unsupported protocol version
	CodeTooMany     Code = 10 // a per-peer limit (pending requests, candidates) was reached
	// CodeRegistryFull refuses a registration: the registry holds its
	// maximum of peers. (A source address at its own cap is refused with
	// CodeRateLimited.)
	CodeRegistryFull Code = 11
)

func (c Code) String() string {
	switch c {
	case CodeOK:
		return "ok"
	case CodeUnknownPeer:
		return "unknown_peer"
	case CodeRateLimited:
		return "rate_limited"
	case CodeExpired:
		return "expired"
	case CodeRefused:
		return "refused"
	case CodeOverloaded:
		return "overloaded"
	case CodeSelf:
		return "self"
	case CodeGone:
		return "gone"
	case CodeBadRequest:
		return "bad_request"
	case CodeVersion:
		return "version"
	case CodeTooMany:
		return "too_many"
	case CodeRegistryFull:
		return "registry_full"
	}
	return fmt.Sprintf("code(%d)", uint64(c))
}

// CandidateKind says how a candidate address was learnt (RFC 8445 terms).
type CandidateKind uint8

// Candidate kinds.
const (
	KindHost CandidateKind = iota + 1
	KindServerReflexive
	KindPeerReflexive
	KindRelay
	// KindMapped is an address the peer's router mapped to its socket on
	// request (PCP, NAT-PMP or UPnP IGD): reachable from anywhere while
	// the mapping lives. Nodes before it reject a message that carries
	// one (the codec checks kinds), so bootstraps and peers upgrade
	// before they announce mappings.
	KindMapped
	kindEnd
)

func (k CandidateKind) String() string {
	switch k {
	case KindHost:
		return "host"
	case KindServerReflexive:
		return "srflx"
	case KindPeerReflexive:
		return "prflx"
	case KindRelay:
		return "relay"
	case KindMapped:
		return "mapped"
	}
	return fmt.Sprintf("kind(%d)", uint8(k))
}

// Candidate is an address at which a peer may be reachable.
type Candidate struct {
	Kind     CandidateKind
	Priority uint32
	Addr     netip.AddrPort
	// Origin is where the bootstrap that forwarded the candidate says it
	// came from. It travels in a list after the message's other fields
	// (ConnectOffer, ConnectResult), not in the candidate's encoding: a
	// peer's own announcements carry none.
	Origin Origin
}

// Origin says where a forwarded candidate came from: what the bootstrap
// saw for itself, or what the peer merely announced. Only observed
// addresses are safe to aim a search at: a peer can announce anybody's.
type Origin uint8

// Origins.
const (
	// OriginUnknown: forwarded by a bootstrap that does not say (an older
	// version); treated as announced.
	OriginUnknown Origin = iota
	// OriginAnnounced: announced by the peer, seen by nobody.
	OriginAnnounced
	// OriginObserved: the address this bootstrap observed the peer at.
	OriginObserved
	// OriginObservedIP: announced by the peer (observed by another
	// bootstrap, it says) at the IP this bootstrap observed it at: the
	// peer's own NAT, whatever the port.
	OriginObservedIP
	originEnd
)

func (o Origin) String() string {
	switch o {
	case OriginAnnounced:
		return "announced"
	case OriginObserved:
		return "observed"
	case OriginObservedIP:
		return "observed-ip"
	}
	return "unknown"
}

// Observed says whether a bootstrap saw the candidate's IP for itself.
func (o Origin) Observed() bool { return o == OriginObserved || o == OriginObservedIP }

// Creds are the short-term credentials of a peer's connectivity checks for
// one attempt (ICE's ufrag and password, RFC 8445 section 5.3).
type Creds struct {
	Ufrag string
	Pwd   string
}

// NewCreds returns fresh random check credentials: 32 bits of ufrag and
// 128 bits of password, more than RFC 8445's minimums (24 and 128).
func NewCreds() Creds {
	var b [20]byte
	_, _ = rand.Read(b[:]) // never fails (crypto/rand)
	return Creds{Ufrag: hex.EncodeToString(b[:4]), Pwd: hex.EncodeToString(b[4:])}
}

// Message is one control message.
type Message interface {
	Type() Type
	appendPayload(b []byte) []byte
	decode(r *reader) error
}

// Register is the first message a peer sends on its control stream.
type Register struct {
	Version    uint64
	NAT        nattype.Type
	Candidates []Candidate
	// Features are the optional parts of the protocol the peer speaks
	// (Feature bits). Optional on the wire: an older peer sends none, an
	// older bootstrap ignores them.
	Features uint64
}

// Feature bits of Register.Features.
const (
	// FeatureEarly: the peer takes part in 1.5-round-trip introductions.
	// As a requester it takes a ConnectEarly in place of the ConnectAck
	// and starts its checks on it; as a target it takes the check
	// credentials of an offer's Early part as its own and starts its
	// checks on the offer. A bootstrap makes an introduction early only
	// when both peers registered with the bit.
	FeatureEarly uint64 = 1 << 0
)

// Registered acknowledges a registration.
type Registered struct {
	Version  uint64
	Observed netip.AddrPort // the peer's address as the bootstrap sees it
	// AltSTUN are further addresses on which the bootstrap answers STUN, for
	// mapping classification. May be empty.
	AltSTUN []netip.AddrPort
	// TTLSeconds is how long the registration lives without traffic.
	TTLSeconds uint64
	// Probes says which unsolicited probes the bootstrap can send for
	// filtering classification (ProbeOtherPort, ProbeOtherAddr bits).
	Probes uint64
	// Peers is the size of the bootstrap's registry when it registered the
	// peer (that peer included): a peer that loses the connection spreads
	// its return over a time that grows with it, so that a fleet does not
	// come back at once. Optional on the wire: 0 is not sent, and an
	// older bootstrap sends none (0: not told).
	Peers uint64
	// Other are the bootstrap's STUN sockets in its other address family
	// (the main one first, then its alternate ones), for a dual-stack
	// peer: its mapping in that family, and (a Binding request carrying
	// Token in its USERNAME, see ObserveUsername) the bootstrap's
	// observation of it there. Optional on the wire: empty for a
	// bootstrap in one family, and an older one sends none.
	Other []netip.AddrPort
	// Token is this registration's secret for ObserveUsername (zero: none).
	Token [16]byte
	// OtherProbes says which unsolicited probes the bootstrap can send to
	// the peer's address in the other family (ProbeRequest.Other), as
	// Probes does for its registration's. Optional on the wire, after
	// Token.
	OtherProbes uint64
}

// ObserveUsername is the STUN USERNAME of a Binding request that asks
// the bootstrap to record the request's source as the registration's
// address in the other family (Registered.Other, Registered.Token).
func ObserveUsername(token [16]byte) string { return ObservePrefix + hex.EncodeToString(token[:]) }

// ObservePrefix starts an ObserveUsername.
const ObservePrefix = "antnode-observe:"

// ParseObserveUsername returns the token of an ObserveUsername.
func ParseObserveUsername(u string) ([16]byte, bool) {
	var t [16]byte
	rest, ok := strings.CutPrefix(u, ObservePrefix)
	if !ok || len(rest) != 2*len(t) {
		return t, false
	}
	if _, err := hex.Decode(t[:], []byte(rest)); err != nil {
		return t, false
	}
	return t, t != [16]byte{}
}

// Probe capability bits of Registered.Probes and kinds of ProbeRequest.
const (
	ProbeOtherPort uint64 = 1 << 0 // from the bootstrap's address, a port the peer never contacted
	ProbeOtherAddr uint64 = 1 << 1 // from an address the peer never contacted
)

// ProbeRequest asks the bootstrap to send an unsolicited STUN Binding
// indication with transaction ID TxID to the sender's observed address,
// from another port or another address (Kind: ProbeOtherPort or
// ProbeOtherAddr). Whether it arrives classifies the sender's filtering.
type ProbeRequest struct {
	TxID [12]byte
	Kind uint64
	// Other: to the sender's address in the bootstrap's other family (the
	// one its ObserveUsername request showed), from that family's
	// sockets. Optional on the wire: false is not sent.
	Other bool
}

// ObservedAddress tells a peer its address as the bootstrap now sees it.
type ObservedAddress struct {
	Seq  uint64
	Addr netip.AddrPort
}

// AddAddress announces a new candidate of the sender.
type AddAddress struct {
	Candidate Candidate
}

// RemoveAddress withdraws a candidate of the sender.
type RemoveAddress struct {
	Addr netip.AddrPort
}

// ConnectRequest asks the bootstrap to introduce the sender to Target.
type ConnectRequest struct {
	ID         uint64 // chosen by the requester, unique per control stream
	Target     identity.PeerID
	NAT        nattype.Type
	Candidates []Candidate
	Creds      Creds
	Purpose    Purpose
}

// Purpose says what an introduction is for; the bootstrap forwards it.
type Purpose uint64

// Purposes.
const (
	// PurposeConnect: a new connection.
	PurposeConnect Purpose = 0
	// PurposeRebind: the requester's address changed under a connection
	// it has with the target; the target only sends checks to the new
	// candidates, so that its NAT lets the moved connection in.
	PurposeRebind Purpose = 1
	// PurposeUpgrade: the requester wants to move a relayed connection
	// to a direct path; both sides send checks, nobody dials.
	PurposeUpgrade Purpose = 2
	// PurposeFallback: the requester moves a connection whose direct
	// path died to the relay; the target checks the relayed address.
	PurposeFallback Purpose = 3
)

func (p Purpose) String() string {
	switch p {
	case PurposeConnect:
		return "connect"
	case PurposeRebind:
		return "rebind"
	case PurposeUpgrade:
		return "upgrade"
	case PurposeFallback:
		return "fallback"
	}
	return fmt.Sprintf("purpose(%d)", uint64(p))
}

// ConnectOffer tells a peer that From wants to connect.
type ConnectOffer struct {
	ID         uint64 // chosen by the bootstrap
	From       identity.PeerID
	NAT        nattype.Type
	Candidates []Candidate
	Creds      Creds
	Purpose    Purpose
	// Early, if set, makes the introduction early (see ConnectEarly): the
	// target answers with Early.Creds as its check credentials (the
	// requester holds them already) and starts its checks Early.Delay
	// after the offer arrives, without waiting for a PunchNow. Optional on
	// the wire: sent only to peers that registered with FeatureEarly.
	Early *Early
}

// Early is the start of an early introduction, as the bootstrap tells it
// to each side: the target's check credentials, issued by the bootstrap
// for this session, and how long to wait after the message arrives so
// that both sides start at the same moment.
type Early struct {
	Creds       Creds
	DelayMicros uint64
	// PeerRTTMicros is the bootstrap's RTT to the requester (optional on
	// the wire: zero from a bootstrap that does not send it).
	PeerRTTMicros uint64
}

// ConnectAnswer is a peer's reply to a ConnectOffer.
type ConnectAnswer struct {
	ID         uint64 // the offer's ID
	Code       Code
	NAT        nattype.Type
	Candidates []Candidate
	Creds      Creds
}

// ConnectResult is the bootstrap's reply to a ConnectRequest.
type ConnectResult struct {
	ID         uint64 // the request's ID
	Code       Code
	NAT        nattype.Type
	Candidates []Candidate
	Creds      Creds
	// PeerRTTMicros is the bootstrap's RTT estimate to the target.
	PeerRTTMicros uint64
}

// PunchNow tells a peer to start punching round Round after DelayMicros.
// A new round supersedes every earlier round of the same ID.
type PunchNow struct {
	ID          uint64 // the request ID (requester) or offer ID (target)
	Offer       bool   // ID is an offer ID: the receiver is the target
	Round       uint64
	DelayMicros uint64
	// PeerRTTMicros is the bootstrap's RTT estimate to the other peer.
	PeerRTTMicros uint64
}

// PunchRequest asks the bootstrap to start a new round for ID.
type PunchRequest struct {
	ID    uint64
	Offer bool // ID is an offer ID: the sender is the target
	Round uint64
}

// ConnectCancel ends an introduction: one side gave up on it (its
// attempt was cancelled or ended otherwise). Sent to the bootstrap with
// the sender's ID for it, and passed on to the other side with theirs, so
// that it stops punching and waiting at once instead of at its timeout.
// Peers that predate it skip it (unknown types are skipped).
type ConnectCancel struct {
	ID    uint64
	Offer bool // ID is an offer ID: the sender (or, passed on, the receiver) is the target
}

// RelayRequest asks the bootstrap for credentials on its relay.
type RelayRequest struct {
	ID uint64
}

// RelayGrant answers a RelayRequest: ephemeral TURN credentials and the
// relay's addresses (Code != CodeOK: no relay for this peer).
type RelayGrant struct {
	ID          uint64
	Code        Code
	Username    string
	Password    string
	UDP         netip.AddrPort // TURN over UDP (invalid: none)
	TCP         netip.AddrPort // TURN over TCP (invalid: none)
	ExpiresUnix uint64
}

// RelayAddress announces, within an introduction, the sender's relayed
// address; the bootstrap forwards it to the other peer (with that peer's
// ID for the session) and lets the relay permit it.
type RelayAddress struct {
	ID    uint64 // the request ID (requester) or offer ID (target)
	Offer bool   // ID is an offer ID
	Addr  netip.AddrPort
}

// ConnectEarly answers a ConnectRequest of a peer that registered with
// FeatureEarly, about a target that did too, at once and in place of the
// ConnectAck: the target's registered NAT type and candidates (with their
// origins), the check credentials the bootstrap issued the target for
// this session, the bootstrap's RTT to the target, and the delay after
// which the requester starts its checks. The bootstrap sends the target
// its offer at the same moment, so both sides start half a round trip to
// the bootstrap after the request instead of a round trip and a half: no
// answer round trip before the first check.
//
// The ConnectResult still follows once the target has answered: a
// refusal ends the introduction on both sides, an acceptance may bring
// candidates the registration did not have (the requester adds them to
// its checks). PunchNow rounds still follow, for the sides whose
// strategy (the birthday search) wants a synchronised start.
type ConnectEarly struct {
	ID            uint64 // the request's ID
	NAT           nattype.Type
	Candidates    []Candidate
	Creds         Creds
	PeerRTTMicros uint64
	DelayMicros   uint64
}

// NATType tells the bootstrap the sender's NAT type anew: a peer
// registers before it has classified its NAT (classification needs the
// bootstrap), and its type can change (a new network). The bootstrap
// hands it to requesters of early introductions (ConnectEarly). A
// bootstrap that predates it skips it (unknown types are skipped).
type NATType struct {
	NAT nattype.Type
}

// ConnectAck tells the requester that its request reached a live
// bootstrap and was forwarded: the answer may still take the target's
// time, but the bootstrap is not the problem.
//
// Target, when the requester announced a relayed address (it keeps a
// warm relay allocation), is where the bootstrap observes the target: the
// requester permits it on its allocation while the target answers, so
// that its first packet through the relay needs no permission round trip
// after the answer. It is optional on the wire (an older bootstrap sends
// none, an older peer ignores it).
type ConnectAck struct {
	ID     uint64
	Target []netip.AddrPort
}

// Ping is a peer's heartbeat on its control connection; the bootstrap
// answers with a Pong of the same Seq at once. Pad makes the packet that
// carries it big enough (over 42 bytes) that a restarted bootstrap answers
// it with a QUIC stateless reset, so a crash is noticed within one
// heartbeat instead of an idle timeout.
type Ping struct {
	Seq uint64
	Pad []byte // up to MaxPad bytes, ignored
}

// Pong answers a Ping.
type Pong struct {
	Seq uint64
	// Peers is the size of the bootstrap's registry now, as in
	// Registered: it keeps a peer's idea of it current. Optional on the
	// wire: 0 is not sent, and an older bootstrap sends none.
	Peers uint64
}

// MaxPad bounds Ping.Pad.
const MaxPad = 64

// Error reports a protocol error; the sender closes the stream after it.
type Error struct {
	Code Code
	Text string
}

// Type implements Message.
func (*Register) Type() Type { return TypeRegister }

// Type implements Message.
func (*Registered) Type() Type { return TypeRegistered }

// Type implements Message.
func (*ObservedAddress) Type() Type { return TypeObservedAddress }

// Type implements Message.
func (*AddAddress) Type() Type { return TypeAddAddress }

// Type implements Message.
func (*RemoveAddress) Type() Type { return TypeRemoveAddress }

// Type implements Message.
func (*ConnectRequest) Type() Type { return TypeConnectRequest }

// Type implements Message.
func (*ConnectOffer) Type() Type { return TypeConnectOffer }

// Type implements Message.
func (*ConnectAnswer) Type() Type { return TypeConnectAnswer }

// Type implements Message.
func (*ConnectResult) Type() Type { return TypeConnectResult }

// Type implements Message.
func (*PunchNow) Type() Type { return TypePunchNow }

// Type implements Message.
func (*PunchRequest) Type() Type { return TypePunchRequest }

// Type implements Message.
func (*Error) Type() Type { return TypeError }

// Type implements Message.
func (*ProbeRequest) Type() Type { return TypeProbeRequest }

// Type implements Message.
func (*RelayRequest) Type() Type { return TypeRelayRequest }

// Type implements Message.
func (*RelayGrant) Type() Type { return TypeRelayGrant }

// Type implements Message.
func (*RelayAddress) Type() Type { return TypeRelayAddress }

// Type implements Message.
func (*ConnectAck) Type() Type { return TypeConnectAck }

// Type implements Message.
func (*ConnectEarly) Type() Type { return TypeConnectEarly }

// Type implements Message.
func (*NATType) Type() Type { return TypeNATType }

// Type implements Message.
func (*Ping) Type() Type { return TypePing }

// Type implements Message.
func (*Pong) Type() Type { return TypePong }

// Type implements Message.
func (*ConnectCancel) Type() Type { return TypeConnectCancel }

func (e *Error) Error() string { return fmt.Sprintf("wire: remote error %s: %s", e.Code, e.Text) }

// newMessage returns an empty message of type t, or nil for an unknown type.
func newMessage(t Type) Message {
	switch t {
	case TypeRegister:
		return new(Register)
	case TypeRegistered:
		return new(Registered)
	case TypeObservedAddress:
		return new(ObservedAddress)
	case TypeAddAddress:
		return new(AddAddress)
	case TypeRemoveAddress:
		return new(RemoveAddress)
	case TypeConnectRequest:
		return new(ConnectRequest)
	case TypeConnectOffer:
		return new(ConnectOffer)
	case TypeConnectAnswer:
		return new(ConnectAnswer)
	case TypeConnectResult:
		return new(ConnectResult)
	case TypePunchNow:
		return new(PunchNow)
	case TypePunchRequest:
		return new(PunchRequest)
	case TypeConnectCancel:
		return new(ConnectCancel)
	case TypeError:
		return new(Error)
	case TypeProbeRequest:
		return new(ProbeRequest)
	case TypeRelayRequest:
		return new(RelayRequest)
	case TypeRelayGrant:
		return new(RelayGrant)
	case TypeRelayAddress:
		return new(RelayAddress)
	case TypeConnectAck:
		return new(ConnectAck)
	case TypeConnectEarly:
		return new(ConnectEarly)
	case TypeNATType:
		return new(NATType)
	case TypePing:
		return new(Ping)
	case TypePong:
		return new(Pong)
	}
	return nil
}

// Errors returned by the decoders.
var (
	// ErrMalformed: the bytes are not a valid message.
	ErrMalformed = errors.New("wire: malformed message")
	// ErrTooLarge: a frame's payload exceeds MaxPayload.
	ErrTooLarge = errors.New("wire: frame too large")
)

// UnknownTypeError is returned for a frame of a type this version does not
// know. The frame has been consumed; a receiver may skip it.
type UnknownTypeError struct{ Type Type }

func (e *UnknownTypeError) Error() string { return fmt.Sprintf("wire: unknown message %s", e.Type) }

// Append appends m as one frame to b. It does not check the limits; Marshal
// and Write do.
func Append(b []byte, m Message) []byte {
	p := m.appendPayload(make([]byte, 0, 64))
	b = quicvarint.Append(b, uint64(m.Type()))
	b = quicvarint.Append(b, uint64(len(p)))
	return append(b, p...)
}

// Marshal returns m as one frame. It fails if the receiver's decoder would
// refuse the frame (a limit exceeded or a field out of range), so that a
// node never sends what its peer must reject.
func Marshal(m Message) ([]byte, error) {
	b := Append(make([]byte, 0, 64), m)
	if _, _, err := Parse(b); err != nil {
		return nil, fmt.Errorf("wire: marshal %s: %w", m.Type(), err)
	}
	return b, nil
}

// Parse decodes one frame from the start of b and returns the message and
// the number of bytes consumed.
func Parse(b []byte) (Message, int, error) {
	t, n1, err := quicvarint.Parse(b)
	if err != nil {
		return nil, 0, fmt.Errorf("%w: type: %w", ErrMalformed, err)
	}
	l, n2, err := quicvarint.Parse(b[n1:])
	if err != nil {
		return nil, 0, fmt.Errorf("%w: length: %w", ErrMalformed, err)
	}
	if l > MaxPayload {
		return nil, 0, fmt.Errorf("%w: %d bytes", ErrTooLarge, l)
	}
	end := n1 + n2 + int(l)
	if end > len(b) {
		return nil, 0, fmt.Errorf("%w: truncated frame", ErrMalformed)
	}
	m, err := decodePayload(Type(t), b[n1+n2:end])
	return m, end, err
}

func decodePayload(t Type, p []byte) (Message, error) {
	m := newMessage(t)
	if m == nil {
		return nil, &UnknownTypeError{Type: t}
	}
	r := reader{b: p}
	if err := m.decode(&r); err != nil {
		return nil, fmt.Errorf("%w: %s: %w", ErrMalformed, t, err)
	}
	return m, nil
}

// Reader reads frames from a stream.
type Reader struct {
	br      *bufio.Reader
	buf     []byte
	onFrame func()
}

// OnFrameStart sets f to be called by Read once a frame has begun (its
// type is read) and before the rest of it is: a caller can then put a
// deadline on the frame, so that a peer cannot hold a partial frame.
func (r *Reader) OnFrameStart(f func()) { r.onFrame = f }

// NewReader returns a Reader on r.
func NewReader(r io.Reader) *Reader {
	return &Reader{br: bufio.NewReaderSize(r, 1024)}
}

// Read reads the next frame. It returns io.EOF at a clean end of stream,
// *UnknownTypeError for a frame it skipped, and ErrMalformed or ErrTooLarge
// for input after which the stream cannot be trusted.
func (r *Reader) Read() (Message, error) {
	t, err := quicvarint.Read(r.br)
	if err != nil {
		return nil, err // io.EOF at a frame boundary is a clean end
	}
	if r.onFrame != nil {
		r.onFrame()
	}
	l, err := quicvarint.Read(r.br)
	if err != nil {
		return nil, fmt.Errorf("%w: length: %w", ErrMalformed, noEOF(err))
	}
	if l > MaxPayload {
		return nil, fmt.Errorf("%w: %d bytes", ErrTooLarge, l)
	}
	if cap(r.buf) < int(l) {
		r.buf = make([]byte, l)
	}
	p := r.buf[:l]
	if _, err := io.ReadFull(r.br, p); err != nil {
		return nil, fmt.Errorf("%w: payload: %w", ErrMalformed, noEOF(err))
	}
	return decodePayload(Type(t), p)
}

func noEOF(err error) error {
	if errors.Is(err, io.EOF) {
		return io.ErrUnexpectedEOF
	}
	return err
}

// Write writes m as one frame to w.
func Write(w io.Writer, m Message) error {
	b, err := Marshal(m)
	if err != nil {
		return err
	}
	_, err = w.Write(b)
	return err
}
