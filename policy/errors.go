package policy

import (
	"fmt"
	"sort"
	"strings"
)

// ValidationError is one problem in a policy, located by its key path
// (allow[3].host) and, when the key is in the file, its line.
type ValidationError struct {
	File string // file name as given to Load, or the name passed to LoadBytes
	Line int    // 1-based; 0 when unknown (missing key, environment override)
	Path string // key path, e.g. allow[3].host; "" for whole-file problems
	Msg  string // what is wrong, e.g. `"*.": empty label`
	Env  string // the EGRESSD_* variable the value came from, if any
}

func (e *ValidationError) Error() string {
	var b strings.Builder
	if e.File != "" {
		b.WriteString(e.File)
		if e.Line > 0 {
			fmt.Fprintf(&b, ":%d", e.Line)
		}
		b.WriteString(": ")
	}
	if e.Path != "" {
		b.WriteString(e.Path)
		b.WriteString(": ")
	}
	b.WriteString(e.Msg)
	if e.Env != "" {
		fmt.Fprintf(&b, " (from $%s)", e.Env)
	}
	return b.String()
}

// Unwrap makes every ValidationError an ErrInvalid.
func (e *ValidationError) Unwrap() error { return ErrInvalid }

// Errors is every problem found in one policy, in file order. Its Error is
// one problem per line, so `egressd check` can print it as is.
type Errors []*ValidationError

func (es Errors) Error() string {
	lines := make([]string, len(es))
	for i, e := range es {
		lines[i] = e.Error()
	}
	return strings.Join(lines, "\n")
}

// Unwrap exposes ErrInvalid and each problem to errors.Is and errors.As.
func (es Errors) Unwrap() []error {
	out := make([]error, 0, len(es)+1)
	out = append(out, ErrInvalid)
	for _, e := range es {
		out = append(out, e)
	}
	return out
}

// sortByLine orders problems by line, keeping problems without a line
// (missing keys) after those with one, each group in discovery order.
func (es Errors) sortByLine() {
	sort.SliceStable(es, func(i, j int) bool {
		li, lj := es[i].Line, es[j].Line
		if li == 0 || lj == 0 {
			return li != 0 && lj == 0
		}
		return li < lj
	})
}
