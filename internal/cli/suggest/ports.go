package suggest

import (
	"fmt"
	"maps"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"
)

// mergePorts folds port denials into one suggestion per granting rule: the
// fix is to add the ports to that entry, so hosts it grants share it.
func mergePorts(byName map[string]*agg) []Suggestion {
	type group struct {
		s     Suggestion
		ports map[uint16]struct{}
	}
	groups := make(map[string]*group)
	for _, name := range slices.Sorted(maps.Keys(byName)) {
		a := byName[name]
		id := a.rule
		if id == "" {
			id = "\x00" + name // no rule logged: one suggestion per host
		}
		g := groups[id]
		if g == nil {
			g = &group{s: a.suggestion(KindPorts, name), ports: make(map[uint16]struct{})}
			g.s.Count, g.s.Denied, g.s.WouldDeny = 0, 0, 0
			groups[id] = g
		}
		g.s.Count += a.count
		g.s.Denied += a.denied
		g.s.WouldDeny += a.would
		g.s.FirstSeen = minTime(g.s.FirstSeen, a.first)
		if a.last.After(g.s.LastSeen) {
			g.s.LastSeen = a.last
		}
		g.s.Names = append(g.s.Names, name)
		maps.Copy(g.ports, a.ports)
	}
	out := make([]Suggestion, 0, len(groups))
	for _, g := range groups {
		g.s.Ports = sortedPorts(g.ports)
		if len(g.s.Names) == 1 {
			g.s.Names = nil
		}
		out = append(out, g.s)
	}
	return out
}

// grantRule is an allow: entry as policy.Rule.String renders it in the log.
type grantRule struct {
	index  string
	target string // `host: "*.github.com"` or `cidr: 203.0.113.0/24`
	ports  []uint16
	rate   string // `{rps: 5, burst: 20}` or ""
}

// ruleRE is deliberately narrow: whatever it accepts is printed as YAML.
var ruleRE = regexp.MustCompile(`^allow\[([0-9]{1,6})\] (host: "[a-z0-9_.*-]{1,253}"|cidr: [0-9a-f.:]{2,45}/[0-9]{1,3}) ports: \[([0-9, ]{1,400})\]( rate: \{rps: [0-9.e+-]{1,24}, burst: [0-9]{1,10}\})?$`)

func parseRule(s string) (grantRule, bool) {
	m := ruleRE.FindStringSubmatch(s)
	if m == nil {
		return grantRule{}, false
	}
	r := grantRule{index: m[1], target: m[2], rate: strings.TrimPrefix(m[4], " rate: ")}
	for p := range strings.SplitSeq(m[3], ", ") {
		n, err := strconv.ParseUint(p, 10, 16)
		if err != nil || n == 0 {
			return grantRule{}, false
		}
		r.ports = append(r.ports, uint16(n))
	}
	return r, true
}

// writePorts proposes the granting entry with the denied ports added, to
// replace it; without a rule it can read, it says what to add where.
func writePorts(b *strings.Builder, s Suggestion) {
	targets := s.Host
	if len(s.Names) > 0 {
		targets = strings.Join(s.Names[:min(len(s.Names), maxNamesShown)], ", ")
		if n := len(s.Names) - maxNamesShown; n > 0 {
			targets += fmt.Sprintf(" and %d more", n)
		}
	}
	r, ok := parseRule(s.Rule)
	if !ok {
		fmt.Fprintf(b, "  # port %s of %s: the entry that grants it on other ports needs %s added to its ports:\n",
			portText(s.Ports), targets, portText(s.Ports))
		return
	}
	merged := make(map[uint16]struct{})
	for _, p := range append(slices.Clone(r.ports), s.Ports...) {
		merged[p] = struct{}{}
	}
	fmt.Fprintf(b, "  # port %s of %s: allow[%s] grants it on other ports; add the port there, so that allow[%s] reads:\n",
		portText(s.Ports), targets, r.index, r.index)
	fmt.Fprintf(b, "  - %s\n    ports: [%s]\n", r.target, portText(sortedPorts(merged)))
	if r.rate != "" {
		fmt.Fprintf(b, "    rate: %s\n", r.rate)
	}
}

func portText(ports []uint16) string {
	ps := make([]string, len(ports))
	for i, p := range ports {
		ps[i] = strconv.Itoa(int(p))
	}
	return strings.Join(ps, ", ")
}

// minTime is the earlier of a and b, a zero a counting as unset.
func minTime(a, b time.Time) time.Time {
	if a.IsZero() || b.Before(a) {
		return b
	}
	return a
}
