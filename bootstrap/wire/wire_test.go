package wire

import (
	"bytes"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/quic-go/quic-go/quicvarint"

	"github.com/antnode/antnode/identity"
	"github.com/antnode/antnode/nattype"
)

var update = flag.Bool("update", false, "rewrite golden files")

func testPeer(b byte) identity.PeerID {
	var id identity.PeerID
	for i := range id {
		id[i] = b + byte(i)
	}
	return id
}

func sampleMessages() []struct {
	name string
	msg  Message
} {
	cands := []Candidate{
		{Kind: KindHost, Priority: 2130706431, Addr: netip.MustParseAddrPort("192.168.1.10:4000")},
		{Kind: KindServerReflexive, Priority: 1694498815, Addr: netip.MustParseAddrPort("198.51.100.1:4000")},
		{Kind: KindRelay, Priority: 16777215, Addr: netip.MustParseAddrPort("[2001:db8::1]:3478")},
	}
	nat := nattype.Type{Mapping: nattype.MappingEIM, Filtering: nattype.FilteringAPDF}
	return []struct {
		name string
		msg  Message
	}{
		{"register", &Register{Version: 1, NAT: nat, Candidates: cands}},
		{"register_empty", &Register{Version: 1}},
		{"register_features", &Register{Version: 1, NAT: nat, Features: FeatureEarly}},
		{"registered", &Registered{Version: 1, Observed: netip.MustParseAddrPort("198.51.100.1:4000"),
			AltSTUN: []netip.AddrPort{netip.MustParseAddrPort("203.0.113.2:3478")}, TTLSeconds: 90, Probes: ProbeOtherPort | ProbeOtherAddr}},
		{"registered_peers", &Registered{Version: 1, Observed: netip.MustParseAddrPort("198.51.100.1:4000"), TTLSeconds: 60, Peers: 10000}},
		{"registered_other", &Registered{Version: 1, Observed: netip.MustParseAddrPort("198.51.100.1:4000"), TTLSeconds: 60,
			Other: []netip.AddrPort{netip.MustParseAddrPort("[2001:db8::1]:4433"), netip.MustParseAddrPort("[2001:db8::1]:3479")},
			Token: [16]byte{0xde, 0xad, 15: 1}, OtherProbes: ProbeOtherPort}},
		{"observed_address", &ObservedAddress{Seq: 7, Addr: netip.MustParseAddrPort("198.51.100.1:4001")}},
		{"add_address", &AddAddress{Candidate: cands[0]}},
		{"remove_address", &RemoveAddress{Addr: netip.MustParseAddrPort("192.168.1.10:4000")}},
		{"connect_request", &ConnectRequest{ID: 1, Target: testPeer(1), NAT: nat, Candidates: cands,
			Creds: Creds{Ufrag: "abcd", Pwd: "0123456789abcdef0123"}}},
		{"connect_offer", &ConnectOffer{ID: 99, From: testPeer(2), NAT: nat, Candidates: cands[:1]}},
		{"connect_offer_early", &ConnectOffer{ID: 98, From: testPeer(2), NAT: nat, Candidates: cands[:1],
			Creds: Creds{Ufrag: "abcd", Pwd: "0123456789abcdef0123"}, Early: &Early{Creds: Creds{Ufrag: "wxyz", Pwd: "p"}, DelayMicros: 5000, PeerRTTMicros: 41000}}},
		{"connect_early", &ConnectEarly{ID: 3, NAT: nat, Candidates: cands[1:2], Creds: Creds{Ufrag: "wxyz", Pwd: "p"},
			PeerRTTMicros: 40000, DelayMicros: 2500}},
		{"nat_type", &NATType{NAT: nat}},
		{"connect_answer", &ConnectAnswer{ID: 99, Code: CodeOK, NAT: nat, Candidates: cands[1:], Creds: Creds{Ufrag: "wxyz", Pwd: "p"}}},
		{"connect_result_unknown", &ConnectResult{ID: 1, Code: CodeUnknownPeer}},
		{"connect_result_ok", &ConnectResult{ID: 1, Code: CodeOK, NAT: nat, Candidates: cands, PeerRTTMicros: 40000}},
		{"punch_now", &PunchNow{ID: 1, Round: 2, DelayMicros: 15000, PeerRTTMicros: 40000}},
		{"punch_now_offer", &PunchNow{ID: 9, Offer: true, Round: 1}},
		{"punch_request", &PunchRequest{ID: 1, Round: 3}},
		{"punch_request_offer", &PunchRequest{ID: 9, Offer: true, Round: 2}},
		{"error", &Error{Code: CodeBadRequest, Text: "register expected"}},
		{"probe_request", &ProbeRequest{TxID: [12]byte{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12}, Kind: ProbeOtherAddr}},
		{"probe_request_other", &ProbeRequest{TxID: [12]byte{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12}, Kind: ProbeOtherPort, Other: true}},
		{"relay_request", &RelayRequest{ID: 4}},
		{"relay_grant", &RelayGrant{ID: 4, Code: CodeOK, Username: "1800000000:abc", Password: "cGFzcw==",
			UDP: netip.MustParseAddrPort("203.0.113.1:3478"), TCP: netip.MustParseAddrPort("203.0.113.1:3478"), ExpiresUnix: 1800000000}},
		{"relay_grant_refused", &RelayGrant{ID: 5, Code: CodeRefused}},
		{"relay_address", &RelayAddress{ID: 9, Offer: true, Addr: netip.MustParseAddrPort("203.0.113.1:50123")}},
		{"connect_ack", &ConnectAck{ID: 1}},
		{"connect_ack_target", &ConnectAck{ID: 2, Target: []netip.AddrPort{netip.MustParseAddrPort("198.51.100.2:4000")}}},
		{"ping", &Ping{Seq: 7, Pad: make([]byte, 16)}},
		{"pong", &Pong{Seq: 7}},
		{"pong_peers", &Pong{Seq: 3, Peers: 10000}},
		{"connect_cancel", &ConnectCancel{ID: 1}},
		{"connect_cancel_offer", &ConnectCancel{ID: 9, Offer: true}},
	}
}

