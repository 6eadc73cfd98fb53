package policy

import (
	"fmt"
	"net/netip"
	"strings"
)

// parseHostPattern validates the host: of an allow rule and returns its
// canonical form: a name, or "*.suffix" for a wildcard. msg says what is
// wrong, for `allow[i].host: "<s>": <msg>`.
func parseHostPattern(s string) (canon string, wildcard bool, msg string) {
	switch {
	case s == "":
		return "", false, "empty host"
	case strings.Contains(s, "://"):
		return "", false, "write the host name only, not a URL"
	case strings.TrimSpace(s) != s:
		return "", false, "leading or trailing space"
	case s == "*":
		return "", false, `a bare "*" would allow everything; write "*.example.com" for the subdomains of a name`
	case strings.HasPrefix(s, "*."):
		suffix := s[2:]
		if strings.Contains(suffix, "*") {
			return "", false, `"*" is only allowed as the whole first label ("*.example.com")`
		}
		if suffix == "" || suffix == "." {
			return "", false, "empty label"
		}
		name, ip, prob := normalizeHost(suffix)
		switch {
		case prob == hostBadIPLiteral || ip.IsValid():
			return "", false, "a wildcard suffix cannot be an IP address; use cidr:"
		case prob != hostOK:
			return "", false, prob.String()
		}
		return "*." + name, true, ""
	case strings.Contains(s, "*"):
		return "", false, `"*" is only allowed as the whole first label ("*.example.com")`
	}
	if hostPortLike(s) {
		return "", false, "write the port under ports:, not in host:"
	}
	name, ip, prob := normalizeHost(s)
	switch {
	case ip.IsValid():
		return "", false, "IP literal: use cidr: " + hostPrefix(ip).String()
	case prob != hostOK:
		return "", false, prob.String()
	}
	return name, false, ""
}

// hostPortLike reports whether s looks like name:port (one colon, digits
// after it), as opposed to an IPv6 address.
func hostPortLike(s string) bool {
	i := strings.IndexByte(s, ':')
	if i < 0 || strings.Count(s, ":") != 1 || i == len(s)-1 {
		return false
	}
	for _, c := range s[i+1:] {
		if c < '0' || c > '9' {
			return false
		}
	}
	return true
}

// hostPrefix is the single-address prefix of ip (/32 or /128).
func hostPrefix(ip netip.Addr) netip.Prefix {
	p, _ := ip.Prefix(ip.BitLen())
	return p
}

// parseCIDR validates a cidr: (or networks:) entry. It insists on the
// canonical form so that what the user reads is what is granted.
func parseCIDR(s string) (netip.Prefix, string) {
	if s == "" {
		return netip.Prefix{}, "empty cidr"
	}
	if !strings.Contains(s, "/") {
		if ip, err := netip.ParseAddr(s); err == nil {
			return netip.Prefix{}, fmt.Sprintf("missing prefix length (for one address write %s)", hostPrefix(ip.Unmap()))
		}
		return netip.Prefix{}, fmt.Sprintf("%q is not a CIDR such as 203.0.113.0/24", s)
	}
	p, err := netip.ParsePrefix(s)
	if err != nil {
		return netip.Prefix{}, fmt.Sprintf("%q is not a CIDR such as 203.0.113.0/24", s)
	}
	if p.Addr().Is4In6() {
		return netip.Prefix{}, fmt.Sprintf("%q: write IPv4-mapped ranges in IPv4 form", s)
	}
	if m := p.Masked(); m != p {
		return netip.Prefix{}, fmt.Sprintf("%q has host bits set; did you mean %s?", s, m)
	}
	return p, ""
}
