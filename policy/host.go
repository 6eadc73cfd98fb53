package policy

import (
	"errors"
	"fmt"
	"net/netip"
	"strings"

	"golang.org/x/net/idna"
)

// ErrBadHost is wrapped by every NormalizeHost error.
var ErrBadHost = errors.New("bad host")

// hostProblem says what is wrong with a host. It is a small enum rather than
// an error so the Decide hot path can report it without allocating.
type hostProblem uint8

const (
	hostOK hostProblem = iota
	hostEmpty
	hostTooLong
	hostLabelTooLong
	hostEmptyLabel
	hostBadChar
	hostHyphen
	hostBadIPLiteral // looks like an IP address (numeric last label) but is not one
	hostZone
	hostIDN
	hostBadIPv6  // has ':' or brackets but is not an IPv6 address
	hostWithPort // name:port where a host alone was expected
)

var hostProblemText = [...]string{
	hostOK:           "ok",
	hostEmpty:        "empty host",
	hostTooLong:      "name longer than 253 characters",
	hostLabelTooLong: "label longer than 63 characters",
	hostEmptyLabel:   "empty label",
	hostBadChar:      "invalid character (letters, digits, '-' and '_' only)",
	hostHyphen:       "label starts or ends with '-'",
	hostBadIPLiteral: "numeric last label: not a valid IP address and never looked up as a name",
	hostZone:         "IPv6 zone not allowed",
	hostIDN:          "invalid internationalised name",
	hostBadIPv6:      "not a valid IPv6 address",
	hostWithPort:     "contains a port; give the host alone",
}

func (p hostProblem) String() string { return hostProblemText[p] }

// idnaProfile converts internationalised names to their ASCII (punycode)
// form. It is the UTS #46 non-transitional lookup mapping (what browsers do)
// with hyphen, joiner, bidi and DNS length checks on. STD3 rules stay off
// because labels like _dmarc are legal in DNS; our own label check below
// enforces the character set on the result.
var idnaProfile = idna.New(
	idna.MapForLookup(),
	idna.StrictDomainName(false),
	idna.Transitional(false),
	idna.BidiRule(),
	idna.CheckHyphens(true),
	idna.CheckJoiners(true),
	idna.VerifyDNSLength(true),
)

// NormalizeHost turns a host as a client wrote it into either a canonical
// name (lowercase ASCII, punycode for IDN, no trailing dot) or an IP address.
//
// IP literals are recognised in every spelling the C library's inet_aton
// accepts (dotted quad, a single 32-bit integer, octal and hex parts, short
// forms like 127.1) plus IPv6 with or without brackets; IPv4-mapped IPv6 is
// unmapped. Any name whose last label is numeric (all digits, or 0x and hex
// digits) is treated as an attempted IP literal: if it does not parse, it is
// an error rather than a name, so it is never looked up. Zones, '%' (percent
// encoding), ports, spaces and other punctuation are errors wrapping
// ErrBadHost.
func NormalizeHost(s string) (name string, ip netip.Addr, err error) {
	name, ip, prob := normalizeHost(s)
	if prob != hostOK {
		return "", netip.Addr{}, fmt.Errorf("%w %q: %s", ErrBadHost, s, prob)
	}
	return name, ip, nil
}

// normalizeHost is NormalizeHost without the error value. It does not
// allocate when s is already canonical (lowercase ASCII, optionally with one
// trailing dot) or an IP literal: the ASCII check runs first and only a
// failure pays for looking at case and Unicode.
func normalizeHost(s string) (string, netip.Addr, hostProblem) {
	name, ip, prob := normalizeASCII(s)
	if prob != hostOK && needsMapping(s) {
		m, mprob := mapHost(s)
		if mprob != hostOK {
			return "", netip.Addr{}, mprob
		}
		return normalizeASCII(m)
	}
	return name, ip, prob
}

