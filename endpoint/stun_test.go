package endpoint

import (
	"errors"
	"net/netip"
	"testing"

	"github.com/pion/stun/v3"
)

func TestBindingSuccessRoundTrip(t *testing.T) {
	tests := []struct {
		name  string
		from  netip.AddrPort
		extra []stun.Setter
		check func(*stun.Message) error
	}{
		{"IPv4, bare", netip.MustParseAddrPort("203.0.113.7:4433"), nil, nil},
		{"IPv6", netip.MustParseAddrPort("[2001:db8::1]:9"), nil, nil},
		{"integrity and fingerprint", netip.MustParseAddrPort("198.51.100.2:1"),
			[]stun.Setter{stun.NewShortTermIntegrity("pwd"), stun.Fingerprint},
			func(m *stun.Message) error {
				if err := stun.NewShortTermIntegrity("pwd").Check(m); err != nil {
					return err
				}
				return stun.Fingerprint.Check(m)
			}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			req := stun.MustBuild(stun.TransactionID, stun.BindingRequest)
			resp, err := BindingSuccess(req, tc.from, tc.extra...)
			if err != nil {
				t.Fatal(err)
			}
			m := &stun.Message{Raw: append([]byte(nil), resp.Raw...)}
			if err := m.Decode(); err != nil {
				t.Fatal(err)
			}
			if m.Type != stun.BindingSuccess || m.TransactionID != req.TransactionID {
				t.Fatalf("type %v, transaction %x", m.Type, m.TransactionID)
			}
			got, err := MappedAddress(m)
			if err != nil || got != tc.from {
				t.Fatalf("mapped %v, %v; want %v", got, err, tc.from)
			}
			if tc.check != nil {
				if err := tc.check(m); err != nil {
					t.Fatal(err)
				}
			}
		})
	}
	bare := stun.MustBuild(stun.TransactionID, stun.BindingSuccess)
	if _, err := MappedAddress(bare); !errors.Is(err, ErrNoMappedAddress) {
		t.Fatalf("no attribute: %v", err)
	}
}
