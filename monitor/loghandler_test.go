package monitor

import (
	"bytes"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"strings"
	"testing"
)

type printsAddr struct{}

func (printsAddr) String() string { return "bound to 192.0.2.10:9000" }

func TestSanitizingHandler(t *testing.T) {
	const raw = "192.0.2.10"
	ap := netip.MustParseAddrPort(raw + ":9000")
	tests := []struct {
		name string
		log  func(l *slog.Logger)
	}{
		{"message", func(l *slog.Logger) { l.Info("cannot reach " + raw + ":9000") }},
		{"string", func(l *slog.Logger) { l.Info("m", "to", raw+":9000") }},
		{"error", func(l *slog.Logger) {
			l.Warn("m", "err", fmt.Errorf("bootstrap %s: %w", ap, errors.New("context deadline exceeded")))
		}},
		{"addrport", func(l *slog.Logger) { l.Info("m", "addr", ap) }},
		{"addr", func(l *slog.Logger) { l.Info("m", "ip", ap.Addr()) }},
		{"net.Addr", func(l *slog.Logger) { l.Info("m", "udp", net.UDPAddrFromAddrPort(ap)) }},
		{"stringer", func(l *slog.Logger) { l.Info("m", "s", printsAddr{}) }},
		{"slice", func(l *slog.Logger) { l.Info("m", "list", []netip.AddrPort{ap}) }},
		{"group", func(l *slog.Logger) { l.Info("m", slog.Group("g", "to", raw)) }},
		{"with attrs", func(l *slog.Logger) { l.With("bootstrap", raw+":4433").Info("m") }},
		{"with group", func(l *slog.Logger) { l.WithGroup("peer").Info("m", "addr", ap) }},
	}
	for _, format := range []string{"text", "json"} {
		for _, tc := range tests {
			t.Run(format+"/"+tc.name, func(t *testing.T) {
				var buf bytes.Buffer
				var h slog.Handler = slog.NewTextHandler(&buf, nil)
				if format == "json" {
					h = slog.NewJSONHandler(&buf, nil)
				}
				s, err := NewSanitizer(AddressesSanitized)
				if err != nil {
					t.Fatal(err)
				}
				tc.log(slog.New(SanitizingHandler(h, s)))
				out := buf.String()
				if out == "" {
					t.Fatal("nothing logged")
				}
				if strings.Contains(out, raw) {
					t.Fatalf("raw address logged: %s", out)
				}
				if !strings.Contains(out, s.Addr(ap.Addr())) {
					t.Fatalf("sanitised form %s missing: %s", s.Addr(ap.Addr()), out)
				}
				full, _ := NewSanitizer(AddressesFull)
				if SanitizingHandler(h, full) != h {
					t.Fatal("--log-addresses=full still wraps the handler")
				}
			})
		}
	}
}

func TestSanitizingHandlerKeepsOtherValues(t *testing.T) {
	var buf bytes.Buffer
	s, _ := NewSanitizer(AddressesSanitized)
	l := slog.New(SanitizingHandler(slog.NewJSONHandler(&buf, nil), s))
	l.Info("peer running", "id", "bqujbzmelp", "bootstraps", 2, "rtt_ms", 1.5, "ok", true, "ports", []int{1, 2})
	want := `"msg":"peer running","id":"bqujbzmelp","bootstraps":2,"rtt_ms":1.5,"ok":true,"ports":[1,2]}`
	if !strings.Contains(buf.String(), want) {
		t.Fatalf("got %s, want it to contain %s", buf.String(), want)
	}
}
