package policy

import (
	"net/netip"
	"slices"

	"github.com/egressd/egressd/internal/shared/vocab"
)

// Class is what kind of address an IP is, as far as egress is concerned.
type Class uint8

// Address classes. Everything but ClassPublic is denied by CheckAddr unless
// networks.allow grants it, and ClassMetadata can never be granted.
const (
	ClassInvalid       Class = iota // the zero netip.Addr
	ClassPublic                     // globally routable unicast
	ClassPrivate                    // RFC 1918, fc00::/7 ULA, fec0::/10 site-local, 64:ff9b:1::/48 local NAT64
	ClassShared                     // 100.64.0.0/10 carrier-grade NAT
	ClassLoopback                   // 127.0.0.0/8, ::1
	ClassUnspecified                // 0.0.0.0/8 "this network", ::
	ClassLinkLocal                  // 169.254.0.0/16, fe80::/10
	ClassMetadata                   // cloud instance metadata endpoints
	ClassMulticast                  // 224.0.0.0/4, ff00::/8
	ClassBroadcast                  // 255.255.255.255
	ClassReserved                   // 240.0.0.0/4, 192.0.0.0/24, 198.18.0.0/15, 192.88.99.0/24, 100::/64
	ClassDocumentation              // 192.0.2.0/24, 198.51.100.0/24, 203.0.113.0/24, 2001:db8::/32
	ClassNonGlobal                  // IPv6 outside 2000::/3 and not listed above
)

var classNames = [...]string{
	ClassInvalid:       "invalid",
	ClassPublic:        "public",
	ClassPrivate:       "private",
	ClassShared:        "shared",
	ClassLoopback:      "loopback",
	ClassUnspecified:   "unspecified",
	ClassLinkLocal:     "link_local",
	ClassMetadata:      "metadata",
	ClassMulticast:     "multicast",
	ClassBroadcast:     "broadcast",
	ClassReserved:      "reserved",
	ClassDocumentation: "documentation",
	ClassNonGlobal:     "non_global",
}

func (c Class) String() string {
	if int(c) < len(classNames) {
		return classNames[c]
	}
	return "unknown"
}

// Special reports whether the class is anything but public.
func (c Class) Special() bool { return c != ClassPublic }

// Classify says what kind of address a is. IPv4-mapped addresses are
// unmapped first, and IPv6 forms that embed an IPv4 address (IPv4-compatible
// ::/96, NAT64 64:ff9b::/96 and 64:ff9b:1::/48, 6to4 2002::/16, Teredo
// 2001::/32 whose client address is the bitwise NOT of the last 32 bits) are
// classified by the embedded address, because that is where the packets end
// up. Pure and allocation free.
func Classify(a netip.Addr) Class {
	if !a.IsValid() {
		return ClassInvalid
	}
	a = a.Unmap()
	if a.Is4() {
		return classify4(a.As4())
	}
	return classify6(a.As16())
}

func classify4(b [4]byte) Class {
	switch {
	case isMetadata4(b):
		return ClassMetadata
	case b[0] == 0:
		return ClassUnspecified
	case b[0] == 10, b[0] == 172 && b[1]&0xf0 == 16, b[0] == 192 && b[1] == 168:
		return ClassPrivate
	case b[0] == 100 && b[1]&0xc0 == 64:
		return ClassShared
	case b[0] == 127:
		return ClassLoopback
	case b[0] == 169 && b[1] == 254:
		return ClassLinkLocal
	case b[0] == 192 && b[1] == 0 && b[2] == 0,
		b[0] == 192 && b[1] == 88 && b[2] == 99,
		b[0] == 198 && b[1]&0xfe == 18:
		return ClassReserved
	case b[0] == 192 && b[1] == 0 && b[2] == 2,
		b[0] == 198 && b[1] == 51 && b[2] == 100,
		b[0] == 203 && b[1] == 0 && b[2] == 113:
		return ClassDocumentation
	case b[0]&0xf0 == 224:
		return ClassMulticast
	case b == [4]byte{255, 255, 255, 255}:
		return ClassBroadcast
	case b[0]&0xf0 == 240:
		return ClassReserved
	}
	return ClassPublic
}

