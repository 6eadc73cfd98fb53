package gateway

import (
	"encoding/json"
	"math"
	"net/http"
	"testing"

	"github.com/egressd/egressd/internal/shared/vocab"

	"github.com/egressd/egressd/policy"
)

// grantTools gives every provider route the tool grants.
func grantTools(tools ...string) rigOpt {
	return func(_ *Config, _ *policy.BudgetConfig, p map[string]policy.ProviderConfig) {
		for k, v := range p {
			v.AllowTools = tools
			p[k] = v
		}
	}
}

// anthropicSearches answers a message that ran n web searches.
func anthropicSearches(n int) func(http.ResponseWriter, *http.Request, []byte) {
	return func(w http.ResponseWriter, _ *http.Request, _ []byte) {
		w.Header().Set("Content-Type", "application/json")
		w.Write([]byte(`{"id":"msg_1","type":"message","role":"assistant","model":"claude-sonnet-4-5","content":[{"type":"text","text":"ok"}],"stop_reason":"end_turn",` +
			`"usage":{"input_tokens":100,"output_tokens":20,"server_tool_use":{"web_search_requests":` + itoa(n) + `}}}`))
	}
}

// TestGrantedToolReservedAndSettled: a granted web search is bounded
// (max_uses sent when the agent gave none), restricted to the allow-list,
// reserved at its worst case and charged the searches the provider
// reports on top of tokens.
func TestGrantedToolReservedAndSettled(t *testing.T) {
	r := newRig(t, anthropicSearches(3), grantTools("web_search_20250305"),
		withPolicy(t, "allow: [{host: docs.example}, {host: \"*.wild.example\"}, {host: plain.example, ports: [80]}]\n"))
	resp := r.post("/anthropic/v1/messages", `{"model":"claude-sonnet-4-5","max_tokens":50,"messages":[],"tools":[{"type":"web_search_20250305","name":"web_search"}]}`)
	if resp.StatusCode != 200 {
		t.Fatalf("got %d %s, want 200", resp.StatusCode, readAll(t, resp))
	}
	var sent struct {
		Tools []struct {
			MaxUses        int      `json:"max_uses"`
			AllowedDomains []string `json:"allowed_domains"`
		} `json:"tools"`
	}
	if err := json.Unmarshal(r.fake.requests()[0].Body, &sent); err != nil {
		t.Fatal(err)
	}
	if len(sent.Tools) != 1 || sent.Tools[0].MaxUses != DefaultToolUses || len(sent.Tools[0].AllowedDomains) != 1 || sent.Tools[0].AllowedDomains[0] != "docs.example" {
		t.Errorf("provider received tools %+v, want max_uses %d and allowed_domains [docs.example]", sent.Tools, DefaultToolUses)
	}
	fee, _ := r.meter.ToolFee("web_search")
	want := (100*3+20*15)/1e6 + 3*fee
	if got := r.meter.Snapshot().SpentUSD; math.Abs(got-want) > 1e-9 {
		t.Errorf("spent $%v, want tokens plus 3 searches: $%v", got, want)
	}
}

// TestGrantedToolRefusals: domains outside the allow-list, and a cap that
// cannot cover the tool's worst case, are refused before the provider.
func TestGrantedToolRefusals(t *testing.T) {
	tests := []struct {
		name, body string
		capUSD     float64
		wantStatus int
		wantReason vocab.Reason
	}{
		{"ungranted domain", `{"model":"claude-sonnet-4-5","max_tokens":5,"messages":[],"tools":[{"type":"web_fetch_20250910","name":"web_fetch","allowed_domains":["evil.example"]}]}`, 10, 403, vocab.ReasonNotAllowlisted},
		{"granted domain", `{"model":"claude-sonnet-4-5","max_tokens":5,"messages":[],"tools":[{"type":"web_fetch_20250910","name":"web_fetch","allowed_domains":["docs.example"]}]}`, 10, 200, vocab.ReasonAllowlisted},
		{"fees past the cap", `{"model":"claude-sonnet-4-5","max_tokens":5,"messages":[],"tools":[{"type":"web_search_20250305","name":"web_search","max_uses":50}]}`, 0.5, 429, vocab.ReasonBudgetExceeded},
		{"max_uses in capitals", `{"model":"claude-sonnet-4-5","max_tokens":5,"messages":[],"tools":[{"type":"web_search_20250305","name":"web_search","MAX_USES":1}]}`, 10, 400, vocab.ReasonBadRequest},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := newRig(t, anthropicSearches(0), grantTools("web_search_20250305", "web_fetch_20250910"),
				withPolicy(t, "allow: [{host: docs.example}]\n"), withBudget(func(b *policy.BudgetConfig) { b.CapUSD = tt.capUSD }))
			resp := r.post("/anthropic/v1/messages", tt.body)
			body := readAll(t, resp)
			if resp.StatusCode != tt.wantStatus || resp.Header.Get("X-Egressd-Reason") != reasonHeader(tt.wantReason) {
				t.Fatalf("got %d %q %s, want %d %v", resp.StatusCode, resp.Header.Get("X-Egressd-Reason"), body, tt.wantStatus, tt.wantReason)
			}
			if want := map[bool]int{true: 1, false: 0}[tt.wantStatus == 200]; len(r.fake.requests()) != want {
				t.Errorf("provider received %d calls, want %d", len(r.fake.requests()), want)
			}
		})
	}
}

// TestResponsesToolCallsSettled: a granted OpenAI web search sends
// max_tool_calls and the allow-list as filters.allowed_domains, and the
// web_search_call items of the answer are charged on top of tokens.
func TestResponsesToolCallsSettled(t *testing.T) {
	r := newRig(t, func(w http.ResponseWriter, _ *http.Request, _ []byte) {
		w.Header().Set("Content-Type", "application/json")
		w.Write([]byte(`{"id":"resp_1","object":"response","status":"completed","output":[{"type":"web_search_call","id":"ws_1","status":"completed"},{"type":"web_search_call","id":"ws_2","status":"completed"},{"type":"message","role":"assistant","content":[{"type":"output_text","text":"ok"}]}],"usage":{"input_tokens":100,"output_tokens":10,"total_tokens":110}}`))
	}, grantTools("web_search"), withPolicy(t, "allow: [{host: docs.example}]\n"))
	resp := r.post("/openai/responses", `{"model":"gpt-4.1","input":"find","max_output_tokens":50,"tools":[{"type":"web_search"}]}`)
	if resp.StatusCode != 200 {
		t.Fatalf("got %d %s", resp.StatusCode, readAll(t, resp))
	}
	var sent struct {
		MaxToolCalls int `json:"max_tool_calls"`
		Tools        []struct {
			Filters struct {
				AllowedDomains []string `json:"allowed_domains"`
			} `json:"filters"`
		} `json:"tools"`
	}
	if err := json.Unmarshal(r.fake.requests()[0].Body, &sent); err != nil {
		t.Fatal(err)
	}
	if sent.MaxToolCalls != DefaultToolUses || len(sent.Tools) != 1 || len(sent.Tools[0].Filters.AllowedDomains) != 1 {
		t.Errorf("provider received %s, want max_tool_calls %d and filters.allowed_domains [docs.example]", r.fake.requests()[0].Body, DefaultToolUses)
	}
	fee, _ := r.meter.ToolFee("web_search")
	want := (100*2+10*8)/1e6 + 2*fee
	if got := r.meter.Snapshot().SpentUSD; math.Abs(got-want) > 1e-9 {
		t.Errorf("spent $%v, want tokens plus 2 searches: $%v", got, want)
	}
}

func itoa(n int) string { b, _ := json.Marshal(n); return string(b) }
