// Package suggest owns `egressd suggest`: it reads denials and would-denies
// from the decision log and proposes allow: entries (and apis: route rules)
// for a person to review.
// It never edits the policy; granting stays a deliberate act. Host names in
// the log come from the adversarial agent, so only well-formed DNS names and
// IP addresses are ever proposed, always quoted.
package suggest

import (
	"cmp"
	"maps"
	"net/netip"
	"slices"
	"time"

	"github.com/egressd/egressd/internal/shared/vocab"

	"golang.org/x/net/publicsuffix"

	"github.com/egressd/egressd/internal/shared/declog"
)

// Kind says what a suggestion grants.
type Kind uint8

// Kinds of suggestion.
const (
	KindHost  Kind = iota // a host (or *.parent) that no rule grants
	KindPorts             // a host already granted, on ports it is not granted
	KindCIDR              // an IP-literal target

	kindRoute // a gateway route name: never suggested
)

// MinWildcard is how many distinct subdomains must have been seen before
// they are folded into one *.parent suggestion.
const MinWildcard = 3

// DefaultMaxNames bounds the distinct targets a Collector tracks: a log full
// of random names (DNS exfiltration attempts) costs bounded memory.
const DefaultMaxNames = 100000

// Suggestion is one proposed allow: entry.
type Suggestion struct {
	Kind      Kind
	Host      string    // exact name or "*.parent" (KindHost, KindPorts)
	CIDR      string    // "203.0.113.7/32" (KindCIDR)
	Ports     []uint16  // ports to grant (KindPorts: to add); nil when the default (443) covers what was seen
	Count     int       // denials and would-denies this would have allowed
	Denied    int       // of Count, enforced denials
	WouldDeny int       // of Count, report-mode would-denies
	FirstSeen time.Time //
	LastSeen  time.Time //
	Names     []string  // wildcards, and KindPorts sharing one rule: the distinct names seen, sorted
	Rule      string    // KindPorts: the rule that grants the host on other ports
}

// Report is what Print shows: the suggestions and what was left out.
type Report struct {
	Since       time.Time      // zero = the whole log
	Considered  int            // grantable denials read
	Skipped     int            // grantable reason, but a target that is not a proper name or address
	Ungrantable map[string]int // denials by reason that no allow: entry can fix (private_address ...)
	Unsuggested []Unsuggested  // grantable reason, but a target no one should grant, and why
	Suggestions []Suggestion
	Routes      []RouteSuggestion // apis: rules for path_not_allowed denials
}

type key struct {
	kind Kind
	name string // host name, or canonical address for KindCIDR
}

type agg struct {
	count, denied, would int
	first, last          time.Time
	ports                map[uint16]struct{}
	rule                 string
}

// Collector accumulates entries one at a time, so a large log is never held
// in memory. The zero value is not usable; call NewCollector.
type Collector struct {
	since    time.Time
	maxNames int
	aggs     map[key]*agg
	unsug    map[unsuggestedKey]int
	self     []netip.Addr
	routes   map[routeKey]*RouteSuggestion
	rep      Report
}

// NewCollector returns a Collector that ignores entries before since (zero
// = none ignored).
func NewCollector(since time.Time) *Collector {
	return &Collector{
		since:    since,
		maxNames: DefaultMaxNames,
		aggs:     make(map[key]*agg),
		unsug:    make(map[unsuggestedKey]int),
		rep:      Report{Since: since, Ungrantable: make(map[string]int)},
	}
}

// Suggest is the one-shot form: the suggestions for entries since since,
// most frequent first.
func Suggest(entries []declog.Entry, since time.Time) []Suggestion {
	c := NewCollector(since)
	for _, e := range entries {
		c.Add(e)
	}
	return c.Report().Suggestions
}

