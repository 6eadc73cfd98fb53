package policy

import (
	"strconv"
	"strings"
)

// qtypeCodes are the DNS RR types dns.qtypes may name, with their wire
// codes (IANA "Resource Record (RR) TYPEs"). Kept here, not imported from
// miekg/dns, so the policy package stays free of DNS libraries.
var qtypeCodes = map[string]uint16{
	"A":      1,
	"NS":     2,
	"CNAME":  5,
	"SOA":    6,
	"NULL":   10,
	"PTR":    12,
	"HINFO":  13,
	"MX":     15,
	"TXT":    16,
	"AAAA":   28,
	"SRV":    33,
	"NAPTR":  35,
	"DS":     43,
	"SSHFP":  44,
	"RRSIG":  46,
	"DNSKEY": 48,
	"TLSA":   52,
	"SVCB":   64,
	"HTTPS":  65,
	"SPF":    99,
	"ANY":    255,
	"CAA":    257,
}

// ParseQType turns a type name (case-insensitive) or the RFC 3597 generic
// form TYPE<n> into its wire code.
func ParseQType(s string) (uint16, bool) {
	u := strings.ToUpper(strings.TrimSpace(s))
	if t, ok := qtypeCodes[u]; ok {
		return t, true
	}
	if n, ok := strings.CutPrefix(u, "TYPE"); ok {
		v, err := strconv.ParseUint(n, 10, 16)
		if err == nil && v > 0 {
			return uint16(v), true
		}
	}
	return 0, false
}
