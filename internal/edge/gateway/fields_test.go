package gateway

import (
	"encoding/json"
	"math"
	"net/http"
	"strings"
	"testing"

	"github.com/egressd/egressd/internal/shared/vocab"

	"github.com/egressd/egressd/policy"
)

// hermesChat is a call shaped like Hermes's to OpenRouter: function tools,
// streaming with usage, reasoning, provider routing and the extras it
// passes in extra_body.
const hermesChat = `{"model":"anthropic/claude-sonnet-4.5","messages":[{"role":"system","content":"you are hermes"},{"role":"user","content":"list files"}],
"tools":[{"type":"function","function":{"name":"terminal","description":"run","parameters":{"type":"object","properties":{"command":{"type":"string"},"url":{"type":"string"}}}}}],
"tool_choice":"auto","temperature":0.7,"max_tokens":2000,"stream":true,"stream_options":{"include_usage":true},
"reasoning":{"effort":"medium","exclude":true},"provider":{"order":["Anthropic"],"allow_fallbacks":false,"require_parameters":true},
"usage":{"include":true},"transforms":["middle-out"],"parallel_tool_calls":true}`

// TestRequestFields: known fields pass, priced fields are priced, and a
// field egressd does not price is refused naming it, before the provider
// sees anything.
func TestRequestFields(t *testing.T) {
	tests := []struct {
		name, path, body string
		allowFields      []string
		wantStatus       int
		wantReason       vocab.Reason
		wantField        string
	}{
		{"hermes chat", "/openrouter/api/v1/chat/completions", hermesChat, nil, 200, vocab.ReasonAllowlisted, ""},
		{"hermes reasoning_effort", "/openrouter/api/v1/chat/completions", `{"model":"gpt-4o-mini","messages":[],"reasoning_effort":"high","max_completion_tokens":5}`, nil, 200, vocab.ReasonAllowlisted, ""},
		{"hermes anthropic native", "/anthropic/v1/messages", `{"model":"claude-sonnet-4-5","max_tokens":4096,"system":[{"type":"text","text":"you are hermes","cache_control":{"type":"ephemeral"}}],"messages":[{"role":"user","content":"hi"}],"tools":[{"name":"terminal","description":"run","input_schema":{"type":"object"}}],"tool_choice":{"type":"auto"},"thinking":{"type":"adaptive"},"output_config":{"effort":"high"},"cache_control":{"type":"ephemeral"},"stream":true}`, nil, 200, vocab.ReasonAllowlisted, ""},
		{"fast mode", "/anthropic/v1/messages", `{"model":"claude-sonnet-4-5","max_tokens":5,"messages":[],"speed":"fast"}`, nil, 403, vocab.ReasonFieldNotAllowed, "speed"},
		{"unknown field", "/openrouter/api/v1/chat/completions", `{"model":"gpt-4o-mini","messages":[],"frobnicate":1}`, nil, 403, vocab.ReasonFieldNotAllowed, "frobnicate"},
		{"unknown field granted", "/openrouter/api/v1/chat/completions", `{"model":"gpt-4o-mini","messages":[],"Frobnicate":1}`, []string{"frobnicate"}, 200, vocab.ReasonAllowlisted, ""},
		{"background", "/openai/responses", `{"model":"gpt-4.1","input":"hi","background":true}`, nil, 403, vocab.ReasonFieldNotAllowed, "background"},
		{"background false", "/openai/responses", `{"model":"gpt-4.1","input":"hi","background":false}`, nil, 200, vocab.ReasonAllowlisted, ""},
		{"previous_response_id", "/openai/responses", `{"model":"gpt-4.1","input":"hi","previous_response_id":"resp_1"}`, nil, 403, vocab.ReasonFieldNotAllowed, "previous_response_id"},
		{"conversation", "/openai/responses", `{"model":"gpt-4.1","input":"hi","conversation":"conv_1"}`, nil, 403, vocab.ReasonFieldNotAllowed, "conversation"},
		{"stored prompt", "/openai/responses", `{"model":"gpt-4.1","prompt":{"id":"pmpt_1"}}`, nil, 403, vocab.ReasonFieldNotAllowed, "prompt"},
		{"priority tier", "/openai/chat/completions", `{"model":"gpt-4o-mini","messages":[],"service_tier":"priority"}`, nil, 403, vocab.ReasonFieldNotAllowed, "service_tier"},
		{"flex tier", "/openai/chat/completions", `{"model":"gpt-4o-mini","messages":[],"service_tier":"flex"}`, nil, 200, vocab.ReasonAllowlisted, ""},
		{"audio output", "/openai/chat/completions", `{"model":"gpt-4o-mini","messages":[],"modalities":["text","audio"],"audio":{"voice":"x"}}`, nil, 403, vocab.ReasonFieldNotAllowed, "modalities"},
		{"best_of on chat", "/openai/chat/completions", `{"model":"gpt-4o-mini","messages":[],"best_of":5}`, nil, 403, vocab.ReasonFieldNotAllowed, "best_of"},
		{"n on messages", "/anthropic/v1/messages", `{"model":"claude-sonnet-4-5","max_tokens":5,"messages":[],"n":4}`, nil, 403, vocab.ReasonFieldNotAllowed, "n"},
		{"container", "/anthropic/v1/messages", `{"model":"claude-sonnet-4-5","max_tokens":5,"messages":[],"container":"c_1"}`, nil, 403, vocab.ReasonFieldNotAllowed, "container"},
		{"anthropic service tier", "/anthropic/v1/messages", `{"model":"claude-sonnet-4-5","max_tokens":5,"messages":[],"service_tier":"standard_only"}`, nil, 200, vocab.ReasonAllowlisted, ""},
		{"output limit in capitals", "/openrouter/api/v1/chat/completions", `{"model":"gpt-4o-mini","messages":[],"MAX_TOKENS":1}`, nil, 403, vocab.ReasonFieldNotAllowed, "MAX_TOKENS"},
		{"reasoning budget spelled twice", "/openrouter/api/v1/chat/completions", `{"model":"gpt-4o-mini","messages":[],"reasoning":{"max_tokens":50000,"MAX_TOKENS":1}}`, nil, 400, vocab.ReasonBadRequest, ""},
		{"fallback model unpriced", "/openrouter/api/v1/chat/completions", `{"model":"gpt-4o-mini","models":["gpt-4o-mini","evil/priceless"],"messages":[]}`, nil, 403, vocab.ReasonUnknownModel, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := newRig(t, anyAnswer, func(_ *Config, _ *policy.BudgetConfig, p map[string]policy.ProviderConfig) {
				for k, v := range p {
					v.AllowFields = tt.allowFields
					p[k] = v
				}
			})
			resp, body := r.send("POST", tt.path, tt.body)
			if resp.StatusCode != tt.wantStatus || resp.Header.Get("X-Egressd-Reason") != reasonHeader(tt.wantReason) {
				t.Fatalf("got %d %q %s, want %d %v", resp.StatusCode, resp.Header.Get("X-Egressd-Reason"), body, tt.wantStatus, tt.wantReason)
			}
			n := len(r.fake.requests())
			if tt.wantStatus != 200 {
				if n != 0 {
					t.Errorf("provider received %d calls, want none", n)
				}
				if tt.wantField != "" && errField(t, body, "field") != tt.wantField {
					t.Errorf("refusal %s does not name field %q", body, tt.wantField)
				}
				return
			}
			if n != 1 {
				t.Errorf("provider received %d calls, want 1", n)
			}
		})
	}
}

