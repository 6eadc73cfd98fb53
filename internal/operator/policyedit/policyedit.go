// Package policyedit adds an allow: entry to policy.yaml the way a person
// would: new lines inserted under allow:, every other byte of the file
// (comments, order, spacing) kept as it was.
package policyedit

import (
	"bytes"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/egressd/egressd/internal/shared/vocab"

	"go.yaml.in/yaml/v3"

	"github.com/egressd/egressd/internal/lib/atomicfile"
	"github.com/egressd/egressd/policy"
)

// writeFile is atomicfile.WriteFile; tests replace it to see a read-only
// file system, which root (who runs the tests in CI) cannot otherwise get.
var writeFile = atomicfile.WriteFile

// ErrCannotEdit means the file's shape leaves no place to insert lines
// without rewriting existing ones (allow: in flow style, say); the caller
// should fall back and tell the person to edit by hand.
var ErrCannotEdit = errors.New("cannot add the entry without rewriting existing lines")

// Entry is the grant to add.
type Entry struct {
	Host string // a normalised name or IP literal
	Port uint16
	By   string
	At   time.Time
}

// AppendFile adds e to the policy file at path, checks that the result
// loads and grants e, and replaces the file atomically, keeping its mode.
// The file is left untouched on any error.
func AppendFile(path string, e Entry) ([]byte, error) {
	st, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("policy file: %w", err)
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read policy: %w", err)
	}
	out, err := Append(data, e)
	if err != nil {
		return nil, err
	}
	if err := writeFile(path, out, st.Mode().Perm()); err != nil {
		return nil, fmt.Errorf("policy file is not writable: %w", err)
	}
	return out, nil
}

// Append returns data with e inserted as a new allow: entry (with a
// comment line saying who approved it and when), after checking that the
// result is a valid policy that grants e.
func Append(data []byte, e Entry) ([]byte, error) {
	item, comment, err := render(e)
	if err != nil {
		return nil, err
	}
	var doc yaml.Node
	if err := yaml.Unmarshal(data, &doc); err != nil {
		return nil, fmt.Errorf("parse policy: %w", err)
	}
	if len(doc.Content) == 0 || doc.Content[0].Kind != yaml.MappingNode {
		return nil, fmt.Errorf("%w: the policy is not a mapping", ErrCannotEdit)
	}
	root := doc.Content[0]
	lines := splitLines(data)
	var out []byte
	key, val := findKey(root, "allow")
	switch {
	case key == nil:
		out = appendAtEnd(data, []string{comment, "allow:", "  - " + item})
	case val.Kind == yaml.SequenceNode && val.Style&yaml.FlowStyle == 0 && len(val.Content) > 0:
		dash := dashColumn(lines, val.Content[0])
		if dash < 0 {
			return nil, fmt.Errorf("%w: cannot find the list's indentation", ErrCannotEdit)
		}
		after := itemsEnd(lines, val.Content[len(val.Content)-1].Line-1, dash)
		pad := strings.Repeat(" ", dash)
		out = insertAfter(lines, after, []string{pad + comment, pad + "- " + item})
	case val.Kind == yaml.ScalarNode && val.Tag == "!!null" && val.Value == "" && key.Line == val.Line:
		// "allow:" with nothing after it on its line (an empty list).
		out = insertAfter(lines, key.Line-1, []string{strings.Repeat(" ", key.Column-1+2) + comment,
			strings.Repeat(" ", key.Column-1+2) + "- " + item})
	default:
		return nil, fmt.Errorf("%w: allow: is not a block list (write its entries one per line as \"- host: ...\")", ErrCannotEdit)
	}
	if err := verify(out, e); err != nil {
		return nil, err
	}
	return out, nil
}