func normalizeASCII(s string) (string, netip.Addr, hostProblem) {
	if s == "" {
		return "", netip.Addr{}, hostEmpty
	}
	if s[0] == '[' {
		return parseIPv6Literal(s)
	}
	if s[len(s)-1] == '.' {
		s = s[:len(s)-1] // the root label; "a.." still fails below
		if s == "" {
			return "", netip.Addr{}, hostEmpty
		}
	}
	numeric, puny, prob := checkLabels(s)
	if prob == hostBadChar && strings.IndexByte(s, ':') >= 0 {
		return parseIPv6Literal(s)
	}
	if prob == hostTooLong || prob == hostLabelTooLong {
		// inet_aton ignores length: 300 zeros are 0.0.0.0, an address.
		if ip, ok := parseInetAton(s); ok {
			return "", ip, hostOK
		}
	}
	if prob != hostOK {
		return "", netip.Addr{}, prob
	}
	if numeric {
		ip, ok := parseInetAton(s)
		if !ok {
			return "", netip.Addr{}, hostBadIPLiteral
		}
		return "", ip, hostOK
	}
	if puny && !validPunycode(s) {
		return "", netip.Addr{}, hostIDN
	}
	return s, netip.Addr{}, hostOK
}

// needsMapping reports whether s has upper case or non-ASCII bytes.
func needsMapping(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c >= 0x80 || ('A' <= c && c <= 'Z') {
			return true
		}
	}
	return false
}

// mapHost lowercases s and, when it is not ASCII, converts it to punycode.
// The result is classified again by the caller, so a full-width
// "１２７．０．０．１" becomes the IP literal 127.0.0.1, not a name.
func mapHost(s string) (string, hostProblem) {
	ascii := true
	for i := 0; i < len(s); i++ {
		if s[i] >= 0x80 {
			ascii = false
			break
		}
	}
	if ascii {
		return strings.ToLower(s), hostOK
	}
	trailing := strings.HasSuffix(s, ".")
	m, err := idnaProfile.ToASCII(strings.TrimSuffix(s, "."))
	if err != nil || m == "" {
		return "", hostIDN
	}
	if trailing {
		m += "."
	}
	return strings.ToLower(m), hostOK
}

// validPunycode checks xn-- labels decode to a valid IDN, so an invalid
// A-label is rejected rather than passed to a resolver.
func validPunycode(s string) bool {
	m, err := idnaProfile.ToASCII(s)
	return err == nil && m == s
}

// labelChar marks the bytes allowed in a canonical label.
var labelChar = func() (t [256]bool) {
	for c := 'a'; c <= 'z'; c++ {
		t[c] = true
	}
	for c := '0'; c <= '9'; c++ {
		t[c] = true
	}
	t['-'], t['_'] = true, true
	return t
}()

// checkLabels validates a dotted ASCII name without allocating and reports
// whether the last label is numeric (an attempted IP literal) and whether
// any label is an A-label (xn--).
func checkLabels(s string) (numericLast, puny bool, prob hostProblem) {
	if len(s) > 253 {
		return false, false, hostTooLong
	}
	start := 0
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c != '.' {
			if !labelChar[c] {
				return false, false, hostBadChar
			}
			continue
		}
		if prob := checkLabel(s[start:i]); prob != hostOK {
			return false, false, prob
		}
		puny = puny || isALabel(s[start:i])
		start = i + 1
	}
	if prob := checkLabel(s[start:]); prob != hostOK {
		return false, false, prob
	}
	puny = puny || isALabel(s[start:])
	return numericLabel(s[start:]), puny, hostOK
}

// checkLabel checks the length and hyphens of one label.
func checkLabel(label string) hostProblem {
	switch {
	case label == "":
		return hostEmptyLabel
	case len(label) > 63:
		return hostLabelTooLong
	case label[0] == '-' || label[len(label)-1] == '-':
		return hostHyphen
	}
	return hostOK
}

func isALabel(label string) bool { return len(label) >= 4 && label[:4] == "xn--" }

