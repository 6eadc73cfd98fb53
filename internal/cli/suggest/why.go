package suggest

import (
	"cmp"
	"net/netip"
	"slices"
	"strings"

	"github.com/egressd/egressd/policy"
)

// Unsuggested is a denied target no allow: entry should be proposed for,
// and why: a person would not accept the entry, or the address wall would
// refuse the target anyway.
type Unsuggested struct {
	Target string // as the person would recognise it: a name, an address, "/route/"
	Why    string
	Count  int
}

// Why a target is not suggested.
const (
	whySingleLabel = "a single-label name (a container or host on a local network): egressd resolves public names, and such a name would reach a private address, which allow: cannot grant"
	whyLocalName   = "a local-network name: it resolves to a private or loopback address, which allow: cannot grant"
	whyRoute       = "a gateway route, not a host: routes are providers: entries"
	whyMetadata    = "a cloud metadata address: it can never be granted"
	whySelf        = "egressd's own address: it is never dialed"
)

// localSuffixes are special-use and private-network zones (RFC 6761, RFC
// 8375, ICANN's .internal, mDNS's .local) that never name a public host.
var localSuffixes = []string{"localhost", "local", "internal", "home.arpa", "lan"}

// nameWhyNot is why name is not suggested, or "" when it may be.
func nameWhyNot(name string) string {
	if !strings.Contains(name, ".") {
		return whySingleLabel
	}
	for _, s := range localSuffixes {
		if name == s || strings.HasSuffix(name, "."+s) {
			return whyLocalName
		}
	}
	return ""
}

// addrWhyNot is why the address is not suggested as a cidr: grant: the
// address wall refuses it whatever allow: says.
func (c *Collector) addrWhyNot(a netip.Addr) string {
	if slices.Contains(c.self, a) {
		return whySelf
	}
	switch cl := policy.Classify(a); {
	case cl == policy.ClassMetadata:
		return whyMetadata
	case cl.Special():
		return "a " + cl.String() + " address: allow: alone cannot grant it; only a networks.allow: entry can, and only on purpose"
	}
	return ""
}

// SetSelf names egressd's own addresses, which are never suggested.
func (c *Collector) SetSelf(addrs []netip.Addr) {
	c.self = c.self[:0]
	for _, a := range addrs {
		c.self = append(c.self, a.Unmap())
	}
}

type unsuggestedKey struct{ target, why string }

func (c *Collector) unsuggest(target, why string, n int) {
	k := unsuggestedKey{target, why}
	if _, ok := c.unsug[k]; !ok && len(c.unsug) >= maxUnsuggested {
		c.rep.Skipped += n
		return
	}
	c.unsug[k] += n
}

// maxUnsuggested bounds the distinct unsuggested targets kept.
const maxUnsuggested = 1000

// unsuggested lists the targets not suggested, most frequent first.
func (c *Collector) unsuggested() []Unsuggested {
	var out []Unsuggested
	for k, n := range c.unsug {
		out = append(out, Unsuggested{Target: k.target, Why: k.why, Count: n})
	}
	slices.SortFunc(out, func(a, b Unsuggested) int {
		return cmp.Or(cmp.Compare(b.Count, a.Count), cmp.Compare(a.Target, b.Target))
	})
	return out
}