// Add counts e if it is a denial or would-deny (or a summary of folded
// ones) at or after since.
func (c *Collector) Add(e declog.Entry) {
	if (e.Event != vocab.EventDecision && e.Event != vocab.EventSummary) || e.Verdict == vocab.Allow {
		return
	}
	if !c.since.IsZero() && e.Time.Before(c.since) {
		return
	}
	if e.Event == vocab.EventSummary && e.Host == "*" && len(e.Hosts) > 0 {
		c.addFolded(e)
		return
	}
	n := 1
	if e.Event == vocab.EventSummary {
		n = e.Count
	}
	if n <= 0 {
		return
	}
	if e.Reason == vocab.ReasonPathNotAllowed {
		c.addRoute(e, n)
		return
	}
	k, ok, grantable := c.keyOf(e, n)
	if !grantable {
		return
	}
	c.rep.Considered += n
	if !ok {
		c.rep.Skipped += n
		return
	}
	if why := c.whyNot(k); why != "" {
		target := k.name
		if e.Proto == vocab.ProtoGateway {
			target = "/" + k.name + "/"
		}
		c.unsuggest(target, why, n)
		return
	}
	a := c.aggs[k]
	if a == nil {
		if len(c.aggs) >= c.maxNames {
			c.rep.Skipped += n
			return
		}
		a = &agg{first: e.Time, last: e.Time, ports: make(map[uint16]struct{})}
		c.aggs[k] = a
	}
	a.add(e, n)
}

// keyOf is what e would be suggested under. grantable is false for
// reasons no allow: entry can fix (counted in Ungrantable); ok is false
// for targets that are not a proper name or address.
func (c *Collector) keyOf(e declog.Entry, n int) (k key, ok, grantable bool) {
	switch {
	case e.Proto == vocab.ProtoGateway && e.Reason == vocab.ReasonNotAllowlisted:
		// An unknown gateway route: its name is a path segment, not a host.
		k.kind, k.name, ok = kindRoute, declog.Sanitize(e.Host), e.Host != ""
	case e.Reason == vocab.ReasonNotAllowlisted:
		k.kind = KindHost
		k.name, ok = hostName(e.Host)
	case e.Reason == vocab.ReasonPortNotAllowed:
		// The host or address is granted by an entry, on other ports.
		k.kind = KindPorts
		if k.name, ok = hostName(e.Host); !ok {
			k.name, ok = address(e.Host)
		}
	case e.Reason == vocab.ReasonIPLiteralNotAllowed:
		k.kind = KindCIDR
		k.name, ok = address(e.Host)
	default:
		c.rep.Ungrantable[e.Reason.String()] += n
		return k, false, false
	}
	return k, ok, true
}

// whyNot is why k is not suggested, or "".
func (c *Collector) whyNot(k key) string {
	switch k.kind {
	case kindRoute:
		return whyRoute
	case KindHost:
		return nameWhyNot(k.name)
	case KindCIDR:
		return c.addrWhyNot(netip.MustParseAddr(k.name)) // canonical by construction in address
	}
	return ""
}

// addFolded spreads an overflow summary (host "*") over the hosts it
// samples, one denial each, so a target hidden in a flood still gets its
// suggestion; the rest of the count names no host and is skipped.
func (c *Collector) addFolded(e declog.Entry) {
	for _, h := range e.Hosts {
		one := e
		one.Event, one.Host, one.Hosts, one.Count = vocab.EventDecision, h, nil, 0
		c.Add(one)
	}
	if rest := e.Count - len(e.Hosts); rest > 0 {
		c.rep.Considered += rest
		c.rep.Skipped += rest
	}
}

func (a *agg) add(e declog.Entry, n int) {
	a.count += n
	if e.Verdict == vocab.Report {
		a.would += n
	} else {
		a.denied += n
	}
	if e.Time.Before(a.first) {
		a.first = e.Time
	}
	if e.Time.After(a.last) {
		a.last = e.Time
	}
	// DNS asks carry no port; the grant they need is the host alone.
	if e.Proto != vocab.ProtoDNS && e.Port != 0 {
		a.ports[e.Port] = struct{}{}
	}
	if e.Rule != "" {
		a.rule = e.Rule
	}
}

