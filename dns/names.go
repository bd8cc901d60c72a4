package dns

import (
	"fmt"
	"net/netip"
	"strconv"
	"strings"
)

// Names are kept lowercase and fully qualified ("web.weft.local."); the
// fast path keys them by their lowercase wire form ("\x03web\x04weft...").

// validFQDN accepts lowercase fully qualified host names: labels of 1-63
// letters, digits, '-' or '_', at most 253 characters without the dot.
func validFQDN(s string) bool {
	if len(s) < 2 || len(s) > 254 || s[len(s)-1] != '.' {
		return false
	}
	label := 0
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == '.':
			if label == 0 {
				return false
			}
			label = 0
		case c >= 'a' && c <= 'z', c >= '0' && c <= '9', c == '-', c == '_':
			label++
			if label > 63 {
				return false
			}
		default:
			return false
		}
	}
	return true
}

// canonicalName turns "web", "Web.weft.local" or "web.weft.local." into
// "web.weft.local."; a fully qualified name outside the domain, or the
// domain itself, is refused.
func canonicalName(name, domain string) (string, error) {
	n := strings.ToLower(strings.TrimSpace(name))
	fq := strings.HasSuffix(n, ".")
	n = strings.TrimSuffix(n, ".")
	apex := strings.TrimSuffix(domain, ".")
	switch {
	case n == "" || n == apex:
		return "", fmt.Errorf("name %q: %w", name, ErrBadName)
	case strings.HasSuffix(n, "."+apex):
		n += "."
	case fq:
		return "", fmt.Errorf("name %q is outside %s: %w", name, domain, ErrBadName)
	default:
		n += "." + domain
	}
	if !validFQDN(n) {
		return "", fmt.Errorf("name %q: %w", name, ErrBadName)
	}
	return n, nil
}

// wireName returns the wire form of a valid lowercase FQDN.
func wireName(fqdn string) []byte {
	b := make([]byte, 0, len(fqdn)+1)
	for _, l := range strings.Split(strings.TrimSuffix(fqdn, "."), ".") {
		if l == "" {
			continue
		}
		b = append(b, byte(len(l)))
		b = append(b, l...)
	}
	return append(b, 0)
}

// parentNames returns the names between fqdn (excluded) and domain
// (excluded): the empty non-terminals that exist because fqdn exists.
func parentNames(fqdn, domain string) []string {
	var out []string
	for n := fqdn; ; {
		i := strings.IndexByte(n, '.')
		if i < 0 || i == len(n)-1 {
			return out
		}
		n = n[i+1:]
		if len(n) <= len(domain) {
			return out
		}
		out = append(out, n)
	}
}

// reverseAddr parses a lowercase reverse name ("7.0.32.10.in-addr.arpa.",
// or 32 nibbles of ip6.arpa.) into the address it names.
func reverseAddr(fqdn string) (netip.Addr, bool) {
	if s, ok := strings.CutSuffix(fqdn, ".in-addr.arpa."); ok {
		parts := strings.Split(s, ".")
		if len(parts) != 4 {
			return netip.Addr{}, false
		}
		var b [4]byte
		for i, p := range parts {
			if len(p) == 0 || len(p) > 3 || (len(p) > 1 && p[0] == '0') {
				return netip.Addr{}, false
			}
			v, err := strconv.ParseUint(p, 10, 8)
			if err != nil {
				return netip.Addr{}, false
			}
			b[3-i] = byte(v)
		}
		return netip.AddrFrom4(b), true
	}
	if s, ok := strings.CutSuffix(fqdn, ".ip6.arpa."); ok {
		if len(s) != 63 {
			return netip.Addr{}, false
		}
		var b [16]byte
		for i := 0; i < 32; i++ {
			c := s[62-2*i]
			if 2*i < 62 && s[62-2*i-1] != '.' {
				return netip.Addr{}, false
			}
			v, err := strconv.ParseUint(string(c), 16, 8)
			if err != nil {
				return netip.Addr{}, false
			}
			if i%2 == 0 {
				b[i/2] = byte(v) << 4
			} else {
				b[i/2] |= byte(v)
			}
		}
		return netip.AddrFrom16(b), true
	}
	return netip.Addr{}, false
}