// numericLabel reports whether a label is all digits or 0x followed by hex
// digits: the shapes inet_aton parses as a number.
func numericLabel(l string) bool {
	if len(l) >= 2 && l[0] == '0' && (l[1] == 'x' || l[1] == 'X') {
		for i := 2; i < len(l); i++ {
			if !isHex(l[i]) {
				return false
			}
		}
		return true
	}
	for i := 0; i < len(l); i++ {
		if l[i] < '0' || l[i] > '9' {
			return false
		}
	}
	return len(l) > 0
}

func isHex(c byte) bool {
	return '0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F'
}

// parseIPv6Literal parses "[v6]" or a bare IPv6 address.
func parseIPv6Literal(s string) (string, netip.Addr, hostProblem) {
	if hostPortLike(s) || (s[0] == '[' && strings.Contains(s, "]:")) {
		return "", netip.Addr{}, hostWithPort
	}
	if s[0] == '[' {
		if len(s) < 2 || s[len(s)-1] != ']' {
			return "", netip.Addr{}, hostBadIPv6
		}
		s = s[1 : len(s)-1]
	}
	if strings.IndexByte(s, '%') >= 0 {
		return "", netip.Addr{}, hostZone
	}
	ip, err := netip.ParseAddr(s)
	if err != nil || !ip.Is6() {
		return "", netip.Addr{}, hostBadIPv6
	}
	return "", ip.Unmap(), hostOK
}

// parseInetAton parses IPv4 the way the C library's inet_aton does: one to
// four parts separated by dots, each decimal, octal (leading 0) or hex (0x);
// the last part fills all remaining bytes (so 127.1 is 127.0.0.1 and
// 2130706433 is 127.0.0.1). It never allocates.
func parseInetAton(s string) (netip.Addr, bool) {
	var parts [4]uint32
	n := 0
	for {
		if n == 4 {
			return netip.Addr{}, false
		}
		v, rest, ok := parseAtonPart(s)
		if !ok {
			return netip.Addr{}, false
		}
		parts[n] = v
		n++
		if rest == "" {
			break
		}
		if rest[0] != '.' {
			return netip.Addr{}, false
		}
		s = rest[1:]
	}
	for i := 0; i < n-1; i++ {
		if parts[i] > 0xff {
			return netip.Addr{}, false
		}
	}
	last := parts[n-1]
	shift := uint(8 * (n - 1))
	if shift > 0 && last > 0xffffffff>>shift {
		return netip.Addr{}, false
	}
	var v uint32
	for i := 0; i < n-1; i++ {
		v |= parts[i] << (24 - 8*uint(i))
	}
	v |= last
	return netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)}), true
}

// parseAtonPart parses one number at the start of s and returns the rest.
func parseAtonPart(s string) (uint32, string, bool) {
	if s == "" || s[0] < '0' || s[0] > '9' {
		return 0, "", false
	}
	base := uint64(10)
	i := 0
	digits := 0
	if s[0] == '0' {
		if len(s) > 1 && (s[1] == 'x' || s[1] == 'X') {
			base, i = 16, 2
		} else {
			base, i, digits = 8, 1, 1
		}
	}
	var v uint64
	for ; i < len(s); i++ {
		c := s[i]
		var d uint64
		switch {
		case '0' <= c && c <= '9':
			d = uint64(c - '0')
		case base == 16 && 'a' <= c && c <= 'f':
			d = uint64(c-'a') + 10
		case base == 16 && 'A' <= c && c <= 'F':
			d = uint64(c-'A') + 10
		default:
			d = 99
		}
		if d == 99 {
			break
		}
		if d >= base {
			return 0, "", false // 8 or 9 in an octal part
		}
		v = v*base + d
		if v > 0xffffffff {
			return 0, "", false
		}
		digits++
	}
	if digits == 0 {
		return 0, "", false // "0x" with no hex digits
	}
	return uint32(v), s[i:], true
}