func TestRoundTrip(t *testing.T) {
	for _, tc := range sampleMessages() {
		t.Run(tc.name, func(t *testing.T) {
			b, err := Marshal(tc.msg)
			if err != nil {
				t.Fatal(err)
			}
			got, n, err := Parse(b)
			if err != nil {
				t.Fatal(err)
			}
			if n != len(b) {
				t.Fatalf("consumed %d of %d bytes", n, len(b))
			}
			if !reflect.DeepEqual(got, tc.msg) {
				t.Fatalf("round trip:\n got %#v\nwant %#v", got, tc.msg)
			}
			// Through a stream reader, twice in a row.
			r := NewReader(bytes.NewReader(append(append([]byte{}, b...), b...)))
			for i := range 2 {
				got, err := r.Read()
				if err != nil {
					t.Fatalf("read %d: %v", i, err)
				}
				if !reflect.DeepEqual(got, tc.msg) {
					t.Fatalf("read %d: got %#v", i, got)
				}
			}
			if _, err := r.Read(); !errors.Is(err, io.EOF) {
				t.Fatalf("after last frame: %v, want io.EOF", err)
			}
		})
	}
}

// TestGolden pins the wire encoding: a change here breaks deployed nodes.
func TestGolden(t *testing.T) {
	var sb strings.Builder
	for _, tc := range sampleMessages() {
		b, err := Marshal(tc.msg)
		if err != nil {
			t.Fatal(err)
		}
		fmt.Fprintf(&sb, "%s %s\n", tc.name, hex.EncodeToString(b))
	}
	path := filepath.Join("testdata", "frames.golden")
	if *update {
		if err := os.WriteFile(path, []byte(sb.String()), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run with -update to create)", err)
	}
	if sb.String() != string(want) {
		t.Fatalf("encoding changed:\n got:\n%s\nwant:\n%s", sb.String(), want)
	}
}

func frame(t Type, payload []byte) []byte {
	b := quicvarint.Append(nil, uint64(t))
	b = quicvarint.Append(b, uint64(len(payload)))
	return append(b, payload...)
}

