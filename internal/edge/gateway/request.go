package gateway

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net/url"
	"strings"

	"github.com/egressd/egressd/internal/lib/canonpath"
)

// BytesPerInputToken is how the input of a call is estimated before it is
// sent: one token per this many bytes of request body, rounded up, plus
// what its media parts are reserved beyond their bytes (media.go). Real
// tokenisers average 3-4 bytes per token for English and code and rarely
// go below 2 (CJK text, long digit runs); JSON framing and escapes add
// bytes but no tokens. So 2 over-reserves typical calls about twofold,
// which keeps the cap hard at the price of refusing a little early.
// Known under-estimates: provider-side system prompts and tool
// definitions, and media that cost more than their per-part figure, cost
// tokens the body does not show.
const BytesPerInputToken = 2

// maxChoices bounds the n (choices) multiplier of the output reserve.
const maxChoices = 128

// shaped is what the gateway needs from a request body.
type shaped struct {
	model     string
	stream    bool
	maxOut    int64 // largest of max_tokens, max_completion_tokens, max_output_tokens; 0 = none
	choices   int64 // n, at least 1
	body      []byte
	members   []member // the top-level keys of body
	addedOpts bool     // stream_options.include_usage was set by egressd
	addedMax  string   // the output limit key egressd set; "" = the agent's own
	media     int64    // tokens media parts add beyond their bytes
	models    []string // OpenRouter's models fallback list
	reasoning int64    // OpenRouter reasoning.max_tokens, reserved on top of the output limit
	priority  bool     // service_tier: priority, priced at the model's multiplier
}

// inputTokens is the pre-send estimate of the call's input.
func (s *shaped) inputTokens() int64 {
	return (int64(len(s.body))+BytesPerInputToken-1)/BytesPerInputToken + s.media
}

// member is one top-level key of a JSON object, kept raw and in order.
type member struct {
	key string
	raw json.RawMessage
}

// shapeBody parses a JSON request body strictly enough that egressd and
// the provider cannot read it differently (one object, no top-level keys
// duplicated even ignoring case, nothing after it), extracts what metering needs, and for
// Chat Completions streams makes sure the final usage chunk is asked for.
func shapeBody(body []byte, k kind) (shaped, error) {
	members, err := topLevel(body)
	if err != nil {
		return shaped{}, err
	}
	s := shaped{body: body, choices: 1}
	s.media, _ = mediaTokens(body)
	optsAt := -1
	for i, m := range members {
		switch foldKey(m.key) {
		case "model":
			if err := json.Unmarshal(m.raw, &s.model); err != nil {
				return shaped{}, errors.New(`"model" must be a string`)
			}
		case "stream":
			if string(m.raw) != "null" && json.Unmarshal(m.raw, &s.stream) != nil {
				return shaped{}, errors.New(`"stream" must be true or false`)
			}
		case "max_tokens", "max_completion_tokens", "max_output_tokens":
			n, err := positiveInt(m.raw, m.key)
			if err != nil {
				return shaped{}, err
			}
			s.maxOut = max(s.maxOut, n)
		case "n", "best_of":
			// Legacy Completions generate and bill best_of candidates and
			// return n of them: the larger of the two is what is generated.
			n, err := positiveInt(m.raw, m.key)
			if err != nil {
				return shaped{}, err
			}
			s.choices = max(s.choices, min(n, maxChoices))
		case "models":
			if string(m.raw) != "null" && json.Unmarshal(m.raw, &s.models) != nil {
				return shaped{}, errors.New(`"models" must be a list of model names`)
			}
		case "reasoning":
			var r struct {
				MaxTokens json.RawMessage `json:"max_tokens"`
			}
			if json.Unmarshal(m.raw, &r) != nil {
				return shaped{}, errors.New(`"reasoning" must be an object`)
			}
			if len(r.MaxTokens) > 0 {
				if s.reasoning, err = positiveInt(r.MaxTokens, "reasoning.max_tokens"); err != nil {
					return shaped{}, err
				}
			}
		case "stream_options":
			optsAt = i
		case "service_tier":
			var tier string
			_ = json.Unmarshal(m.raw, &tier)
			s.priority = strings.EqualFold(tier, "priority")
		}
	}
	if s.stream && k == kindChat {
		if members, s.addedOpts, err = withIncludeUsage(members, optsAt); err != nil {
			return shaped{}, err
		}
		if s.addedOpts {
			s.body = encodeObject(members)
		}
	}
	s.members = members
	return s, nil
}

