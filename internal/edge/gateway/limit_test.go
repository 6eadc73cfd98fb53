package gateway

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"

	"github.com/egressd/egressd/policy"
)

func TestOutputLimitKey(t *testing.T) {
	tests := []struct {
		k              kind
		upstream, want string
	}{
		{kindMessages, "https://api.anthropic.com", "max_tokens"},
		{kindResponses, "https://api.openai.com/v1", "max_output_tokens"},
		{kindChat, "https://api.openai.com", "max_completion_tokens"},
		{kindChat, "https://acme.openai.azure.com", "max_completion_tokens"},
		{kindChat, "https://openrouter.ai", "max_tokens"},
		{kindChat, "https://inference-api.nousresearch.com", "max_tokens"},
		{kindChat, "https://api.openai.com.evil.example", "max_tokens"},
		{kindCompletions, "https://api.openai.com", "max_tokens"},
		{kindEmbeddings, "https://api.openai.com", ""},
		{kindFree, "https://api.anthropic.com", ""},
		{kindFixed, "https://api.openai.com", ""},
	}
	for _, tt := range tests {
		if got := outputLimitKey(tt.k, tt.upstream); got != tt.want {
			t.Errorf("outputLimitKey(%v, %q) = %q, want %q", tt.k, tt.upstream, got, tt.want)
		}
	}
}

// TestOutputLimitInjected: a call without an output limit reaches the
// provider with the reserved default in the endpoint's own parameter; a
// call with one reaches it byte for byte as the agent sent it.
func TestOutputLimitInjected(t *testing.T) {
	tests := []struct {
		name, path, body string
		wantKey          string // the only limit key upstream; "" = none
		wantN            float64
		wantUnchanged    bool
	}{
		{"openrouter chat", "/openrouter/api/v1/chat/completions", `{"model":"gpt-4o-mini","messages":[]}`, "max_tokens", 777, false},
		{"openrouter chat stream", "/openrouter/api/v1/chat/completions", `{"model":"gpt-4o-mini","stream":true,"messages":[]}`, "max_tokens", 777, false},
		{"responses", "/openai/responses", `{"model":"gpt-4.1","input":"hi"}`, "max_output_tokens", 777, false},
		{"anthropic", "/anthropic/v1/messages", `{"model":"claude-sonnet-4-5","messages":[]}`, "max_tokens", 777, false},
		{"null limit replaced, not duplicated", "/anthropic/v1/messages", `{"model":"claude-sonnet-4-5","max_tokens":null,"messages":[]}`, "max_tokens", 777, false},
		{"zero limit replaced", "/openrouter/api/v1/chat/completions", `{"model":"gpt-4o-mini","max_tokens":0,"max_completion_tokens":null}`, "max_tokens", 777, false},
		{"agent's max_tokens kept", "/openrouter/api/v1/chat/completions", `{"model":"gpt-4o-mini","max_tokens":100000,"messages":[]}`, "max_tokens", 100000, true},
		{"agent's small limit kept", "/anthropic/v1/messages", `{"model":"claude-sonnet-4-5","max_tokens":5}`, "max_tokens", 5, true},
		{"agent's max_completion_tokens kept", "/openrouter/api/v1/chat/completions", `{"model":"gpt-4o-mini","max_completion_tokens":9}`, "max_completion_tokens", 9, true},
		{"embeddings untouched", "/openai/embeddings", `{"model":"gpt-4o-mini","input":"hi"}`, "", 0, true},
	}
	r := newRig(t, openRouterJSON(0.0001, 1, 1), withBudget(func(b *policy.BudgetConfig) { b.DefaultMaxTokens = 777 }))
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if resp := r.post(tt.path, tt.body); resp.StatusCode != 200 {
				t.Fatalf("got %d %s, want 200", resp.StatusCode, readAll(t, resp))
			}
			sent := r.fake.requests()[i].Body
			if tt.wantUnchanged && !bytes.Equal(sent, []byte(tt.body)) {
				t.Errorf("upstream got %s, want the agent's body unchanged", sent)
			}
			limits := limitsIn(t, sent)
			if tt.wantKey == "" && len(limits) != 0 || tt.wantKey != "" && (len(limits) != 1 || limits[tt.wantKey] != tt.wantN) {
				t.Errorf("upstream limits %v in %s, want only %s: %v", limits, sent, tt.wantKey, tt.wantN)
			}
		})
	}
}

