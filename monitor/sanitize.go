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
		if isOID(t, start, trimmed) {
			i = j
			continue
		}
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

// oidWord reports whether w, just before a dotted number, makes it an
// ASN.1 object identifier (in crypto/x509's errors and pkix names), not
// an IPv4 address: "unknown algorithm: 1.3.101.113", "OID 2.5.29.17".
func oidWord(w string) bool {
	switch strings.ToLower(w) {
	case "algorithm", "oid", "extension", "curve", "attribute", "identifier", "policy", "object":
		return true
	}
	return false
}

// isOID reports whether tok, at t[start:], is an object identifier and
// not an address: dotted decimal without a port, and either named as an
// OID by the word before it or an attribute type ("2.5.4.3=alice").
// Longer OIDs (1.2.840.113549.1.1.11) never parse as addresses.
func isOID(t string, start int, tok string) bool {
	if strings.ContainsAny(tok, ":[]") || strings.Count(tok, ".") != 3 {
		return false
	}
	if end := start + len(tok); end < len(t) && t[end] == '=' {
		return true
	}
	i := start
	for i > 0 && strings.IndexByte(" :(=#", t[i-1]) >= 0 {
		i--
	}
	w := i
	for w > 0 && (t[w-1] >= 'a' && t[w-1] <= 'z' || t[w-1] >= 'A' && t[w-1] <= 'Z') {
		w--
	}
	return oidWord(t[w:i])
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
