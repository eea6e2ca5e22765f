package monitor

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
)

// SanitizingHandler returns a slog.Handler that renders every address in
// the records it passes to h through s: the message, string values, errors,
// fmt.Stringers and the address types of net and net/netip, in groups too.
// The Monitor sanitises its own records field by field; this handler
// catches everything else a node logs (an error that names the bootstrap it
// could not reach, a library's message), so that no raw address reaches a
// log by default. With a Sanitizer that logs full addresses it returns h.
func SanitizingHandler(h slog.Handler, s *Sanitizer) slog.Handler {
	if s == nil || s.Full() {
		return h
	}
	return &sanitizingHandler{h: h, s: s}
}

type sanitizingHandler struct {
	h slog.Handler
	s *Sanitizer
}

func (sh *sanitizingHandler) Enabled(ctx context.Context, l slog.Level) bool {
	return sh.h.Enabled(ctx, l)
}

func (sh *sanitizingHandler) Handle(ctx context.Context, r slog.Record) error {
	out := slog.NewRecord(r.Time, r.Level, sh.s.Text(r.Message), r.PC)
	r.Attrs(func(a slog.Attr) bool {
		out.AddAttrs(sh.attr(a))
		return true
	})
	return sh.h.Handle(ctx, out)
}

func (sh *sanitizingHandler) WithAttrs(as []slog.Attr) slog.Handler {
	clean := make([]slog.Attr, len(as))
	for i, a := range as {
		clean[i] = sh.attr(a)
	}
	return &sanitizingHandler{h: sh.h.WithAttrs(clean), s: sh.s}
}

func (sh *sanitizingHandler) WithGroup(name string) slog.Handler {
	return &sanitizingHandler{h: sh.h.WithGroup(name), s: sh.s}
}

func (sh *sanitizingHandler) attr(a slog.Attr) slog.Attr {
	v := a.Value.Resolve()
	switch v.Kind() {
	case slog.KindString:
		return slog.String(a.Key, sh.s.Text(v.String()))
	case slog.KindGroup:
		g := v.Group()
		clean := make([]any, len(g))
		for i, ga := range g {
			clean[i] = sh.attr(ga)
		}
		return slog.Group(a.Key, clean...)
	case slog.KindAny:
		switch x := v.Any().(type) {
		case netip.AddrPort:
			return slog.String(a.Key, sh.s.AddrPort(x))
		case netip.Addr:
			return slog.String(a.Key, sh.s.Addr(x))
		case net.Addr:
			return slog.String(a.Key, sh.s.Text(x.String()))
		case error:
			return slog.String(a.Key, sh.s.Text(x.Error()))
		case fmt.Stringer:
			return slog.String(a.Key, sh.s.Text(x.String()))
		case []byte:
			return slog.String(a.Key, sh.s.Text(string(x)))
		default:
			// Anything else (a slice of addresses, a struct) is kept as
			// it is unless its printed form names an address.
			if p := fmt.Sprint(x); sh.s.Text(p) != p {
				return slog.String(a.Key, sh.s.Text(p))
			}
		}
	}
	return slog.Attr{Key: a.Key, Value: v}
}
