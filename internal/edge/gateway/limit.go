package gateway

import (
	"net/url"
	"strconv"
	"strings"
)

// Output limits. A call that names no output limit is priced for
// budget.default_max_tokens of output; unless the provider is told the
// same number, nothing stops the model writing more than was reserved.
// So the gateway sends the reserved number as the limit, in the parameter
// each endpoint accepts for every current model:
//
//   - Anthropic Messages (…/messages): max_tokens, which Anthropic requires
//     anyway (a call without it is a 400).
//   - OpenAI Responses (…/responses): max_output_tokens.
//   - Chat Completions (…/chat/completions) on api.openai.com and Azure
//     OpenAI: max_completion_tokens. OpenAI deprecated max_tokens there and
//     rejects it for reasoning models (o-series, gpt-5: "Unsupported
//     parameter: 'max_tokens' ... Use 'max_completion_tokens' instead").
//   - Chat Completions anywhere else (OpenRouter, Nous Portal, vLLM and
//     other OpenAI-compatible servers): max_tokens. It is the parameter
//     OpenRouter documents (and maps to each model's own), and the one
//     every compatible server knows; some servers answer
//     max_completion_tokens with "extra inputs are not permitted", and
//     some drop unknown fields silently, which would leave the call with no
//     limit at all.
//   - Legacy Completions (…/completions): max_tokens.
//
// Every limit counts reasoning or thinking tokens too, so hidden reasoning
// is bounded by it. Other endpoints (embeddings, count_tokens, ...) get
// nothing: they would reject an unknown parameter, and produce no output.
//
// A limit the agent set is never changed: it was priced as given (and a
// limit the cap cannot cover is refused at reservation). A null or zero
// limit counts as none and is replaced.

// outputLimitKey names the limit parameter for a call of kind k to
// upstream, or "" for an endpoint that takes none.
func outputLimitKey(k kind, upstream string) string {
	switch k {
	case kindMessages:
		return "max_tokens"
	case kindResponses:
		return "max_output_tokens"
	case kindChat:
		if openAIHost(upstream) {
			return "max_completion_tokens"
		}
		return "max_tokens"
	case kindCompletions:
		return "max_tokens"
	}
	return ""
}

// openAIHost is true for OpenAI's own API and Azure OpenAI, the upstreams
// whose Chat Completions reject max_tokens for reasoning models.
func openAIHost(upstream string) bool {
	u, err := url.Parse(upstream)
	if err != nil {
		return false
	}
	h := strings.ToLower(u.Hostname())
	return h == "api.openai.com" || strings.HasSuffix(h, ".openai.azure.com")
}

// isLimitKey is true for every output limit parameter of every format.
func isLimitKey(k string) bool {
	switch foldKey(k) {
	case "max_tokens", "max_completion_tokens", "max_output_tokens":
		return true
	}
	return false
}

// limitOutput sends key: n upstream for a call that named no limit, after
// dropping any null or zero limit (so no key is duplicated and no server
// sees two limits), and records n as the call's limit.
func (s *shaped) limitOutput(key string, n int64) {
	kept := s.members[:0:0]
	for _, m := range s.members {
		if !isLimitKey(m.key) {
			kept = append(kept, m)
		}
	}
	s.members = append(kept, member{key, []byte(strconv.FormatInt(n, 10))})
	s.body = encodeObject(s.members)
	s.maxOut, s.addedMax = n, key
}
