package gateway

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/url"
	"slices"
	"strconv"
	"strings"

	"github.com/egressd/egressd/internal/shared/vocab"

	"github.com/egressd/egressd/internal/shared/meter"
	"github.com/egressd/egressd/policy"
)

// What the provider may fetch. A model provider can be made to fetch or
// connect on the agent's behalf: server-side search and fetch tools,
// remote MCP servers named in the request, media and documents given by
// URL. Through the gateway that would make the provider the agent's proxy
// to any host, outside the allow-list. So:
//
//   - tools the agent runs itself pass: function and custom tools, and
//     Anthropic's client tools (bash_*, text_editor_*, computer_*,
//     memory_*), whose calls come back to the agent to execute;
//   - every other tool type (web search, web fetch, code execution, file
//     search, image generation, MCP, OpenRouter plugins, the :online model
//     suffix) is refused with tool_not_allowed unless the provider's
//     allow_tools names it;
//   - every URL in the body that the provider would fetch (a string under
//     a url or *_url key: image_url, file_url, server_url, MCP servers,
//     Anthropic's source {type: url}, and an http(s) URL given as
//     OpenRouter's file_data) must be one the proxy would let the
//     agent fetch itself: policy.Decide with the proxy's semantics, so the
//     same reasons come back (not_allowlisted, ip_literal_not_allowed,
//     private_address, ...). data: URLs are inline and pass. The url of a
//     search result or citation replayed from an earlier answer is history,
//     not a fetch, and is not checked.

// grants is what a provider's policy entry lets through, and the policy
// that judges URLs.
type grants struct {
	provider string
	format   meter.Format
	fields   []string
	tools    []string
	decide   func(policy.Request) policy.Decision // nil = every URL refused
	pol      *policy.Policy                       // for the allow-list's hosts; nil = none
}

// grantedHosts is the exact names the allow-list grants on port 443.
func (g grants) grantedHosts() []string {
	if g.pol == nil {
		return nil
	}
	var out []string
	for _, r := range g.pol.Rules() {
		if r.Host != "" && !strings.HasPrefix(r.Host, "*.") && slices.Contains(r.Ports, 443) {
			out = append(out, r.Host)
		}
	}
	return out
}

func (g grants) field(f string) bool {
	for _, a := range g.fields {
		if foldKey(a) == f {
			return true
		}
	}
	return false
}

// tool returns nil when the tool type t is granted, else its refusal.
func (g grants) tool(t string) error {
	for _, a := range g.tools {
		if strings.EqualFold(a, t) {
			return nil
		}
	}
	return &fieldError{field: t, tool: true, msg: fmt.Sprintf(
		"tool %s runs at the provider (it may bill per use or fetch on the agent's behalf) and is not granted: an operator can add %s to providers.%s.allow_tools",
		quote(t), quote(t), g.provider)}
}

// clientTool is true for tools whose calls the agent executes.
func (g grants) clientTool(t string) bool {
	if t == "" || t == "function" || t == "custom" {
		return true
	}
	if g.format != meter.FormatAnthropic {
		return false
	}
	for _, p := range []string{"bash_", "text_editor_", "computer_", "memory_"} {
		if strings.HasPrefix(t, p) {
			return true
		}
	}
	return false
}

// reachError is a URL in the body the policy does not grant.
type reachError struct {
	reason vocab.Reason
	msg    string
}

func (e *reachError) Error() string { return e.msg }

// checkReach checks the tools and every URL of a request body; models are
// the model and OpenRouter's fallbacks, any of which may be the one run.
func checkReach(body []byte, ms []member, models []string, g grants) error {
	for _, model := range models {
		if strings.HasSuffix(strings.ToLower(model), ":online") {
			if err := g.tool("plugin:web"); err != nil {
				return err
			}
		}
	}
	for _, m := range ms {
		if foldKey(m.key) == "tools" {
			if err := checkTools(m.raw, g); err != nil {
				return err
			}
		}
	}
	if err := noDuplicateKeys(body); err != nil {
		return err
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		return fmt.Errorf("invalid JSON body: %w", err)
	}
	return walkURLs(v, g, "")
}

// noDuplicateKeys refuses a body with a key repeated inside one object at
// any depth: parsers disagree on which copy wins, so egressd could check
// one URL or type while the provider reads the other. (Top-level keys
// are also compared ignoring case, in topLevel.)
func noDuplicateKeys(body []byte) error {
	dec := json.NewDecoder(bytes.NewReader(body))
	type level struct {
		keys   map[string]bool
		object bool
		key    bool // the next string token is a key
	}
	var stack []level
	for {
		tok, err := dec.Token()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return fmt.Errorf("invalid JSON body: %w", err)
		}
		top := len(stack) - 1
		switch t := tok.(type) {
		case json.Delim:
			switch t {
			case '{', '[':
				if top >= 0 && stack[top].object {
					stack[top].key = true
				}
				stack = append(stack, level{object: t == '{', key: t == '{'})
			default:
				stack = stack[:top]
				if top > 0 && stack[top-1].object {
					stack[top-1].key = true
				}
			}
			continue
		case string:
			if top >= 0 && stack[top].object && stack[top].key {
				if stack[top].keys == nil {
					stack[top].keys = map[string]bool{}
				}
				// Case-blind: Go's JSON decoding and a provider's may
				// pick different spellings of one key, so egressd could
				// check one value and the provider read another.
				if f := foldKey(t); stack[top].keys[f] {
					return fmt.Errorf("duplicate key %s in the request body (keys are compared ignoring case)", quote(t))
				} else {
					stack[top].keys[f] = true
				}
				stack[top].key = false
				continue
			}
		}
		if top >= 0 && stack[top].object {
			stack[top].key = true
		}
	}
}

