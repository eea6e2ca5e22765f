package endpoint

import (
	"net/netip"
	"testing"
)

func TestFamily(t *testing.T) {
	tests := []struct{ addr, want string }{
		{"127.0.0.1", "4"},
		{"0.0.0.0", "4"},
		{"::ffff:192.0.2.1", "4"},
		{"::1", "6"},
		{"::", "6"},
		{"2001:db8::1", "6"},
	}
	for _, tc := range tests {
		t.Run(tc.addr, func(t *testing.T) {
			if got := Family(netip.MustParseAddr(tc.addr)); got != tc.want {
				t.Fatalf("Family(%s) = %s, want %s", tc.addr, got, tc.want)
			}
		})
	}
}
