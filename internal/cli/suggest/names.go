package suggest

import (
	"net/netip"
	"slices"
	"strings"
)

// commonParent is the longest domain that every name is a strict subdomain
// of; it is parent or below it, because every name is under parent.
func commonParent(names []string, parent string) string {
	base := names[0]
	for _, n := range names[1:] {
		for base != parent && !strings.HasSuffix(n, "."+base) && n != base {
			base = up(base)
		}
	}
	// "*.base" does not match base itself: if base was seen, go one up so
	// the wildcard covers every name it claims to.
	if slices.Contains(names, base) && base != parent {
		base = up(base)
	}
	return base
}

// up drops the first label: a.b.c -> b.c.
func up(name string) string {
	_, rest, _ := strings.Cut(name, ".")
	return rest
}

// hostName returns the canonical lower-case form of a well-formed DNS name
// (LDH labels, underscores tolerated), or false. IP literals are not names.
func hostName(h string) (string, bool) {
	h = strings.TrimSuffix(strings.ToLower(h), ".")
	if h == "" || len(h) > 253 {
		return "", false
	}
	if _, err := netip.ParseAddr(strings.Trim(h, "[]")); err == nil {
		return "", false
	}
	for label := range strings.SplitSeq(h, ".") {
		if len(label) == 0 || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' {
			return "", false
		}
		for i := 0; i < len(label); i++ {
			c := label[i]
			if !('a' <= c && c <= 'z' || '0' <= c && c <= '9' || c == '-' || c == '_') {
				return "", false
			}
		}
	}
	// An all-numeric last label is an IP spelling (0x7f.1, 2130706433),
	// never a name anyone should grant.
	last := h[strings.LastIndexByte(h, '.')+1:]
	if strings.Trim(last, "0123456789") == "" {
		return "", false
	}
	return h, true
}

// address returns the canonical form of an IP literal in its usual
// spelling, or false: odd spellings (octal, hex) are an attack, not a
// destination to grant.
func address(h string) (string, bool) {
	a, err := netip.ParseAddr(strings.Trim(h, "[]"))
	if err != nil || a.Zone() != "" {
		return "", false
	}
	return a.Unmap().String(), true
}

func cidrOf(addr string) string {
	a := netip.MustParseAddr(addr) // canonical by construction in address
	return netip.PrefixFrom(a, a.BitLen()).String()
}