func classify6(b [16]byte) Class {
	if v4, kind := embedded4(b); kind != embedNone {
		c := classify4(v4)
		if kind == embedLocalNAT64 && c == ClassPublic {
			return ClassPrivate // local-use NAT64 prefix: not global by definition
		}
		return c
	}
	switch {
	case isMetadata6(b):
		return ClassMetadata
	case b[0]&0xfe == 0xfc:
		return ClassPrivate
	case b[0] == 0xfe && b[1]&0xc0 == 0x80:
		return ClassLinkLocal
	case b[0] == 0xfe && b[1]&0xc0 == 0xc0:
		return ClassPrivate // deprecated site-local, still routed on some LANs
	case b[0] == 0xff:
		return ClassMulticast
	case b[0] == 0x20 && b[1] == 0x01 && b[2] == 0x0d && b[3] == 0xb8:
		return ClassDocumentation
	case b[0] == 0x01 && b[1] == 0 && [6]byte(b[2:8]) == [6]byte{}:
		return ClassReserved // 100::/64 discard-only
	case b[0]&0xe0 != 0x20:
		return ClassNonGlobal
	}
	return ClassPublic
}

type embedKind uint8

const (
	embedNone embedKind = iota
	embedCompat
	embedNAT64
	embedLocalNAT64
	embed6to4
	embedTeredo
)

// embedded4 extracts the IPv4 address an IPv6 address carries, if any.
// :: and ::1 sit inside the IPv4-compatible ::/96 but mean unspecified and
// loopback, so they map to 0.0.0.0 and 127.0.0.1 to classify as such.
func embedded4(b [16]byte) ([4]byte, embedKind) {
	last := [4]byte(b[12:16])
	switch {
	case [12]byte(b[:12]) == [12]byte{}:
		switch last {
		case [4]byte{}:
			return [4]byte{0, 0, 0, 0}, embedCompat // :: → 0.0.0.0, unspecified
		case [4]byte{0, 0, 0, 1}:
			return [4]byte{127, 0, 0, 1}, embedCompat // ::1 is loopback, not 0.0.0.1
		}
		return last, embedCompat
	case [12]byte(b[:12]) == [12]byte{0x00, 0x64, 0xff, 0x9b}:
		return last, embedNAT64
	case [6]byte(b[:6]) == [6]byte{0x00, 0x64, 0xff, 0x9b, 0x00, 0x01}:
		return last, embedLocalNAT64
	case b[0] == 0x20 && b[1] == 0x02:
		return [4]byte(b[2:6]), embed6to4
	case [4]byte(b[:4]) == [4]byte{0x20, 0x01, 0x00, 0x00}:
		return [4]byte{^last[0], ^last[1], ^last[2], ^last[3]}, embedTeredo
	}
	return [4]byte{}, embedNone
}

// Embedded4 returns the IPv4 address embedded in an IPv6 address in one of
// the forms Classify understands (including IPv4-mapped), or false.
func Embedded4(a netip.Addr) (netip.Addr, bool) {
	if !a.IsValid() || a.Is4() {
		return netip.Addr{}, false
	}
	if a.Is4In6() {
		return a.Unmap(), true
	}
	v4, kind := embedded4(a.As16())
	if kind == embedNone {
		return netip.Addr{}, false
	}
	return netip.AddrFrom4(v4), true
}

// CheckAddr classifies an address egressd is about to dial (or that DNS is
// about to answer). In order: invalid addresses are bad_request; metadata
// addresses are metadata_address, always; an address in networks.deny (or
// whose embedded IPv4 address is) is denied_network; any other special
// address is private_address unless networks.allow contains it, in which
// case it is allowed with reason allowlisted; public addresses are allowed
// with ReasonNone. Mode report never relaxes this check. No allocation.
func (p *Policy) CheckAddr(addr netip.Addr) Decision {
	a := addr.Unmap().WithZone("")
	c := Classify(a)
	switch c {
	case ClassInvalid:
		return Decision{Verdict: vocab.Deny, Reason: vocab.ReasonBadRequest}
	case ClassMetadata:
		return Decision{Verdict: vocab.Deny, Reason: vocab.ReasonMetadataAddress}
	}
	if p.netDeny.contains(a) {
		return Decision{Verdict: vocab.Deny, Reason: vocab.ReasonDeniedNetwork}
	}
	if a.Is6() && p.netDeny.len() > 0 {
		if v4, kind := embedded4(a.As16()); kind != embedNone && p.netDeny.contains(netip.AddrFrom4(v4)) {
			return Decision{Verdict: vocab.Deny, Reason: vocab.ReasonDeniedNetwork}
		}
	}
	if c != ClassPublic {
		if p.netAllow.contains(a) {
			return Decision{Verdict: vocab.Allow, Reason: vocab.ReasonAllowlisted}
		}
		return Decision{Verdict: vocab.Deny, Reason: vocab.ReasonPrivateAddress}
	}
	return Decision{Verdict: vocab.Allow, Reason: vocab.ReasonNone}
}

