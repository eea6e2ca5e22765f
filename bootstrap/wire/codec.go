package wire

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"

	"github.com/quic-go/quic-go/quicvarint"

	"github.com/antnode/antnode/identity"
	"github.com/antnode/antnode/nattype"
)

var errShort = errors.New("short payload")

// reader decodes payload fields; the first error sticks.
type reader struct {
	b   []byte
	err error
}

func (r *reader) fail(err error) {
	if r.err == nil {
		r.err = err
	}
}

func (r *reader) varint() uint64 {
	if r.err != nil {
		return 0
	}
	v, n, err := quicvarint.Parse(r.b)
	if err != nil {
		r.fail(errShort)
		return 0
	}
	r.b = r.b[n:]
	return v
}

func (r *reader) bytes(n int) []byte {
	if r.err != nil {
		return nil
	}
	if len(r.b) < n {
		r.fail(errShort)
		return nil
	}
	v := r.b[:n]
	r.b = r.b[n:]
	return v
}

func (r *reader) byte1() byte {
	if b := r.bytes(1); b != nil {
		return b[0]
	}
	return 0
}

func (r *reader) addrPort() netip.AddrPort {
	fam := r.byte1()
	var a netip.Addr
	switch fam {
	case 4:
		if b := r.bytes(4); b != nil {
			a = netip.AddrFrom4([4]byte(b))
		}
	case 6:
		if b := r.bytes(16); b != nil {
			a = netip.AddrFrom16([16]byte(b)).Unmap()
		}
	case 0:
		return netip.AddrPort{} // absent
	default:
		r.fail(fmt.Errorf("address family %d", fam))
	}
	p := r.bytes(2)
	if p == nil {
		return netip.AddrPort{}
	}
	return netip.AddrPortFrom(a, binary.BigEndian.Uint16(p))
}

func appendAddrPort(b []byte, ap netip.AddrPort) []byte {
	a := ap.Addr().Unmap()
	switch {
	case a.Is4():
		b = append(b, 4)
		a4 := a.As4()
		b = append(b, a4[:]...)
	case a.Is6():
		b = append(b, 6)
		a16 := a.As16()
		b = append(b, a16[:]...)
	default:
		return append(b, 0)
	}
	return binary.BigEndian.AppendUint16(b, ap.Port())
}

func (r *reader) peerID() identity.PeerID {
	var id identity.PeerID
	if b := r.bytes(identity.PeerIDLen); b != nil {
		copy(id[:], b)
	}
	return id
}

func (r *reader) nat() nattype.Type {
	t := nattype.Type{Mapping: nattype.Mapping(r.byte1()), Filtering: nattype.Filtering(r.byte1())}
	if r.err == nil && (!t.Mapping.Valid() || !t.Filtering.Valid()) {
		r.fail(fmt.Errorf("NAT type %d/%d", t.Mapping, t.Filtering))
	}
	return t
}

func appendNAT(b []byte, t nattype.Type) []byte {
	return append(b, byte(t.Mapping), byte(t.Filtering))
}

func (r *reader) count(limit int) int {
	n := r.varint()
	if n > uint64(limit) {
		r.fail(fmt.Errorf("%d items, limit %d", n, limit))
		return 0
	}
	return int(n)
}

func (r *reader) candidate() Candidate {
	c := Candidate{Kind: CandidateKind(r.byte1())}
	if r.err == nil && (c.Kind == 0 || c.Kind >= kindEnd) {
		r.fail(fmt.Errorf("candidate kind %d", c.Kind))
	}
	p := r.varint()
	if p > 0xffffffff {
		r.fail(fmt.Errorf("candidate priority %d", p))
	}
	c.Priority = uint32(p)
	c.Addr = r.addrPort()
	if r.err == nil && !c.Addr.IsValid() {
		r.fail(errors.New("candidate without address"))
	}
	return c
}

