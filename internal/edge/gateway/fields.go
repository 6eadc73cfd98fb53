package gateway

import (
	"bytes"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
)

// Request fields. Every top-level field of a request body is in one of
// three states for its endpoint, listed below per kind:
//
//   - pass: known not to change what the call costs or what the provider
//     reaches (sampling, formatting, metadata, routing preferences);
//   - priced: read before forwarding and priced into the reservation
//     (output limits, n and best_of, OpenRouter's models fallback list,
//     reasoning.max_tokens);
//   - checked: passes only with the values listed in checkField
//     (service_tier, modalities, background, plugins, web search options,
//     MCP servers); tools are checked by type in tools.go.
//
// Anything else is refused with field_not_allowed naming it, because a
// field nobody priced could multiply, defer or redirect what the provider
// bills (previous_response_id and conversation bring input the body does
// not show; prompt runs a stored prompt; audio and prediction bill other
// token classes; container reuses a paid sandbox). A provider's
// allow_fields lets named fields through unpriced.
type fieldRule uint8

const (
	fieldPass fieldRule = iota + 1
	fieldPriced
	fieldChecked
)

// Fields shared by OpenRouter's OpenAI-shaped endpoints (its routing and
// accounting extras, and the sampling knobs it forwards).
var openRouterFields = []string{"provider", "usage", "transforms", "route", "top_k", "min_p", "top_a",
	"repetition_penalty", "include_reasoning", "tags", "session_id", "min_coding_score", "cache_control"}

var fieldTable = map[kind]map[string]fieldRule{
	kindChat: table(
		[]string{"model", "messages", "stream", "stream_options", "temperature", "top_p", "stop",
			"presence_penalty", "frequency_penalty", "logit_bias", "logprobs", "top_logprobs", "user", "seed",
			"tools", "tool_choice", "parallel_tool_calls", "response_format", "functions", "function_call",
			"metadata", "store", "reasoning_effort", "verbosity", "prompt_cache_key", "prompt_cache_retention",
			"safety_identifier"},
		openRouterFields,
		[]string{"max_tokens", "max_completion_tokens", "n", "models", "reasoning"},
		[]string{"service_tier", "modalities", "plugins", "web_search_options"}),
	kindResponses: table(
		[]string{"model", "input", "instructions", "stream", "stream_options", "temperature", "top_p", "tools",
			"tool_choice", "parallel_tool_calls", "text", "metadata", "store", "user", "include", "truncation",
			"max_tool_calls", "top_logprobs", "prompt_cache_key", "prompt_cache_retention", "safety_identifier"},
		openRouterFields,
		[]string{"max_output_tokens", "models", "reasoning"},
		[]string{"service_tier", "background", "plugins"}),
	kindMessages: table(
		[]string{"model", "messages", "system", "metadata", "stop_sequences", "stream", "temperature", "top_k",
			"top_p", "tools", "tool_choice", "thinking", "context_management", "output_format", "output_config",
			"cache_control"},
		nil,
		[]string{"max_tokens"},
		[]string{"service_tier", "mcp_servers"}),
	kindCompletions: table(
		[]string{"model", "prompt", "suffix", "stream", "stream_options", "temperature", "top_p", "logprobs",
			"echo", "stop", "presence_penalty", "frequency_penalty", "logit_bias", "user", "seed"},
		openRouterFields,
		[]string{"max_tokens", "n", "best_of", "models", "reasoning"},
		[]string{"service_tier"}),
	kindEmbeddings: table(
		[]string{"model", "input", "encoding_format", "dimensions", "user", "input_type"},
		[]string{"provider", "usage"}, nil, nil),
	// Anthropic's token counting: the Messages fields that shape input.
	kindFree: table(
		[]string{"model", "messages", "system", "tools", "tool_choice", "thinking", "context_management",
			"output_format", "output_config", "cache_control"},
		nil, nil, []string{"mcp_servers"}),
}

func table(pass, extra, priced, checked []string) map[string]fieldRule {
	t := map[string]fieldRule{}
	for _, f := range slices.Concat(pass, extra) {
		t[f] = fieldPass
	}
	for _, f := range priced {
		t[f] = fieldPriced
	}
	for _, f := range checked {
		t[f] = fieldChecked
	}
	return t
}

// whyRefused explains the fields egressd knows and refuses by default.
var whyRefused = map[string]string{
	"previous_response_id": "it brings stored input the request does not show, so the reservation cannot cover it",
	"conversation":         "it brings stored input the request does not show, so the reservation cannot cover it",
	"prompt":               "it runs a stored prompt the request does not show",
	"audio":                "audio output is billed at audio token prices egressd does not reserve",
	"prediction":           "rejected prediction tokens are billed beyond the output limit",
	"container":            "it reuses a paid code execution container",
	"best_of":              "best_of is not accepted on this endpoint",
	"speed":                "fast mode is billed at a premium the price table does not hold",
	"inference_geo":        "geography-pinned inference is billed at a premium the price table does not hold",
}

