package policy

import (
	"fmt"
	"reflect"
	"strconv"
	"strings"

	"go.yaml.in/yaml/v3"
)

// keyIndex maps lower-cased key paths (allow[2].host) to the line they
// start on. Viper forgets positions, so the file is parsed a second time
// with yaml.v3 to find them; the same walk reports unknown keys with the
// spelling and line the user wrote.
type keyIndex map[string]int

// maxWalk bounds the node visits of the walk: aliases can make a small
// file describe an exponentially large tree.
const maxWalk = 200_000

type keyWalker struct {
	idx     keyIndex
	unknown []*ValidationError
	budget  int
}

// indexKeys parses data and walks it against the Config schema.
func indexKeys(data []byte) (keyIndex, []*ValidationError, error) {
	var doc yaml.Node
	if err := yaml.Unmarshal(data, &doc); err != nil {
		return nil, nil, err
	}
	if len(doc.Content) > 0 {
		if root := doc.Content[0]; root.Kind != yaml.MappingNode && root.Tag != "!!null" {
			return nil, nil, fmt.Errorf("yaml: line %d: the file must be a mapping of keys (version: 1, allow: ...)", root.Line)
		}
	}
	w := &keyWalker{idx: keyIndex{}, budget: maxWalk}
	w.walk(&doc, reflect.TypeFor[Config](), "")
	return w.idx, w.unknown, nil
}

func (w *keyWalker) walk(n *yaml.Node, t reflect.Type, path string) {
	for n != nil && n.Kind == yaml.AliasNode {
		n = n.Alias
	}
	if n == nil || w.budget <= 0 {
		return
	}
	w.budget--
	if n.Kind == yaml.DocumentNode {
		if len(n.Content) > 0 {
			w.walk(n.Content[0], t, path)
		}
		return
	}
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	switch t.Kind() {
	case reflect.Struct:
		w.walkStruct(n, t, path)
	case reflect.Map:
		if n.Kind != yaml.MappingNode {
			return
		}
		seen := map[string]int{}
		for i := 0; i+1 < len(n.Content); i += 2 {
			k, v := n.Content[i], n.Content[i+1]
			p := joinKey(path, k.Value)
			if w.duplicate(seen, k, p) {
				continue
			}
			w.idx[strings.ToLower(p)] = k.Line
			w.walk(v, t.Elem(), p)
		}
	case reflect.Slice:
		if n.Kind != yaml.SequenceNode {
			return
		}
		for i, c := range n.Content {
			p := path + "[" + strconv.Itoa(i) + "]"
			w.idx[strings.ToLower(p)] = c.Line
			w.walk(c, t.Elem(), p)
		}
	}
}

func (w *keyWalker) walkStruct(n *yaml.Node, t reflect.Type, path string) {
	if n.Kind != yaml.MappingNode {
		return
	}
	seen := map[string]int{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		if k.Tag == "!!merge" {
			w.walk(v, t, path) // "<<: *anchor" merges the anchor's keys
			continue
		}
		p := joinKey(path, k.Value)
		if w.duplicate(seen, k, p) {
			continue
		}
		f, ok := fieldByKey(t, k.Value)
		if !ok {
			w.unknown = append(w.unknown, &ValidationError{Line: k.Line, Path: p, Msg: "unknown key"})
			continue
		}
		w.idx[strings.ToLower(p)] = k.Line
		w.walk(v, f.Type, p)
	}
}

// duplicate reports (once) a key that appears twice in one mapping,
// ignoring case as viper does: the second value would silently win.
func (w *keyWalker) duplicate(seen map[string]int, k *yaml.Node, path string) bool {
	key := strings.ToLower(k.Value)
	if first, dup := seen[key]; dup {
		w.unknown = append(w.unknown, &ValidationError{Line: k.Line, Path: path,
			Msg: fmt.Sprintf("duplicate key (first on line %d)", first)})
		return true
	}
	seen[key] = k.Line
	return false
}

// fieldByKey finds the field whose mapstructure tag is key, ignoring case
// as mapstructure does.
func fieldByKey(t reflect.Type, key string) (reflect.StructField, bool) {
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		tag, _, _ := strings.Cut(f.Tag.Get("mapstructure"), ",")
		if tag != "" && strings.EqualFold(tag, key) {
			return f, true
		}
	}
	return reflect.StructField{}, false
}

// joinKey appends a key to a path: .key for plain keys, ["key"] for keys
// with dots or other punctuation (model names such as
// "anthropic/claude-sonnet-4.5").
func joinKey(path, key string) string {
	if !plainKey(key) {
		return path + "[" + strconv.Quote(key) + "]"
	}
	if path == "" {
		return key
	}
	return path + "." + key
}

func plainKey(k string) bool {
	if k == "" {
		return false
	}
	for i := 0; i < len(k); i++ {
		c := k[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '_' || c == '-') {
			return false
		}
	}
	return true
}

// line finds the line of path or, failing that, of its nearest parent
// present in the file (a missing key is reported on its section).
func (idx keyIndex) line(path string) int {
	p := strings.ToLower(path)
	for p != "" {
		if l, ok := idx[p]; ok {
			return l
		}
		cut := max(strings.LastIndexByte(p, '.'), strings.LastIndexByte(p, '['))
		if cut <= 0 {
			return 0
		}
		p = p[:cut]
	}
	return 0
}

// fromDecodeName turns mapstructure's field name (budget.prices[a/b.c].input)
// into our key path (budget.prices["a/b.c"].input).
func fromDecodeName(name string) string {
	var b strings.Builder
	for {
		open := strings.IndexByte(name, '[')
		if open < 0 {
			b.WriteString(name)
			return b.String()
		}
		end := strings.IndexByte(name[open:], ']')
		if end < 0 {
			b.WriteString(name)
			return b.String()
		}
		end += open
		b.WriteString(name[:open])
		key := name[open+1 : end]
		if _, err := strconv.Atoi(key); err == nil {
			b.WriteString(name[open : end+1])
		} else {
			b.WriteString(strings.TrimPrefix(joinKey("x", key), "x"))
		}
		name = name[end+1:]
	}
}
