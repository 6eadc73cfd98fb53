package canonpath

import (
	"errors"
	"fmt"
	"strings"
)

// Glob is a compiled path pattern: literal segments, "*" for exactly one
// segment and "**" for any number of segments (none included). Globs match
// canonical paths only, so a pattern and a path cannot disagree on spelling.
type Glob struct {
	pattern string
	segs    []string
}

// ErrPattern reports a pattern Compile refuses.
var ErrPattern = errors.New("bad path pattern")

// Compile checks a pattern and returns its Glob. The pattern must itself be
// canonical (Clean leaves it unchanged once the wildcards are set aside), so
// a rule can never name a spelling the gateway would not forward.
func Compile(pattern string) (Glob, error) {
	clean, err := Clean(pattern)
	if err != nil {
		return Glob{}, fmt.Errorf("%w %q: %w", ErrPattern, pattern, err)
	}
	if clean != pattern {
		return Glob{}, fmt.Errorf("%w %q: not canonical, write %q", ErrPattern, pattern, clean)
	}
	segs := split(pattern)
	for _, s := range segs {
		if s != "*" && s != "**" && strings.Contains(s, "*") {
			return Glob{}, fmt.Errorf("%w %q: * must be a whole segment", ErrPattern, pattern)
		}
	}
	return Glob{pattern: pattern, segs: segs}, nil
}

// MustCompile is Compile for patterns written in egressd's own tables.
func MustCompile(pattern string) Glob {
	g, err := Compile(pattern)
	if err != nil {
		panic(err)
	}
	return g
}

// String returns the pattern as written.
func (g Glob) String() string { return g.pattern }

// Match reports whether the canonical path p matches the glob. Literal
// segments compare exactly; callers that match case-insensitively fold both
// sides before compiling and matching.
func (g Glob) Match(p string) bool {
	return match(g.segs, split(p))
}

func match(pat, segs []string) bool {
	for len(pat) > 0 {
		if pat[0] == "**" {
			rest := pat[1:]
			for i := 0; i <= len(segs); i++ {
				if match(rest, segs[i:]) {
					return true
				}
			}
			return false
		}
		if len(segs) == 0 || (pat[0] != "*" && pat[0] != segs[0]) {
			return false
		}
		pat, segs = pat[1:], segs[1:]
	}
	return len(segs) == 0
}

// split returns the segments of a canonical path; "/" has none.
func split(p string) []string {
	p = strings.TrimPrefix(p, "/")
	if p == "" {
		return nil
	}
	return strings.Split(p, "/")
}