func TestMalformed(t *testing.T) {
	manyCands := quicvarint.Append(nil, 1)             // version
	manyCands = append(manyCands, 0, 0)                // NAT
	manyCands = quicvarint.Append(manyCands, 1000)     // candidate count
	badKind := append(quicvarint.Append(nil, 1), 0, 0) // version, NAT
	badKind = append(badKind, 1, 9, 0)                 // one candidate of kind 9
	tests := []struct {
		name string
		in   []byte
		want error
	}{
		{"empty", nil, ErrMalformed},
		{"type only", []byte{0x01}, ErrMalformed},
		{"truncated payload", append(frame(TypeRegister, []byte{1, 0, 0, 0}), 0)[:3], ErrMalformed},
		{"too large", append(quicvarint.Append([]byte{0x01}, MaxPayload+1), make([]byte, 10)...), ErrTooLarge},
		{"huge length", append([]byte{0x01}, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff), ErrTooLarge},
		{"register short", frame(TypeRegister, []byte{1}), ErrMalformed},
		{"register bad NAT", frame(TypeRegister, []byte{1, 200, 0, 0}), ErrMalformed},
		{"too many candidates", frame(TypeRegister, manyCands), ErrMalformed},
		{"bad candidate kind", frame(TypeRegister, badKind), ErrMalformed},
		{"bad address family", frame(TypeRemoveAddress, []byte{5, 1, 2, 3, 4, 0, 1}), ErrMalformed},
		{"peer id short", frame(TypeConnectRequest, []byte{1, 2, 3}), ErrMalformed},
		{"bad boolean", frame(TypePunchRequest, []byte{1, 2, 1}), ErrMalformed},
		{"bad probe kind", frame(TypeProbeRequest, append(make([]byte, 12), 3)), ErrMalformed},
		{"relay address missing", frame(TypeRelayAddress, []byte{1, 0, 0}), ErrMalformed},
		{"error text too long", frame(TypeError, append([]byte{1}, quicvarint.Append(nil, 5000)...)), ErrMalformed},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, _, err := Parse(tc.in)
			if !errors.Is(err, tc.want) {
				t.Fatalf("Parse: %v, want %v", err, tc.want)
			}
			_, err = NewReader(bytes.NewReader(tc.in)).Read()
			if err == nil || (len(tc.in) > 0 && errors.Is(err, io.EOF)) {
				t.Fatalf("Read: %v, want an error", err)
			}
		})
	}
}

func TestUnknownTypeIsSkippable(t *testing.T) {
	in := append(frame(0x3f, []byte{1, 2, 3}), mustMarshal(t, &PunchRequest{ID: 5, Round: 1})...)
	r := NewReader(bytes.NewReader(in))
	_, err := r.Read()
	var ut *UnknownTypeError
	if !errors.As(err, &ut) || ut.Type != 0x3f {
		t.Fatalf("first read: %v, want UnknownTypeError(0x3f)", err)
	}
	m, err := r.Read()
	if err != nil {
		t.Fatal(err)
	}
	if pr, ok := m.(*PunchRequest); !ok || pr.ID != 5 {
		t.Fatalf("second read: %#v", m)
	}
}

func TestTrailingFieldsIgnored(t *testing.T) {
	b := mustMarshal(t, &PunchRequest{ID: 5, Round: 1})
	payload := append(b[2:], 0xaa, 0xbb) // a newer version's extra field
	m, _, err := Parse(frame(TypePunchRequest, payload))
	if err != nil {
		t.Fatal(err)
	}
	if pr := m.(*PunchRequest); pr.ID != 5 || pr.Round != 1 {
		t.Fatalf("got %#v", pr)
	}
}

func TestMarshalRefusesWhatPeerWouldReject(t *testing.T) {
	cs := make([]Candidate, MaxCandidates+1)
	for i := range cs {
		cs[i] = Candidate{Kind: KindHost, Addr: netip.MustParseAddrPort("10.0.0.1:1")}
	}
	if _, err := Marshal(&Register{Version: 1, Candidates: cs}); !errors.Is(err, ErrMalformed) {
		t.Fatalf("too many candidates: %v", err)
	}
	if _, err := Marshal(&AddAddress{Candidate: Candidate{Kind: KindHost}}); !errors.Is(err, ErrMalformed) {
		t.Fatalf("candidate without address: %v", err)
	}
	long := &Error{Code: CodeBadRequest, Text: strings.Repeat("x", 1000)}
	b, err := Marshal(long)
	if err != nil {
		t.Fatalf("long error text is truncated, not refused: %v", err)
	}
	m, _, _ := Parse(b)
	if got := len(m.(*Error).Text); got != MaxErrorText {
		t.Fatalf("text length %d, want %d", got, MaxErrorText)
	}
}