// limitsIn returns the non-null output limits of a JSON body, failing on
// a duplicated key.
func limitsIn(t *testing.T, body []byte) map[string]float64 {
	t.Helper()
	members, err := topLevel(body)
	if err != nil {
		t.Fatalf("upstream body %s: %v", body, err)
	}
	out := map[string]float64{}
	for _, m := range members {
		if isLimitKey(m.key) && string(m.raw) != "null" {
			var n float64
			if err := json.Unmarshal(m.raw, &n); err != nil {
				t.Fatalf("%s: %v", m.raw, err)
			}
			out[m.key] = n
		}
	}
	return out
}

// roundTripFunc is an upstream answered in process, with no network: it
// lets a test use a real provider host name as the upstream.
type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

// TestOutputLimitOnOpenAIUsesMaxCompletionTokens: api.openai.com's Chat
// Completions get max_completion_tokens, which every OpenAI model accepts.
func TestOutputLimitOnOpenAIUsesMaxCompletionTokens(t *testing.T) {
	var mu sync.Mutex
	var sent []byte
	upstream := roundTripFunc(func(req *http.Request) (*http.Response, error) {
		b, _ := io.ReadAll(req.Body)
		mu.Lock()
		sent = b
		mu.Unlock()
		body := `{"choices":[],"usage":{"prompt_tokens":1,"completion_tokens":1}}`
		return &http.Response{StatusCode: 200, Header: http.Header{"Content-Type": {"application/json"}},
			Body: io.NopCloser(strings.NewReader(body)), ContentLength: int64(len(body)), Request: req}, nil
	})
	r := newRig(t, nil, func(c *Config, _ *policy.BudgetConfig, p map[string]policy.ProviderConfig) {
		c.Transport = upstream
		p["openai"] = policy.ProviderConfig{Upstream: "https://api.openai.com/v1", Format: "openai", APIKeyEnv: "OR_KEY", ClientTokenEnv: "AGENT_TOKEN"}
	})
	if resp := r.post("/openai/chat/completions", `{"model":"gpt-4o-mini","messages":[]}`); resp.StatusCode != 200 {
		t.Fatalf("got %d, want 200", resp.StatusCode)
	}
	mu.Lock()
	defer mu.Unlock()
	if got := limitsIn(t, sent); len(got) != 1 || got["max_completion_tokens"] != 4096 {
		t.Errorf("upstream limits %v, want only max_completion_tokens: 4096", got)
	}
}

// TestInjectedLimitIsReservedPerChoice: n choices each get the limit, so
// n times it is reserved.
func TestInjectedLimitIsReservedPerChoice(t *testing.T) {
	// 1,000 output tokens at $0.6/M is $0.0006; the cap admits one choice's
	// worth (plus the small input) but not three.
	r := newRig(t, openRouterJSON(0.0001, 1, 1), withBudget(func(b *policy.BudgetConfig) {
		b.DefaultMaxTokens, b.CapUSD = 1000, 0.001
	}))
	if resp := r.post("/openrouter/api/v1/chat/completions", `{"model":"gpt-4o-mini"}`); resp.StatusCode != 200 {
		t.Fatalf("one choice: got %d, want 200", resp.StatusCode)
	}
	resp := r.post("/openrouter/api/v1/chat/completions", `{"model":"gpt-4o-mini","n":3}`)
	if body := readAll(t, resp); resp.StatusCode != 429 || errType(t, body) != "budget_exceeded" {
		t.Errorf("three choices: got %d %s, want 429 budget_exceeded", resp.StatusCode, body)
	}
}