// errField reads error.<key> from an OpenAI- or Anthropic-shaped error.
func errField(t *testing.T, body []byte, key string) string {
	t.Helper()
	var e struct {
		Error map[string]any `json:"error"`
	}
	if err := json.Unmarshal(body, &e); err != nil {
		t.Fatalf("error body %q: %v", body, err)
	}
	s, _ := e.Error[key].(string)
	return s
}

// TestOutputMultipliersPriced: n, best_of, a fallback models list and
// reasoning.max_tokens raise the reservation, so a call the cap could
// cover once is refused when it would generate more.
func TestOutputMultipliersPriced(t *testing.T) {
	// claude-sonnet-4-5 output is $15/M: 1,000 tokens is $0.015.
	tests := []struct {
		name, path, body string
		wantStatus       int
	}{
		{"one choice fits", "/openai/chat/completions", `{"model":"gpt-4.1","max_tokens":1000,"messages":[]}`, 200},
		{"n=4 does not", "/openai/chat/completions", `{"model":"gpt-4.1","max_tokens":1000,"n":4,"messages":[]}`, 429},
		{"best_of=4 does not", "/openai/completions", `{"model":"gpt-4.1","max_tokens":1000,"best_of":4,"n":1,"prompt":"x"}`, 429},
		{"dearer fallback does not", "/openrouter/api/v1/chat/completions", `{"model":"gpt-4o-mini","models":["claude-sonnet-4-5"],"max_tokens":1000,"messages":[]}`, 429},
		{"reasoning budget does not", "/openrouter/api/v1/chat/completions", `{"model":"gpt-4.1","max_tokens":1000,"reasoning":{"max_tokens":3000},"messages":[]}`, 429},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			// gpt-4.1 output is $8/M: 1,000 tokens $0.008, 4,000 $0.032.
			r := newRig(t, anyAnswer, withBudget(func(b *policy.BudgetConfig) { b.CapUSD = 0.012 }))
			resp, body := r.send("POST", tt.path, tt.body)
			if resp.StatusCode != tt.wantStatus {
				t.Fatalf("got %d %s, want %d", resp.StatusCode, body, tt.wantStatus)
			}
			if want := map[int]int{200: 1, 429: 0}[tt.wantStatus]; len(r.fake.requests()) != want {
				t.Errorf("provider received %d calls, want %d", len(r.fake.requests()), want)
			}
		})
	}
}