// Report returns the suggestions so far, most frequent first, with
// subdomains grouped where that is the honest reading.
func (c *Collector) Report() Report {
	rep := c.rep
	rep.Ungrantable = maps.Clone(c.rep.Ungrantable)
	rep.Unsuggested = c.unsuggested()
	rep.Suggestions = nil
	hosts := make(map[string]*agg)
	ports := make(map[string]*agg)
	for k, a := range c.aggs {
		switch k.kind {
		case KindHost:
			hosts[k.name] = a
		case KindPorts:
			ports[k.name] = a
		case KindCIDR:
			s := a.suggestion(KindCIDR, "")
			s.CIDR = cidrOf(k.name)
			rep.Suggestions = append(rep.Suggestions, s)
		}
	}
	rep.Suggestions = append(rep.Suggestions, groupHosts(hosts)...)
	rep.Suggestions = append(rep.Suggestions, mergePorts(ports)...)
	rep.Routes = c.routeReport()
	slices.SortFunc(rep.Suggestions, func(a, b Suggestion) int {
		return cmp.Or(
			cmp.Compare(b.Count, a.Count),
			b.LastSeen.Compare(a.LastSeen),
			cmp.Compare(a.Host+a.CIDR, b.Host+b.CIDR),
			cmp.Compare(a.Kind, b.Kind),
		)
	})
	return rep
}

func (a *agg) suggestion(kind Kind, host string) Suggestion {
	return Suggestion{
		Kind: kind, Host: host, Count: a.count, Denied: a.denied, WouldDeny: a.would,
		FirstSeen: a.first, LastSeen: a.last, Rule: a.rule,
	}
}

// groupHosts proposes one entry per host, except that MinWildcard or more
// distinct subdomains under one registrable domain become a single
// "*.base" entry, base being the longest parent they all share. The
// registrable domain comes from the public suffix list, so the wildcard is
// never "*.com" or "*.co.uk", nor "*.github.io" across separate owners.
func groupHosts(hosts map[string]*agg) []Suggestion {
	byParent := make(map[string][]string)
	var out []Suggestion
	for name, a := range hosts {
		parent, err := publicsuffix.EffectiveTLDPlusOne(name)
		if err != nil || parent == name {
			out = append(out, single(name, a))
			continue
		}
		byParent[parent] = append(byParent[parent], name)
	}
	for parent, names := range byParent {
		if len(names) < MinWildcard {
			for _, n := range names {
				out = append(out, single(n, hosts[n]))
			}
			continue
		}
		slices.Sort(names)
		base := commonParent(names, parent)
		w := Suggestion{Kind: KindHost, Host: "*." + base, Names: names}
		ports := make(map[uint16]struct{})
		for i, n := range names {
			a := hosts[n]
			w.Count += a.count
			w.Denied += a.denied
			w.WouldDeny += a.would
			if i == 0 || a.first.Before(w.FirstSeen) {
				w.FirstSeen = a.first
			}
			if a.last.After(w.LastSeen) {
				w.LastSeen = a.last
			}
			maps.Copy(ports, a.ports)
		}
		w.Ports = defaultablePorts(ports)
		out = append(out, w)
	}
	return out
}

func single(name string, a *agg) Suggestion {
	s := a.suggestion(KindHost, name)
	s.Ports = defaultablePorts(a.ports)
	return s
}

// defaultablePorts is nil when 443 (the default grant) covers everything
// seen, else the sorted ports.
func defaultablePorts(ports map[uint16]struct{}) []uint16 {
	if _, ok := ports[443]; len(ports) == 0 || (len(ports) == 1 && ok) {
		return nil
	}
	return sortedPorts(ports)
}

func sortedPorts(ports map[uint16]struct{}) []uint16 {
	return slices.Sorted(maps.Keys(ports))
}
