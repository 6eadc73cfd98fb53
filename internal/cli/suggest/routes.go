package suggest

import (
	"cmp"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/egressd/egressd/internal/lib/canonpath"
	"github.com/egressd/egressd/internal/shared/declog"
)

// RouteSuggestion is one proposed entry under apis.<Route>.allow: for calls
// refused with path_not_allowed.
type RouteSuggestion struct {
	Route     string
	Method    string
	Path      string // canonical path, exactly as refused (no glob)
	Count     int
	FirstSeen time.Time
	LastSeen  time.Time
	// QueryFixed: a rule already fixes the query of this path, so the
	// grant needs the exact ?k=v the call sent, which the log does not hold.
	QueryFixed bool
}

type routeKey struct{ route, method, path string }

// addRoute counts a path_not_allowed denial. Route, method and path come
// from the agent's request: only a plain route name, an upper-case token
// method and a canonical path without '*' (which would read as a glob)
// are proposed.
func (c *Collector) addRoute(e declog.Entry, n int) {
	c.rep.Considered += n
	k := routeKey{e.Host, e.Method, e.Path}
	if !plainName(k.route) || !plainMethod(k.method) || !literalPath(k.path) {
		c.rep.Skipped += n
		return
	}
	if c.routes == nil {
		c.routes = make(map[routeKey]*RouteSuggestion)
	}
	s := c.routes[k]
	if s == nil {
		if len(c.routes) >= c.maxNames {
			c.rep.Skipped += n
			return
		}
		s = &RouteSuggestion{Route: k.route, Method: k.method, Path: k.path, FirstSeen: e.Time, LastSeen: e.Time}
		c.routes[k] = s
	}
	s.Count += n
	if e.Time.Before(s.FirstSeen) {
		s.FirstSeen = e.Time
	}
	if e.Time.After(s.LastSeen) {
		s.LastSeen = e.Time
	}
	// The hint names the path with a query only when a rule fixes it.
	s.QueryFixed = s.QueryFixed || strings.Contains(e.Hint, k.path+"?")
}

// routeReport lists the route suggestions by route, then most frequent.
func (c *Collector) routeReport() []RouteSuggestion {
	out := make([]RouteSuggestion, 0, len(c.routes))
	for _, s := range c.routes {
		out = append(out, *s)
	}
	slices.SortFunc(out, func(a, b RouteSuggestion) int {
		return cmp.Or(cmp.Compare(a.Route, b.Route), cmp.Compare(b.Count, a.Count),
			cmp.Compare(a.Path, b.Path), cmp.Compare(a.Method, b.Method))
	})
	return out
}

func plainName(s string) bool {
	if s == "" || len(s) > 64 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('a' <= c && c <= 'z' || '0' <= c && c <= '9' || c == '-' || c == '_') {
			return false
		}
	}
	return true
}

func plainMethod(s string) bool {
	if s == "" || len(s) > 32 {
		return false
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; !('A' <= c && c <= 'Z' || c == '-' || c == '_') {
			return false
		}
	}
	return true
}

func literalPath(p string) bool {
	if strings.ContainsAny(p, `*"`) {
		return false
	}
	c, err := canonpath.Clean(p)
	return err == nil && c == p
}

// writeRoutes prints the route suggestions as apis: blocks.
func writeRoutes(b *strings.Builder, rs []RouteSuggestion) {
	if len(rs) == 0 {
		return
	}
	b.WriteString("apis:\n")
	route := ""
	for _, s := range rs {
		if s.Route != route {
			route = s.Route
			fmt.Fprintf(b, "  %s:\n    allow:\n", route)
		}
		fmt.Fprintf(b, "      # %d denied (path_not_allowed), first %s, last %s\n", s.Count, stamp(s.FirstSeen), stamp(s.LastSeen))
		if s.QueryFixed {
			b.WriteString("      # a rule fixes this path's query: append the exact ?k=v the call needs (see its hint in `egressd tail --denied`)\n")
		}
		fmt.Fprintf(b, "      - {methods: [%s], paths: [%q]}\n", s.Method, s.Path)
	}
}