// TestConcurrentMultipliersNeverPassTheCap: calls with n=8 that each bill
// their full reservation race against the cap; spend never passes it.
func TestConcurrentMultipliersNeverPassTheCap(t *testing.T) {
	// Each call: 100 output tokens × 8 choices at $8/M, billed in full.
	bill := func(w http.ResponseWriter, _ *http.Request, _ []byte) {
		w.Header().Set("Content-Type", "application/json")
		w.Write([]byte(`{"id":"c","object":"chat.completion","choices":[],"usage":{"prompt_tokens":10,"completion_tokens":800,"total_tokens":810}}`))
	}
	const capUSD = 0.05
	r := newRig(t, bill, withBudget(func(b *policy.BudgetConfig) { b.CapUSD = capUSD }))
	done := make(chan int, 100)
	for range 100 {
		go func() {
			req, _ := http.NewRequest("POST", r.srv.URL+"/openai/chat/completions",
				strings.NewReader(`{"model":"gpt-4.1","max_tokens":100,"n":8,"messages":[]}`))
			req.Header.Set("Authorization", "Bearer "+agentToken)
			resp, err := r.srv.Client().Do(req)
			if err != nil {
				t.Error(err)
				done <- 0
				return
			}
			readAll(t, resp)
			done <- resp.StatusCode
		}()
	}
	ok := 0
	for range 100 {
		if <-done == 200 {
			ok++
		}
	}
	waitFor(t, "every call settled", func() bool { return r.meter.Snapshot().InFlight == 0 })
	s := r.meter.Snapshot()
	if s.SpentUSD > capUSD {
		t.Errorf("spent $%v, past the $%v cap", s.SpentUSD, capUSD)
	}
	billed := float64(ok) * (10*2 + 800*8) / 1e6
	if ok == 0 || s.SpentUSD < billed-1e-9 {
		t.Errorf("%d calls admitted, ledger $%v, provider billed $%v: want the ledger to hold at least what was billed", ok, s.SpentUSD, billed)
	}
	if n := len(r.fake.requests()); n != ok {
		t.Errorf("provider received %d calls, %d were admitted", n, ok)
	}
}

// TestPriorityTierPriced: service_tier priority is admitted for a model
// with a priority multiplier and charged at it; without one it is refused.
func TestPriorityTierPriced(t *testing.T) {
	r := newRig(t, func(w http.ResponseWriter, _ *http.Request, _ []byte) {
		w.Header().Set("Content-Type", "application/json")
		w.Write([]byte(`{"id":"c","object":"chat.completion","service_tier":"priority","choices":[],"usage":{"prompt_tokens":1000,"completion_tokens":100,"total_tokens":1100}}`))
	}, withBudget(func(b *policy.BudgetConfig) {
		b.Prices = map[string]policy.Price{"gpt-4.1": {Input: 2, Output: 8, CacheRead: 0.5, Priority: 1.75}, "gpt-4o-mini": {Input: 0.15, Output: 0.6}}
	}))
	resp, body := r.send("POST", "/openai/chat/completions", `{"model":"gpt-4.1","max_tokens":100,"service_tier":"priority","messages":[]}`)
	if resp.StatusCode != 200 {
		t.Fatalf("got %d %s, want 200", resp.StatusCode, body)
	}
	if got, want := r.meter.Snapshot().SpentUSD, (1000*2+100*8)*1.75/1e6; math.Abs(got-want) > 1e-9 {
		t.Errorf("spent $%v, want the priority price $%v", got, want)
	}
	resp, body = r.send("POST", "/openai/chat/completions", `{"model":"gpt-4o-mini","max_tokens":100,"service_tier":"priority","messages":[]}`)
	if resp.StatusCode != 403 || errField(t, body, "field") != "service_tier" || len(r.fake.requests()) != 1 {
		t.Errorf("priority without a multiplier: got %d %s, want 403 naming service_tier and nothing sent", resp.StatusCode, body)
	}
}

// FuzzCheckFields: no body crashes the field checks, and a field no table
// lists is never accepted, whatever else the body carries.
func FuzzCheckFields(f *testing.F) {
	f.Add(`{"model":"m","n":2,"service_tier":"flex"}`, uint8(1))
	f.Add(`{"plugins":[{"id":"web"}],"modalities":["text"]}`, uint8(2))
	f.Add(`{"background":false,"mcp_servers":[]}`, uint8(3))
	f.Fuzz(func(t *testing.T, body string, k uint8) {
		kd := kind(k % uint8(kindFixed))
		ms, err := topLevel([]byte(body))
		if err != nil {
			return
		}
		g := grants{provider: "p"}
		_ = checkFields(kd, ms, g)
		ms = append(ms, member{"zz_unpriced", []byte("1")})
		if checkFields(kd, ms, g) == nil {
			t.Fatalf("%s with zz_unpriced accepted for %v", body, kd)
		}
	})
}
