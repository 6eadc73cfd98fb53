package gateway

import (
	"strings"

	"github.com/egressd/egressd/internal/lib/canonpath"
	"github.com/egressd/egressd/internal/shared/meter"
	"github.com/egressd/egressd/policy"
)

// The endpoint table. A provider route forwards exactly the calls listed
// here for its format, plus what its policy entry adds (an unmetered GET,
// or a POST at a declared price). Everything else — files, batches,
// fine-tuning, stored responses, background runs, deletes — is refused
// with endpoint_not_allowed before it reaches the provider, because
// egressd could not meter it: work billed later or elsewhere would never
// show in the ledger.
//
// Paths are full paths on the upstream host (the upstream URL's own path
// followed by what the agent sent after /<provider>), so one table serves
// https://openrouter.ai with /api/v1/chat/completions and
// https://openrouter.ai/api/v1 with /chat/completions alike. Literal
// segments match ignoring case; what is forwarded is the table's spelling,
// with the agent's own spelling kept only for wildcard segments (model
// ids), so egressd and the provider never read a path differently.

// kind is what an endpoint does, and so how it is reserved and settled.
type kind uint8

const (
	kindFree        kind = iota // carries no spend: model lists, key info, token counting
	kindChat                    // Chat Completions
	kindResponses               // OpenAI Responses (foreground only)
	kindMessages                // Anthropic Messages
	kindCompletions             // legacy Completions
	kindEmbeddings              // embeddings: input tokens only
	kindFixed                   // a policy endpoint at a declared price per call
)

// kindInfo is the documentation row of a kind: egressd explain and the
// README table print it.
var kindInfo = [...]struct{ name, billing, reservation string }{
	kindFree:        {"free", "nothing", "nothing"},
	kindChat:        {"chat_completions", "tokens, streamed or not (usage.cost where the provider gives it)", "input estimate + output limit × n"},
	kindResponses:   {"responses", "tokens, streamed or not", "input estimate + max_output_tokens"},
	kindMessages:    {"messages", "tokens incl. cache writes and reads, streamed or not; server tool uses", "input estimate + max_tokens + granted tool fees"},
	kindCompletions: {"completions", "tokens, streamed or not", "input estimate + max_tokens × max(n, best_of)"},
	kindEmbeddings:  {"embeddings", "input tokens", "input estimate"},
	kindFixed:       {"declared", "per_call_usd per call", "per_call_usd"},
}

func (k kind) String() string { return kindInfo[k].name }

// metered is true for kinds that reserve before forwarding.
func (k kind) metered() bool { return k != kindFree }

// endpoint is one row of the table.
type endpoint struct {
	method string
	glob   canonpath.Glob // compiled from the lowercased pattern
	kind   kind
	price  float64 // kindFixed: USD per call
	policy bool    // added by the policy, matched case-sensitively
}

func ep(method, pattern string, k kind) endpoint {
	return endpoint{method: method, glob: canonpath.MustCompile(pattern), kind: k}
}

// openAIEndpoints serve format openai: OpenAI itself and compatible
// servers under /v1, OpenRouter under /api/v1 (its extras: key info,
// credits, per-generation stats and the model endpoints list, all free).
var openAIEndpoints = []endpoint{
	ep("POST", "/v1/chat/completions", kindChat),
	ep("POST", "/v1/responses", kindResponses),
	ep("POST", "/v1/completions", kindCompletions),
	ep("POST", "/v1/embeddings", kindEmbeddings),
	ep("GET", "/v1/models", kindFree),
	ep("GET", "/v1/models/*", kindFree),
	ep("POST", "/api/v1/chat/completions", kindChat),
	ep("POST", "/api/v1/responses", kindResponses),
	ep("POST", "/api/v1/completions", kindCompletions),
	ep("POST", "/api/v1/embeddings", kindEmbeddings),
	ep("GET", "/api/v1/models", kindFree),
	ep("GET", "/api/v1/models/user", kindFree),
	ep("GET", "/api/v1/models/*/*/endpoints", kindFree),
	ep("GET", "/api/v1/embeddings/models", kindFree),
	ep("GET", "/api/v1/key", kindFree),
	ep("GET", "/api/v1/credits", kindFree),
	ep("GET", "/api/v1/generation", kindFree),
	ep("GET", "/api/v1/providers", kindFree),
}

// anthropicEndpoints serve format anthropic.
var anthropicEndpoints = []endpoint{
	ep("POST", "/v1/messages", kindMessages),
	ep("POST", "/v1/messages/count_tokens", kindFree),
	ep("GET", "/v1/models", kindFree),
	ep("GET", "/v1/models/*", kindFree),
}

// builtinEndpoints is the table for a format.
func builtinEndpoints(f meter.Format) []endpoint {
	if f == meter.FormatAnthropic {
		return anthropicEndpoints
	}
	return openAIEndpoints
}

// policyEndpoints compiles a provider's endpoints: entries (validated
// when the policy loaded; an entry that still fails is skipped, which
// leaves its calls refused).
func policyEndpoints(cfg []policy.EndpointConfig) []endpoint {
	out := make([]endpoint, 0, len(cfg))
	for _, e := range cfg {
		g, err := canonpath.Compile(e.Path)
		if err != nil {
			continue
		}
		k := kindFree
		if e.Method != "GET" {
			k = kindFixed
		}
		out = append(out, endpoint{method: e.Method, glob: g, kind: k, price: e.PerCallUSD, policy: true})
	}
	return out
}

// lookup finds the endpoint for method and a canonical full path, and
// returns the path to forward. Built-in rows match literal segments
// ignoring case and forward their own spelling; policy rows match as
// written and forward the path as it is.
func lookup(f meter.Format, extra []policy.EndpointConfig, method, full string) (endpoint, string, bool) {
	lower := strings.ToLower(full)
	for _, e := range builtinEndpoints(f) {
		if e.method == method && e.glob.Match(lower) {
			return e, respell(e.glob.String(), full), true
		}
	}
	for _, e := range policyEndpoints(extra) {
		if e.method == method && e.glob.Match(full) {
			return e, full, true
		}
	}
	return endpoint{}, "", false
}

// respell writes path with the literal segments of pattern (which has
// the same number of segments: built-in patterns use no **).
func respell(pattern, path string) string {
	ps, as := strings.Split(pattern, "/"), strings.Split(path, "/")
	if len(ps) != len(as) {
		return path
	}
	for i, s := range ps {
		if s != "*" {
			as[i] = s
		}
	}
	return strings.Join(as, "/")
}