// render is the entry and its comment; hosts come from Decide's requests,
// but are checked again so nothing but a name or an address reaches YAML.
func render(e Entry) (item, comment string, err error) {
	name, ip, nerr := policy.NormalizeHost(e.Host)
	if nerr != nil || name == "" && !ip.IsValid() || e.Port == 0 {
		return "", "", fmt.Errorf("bad entry %q port %d", e.Host, e.Port)
	}
	target := "host: " + name
	if ip.IsValid() {
		target = "cidr: " + netip.PrefixFrom(ip, ip.BitLen()).String()
	}
	item = target
	if e.Port != 443 {
		item = "{" + target + ", ports: [" + strconv.Itoa(int(e.Port)) + "]}"
	}
	comment = "# approved by " + cleanBy(e.By) + " at " + e.At.UTC().Format(time.RFC3339) + " (egressd ask)"
	return item, comment, nil
}

// cleanBy keeps who-approved printable and on one line.
func cleanBy(s string) string {
	b := []byte(s)
	for i, c := range b {
		if c < 0x20 || c > 0x7e {
			b[i] = '?'
		}
	}
	if len(b) > 64 {
		b = b[:64]
	}
	return string(b)
}

// dashColumn is the 0-based column of the "-" that starts item.
func dashColumn(lines [][]byte, item *yaml.Node) int {
	if item.Line < 1 || item.Line > len(lines) || item.Column < 1 || item.Column-1 > len(lines[item.Line-1]) {
		return -1
	}
	return bytes.LastIndexByte(lines[item.Line-1][:item.Column-1], '-')
}

func findKey(m *yaml.Node, name string) (key, val *yaml.Node) {
	for i := 0; i+1 < len(m.Content); i += 2 {
		if m.Content[i].Value == name {
			return m.Content[i], m.Content[i+1]
		}
	}
	return nil, nil
}

// itemsEnd is the index of the last line of the sequence item starting at
// line start: following lines indented deeper than the item's dash belong
// to it (trailing blank and comment-only lines do not).
func itemsEnd(lines [][]byte, start, dash int) int {
	end := start
	for i := start + 1; i < len(lines); i++ {
		t := bytes.TrimLeft(lines[i], " \t")
		if len(bytes.TrimSpace(t)) == 0 || t[0] == '#' {
			continue
		}
		if len(lines[i])-len(t) <= dash {
			break
		}
		end = i
	}
	return end
}

// splitLines splits data after each '\n', keeping it; a last line without
// one is kept as is.
func splitLines(data []byte) [][]byte {
	var out [][]byte
	for len(data) > 0 {
		i := bytes.IndexByte(data, '\n')
		if i < 0 {
			out = append(out, data)
			break
		}
		out = append(out, data[:i+1])
		data = data[i+1:]
	}
	return out
}

// insertAfter returns the lines with add inserted after line index at.
func insertAfter(lines [][]byte, at int, add []string) []byte {
	var b bytes.Buffer
	for i, l := range lines {
		b.Write(l)
		if i == at {
			if !bytes.HasSuffix(l, []byte("\n")) {
				b.WriteByte('\n')
			}
			for _, a := range add {
				b.WriteString(a + "\n")
			}
		}
	}
	return b.Bytes()
}

func appendAtEnd(data []byte, add []string) []byte {
	out := bytes.Clone(data)
	if len(out) > 0 && out[len(out)-1] != '\n' {
		out = append(out, '\n')
	}
	for _, a := range add {
		out = append(out, a+"\n"...)
	}
	return out
}

// verify loads the edited file and asks it the question it must now grant.
func verify(out []byte, e Entry) error {
	p, err := policy.LoadBytes(out, "edited policy")
	if err != nil {
		return fmt.Errorf("the edited policy does not load, not written: %w", err)
	}
	d := p.Decide(policy.Request{Host: e.Host, Port: e.Port, Proto: vocab.ProtoConnect})
	if d.Verdict != vocab.Allow {
		return fmt.Errorf("%w: the edited policy still answers %s for %s:%d", ErrCannotEdit, d.Reason, e.Host, e.Port)
	}
	return nil
}
