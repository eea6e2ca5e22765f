package monitor

import (
	"net/netip"
	"strings"
)

func isAddrByte(c byte) bool {
	return c >= '0' && c <= '9' || c >= 'a' && c <= 'f' || c >= 'A' && c <= 'F' ||
		c == '.' || c == ':' || c == '[' || c == ']'
}

// replaceAddrs rewrites every IPv4/IPv6 address, with or without a port, in
// t through s.
func replaceAddrs(t string, s *Sanitizer) string {
	var out strings.Builder
	last := 0
	for i := 0; i < len(t); {
		if !isAddrByte(t[i]) {
			i++
			continue
		}
		j := i
		for j < len(t) && isAddrByte(t[j]) {
			j++
		}
		tok := t[i:j]
		// Punctuation that ends a sentence or a "host:port:" prefix.
		trimmed := strings.TrimRight(tok, ":.]")
		if strings.HasPrefix(trimmed, "[") && strings.HasSuffix(tok[:min(len(trimmed)+1, len(tok))], "]") {
			trimmed = tok[:len(trimmed)+1]
		}
		start := i
		rep, ok := sanitizeToken(trimmed, s)
		if !ok && strings.HasPrefix(trimmed, "[") {
			// "[" opens a list ("[192.0.2.1:80 ...]"), not a v6 host.
			start, trimmed = i+1, strings.TrimRight(trimmed[1:], ":.]")
			rep, ok = sanitizeToken(trimmed, s)
		}
		if ok {
			out.WriteString(t[last:start])
			out.WriteString(rep)
			last = start + len(trimmed)
		}
		i = j
	}
	if last == 0 {
		return t
	}
	out.WriteString(t[last:])
	return out.String()
}

func sanitizeToken(tok string, s *Sanitizer) (string, bool) {
	if !strings.ContainsAny(tok, ".:") || len(tok) < 3 {
		return "", false
	}
	if ap, err := netip.ParseAddrPort(tok); err == nil {
		return s.AddrPort(ap), true
	}
	if a, err := netip.ParseAddr(strings.Trim(tok, "[]")); err == nil {
		return s.Addr(a), true
	}
	return "", false
}