func appendCandidate(b []byte, c Candidate) []byte {
	b = append(b, byte(c.Kind))
	b = quicvarint.Append(b, uint64(c.Priority))
	return appendAddrPort(b, c.Addr)
}

func (r *reader) candidates() []Candidate {
	n := r.count(MaxCandidates)
	if n == 0 {
		return nil
	}
	cs := make([]Candidate, 0, n)
	for range n {
		c := r.candidate()
		if r.err != nil {
			return nil
		}
		cs = append(cs, c)
	}
	return cs
}

// appendOrigins appends the origins of cs, one byte each after a count.
func appendOrigins(b []byte, cs []Candidate) []byte {
	b = quicvarint.Append(b, uint64(len(cs)))
	for _, c := range cs {
		b = append(b, byte(c.Origin))
	}
	return b
}

// origins reads the origins of cs, if the message has them (a message of
// an older bootstrap ends before). A count that does not match cs, or an
// unknown origin, leaves the origins unknown: never a reason to trust.
func (r *reader) origins(cs []Candidate) {
	if r.err != nil || len(r.b) == 0 {
		return
	}
	n := r.count(MaxCandidates)
	got := r.bytes(n)
	if r.err != nil || n != len(cs) {
		return
	}
	for i, o := range got {
		if Origin(o) < originEnd {
			cs[i].Origin = Origin(o)
		}
	}
}

func appendCandidates(b []byte, cs []Candidate) []byte {
	b = quicvarint.Append(b, uint64(len(cs)))
	for _, c := range cs {
		b = appendCandidate(b, c)
	}
	return b
}

// code decodes a Code. Unknown codes from a newer version are kept; callers
// treat them as a generic failure.
func (r *reader) code() Code { return Code(r.varint()) }

func (r *reader) text(limit int) string {
	n := r.count(limit)
	if b := r.bytes(n); b != nil {
		return string(b)
	}
	return ""
}

func appendText(b []byte, s string) []byte {
	b = quicvarint.Append(b, uint64(len(s)))
	return append(b, s...)
}

func appendAddrList(b []byte, as []netip.AddrPort) []byte {
	b = quicvarint.Append(b, uint64(len(as)))
	for _, a := range as {
		b = appendAddrPort(b, a)
	}
	return b
}

func (r *reader) addrList(limit int) []netip.AddrPort {
	n := r.count(limit)
	if n == 0 {
		return nil
	}
	out := make([]netip.AddrPort, 0, n)
	for range n {
		a := r.addrPort()
		if r.err != nil {
			return nil
		}
		out = append(out, a)
	}
	return out
}

func (r *reader) creds() Creds {
	return Creds{Ufrag: r.text(MaxUfrag), Pwd: r.text(MaxPwd)}
}

func appendCreds(b []byte, c Creds) []byte {
	return appendText(appendText(b, c.Ufrag), c.Pwd)
}

// --- messages ---

func (m *Register) appendPayload(b []byte) []byte {
	b = quicvarint.Append(b, m.Version)
	b = appendNAT(b, m.NAT)
	b = appendCandidates(b, m.Candidates)
	if m.Features == 0 {
		return b
	}
	return quicvarint.Append(b, m.Features)
}

func (m *Register) decode(r *reader) error {
	m.Version = r.varint()
	m.NAT = r.nat()
	m.Candidates = r.candidates()
	if r.err == nil && len(r.b) > 0 {
		m.Features = r.varint()
	}
	return r.err
}

func (m *Registered) appendPayload(b []byte) []byte {
	b = quicvarint.Append(b, m.Version)
	b = appendAddrPort(b, m.Observed)
	b = appendAddrList(b, m.AltSTUN)
	b = quicvarint.Append(b, m.TTLSeconds)
	b = quicvarint.Append(b, m.Probes)
	other := len(m.Other) > 0 || m.Token != [16]byte{} || m.OtherProbes != 0
	if m.Peers == 0 && !other {
		return b
	}
	b = quicvarint.Append(b, m.Peers)
	if !other {
		return b
	}
	b = appendAddrList(b, m.Other)
	b = append(b, m.Token[:]...)
	return quicvarint.Append(b, m.OtherProbes)
}