func checkTools(raw json.RawMessage, g grants) error {
	if string(bytes.TrimSpace(raw)) == "null" {
		return nil
	}
	var tools []map[string]json.RawMessage
	if err := json.Unmarshal(raw, &tools); err != nil {
		return &fieldError{field: "tools", msg: `request field "tools" must be a list of objects`}
	}
	for _, t := range tools {
		// Every spelling of "type" is judged: a lenient reader may take any.
		types := []string{}
		for k, v := range t {
			if foldKey(k) == "type" {
				var typ string
				if json.Unmarshal(v, &typ) != nil {
					return &fieldError{field: "tools", msg: `a tool's "type" must be a string`}
				}
				types = append(types, strings.ToLower(typ))
			}
		}
		if len(types) == 0 {
			types = append(types, "")
		}
		for _, typ := range types {
			if g.clientTool(typ) {
				continue
			}
			if err := g.tool(typ); err != nil {
				return err
			}
			if typ == "mcp" {
				if err := mcpByURL(t); err != nil {
					return err
				}
			}
		}
	}
	return nil
}

// mcpByURL requires a granted MCP tool to name its server by server_url,
// which walkURLs then judges like any URL the provider connects to. A
// connector_id names a provider-run connector (mail, drives) whose hosts
// egressd cannot see, so it is refused.
func mcpByURL(t map[string]json.RawMessage) error {
	hasURL := false
	for k, v := range t {
		switch foldKey(k) {
		case "connector_id":
			return &fieldError{field: "tools", msg: "an mcp tool with a connector_id is not forwarded: the provider would connect to hosts egressd cannot check; name the server by server_url"}
		case "server_url":
			var u string
			hasURL = json.Unmarshal(v, &u) == nil && u != ""
		}
	}
	if !hasURL {
		return &fieldError{field: "tools", msg: "an mcp tool needs a server_url egressd can check against the allow-list"}
	}
	return nil
}

// walkURLs checks every fetchable URL in a decoded body. parent is the key
// whose value v is ("" at the top).
func walkURLs(v any, g grants, parent string) error {
	switch x := v.(type) {
	case []any:
		for _, e := range x {
			if err := walkURLs(e, g, parent); err != nil {
				return err
			}
		}
	case map[string]any:
		// An object under a key that names something to fetch is never a
		// record of an earlier fetch, whatever its type says.
		history := replayed(x) && !fetchKey(parent)
		for k, e := range x {
			f := foldKey(k)
			if s, ok := e.(string); ok && (f == "url" && !history || strings.HasSuffix(f, "_url") || f == "file_data" && !isInlineData(s)) {
				if err := checkURL(k, s, g); err != nil {
					return err
				}
				continue
			}
			if err := walkURLs(e, g, f); err != nil {
				return err
			}
		}
	}
	return nil
}

// fetchKey is true for a key whose object value the provider fetches from:
// image_url: {url}, source: {type: url, url}, file, document.
func fetchKey(k string) bool {
	switch k {
	case "source", "file", "document", "image", "input_image", "input_file":
		return true
	}
	return strings.HasSuffix(k, "_url")
}

// isInlineData is true for a file_data string that carries its bytes (a
// data: URL or bare base64); anything else (OpenRouter takes an http(s) URL
// there and fetches it) is judged as a URL, so odd spellings are refused
// rather than guessed at.
func isInlineData(s string) bool {
	l := strings.ToLower(s)
	if strings.HasPrefix(l, "data:") {
		return true
	}
	return !strings.Contains(l, ":")
}

// replayed is true for an object that records an earlier fetch (a search
// or fetch result, a citation), whose url the provider does not fetch.
func replayed(obj map[string]any) bool {
	for k, e := range obj {
		if foldKey(k) != "type" {
			continue
		}
		t, _ := e.(string)
		t = strings.ToLower(t)
		return strings.HasSuffix(t, "_result") || strings.HasSuffix(t, "citation") || strings.HasSuffix(t, "_location")
	}
	return false
}

// checkURL asks the policy whether the agent could fetch s itself.
func checkURL(key, s string, g grants) error {
	s = strings.TrimSpace(s)
	if s == "" || strings.HasPrefix(strings.ToLower(s), "data:") {
		return nil
	}
	u, err := url.Parse(s)
	scheme := ""
	if err == nil {
		scheme = strings.ToLower(u.Scheme)
	}
	if err != nil || (scheme != "http" && scheme != "https") || u.Host == "" || u.User != nil {
		return &reachError{vocab.ReasonBadRequest, fmt.Sprintf(
			"%s %s is not forwarded: the provider would fetch it, and only http(s) URLs without credentials to hosts the policy grants (or inline data: URLs) are",
			key, quote(s))}
	}
	port := uint16(443)
	if scheme == "http" {
		port = 80
	}
	if p := u.Port(); p != "" {
		n, err := strconv.ParseUint(p, 10, 16)
		if err != nil || n == 0 {
			return &reachError{vocab.ReasonBadRequest, fmt.Sprintf("%s %s has a bad port", key, quote(s))}
		}
		port = uint16(n)
	}
	host := strings.Trim(u.Hostname(), "[]")
	d := policy.Decision{Reason: vocab.ReasonNotAllowlisted}
	if g.decide != nil {
		proto := vocab.ProtoConnect
		if scheme == "http" {
			proto = vocab.ProtoHTTP
		}
		d = g.decide(policy.Request{Host: host, Port: port, Proto: proto})
	}
	if d.Verdict == vocab.Allow {
		return nil
	}
	return &reachError{d.Reason, fmt.Sprintf(
		"%s %s is not forwarded: the provider would fetch %s on the agent's behalf, and the egress policy does not grant it (%s)",
		key, quote(s), net.JoinHostPort(host, strconv.Itoa(int(port))), d.Reason)}
}
