package suggest

import (
	"fmt"
	"io"
	"maps"
	"slices"
	"strconv"
	"strings"
	"time"
)

// maxNamesShown caps the names listed under a wildcard suggestion.
const maxNamesShown = 5

// Print writes the report as YAML comments plus ready-to-paste allow:
// entries, most frequent first. Every value is a validated name, address or
// number, and quoted, so nothing in the log can inject YAML.
func Print(w io.Writer, r Report) error {
	var b strings.Builder
	since := "in the whole log"
	if !r.Since.IsZero() {
		since = "since " + r.Since.UTC().Format(time.RFC3339)
	}
	if n := len(r.Suggestions) + len(r.Routes); n == 0 {
		fmt.Fprintf(&b, "# egressd suggest: no grantable denials %s.\n", since)
	} else {
		fmt.Fprintf(&b, "# egressd suggest: %d entries from %d denials and would-denies %s, most frequent first.\n",
			n, r.Considered, since)
		where := "allow:"
		if len(r.Routes) > 0 {
			where = "allow: or the route's apis.<name>.allow:"
		}
		fmt.Fprintf(&b, "# Nothing was changed. Review each one; paste only what you mean to grant under %s.\n", where)
	}
	if r.Skipped > 0 {
		fmt.Fprintf(&b, "# %d denials had targets that are not plain names or addresses; not suggested.\n", r.Skipped)
	}
	if len(r.Ungrantable) > 0 {
		var parts []string
		for _, reason := range slices.Sorted(maps.Keys(r.Ungrantable)) {
			parts = append(parts, fmt.Sprintf("%d %s", r.Ungrantable[reason], reason))
		}
		fmt.Fprintf(&b, "# Not grantable with allow: (see `egressd tail --denied`): %s.\n", strings.Join(parts, ", "))
	}
	for _, u := range r.Unsuggested {
		fmt.Fprintf(&b, "# Not suggested: %s (%d denied): %s.\n", oneLine(u.Target), u.Count, u.Why)
	}
	if len(r.Suggestions) > 0 {
		b.WriteString("allow:\n")
	}
	for _, s := range r.Suggestions {
		writeSuggestion(&b, s)
	}
	writeRoutes(&b, r.Routes)
	_, err := io.WriteString(w, b.String())
	return err
}

func writeSuggestion(b *strings.Builder, s Suggestion) {
	fmt.Fprintf(b, "  # %s, first %s, last %s", counts(s), stamp(s.FirstSeen), stamp(s.LastSeen))
	if s.Kind == KindPorts {
		b.WriteByte('\n')
		writePorts(b, s)
		return
	}
	switch {
	case s.Kind == KindCIDR:
		b.WriteString("\n  # IP-literal target: check what it is before granting")
	case len(s.Names) > 0:
		shown := s.Names[:min(len(s.Names), maxNamesShown)]
		more := ""
		if n := len(s.Names) - len(shown); n > 0 {
			more = fmt.Sprintf(" and %d more", n)
		}
		fmt.Fprintf(b, "\n  # %d names: %s%s", len(s.Names), strings.Join(shown, ", "), more)
	}
	b.WriteByte('\n')
	if s.Kind == KindCIDR {
		fmt.Fprintf(b, "  - cidr: %q\n", s.CIDR)
	} else {
		fmt.Fprintf(b, "  - host: %q\n", s.Host)
	}
	if len(s.Ports) > 0 {
		ps := make([]string, len(s.Ports))
		for i, p := range s.Ports {
			ps[i] = strconv.Itoa(int(p))
		}
		fmt.Fprintf(b, "    ports: [%s]\n", strings.Join(ps, ", "))
	}
}

func counts(s Suggestion) string {
	switch {
	case s.WouldDeny == 0:
		return fmt.Sprintf("%d denied", s.Denied)
	case s.Denied == 0:
		return fmt.Sprintf("%d would-deny", s.WouldDeny)
	}
	return fmt.Sprintf("%d denied, %d would-deny", s.Denied, s.WouldDeny)
}

func stamp(t time.Time) string {
	return t.UTC().Format("2006-01-02 15:04:05Z")
}

// oneLine keeps a value inside its comment line: control characters (a
// newline would end the comment and start YAML) are replaced.
func oneLine(s string) string {
	return strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f {
			return '?'
		}
		return r
	}, s)
}
