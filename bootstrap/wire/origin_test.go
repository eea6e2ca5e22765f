package wire

import (
	"net/netip"
	"reflect"
	"testing"
)

// TestOrigins: the origins a bootstrap gives the candidates it forwards
// survive the wire; a message without them (an older bootstrap), with a
// count that does not match, or with an origin this version does not
// know leaves every origin unknown, which is never trusted.
func TestOrigins(t *testing.T) {
	cands := []Candidate{
		{Kind: KindHost, Priority: 1, Addr: netip.MustParseAddrPort("192.168.1.10:4000"), Origin: OriginAnnounced},
		{Kind: KindServerReflexive, Priority: 2, Addr: netip.MustParseAddrPort("198.51.100.7:4000"), Origin: OriginObserved},
		{Kind: KindServerReflexive, Priority: 3, Addr: netip.MustParseAddrPort("198.51.100.7:5000"), Origin: OriginObservedIP},
	}
	unknown := func(cs []Candidate) []Candidate {
		out := append([]Candidate(nil), cs...)
		for i := range out {
			out[i].Origin = OriginUnknown
		}
		return out
	}
	payload := (&ConnectOffer{ID: 7, Candidates: cands}).appendPayload(nil)
	base := payload[:len(payload)-(1+len(cands))] // without the origins
	tail := payload[len(base):]
	tests := []struct {
		name string
		// tweak rewrites the payload's tail (the origins: a count, then one
		// byte per candidate) before the frame is parsed.
		tweak func(tail []byte) []byte
		want  []Candidate
	}{
		{"as sent", func(tail []byte) []byte { return tail }, cands},
		{"as sent, on a result", nil, cands},
		{"older bootstrap: no origins", func([]byte) []byte { return nil }, unknown(cands)},
		{"count that does not match", func([]byte) []byte { return []byte{2, 2, 2} }, unknown(cands)},
		{"origin from a newer version", func([]byte) []byte { return []byte{3, 1, 0xee, 2} },
			[]Candidate{cands[0], unknown(cands[1:2])[0], {Kind: KindServerReflexive, Priority: 3,
				Addr: cands[2].Addr, Origin: OriginObserved}}},
		{"truncated origins", func([]byte) []byte { return []byte{3, 1} }, unknown(cands)},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if tc.tweak == nil { // the other message that carries origins
				b, err := Marshal(&ConnectResult{ID: 7, Candidates: cands})
				if err != nil {
					t.Fatal(err)
				}
				m, _, err := Parse(b)
				if err != nil || !reflect.DeepEqual(m.(*ConnectResult).Candidates, cands) {
					t.Fatalf("result: %v %+v", err, m)
				}
				return
			}
			got, err := decodePayload(TypeConnectOffer, append(append([]byte(nil), base...), tc.tweak(tail)...))
			if tc.name == "truncated origins" {
				if err == nil {
					t.Fatal("a truncated origin list parsed")
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got.(*ConnectOffer).Candidates, tc.want) {
				t.Fatalf("candidates %+v, want %+v", got.(*ConnectOffer).Candidates, tc.want)
			}
		})
	}
}
