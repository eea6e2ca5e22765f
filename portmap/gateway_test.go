package portmap

import (
	"context"
	"errors"
	"net/netip"
	"strings"
	"testing"
)

const routeHeader = "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n"

func TestParseDefaultGateway(t *testing.T) {
	tests := []struct {
		name  string
		lines []string
		want  string // "" : ErrNoGateway
	}{
		{
			name: "one default route",
			lines: []string{
				"eth0\t00000000\t0101A8C0\t0003\t0\t0\t100\t00000000\t0\t0\t0",
				"eth0\t0001A8C0\t00000000\t0001\t0\t0\t100\t00FFFFFF\t0\t0\t0",
			},
			want: "192.168.1.1",
		},
		{
			name: "the lowest metric wins",
			lines: []string{
				"wlan0\t00000000\t0100000A\t0003\t0\t0\t600\t00000000\t0\t0\t0",
				"eth0\t00000000\t0101A8C0\t0003\t0\t0\t100\t00000000\t0\t0\t0",
				"eth1\t00000000\t01010AAC\t0003\t0\t0\t100\t00000000\t0\t0\t0",
			},
			want: "192.168.1.1",
		},
		{
			name:  "a route that is down",
			lines: []string{"eth0\t00000000\t0101A8C0\t0002\t0\t0\t100\t00000000\t0\t0\t0"},
		},
		{
			name:  "a default route without a gateway (point to point)",
			lines: []string{"tun0\t00000000\t00000000\t0001\t0\t0\t0\t00000000\t0\t0\t0"},
		},
		{
			name:  "a gateway route that is not the default",
			lines: []string{"eth0\t0000000A\t0101A8C0\t0003\t0\t0\t0\t000000FF\t0\t0\t0"},
		},
		{
			name: "unreadable lines are skipped",
			lines: []string{
				"eth0\t00000000\tZZZZZZZZ\t0003\t0\t0\t100\t00000000\t0\t0\t0",
				"eth0\t00000000",
				"eth0\t00000000\t0101A8C0\t0003\t0\t0\t-1\t00000000\t0\t0\t0",
				"eth1\t00000000\t0201A8C0\t0003\t0\t0\t5\t00000000\t0\t0\t0",
			},
			want: "192.168.1.2",
		},
		{name: "header only"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			table := routeHeader + strings.Join(tt.lines, "\n") + "\n"
			got, err := parseDefaultGateway([]byte(table))
			if tt.want == "" {
				if !errors.Is(err, ErrNoGateway) {
					t.Fatalf("got %v, %v; want ErrNoGateway", got, err)
				}
				return
			}
			if err != nil || got != netip.MustParseAddr(tt.want) {
				t.Fatalf("got %v, %v; want %s", got, err, tt.want)
			}
		})
	}
}

func FuzzParseDefaultGateway(f *testing.F) {
	f.Add([]byte(routeHeader + "eth0\t00000000\t0101A8C0\t0003\t0\t0\t100\t00000000\t0\t0\t0\n"))
	f.Add([]byte(routeHeader))
	f.Add([]byte(""))
	f.Fuzz(func(t *testing.T, b []byte) {
		gw, err := parseDefaultGateway(b)
		if err != nil {
			if !errors.Is(err, ErrNoGateway) {
				t.Fatalf("error %v is not ErrNoGateway", err)
			}
			return
		}
		if !gw.Is4() || gw.IsUnspecified() {
			t.Fatalf("gateway %v", gw)
		}
	})
}

func TestLocalAddrFor(t *testing.T) {
	got, err := localAddrFor(context.Background(), netip.MustParseAddr("127.0.0.1"))
	if err != nil || got != netip.MustParseAddr("127.0.0.1") {
		t.Fatalf("local address for 127.0.0.1: %v, %v", got, err)
	}
}