func (m *Registered) decode(r *reader) error {
	m.Version = r.varint()
	m.Observed = r.addrPort()
	m.AltSTUN = r.addrList(8)
	m.TTLSeconds = r.varint()
	m.Probes = r.varint()
	if r.err == nil && len(r.b) > 0 {
		m.Peers = r.varint()
	}
	if r.err == nil && len(r.b) > 0 {
		m.Other = r.addrList(8)
		if b := r.bytes(16); b != nil {
			copy(m.Token[:], b)
		}
	}
	if r.err == nil && len(r.b) > 0 {
		m.OtherProbes = r.varint()
	}
	return r.err
}

func (m *ProbeRequest) appendPayload(b []byte) []byte {
	b = append(b, m.TxID[:]...)
	b = quicvarint.Append(b, m.Kind)
	if m.Other {
		b = quicvarint.Append(b, 1)
	}
	return b
}

func (m *ProbeRequest) decode(r *reader) error {
	if b := r.bytes(12); b != nil {
		copy(m.TxID[:], b)
	}
	m.Kind = r.varint()
	if r.err == nil && m.Kind != ProbeOtherPort && m.Kind != ProbeOtherAddr {
		r.fail(fmt.Errorf("probe kind %d", m.Kind))
	}
	if r.err == nil && len(r.b) > 0 {
		m.Other = r.varint() == 1
	}
	return r.err
}

func (m *ObservedAddress) appendPayload(b []byte) []byte {
	b = quicvarint.Append(b, m.Seq)
	return appendAddrPort(b, m.Addr)
}

func (m *ObservedAddress) decode(r *reader) error {
	m.Seq = r.varint()
	m.Addr = r.addrPort()
	return r.err
}

func (m *AddAddress) appendPayload(b []byte) []byte { return appendCandidate(b, m.Candidate) }

func (m *AddAddress) decode(r *reader) error {
	m.Candidate = r.candidate()
	return r.err
}

func (m *RemoveAddress) appendPayload(b []byte) []byte { return appendAddrPort(b, m.Addr) }

func (m *RemoveAddress) decode(r *reader) error {
	m.Addr = r.addrPort()
	return r.err
}

func (m *ConnectRequest) appendPayload(b []byte) []byte {
	b = quicvarint.Append(b, m.ID)
	b = append(b, m.Target[:]...)
	b = appendNAT(b, m.NAT)
	b = appendCandidates(b, m.Candidates)
	b = appendCreds(b, m.Creds)
	return quicvarint.Append(b, uint64(m.Purpose))
}

func (m *ConnectRequest) decode(r *reader) error {
	m.ID = r.varint()
	m.Target = r.peerID()
	m.NAT = r.nat()
	m.Candidates = r.candidates()
	m.Creds = r.creds()
	m.Purpose = Purpose(r.varint())
	return r.err
}

func (m *ConnectOffer) appendPayload(b []byte) []byte {
	b = quicvarint.Append(b, m.ID)
	b = append(b, m.From[:]...)
	b = appendNAT(b, m.NAT)
	b = appendCandidates(b, m.Candidates)
	b = appendCreds(b, m.Creds)
	b = quicvarint.Append(b, uint64(m.Purpose))
	b = appendOrigins(b, m.Candidates)
	if m.Early == nil {
		return b
	}
	b = appendCreds(b, m.Early.Creds)
	b = quicvarint.Append(b, m.Early.DelayMicros)
	return quicvarint.Append(b, m.Early.PeerRTTMicros)
}