func mustMarshal(t *testing.T, m Message) []byte {
	t.Helper()
	b, err := Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func seedCorpus(f *testing.F) {
	for _, tc := range sampleMessages() {
		b, err := Marshal(tc.msg)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Add([]byte{})
	f.Add([]byte{0x01, 0x40})
	f.Add(frame(0x3f, []byte{1, 2, 3}))
}

// FuzzParse: Parse never panics, and whatever it accepts re-encodes to a
// frame that decodes to the same message.
func FuzzParse(f *testing.F) {
	seedCorpus(f)
	f.Fuzz(func(t *testing.T, b []byte) {
		m, n, err := Parse(b)
		if err != nil {
			return
		}
		if n > len(b) {
			t.Fatalf("consumed %d of %d", n, len(b))
		}
		again, err := Marshal(m)
		if err != nil {
			t.Fatalf("accepted message does not re-encode: %v (%#v)", err, m)
		}
		m2, _, err := Parse(again)
		if err != nil {
			t.Fatalf("re-encoded message does not parse: %v", err)
		}
		if !reflect.DeepEqual(m, m2) {
			t.Fatalf("not stable:\n%#v\n%#v", m, m2)
		}
	})
}

// FuzzReader: the stream reader never panics and never reads past a bad
// frame's declared size.
func FuzzReader(f *testing.F) {
	seedCorpus(f)
	f.Fuzz(func(t *testing.T, b []byte) {
		r := NewReader(bytes.NewReader(b))
		for range 64 {
			_, err := r.Read()
			var ut *UnknownTypeError
			if err != nil && !errors.As(err, &ut) {
				return
			}
		}
	})
}

// TestRegisteredPeers: the registry size of Registered survives the
// wire; a Registered of an older bootstrap (without it) says 0, and so
// does one whose size is 0 (which is not sent); a newer field after it
// is ignored (the other family's sockets and the token come after it).
func TestRegisteredPeers(t *testing.T) {
	base := &Registered{Version: Version, Observed: netip.MustParseAddrPort("198.51.100.1:4000"), TTLSeconds: 60}
	older := base.appendPayload(nil)
	tests := []struct {
		name    string
		payload []byte
		want    uint64
	}{
		{"not told", older, 0},
		{"zero is not sent", (&Registered{Version: Version, Observed: base.Observed, TTLSeconds: 60, Peers: 0}).appendPayload(nil), 0},
		{"one", (&Registered{Version: Version, Observed: base.Observed, TTLSeconds: 60, Peers: 1}).appendPayload(nil), 1},
		{"ten thousand", (&Registered{Version: Version, Observed: base.Observed, TTLSeconds: 60, Peers: 10000}).appendPayload(nil), 10000},
		{"largest varint", (&Registered{Version: Version, Observed: base.Observed, TTLSeconds: 60, Peers: quicvarint.Max}).appendPayload(nil), quicvarint.Max},
		{"the other family's sockets after it", (&Registered{Version: Version, Observed: base.Observed, TTLSeconds: 60, Peers: 7,
			Other: []netip.AddrPort{netip.MustParseAddrPort("[2001:db8::1]:4433")}}).appendPayload(nil), 7},
		{"zero with the other family's sockets is sent", (&Registered{Version: Version, Observed: base.Observed, TTLSeconds: 60,
			Other: []netip.AddrPort{netip.MustParseAddrPort("[2001:db8::1]:4433")}}).appendPayload(nil), 0},
		{"a newer field after those", append((&Registered{Version: Version, Observed: base.Observed, TTLSeconds: 60, Peers: 7,
			Other: []netip.AddrPort{netip.MustParseAddrPort("[2001:db8::1]:4433")}}).appendPayload(nil), 0xaa), 7},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			b := frame(TypeRegistered, tc.payload)
			m, n, err := Parse(b)
			if err != nil || n != len(b) {
				t.Fatalf("Parse: %v (%d of %d bytes)", err, n, len(b))
			}
			got := m.(*Registered)
			if got.Peers != tc.want || got.Observed != base.Observed || got.TTLSeconds != 60 {
				t.Fatalf("got %+v, want Peers %d", got, tc.want)
			}
		})
	}
}

// TestPongPeers: the registry size of Pong survives the wire, and a Pong
// of an older bootstrap (without it) says 0.
func TestPongPeers(t *testing.T) {
	tests := []struct {
		name    string
		payload []byte
		want    uint64
	}{
		{"not told", (&Pong{Seq: 9}).appendPayload(nil), 0},
		{"told", (&Pong{Seq: 9, Peers: 10000}).appendPayload(nil), 10000},
		{"a newer field after it", append((&Pong{Seq: 9, Peers: 5}).appendPayload(nil), 0x01), 5},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			m, _, err := Parse(frame(TypePong, tc.payload))
			if err != nil {
				t.Fatal(err)
			}
			if got := m.(*Pong); got.Seq != 9 || got.Peers != tc.want {
				t.Fatalf("got %+v, want Peers %d", got, tc.want)
			}
		})
	}
}