func topLevel(body []byte) ([]member, error) {
	dec := json.NewDecoder(bytes.NewReader(body))
	if tok, err := dec.Token(); err != nil || tok != json.Delim('{') {
		return nil, errors.New("the request body must be a JSON object")
	}
	var ms []member
	seen := make(map[string]bool)
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return nil, fmt.Errorf("invalid JSON body: %w", err)
		}
		key := tok.(string) // object keys are always strings
		if seen[foldKey(key)] {
			return nil, fmt.Errorf("duplicate key %s in the request body (keys are compared ignoring case)", quote(key))
		}
		seen[foldKey(key)] = true
		var raw json.RawMessage
		if err := dec.Decode(&raw); err != nil {
			return nil, fmt.Errorf("invalid JSON body: %w", err)
		}
		ms = append(ms, member{key, raw})
	}
	if _, err := dec.Token(); err != nil {
		return nil, fmt.Errorf("invalid JSON body: %w", err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, errors.New("invalid JSON body: data after the object")
	}
	return ms, nil
}

// foldKey is how the most lenient provider-side parser (Go's
// encoding/json matches keys case-insensitively, with Unicode folding such
// as the Kelvin sign for k) might read a key. Metering reads keys the same
// way, and keys equal under it are refused as duplicates, so that no
// parser can find a model or max_tokens egressd did not price.
func foldKey(k string) string { return strings.ToLower(strings.ToUpper(k)) }

// positiveInt reads a count, rounded up so that a fractional limit a
// lenient provider might round up is priced as such.
func positiveInt(raw json.RawMessage, key string) (int64, error) {
	if string(raw) == "null" {
		return 0, nil
	}
	var f float64
	if err := json.Unmarshal(raw, &f); err != nil || f < 0 {
		return 0, fmt.Errorf("%q must be a non-negative number", key)
	}
	return int64(math.Ceil(min(f, 1<<40))), nil
}

// withIncludeUsage sets stream_options.include_usage to true, keeping any
// other stream options. Forcing it even when the agent set false is what
// lets the call be metered exactly; the extra final chunk (choices: [])
// is standard and the SDKs expect it.
func withIncludeUsage(ms []member, at int) ([]member, bool, error) {
	opts := map[string]json.RawMessage{}
	if at >= 0 && string(ms[at].raw) != "null" {
		if err := json.Unmarshal(ms[at].raw, &opts); err != nil {
			return nil, false, errors.New(`"stream_options" must be an object`)
		}
		if string(bytes.TrimSpace(opts["include_usage"])) == "true" {
			return ms, false, nil
		}
	}
	opts["include_usage"] = json.RawMessage("true")
	raw, err := json.Marshal(opts)
	if err != nil {
		return nil, false, fmt.Errorf("stream_options: %w", err)
	}
	if at >= 0 {
		ms[at].raw = raw
	} else {
		ms = append(ms, member{"stream_options", raw})
	}
	return ms, true, nil
}

// encodeObject writes members back in their order, values untouched.
func encodeObject(ms []member) []byte {
	var b bytes.Buffer
	b.WriteByte('{')
	for i, m := range ms {
		if i > 0 {
			b.WriteByte(',')
		}
		k, _ := json.Marshal(m.key)
		b.Write(k)
		b.WriteByte(':')
		b.Write(m.raw)
	}
	b.WriteByte('}')
	return b.Bytes()
}

// upstreamPath splits the provider's upstream into its scheme and host
// (base) and the full canonical path of a call: the upstream's own path
// followed by rest, the canonical path the agent sent after /<provider>.
func upstreamPath(upstream, rest string) (base, full string, err error) {
	u, err := url.Parse(upstream)
	if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
		return "", "", fmt.Errorf("upstream %q is not an http(s) URL", upstream)
	}
	prefix := ""
	if p := u.EscapedPath(); p != "" && p != "/" {
		if prefix, err = canonpath.Clean(p); err != nil {
			return "", "", fmt.Errorf("upstream %q: %w", upstream, err)
		}
	}
	full = prefix + rest
	if rest == "/" && prefix != "" {
		full = prefix
	}
	return u.Scheme + "://" + u.Host, full, nil
}

// escapedRest is the request's escaped path after "/<provider>".
func escapedRest(escapedPath string) string {
	p := strings.TrimPrefix(escapedPath, "/")
	if i := strings.IndexByte(p, '/'); i >= 0 {
		return p[i:]
	}
	return "/"
}

// asksLongCache reports whether an Anthropic body asks anywhere for a
// one-hour cache write (a "ttl" of "1h"). It reads the decoded body, so an
// escaped spelling (`"\u0031h"`) counts too; a body with neither "ttl" nor
// an escape cannot ask, and is not decoded.
func asksLongCache(body []byte) bool {
	if !bytes.Contains(body, []byte("ttl")) && !bytes.Contains(body, []byte(`\u`)) {
		return false
	}
	var v any
	if json.Unmarshal(body, &v) != nil {
		return true // unreadable here: reserve the dearer rate
	}
	return hasLongTTL(v)
}

func hasLongTTL(v any) bool {
	switch x := v.(type) {
	case []any:
		for _, e := range x {
			if hasLongTTL(e) {
				return true
			}
		}
	case map[string]any:
		for k, e := range x {
			if s, ok := e.(string); ok && foldKey(k) == "ttl" && strings.EqualFold(s, "1h") {
				return true
			}
			if hasLongTTL(e) {
				return true
			}
		}
	}
	return false
}