// fieldError is a refusal of one request field.
type fieldError struct {
	field, msg string
	tool       bool // a provider-run tool, not a plain field
}

func (e *fieldError) Error() string { return e.msg }

// checkFields refuses any top-level field the endpoint does not know,
// unless allowed names it, and checks the values of the checked ones.
func checkFields(k kind, ms []member, g grants) error {
	t := fieldTable[k]
	for _, m := range ms {
		f := foldKey(m.key)
		rule := t[f]
		if g.field(f) {
			continue
		}
		if f != m.key {
			// A provider may ignore MAX_TOKENS where egressd would price
			// it as max_tokens: only the spelling the table names passes.
			return &fieldError{field: m.key, msg: fmt.Sprintf(
				"request field %s is not forwarded: spell it %s", quote(m.key), quote(f))}
		}
		switch rule {
		case fieldPass, fieldPriced:
			continue
		case fieldChecked:
			if err := checkField(f, m.raw, g); err != nil {
				return err
			}
			continue
		}
		why := whyRefused[f]
		if why == "" {
			why = "egressd does not know what it costs or reaches"
		}
		return &fieldError{field: m.key, msg: fmt.Sprintf(
			"request field %s is not forwarded: %s. An operator can let it through unmetered with allow_fields: [%s] under providers.%s",
			quote(m.key), why, f, g.provider)}
	}
	return nil
}

// checkField checks the value of a field that passes only in some forms.
func checkField(f string, raw json.RawMessage, g grants) error {
	if string(bytes.TrimSpace(raw)) == "null" {
		return nil
	}
	var s string
	_ = json.Unmarshal(raw, &s)
	bad := func(why string) error {
		return &fieldError{field: f, msg: fmt.Sprintf("request field %s: %s", quote(f), why)}
	}
	switch f {
	case "service_tier":
		switch strings.ToLower(s) {
		case "auto", "default", "flex", "standard_only", "priority": // priority is priced in quote
			return nil
		}
		return bad("only auto, default, flex, standard_only or priority are forwarded; other tiers are billed at prices egressd does not know")
	case "background":
		if string(bytes.TrimSpace(raw)) == "false" {
			return nil
		}
		return bad("background mode runs the response asynchronously and bills it later, outside the ledger; send it in the foreground")
	case "modalities":
		var mods []string
		if json.Unmarshal(raw, &mods) == nil && !slices.ContainsFunc(mods, func(m string) bool { return !strings.EqualFold(m, "text") }) {
			return nil
		}
		return bad(`only ["text"] is forwarded; audio output is billed at prices egressd does not reserve`)
	case "plugins":
		return checkPlugins(raw, g)
	case "web_search_options":
		return g.tool("web_search_options")
	case "mcp_servers":
		var list []json.RawMessage
		if json.Unmarshal(raw, &list) == nil && len(list) == 0 {
			return nil
		}
		return g.tool("mcp")
	}
	return nil
}

// checkPlugins requires a grant plugin:<id> for every OpenRouter plugin.
func checkPlugins(raw json.RawMessage, g grants) error {
	var ps []map[string]any
	if err := json.Unmarshal(raw, &ps); err != nil {
		return &fieldError{field: "plugins", msg: `request field "plugins" must be a list of objects with an id`}
	}
	for _, p := range ps {
		id, _ := p["id"].(string)
		if err := g.tool("plugin:" + strings.ToLower(id)); err != nil {
			return err
		}
	}
	return nil
}

// Anthropic beta features are switched on per request by the
// anthropic-beta header, and some change the bill (the 1M-token context
// bills long prompts at a premium) or the reach (the MCP connector, code
// execution, the Files API). Those known to change neither pass; any other
// value is refused like an unpriced field, unless the provider's
// allow_fields names it as "anthropic-beta:<value>".
var harmlessBetas = []string{"prompt-caching-", "token-efficient-tools-", "interleaved-thinking-",
	"fine-grained-tool-streaming-", "output-128k-", "context-management-", "computer-use-",
	"extended-cache-ttl-", "structured-outputs-"}

// checkBetas checks every anthropic-beta value of a request.
func checkBetas(values []string, g grants) error {
	for _, v := range values {
		for _, b := range strings.Split(v, ",") {
			b = strings.ToLower(strings.TrimSpace(b))
			if b == "" || g.field("anthropic-beta:"+b) || slices.ContainsFunc(harmlessBetas, func(p string) bool { return strings.HasPrefix(b, p) }) {
				continue
			}
			return &fieldError{field: "anthropic-beta", msg: fmt.Sprintf(
				"anthropic-beta %s is not forwarded: egressd does not know what it costs or reaches. An operator can let it through unmetered with allow_fields: [\"anthropic-beta:%s\"] under providers.%s",
				quote(b), b, g.provider)}
		}
	}
	return nil
}