func (m *ConnectOffer) decode(r *reader) error {
	m.ID = r.varint()
	m.From = r.peerID()
	m.NAT = r.nat()
	m.Candidates = r.candidates()
	m.Creds = r.creds()
	m.Purpose = Purpose(r.varint())
	r.origins(m.Candidates)
	if r.err == nil && len(r.b) > 0 {
		e := &Early{Creds: r.creds(), DelayMicros: r.varint()}
		if r.err == nil && len(r.b) > 0 {
			e.PeerRTTMicros = r.varint()
		}
		if r.err == nil && (e.Creds.Ufrag == "" || e.Creds.Pwd == "") {
			r.fail(errors.New("early offer without check credentials"))
		}
		m.Early = e
	}
	return r.err
}

func (m *ConnectAnswer) appendPayload(b []byte) []byte {
	b = quicvarint.Append(b, m.ID)
	b = quicvarint.Append(b, uint64(m.Code))
	b = appendNAT(b, m.NAT)
	b = appendCandidates(b, m.Candidates)
	return appendCreds(b, m.Creds)
}

func (m *ConnectAnswer) decode(r *reader) error {
	m.ID = r.varint()
	m.Code = r.code()
	m.NAT = r.nat()
	m.Candidates = r.candidates()
	m.Creds = r.creds()
	return r.err
}

func (m *ConnectResult) appendPayload(b []byte) []byte {
	b = quicvarint.Append(b, m.ID)
	b = quicvarint.Append(b, uint64(m.Code))
	b = appendNAT(b, m.NAT)
	b = appendCandidates(b, m.Candidates)
	b = appendCreds(b, m.Creds)
	b = quicvarint.Append(b, m.PeerRTTMicros)
	return appendOrigins(b, m.Candidates)
}

func (m *ConnectResult) decode(r *reader) error {
	m.ID = r.varint()
	m.Code = r.code()
	m.NAT = r.nat()
	m.Candidates = r.candidates()
	m.Creds = r.creds()
	m.PeerRTTMicros = r.varint()
	r.origins(m.Candidates)
	return r.err
}

func appendBool(b []byte, v bool) []byte {
	if v {
		return append(b, 1)
	}
	return append(b, 0)
}

func (r *reader) bool() bool {
	switch v := r.byte1(); v {
	case 0:
		return false
	case 1:
		return true
	default:
		r.fail(fmt.Errorf("boolean %d", v))
		return false
	}
}

func (m *PunchNow) appendPayload(b []byte) []byte {
	b = quicvarint.Append(b, m.ID)
	b = appendBool(b, m.Offer)
	b = quicvarint.Append(b, m.Round)
	b = quicvarint.Append(b, m.DelayMicros)
	return quicvarint.Append(b, m.PeerRTTMicros)
}

func (m *PunchNow) decode(r *reader) error {
	m.ID = r.varint()
	m.Offer = r.bool()
	m.Round = r.varint()
	m.DelayMicros = r.varint()
	m.PeerRTTMicros = r.varint()
	return r.err
}

func (m *PunchRequest) appendPayload(b []byte) []byte {
	b = quicvarint.Append(b, m.ID)
	b = appendBool(b, m.Offer)
	return quicvarint.Append(b, m.Round)
}

func (m *PunchRequest) decode(r *reader) error {
	m.ID = r.varint()
	m.Offer = r.bool()
	m.Round = r.varint()
	return r.err
}

func (m *ConnectCancel) appendPayload(b []byte) []byte {
	b = quicvarint.Append(b, m.ID)
	return appendBool(b, m.Offer)
}

func (m *ConnectCancel) decode(r *reader) error {
	m.ID = r.varint()
	m.Offer = r.bool()
	return r.err
}

func (m *Error) appendPayload(b []byte) []byte {
	b = quicvarint.Append(b, uint64(m.Code))
	t := m.Text
	if len(t) > MaxErrorText {
		t = t[:MaxErrorText]
	}
	return appendText(b, t)
}

