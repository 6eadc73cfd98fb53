package gateway

import (
	"net/http"
	"testing"

	"github.com/egressd/egressd/policy"
)

// TestLedgerHoldsWhatWasBilled: for every metered endpoint and billed
// feature, the fake provider answers with the usage it bills, and the
// ledger holds at least that much.
func TestLedgerHoldsWhatWasBilled(t *testing.T) {
	tests := []struct {
		name, path, body, answer string
		billed                   float64
	}{
		{"chat", "/openai/chat/completions", `{"model":"gpt-4.1","max_tokens":100,"messages":[]}`,
			`{"object":"chat.completion","choices":[],"usage":{"prompt_tokens":1000,"completion_tokens":100,"prompt_tokens_details":{"cached_tokens":400}}}`,
			(600*2 + 400*0.5 + 100*8) / 1e6},
		{"chat n=3", "/openai/chat/completions", `{"model":"gpt-4.1","max_tokens":100,"n":3,"messages":[]}`,
			`{"object":"chat.completion","choices":[],"usage":{"prompt_tokens":10,"completion_tokens":300}}`,
			(10*2 + 300*8) / 1e6},
		{"openrouter cost wins", "/openrouter/api/v1/chat/completions", `{"model":"gpt-4.1","max_tokens":100,"messages":[]}`,
			`{"object":"chat.completion","choices":[],"usage":{"prompt_tokens":10,"completion_tokens":10,"cost":0.0123}}`,
			0.0123},
		{"responses", "/openai/responses", `{"model":"gpt-4.1","input":"x","max_output_tokens":100}`,
			`{"object":"response","status":"completed","output":[],"usage":{"input_tokens":500,"output_tokens":90,"input_tokens_details":{"cached_tokens":0}}}`,
			(500*2 + 90*8) / 1e6},
		{"legacy completions best_of", "/openai/completions", `{"model":"gpt-4.1","prompt":"x","max_tokens":50,"best_of":3}`,
			`{"object":"text_completion","choices":[],"usage":{"prompt_tokens":5,"completion_tokens":150}}`,
			(5*2 + 150*8) / 1e6},
		{"embeddings at the shipped price", "/openai/embeddings", `{"model":"text-embedding-3-small","input":"hello"}`,
			`{"object":"list","data":[],"model":"text-embedding-3-small","usage":{"prompt_tokens":8000,"total_tokens":8000}}`,
			8000 * 0.02 / 1e6},
		{"messages with cache writes", "/anthropic/v1/messages", `{"model":"claude-sonnet-4-5","max_tokens":100,"messages":[]}`,
			`{"type":"message","content":[],"usage":{"input_tokens":100,"output_tokens":50,"cache_creation_input_tokens":2000,"cache_read_input_tokens":1000,"cache_creation":{"ephemeral_5m_input_tokens":0,"ephemeral_1h_input_tokens":2000}}}`,
			(100*3 + 50*15 + 2000*6 + 1000*0.3) / 1e6},
		{"messages with searches", "/anthropic/v1/messages", `{"model":"claude-sonnet-4-5","max_tokens":100,"messages":[],"tools":[{"type":"web_search_20250305","name":"web_search","max_uses":3}]}`,
			`{"type":"message","content":[],"usage":{"input_tokens":100,"output_tokens":50,"server_tool_use":{"web_search_requests":3}}}`,
			(100*3+50*15)/1e6 + 3*0.01},
		{"declared price", "/openai/images/generations", `{"prompt":"x"}`, `{"created":1,"data":[]}`, 0.04},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := newRig(t, func(w http.ResponseWriter, _ *http.Request, _ []byte) {
				w.Header().Set("Content-Type", "application/json")
				w.Write([]byte(tt.answer))
			}, grantTools("web_search_20250305"), withPolicy(t, "allow: [{host: docs.example}]\n"),
				func(_ *Config, _ *policy.BudgetConfig, p map[string]policy.ProviderConfig) {
					o := p["openai"]
					o.Endpoints = []policy.EndpointConfig{{Method: "POST", Path: "/v1/images/generations", PerCallUSD: 0.04}}
					p["openai"] = o
				})
			resp, body := r.send("POST", tt.path, tt.body)
			if resp.StatusCode != 200 {
				t.Fatalf("got %d %s", resp.StatusCode, body)
			}
			if got := r.settled(1); got < tt.billed-1e-12 {
				t.Errorf("ledger $%v, provider billed $%v", got, tt.billed)
			}
		})
	}
}