// prefixTable maps prefixes to values and finds the longest prefix that
// contains an address with one map lookup per distinct prefix length, so
// lookups cost O(distinct lengths), not O(entries).
type prefixTable[V any] struct {
	m      map[netip.Prefix]V
	lens4  []int // distinct IPv4 prefix lengths, longest first
	lens6  []int
	values int
}

// add inserts p (which must be masked); it reports false on a duplicate.
func (t *prefixTable[V]) add(p netip.Prefix, v V) bool {
	if t.m == nil {
		t.m = make(map[netip.Prefix]V)
	}
	if _, dup := t.m[p]; dup {
		return false
	}
	t.m[p] = v
	t.values++
	lens := &t.lens6
	if p.Addr().Is4() {
		lens = &t.lens4
	}
	if !slices.Contains(*lens, p.Bits()) {
		*lens = append(*lens, p.Bits())
		slices.Sort(*lens)
		slices.Reverse(*lens)
	}
	return true
}

func (t *prefixTable[V]) len() int { return t.values }

func (t *prefixTable[V]) lensFor(a netip.Addr) []int {
	if a.Is4() {
		return t.lens4
	}
	return t.lens6
}

// longest returns the value of the longest prefix containing a.
func (t *prefixTable[V]) longest(a netip.Addr) (V, bool) {
	for _, l := range t.lensFor(a) {
		p, _ := a.Prefix(l)
		if v, ok := t.m[p]; ok {
			return v, true
		}
	}
	var zero V
	return zero, false
}

func (t *prefixTable[V]) contains(a netip.Addr) bool {
	_, ok := t.longest(a)
	return ok
}

// Cloud metadata and credential endpoints: never dialed, never answered,
// whatever networks.allow says. One list feeds both the classifier and
// the networks.allow check.
var (
	metadata4 = [...][4]byte{
		{169, 254, 169, 254}, // AWS, GCP, Azure, OpenStack, Oracle, DigitalOcean IMDS
		{169, 254, 170, 2},   // AWS ECS task credentials
		{169, 254, 170, 23},  // AWS EKS pod identity agent
		{169, 254, 0, 23},    // Tencent Cloud
		{100, 100, 100, 200}, // Alibaba Cloud
		{168, 63, 129, 16},   // Azure WireServer (public space, still metadata)
	}
	metadata6 = [...][16]byte{
		{0xfd, 0x00, 0x0e, 0xc2, 14: 0x02, 15: 0x54}, // fd00:ec2::254, AWS IMDS over IPv6
		{0xfd, 0x00, 0x0e, 0xc2, 15: 0x23},           // fd00:ec2::23, AWS EKS pod identity
	}
)

func isMetadata4(b [4]byte) bool {
	for _, m := range metadata4 {
		if b == m {
			return true
		}
	}
	return false
}

func isMetadata6(b [16]byte) bool {
	for _, m := range metadata6 {
		if b == m {
			return true
		}
	}
	return false
}

// metadataAddrs lists every metadata address, for messages and checks.
func metadataAddrs() []netip.Addr {
	out := make([]netip.Addr, 0, len(metadata4)+len(metadata6))
	for _, m := range metadata4 {
		out = append(out, netip.AddrFrom4(m))
	}
	for _, m := range metadata6 {
		out = append(out, netip.AddrFrom16(m))
	}
	return out
}