func (m *Error) decode(r *reader) error {
	m.Code = r.code()
	m.Text = r.text(MaxErrorText)
	return r.err
}

func (m *RelayRequest) appendPayload(b []byte) []byte { return quicvarint.Append(b, m.ID) }

func (m *RelayRequest) decode(r *reader) error {
	m.ID = r.varint()
	return r.err
}

func (m *RelayGrant) appendPayload(b []byte) []byte {
	b = quicvarint.Append(b, m.ID)
	b = quicvarint.Append(b, uint64(m.Code))
	b = appendText(b, m.Username)
	b = appendText(b, m.Password)
	b = appendAddrPort(b, m.UDP)
	b = appendAddrPort(b, m.TCP)
	return quicvarint.Append(b, m.ExpiresUnix)
}

func (m *RelayGrant) decode(r *reader) error {
	m.ID = r.varint()
	m.Code = r.code()
	m.Username = r.text(MaxUsername)
	m.Password = r.text(MaxPassword)
	m.UDP = r.addrPort()
	m.TCP = r.addrPort()
	m.ExpiresUnix = r.varint()
	return r.err
}

func (m *RelayAddress) appendPayload(b []byte) []byte {
	b = quicvarint.Append(b, m.ID)
	b = appendBool(b, m.Offer)
	return appendAddrPort(b, m.Addr)
}

func (m *RelayAddress) decode(r *reader) error {
	m.ID = r.varint()
	m.Offer = r.bool()
	m.Addr = r.addrPort()
	if r.err == nil && !m.Addr.IsValid() {
		r.fail(errors.New("relay address missing"))
	}
	return r.err
}

func (m *ConnectEarly) appendPayload(b []byte) []byte {
	b = quicvarint.Append(b, m.ID)
	b = appendNAT(b, m.NAT)
	b = appendCandidates(b, m.Candidates)
	b = appendCreds(b, m.Creds)
	b = quicvarint.Append(b, m.PeerRTTMicros)
	b = quicvarint.Append(b, m.DelayMicros)
	return appendOrigins(b, m.Candidates)
}

func (m *ConnectEarly) decode(r *reader) error {
	m.ID = r.varint()
	m.NAT = r.nat()
	m.Candidates = r.candidates()
	m.Creds = r.creds()
	m.PeerRTTMicros = r.varint()
	m.DelayMicros = r.varint()
	r.origins(m.Candidates)
	if r.err == nil && (m.Creds.Ufrag == "" || m.Creds.Pwd == "") {
		r.fail(errors.New("early answer without check credentials"))
	}
	return r.err
}

func (m *NATType) appendPayload(b []byte) []byte { return appendNAT(b, m.NAT) }

func (m *NATType) decode(r *reader) error {
	m.NAT = r.nat()
	return r.err
}

func (m *ConnectAck) appendPayload(b []byte) []byte {
	b = quicvarint.Append(b, m.ID)
	if len(m.Target) == 0 {
		return b
	}
	return appendAddrList(b, m.Target)
}

func (m *ConnectAck) decode(r *reader) error {
	m.ID = r.varint()
	if r.err == nil && len(r.b) > 0 {
		m.Target = r.addrList(MaxCandidates)
	}
	return r.err
}

func (m *Ping) appendPayload(b []byte) []byte {
	b = quicvarint.Append(b, m.Seq)
	return appendText(b, string(m.Pad))
}

func (m *Ping) decode(r *reader) error {
	m.Seq = r.varint()
	m.Pad = []byte(r.text(MaxPad))
	return r.err
}

func (m *Pong) appendPayload(b []byte) []byte {
	b = quicvarint.Append(b, m.Seq)
	if m.Peers == 0 {
		return b
	}
	return quicvarint.Append(b, m.Peers)
}

func (m *Pong) decode(r *reader) error {
	m.Seq = r.varint()
	if r.err == nil && len(r.b) > 0 {
		m.Peers = r.varint()
	}
	return r.err
}
