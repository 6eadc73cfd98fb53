package gateway

import (
	"fmt"
	"testing"

	"github.com/egressd/egressd/internal/shared/vocab"

	"github.com/egressd/egressd/policy"
)

// TestProviderRunTools: tools the agent runs pass; tools the provider runs
// are refused by type unless the provider's allow_tools grants them, and
// the provider receives nothing.
func TestProviderRunTools(t *testing.T) {
	tests := []struct {
		name, path, body string
		grant            []string
		wantStatus       int
		wantReason       vocab.Reason
	}{
		{"function", "/openai/responses", `{"model":"gpt-4.1","input":"x","tools":[{"type":"function","name":"f","parameters":{}}]}`, nil, 200, vocab.ReasonAllowlisted},
		{"custom", "/openai/responses", `{"model":"gpt-4.1","input":"x","tools":[{"type":"custom","name":"f"}]}`, nil, 200, vocab.ReasonAllowlisted},
		{"anthropic tool without type", "/anthropic/v1/messages", `{"model":"claude-sonnet-4-5","max_tokens":5,"messages":[],"tools":[{"name":"f","input_schema":{}}]}`, nil, 200, vocab.ReasonAllowlisted},
		{"anthropic bash is a client tool", "/anthropic/v1/messages", `{"model":"claude-sonnet-4-5","max_tokens":5,"messages":[],"tools":[{"type":"bash_20250124","name":"bash"}]}`, nil, 200, vocab.ReasonAllowlisted},
		{"anthropic web search", "/anthropic/v1/messages", `{"model":"claude-sonnet-4-5","max_tokens":5,"messages":[],"tools":[{"type":"web_search_20250305","name":"web_search"}]}`, nil, 403, vocab.ReasonToolNotAllowed},
		{"anthropic web fetch", "/anthropic/v1/messages", `{"model":"claude-sonnet-4-5","max_tokens":5,"messages":[],"tools":[{"type":"web_fetch_20250910","name":"web_fetch"}]}`, nil, 403, vocab.ReasonToolNotAllowed},
		{"anthropic code execution", "/anthropic/v1/messages", `{"model":"claude-sonnet-4-5","max_tokens":5,"messages":[],"tools":[{"type":"code_execution_20250825","name":"code_execution"}]}`, nil, 403, vocab.ReasonToolNotAllowed},
		{"anthropic mcp connector", "/anthropic/v1/messages", `{"model":"claude-sonnet-4-5","max_tokens":5,"messages":[],"mcp_servers":[{"type":"url","url":"https://mcp.example/sse","name":"x"}]}`, nil, 403, vocab.ReasonToolNotAllowed},
		{"openai web search", "/openai/responses", `{"model":"gpt-4.1","input":"x","tools":[{"type":"web_search"}]}`, nil, 403, vocab.ReasonToolNotAllowed},
		{"openai file search", "/openai/responses", `{"model":"gpt-4.1","input":"x","tools":[{"type":"file_search","vector_store_ids":["vs_1"]}]}`, nil, 403, vocab.ReasonToolNotAllowed},
		{"openai code interpreter", "/openai/responses", `{"model":"gpt-4.1","input":"x","tools":[{"type":"code_interpreter","container":{"type":"auto"}}]}`, nil, 403, vocab.ReasonToolNotAllowed},
		{"openai image generation", "/openai/responses", `{"model":"gpt-4.1","input":"x","tools":[{"type":"image_generation"}]}`, nil, 403, vocab.ReasonToolNotAllowed},
		{"openai mcp", "/openai/responses", `{"model":"gpt-4.1","input":"x","tools":[{"type":"mcp","server_label":"x","server_url":"https://mcp.example"}]}`, nil, 403, vocab.ReasonToolNotAllowed},
		{"openai type spelled in capitals", "/openai/responses", `{"model":"gpt-4.1","input":"x","tools":[{"Type":"WEB_SEARCH"}]}`, nil, 403, vocab.ReasonToolNotAllowed},
		{"second spelling of type", "/openai/responses", `{"model":"gpt-4.1","input":"x","tools":[{"type":"function","name":"f","TYPE":"web_search"}]}`, nil, 403, vocab.ReasonToolNotAllowed},
		{"chat web_search_options", "/openai/chat/completions", `{"model":"gpt-4o-mini","messages":[],"web_search_options":{}}`, nil, 403, vocab.ReasonToolNotAllowed},
		{"openrouter web plugin", "/openrouter/api/v1/chat/completions", `{"model":"gpt-4o-mini","messages":[],"plugins":[{"id":"web"}]}`, nil, 403, vocab.ReasonToolNotAllowed},
		{"openrouter online suffix", "/openrouter/api/v1/chat/completions", `{"model":"gpt-4o-mini:online","messages":[]}`, nil, 403, vocab.ReasonToolNotAllowed},
		{"web search granted but nothing to restrict it to", "/openai/responses", `{"model":"gpt-4.1","input":"x","tools":[{"type":"web_search"}]}`, []string{"web_search"}, 403, vocab.ReasonNotAllowlisted},
		{"image generation granted", "/openai/responses", `{"model":"gpt-4.1","input":"x","tools":[{"type":"image_generation"}]}`, []string{"image_generation"}, 200, vocab.ReasonAllowlisted},
		{"web plugin granted", "/openrouter/api/v1/chat/completions", `{"model":"gpt-4o-mini","messages":[],"plugins":[{"id":"web"}]}`, []string{"plugin:web"}, 200, vocab.ReasonAllowlisted},
		{"mcp connector instead of a url", "/openai/responses", `{"model":"gpt-4.1","input":"x","tools":[{"type":"mcp","server_label":"g","connector_id":"connector_gmail"}]}`, []string{"mcp"}, 403, vocab.ReasonFieldNotAllowed},
		{"online fallback model", "/openrouter/api/v1/chat/completions", `{"model":"gpt-4o-mini","models":["gpt-4o-mini","gpt-4o-mini:online"],"messages":[]}`, nil, 403, vocab.ReasonToolNotAllowed},
		{"mcp granted still checks its url", "/openai/responses", `{"model":"gpt-4.1","input":"x","tools":[{"type":"mcp","server_label":"x","server_url":"https://mcp.example"}]}`, []string{"mcp"}, 403, vocab.ReasonNotAllowlisted},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := newRig(t, anyAnswer, func(_ *Config, _ *policy.BudgetConfig, p map[string]policy.ProviderConfig) {
				for k, v := range p {
					v.AllowTools = tt.grant
					p[k] = v
				}
			})
			resp, body := r.send("POST", tt.path, tt.body)
			if resp.StatusCode != tt.wantStatus || resp.Header.Get("X-Egressd-Reason") != reasonHeader(tt.wantReason) {
				t.Fatalf("got %d %q %s, want %d %v", resp.StatusCode, resp.Header.Get("X-Egressd-Reason"), body, tt.wantStatus, tt.wantReason)
			}
			if want := map[bool]int{true: 1, false: 0}[tt.wantStatus == 200]; len(r.fake.requests()) != want {
				t.Errorf("provider received %d calls, want %d", len(r.fake.requests()), want)
			}
		})
	}
}

// TestProviderFetchedURLs: a URL the provider would fetch must be one the
// proxy would let the agent fetch, with the proxy's reasons.
func TestProviderFetchedURLs(t *testing.T) {
	const img = `{"model":"gpt-4o-mini","max_tokens":5,"messages":[{"role":"user","content":[{"type":"image_url","image_url":{"url":%q}}]}]}`
	tests := []struct {
		name, path, body string
		wantStatus       int
		wantReason       vocab.Reason
	}{
		{"granted host", "/openai/chat/completions", sprintf(img, "https://images.example/cat.png"), 200, vocab.ReasonAllowlisted},
		{"inline data", "/openai/chat/completions", sprintf(img, "data:image/png;base64,iVBORw0KGgo="), 200, vocab.ReasonAllowlisted},
		{"other host", "/openai/chat/completions", sprintf(img, "https://evil.example/x.png"), 403, vocab.ReasonNotAllowlisted},
		{"granted host, other port", "/openai/chat/completions", sprintf(img, "https://images.example:8443/x.png"), 403, vocab.ReasonPortNotAllowed},
		{"private literal", "/openai/chat/completions", sprintf(img, "http://10.0.0.7/x.png"), 403, vocab.ReasonPrivateAddress},
		{"metadata", "/openai/chat/completions", sprintf(img, "http://169.254.169.254/latest/meta-data/"), 403, vocab.ReasonMetadataAddress},
		{"file scheme", "/openai/chat/completions", sprintf(img, "file:///etc/passwd"), 400, vocab.ReasonBadRequest},
		{"userinfo", "/openai/chat/completions", sprintf(img, "https://images.example@evil.example/"), 400, vocab.ReasonBadRequest},
		{"responses input_image string", "/openai/responses", `{"model":"gpt-4.1","input":[{"role":"user","content":[{"type":"input_image","image_url":"https://evil.example/a.png"}]}]}`, 403, vocab.ReasonNotAllowlisted},
		{"responses input_file url", "/openai/responses", `{"model":"gpt-4.1","input":[{"role":"user","content":[{"type":"input_file","file_url":"https://evil.example/a.pdf"}]}]}`, 403, vocab.ReasonNotAllowlisted},
		{"anthropic url source", "/anthropic/v1/messages", `{"model":"claude-sonnet-4-5","max_tokens":5,"messages":[{"role":"user","content":[{"type":"document","source":{"type":"url","url":"https://evil.example/a.pdf"}}]}]}`, 403, vocab.ReasonNotAllowlisted},
		{"anthropic url source granted", "/anthropic/v1/messages", `{"model":"claude-sonnet-4-5","max_tokens":5,"messages":[{"role":"user","content":[{"type":"image","source":{"type":"url","url":"https://images.example/a.png"}}]}]}`, 200, vocab.ReasonAllowlisted},
		{"key spelled in capitals", "/anthropic/v1/messages", `{"model":"claude-sonnet-4-5","max_tokens":5,"messages":[{"role":"user","content":[{"type":"image","source":{"type":"url","URL":"https://evil.example/a.png"}}]}]}`, 403, vocab.ReasonNotAllowlisted},
		{"replayed citation is history", "/anthropic/v1/messages", `{"model":"claude-sonnet-4-5","max_tokens":5,"messages":[{"role":"assistant","content":[{"type":"text","text":"x","citations":[{"type":"web_search_result_location","url":"https://evil.example/","title":"t"}]}]}]}`, 200, vocab.ReasonAllowlisted},
		{"fetch hidden in a replayed result", "/anthropic/v1/messages", `{"model":"claude-sonnet-4-5","max_tokens":5,"messages":[{"role":"user","content":[{"type":"web_fetch_result","url":"https://evil.example/","content":{"type":"document","source":{"type":"url","url":"https://evil.example/b"}}}]}]}`, 403, vocab.ReasonNotAllowlisted},
		{"history type forged on a fetched url", "/openai/chat/completions", `{"model":"gpt-4o-mini","max_tokens":5,"messages":[{"role":"user","content":[{"type":"image_url","image_url":{"url":"http://169.254.169.254/latest/meta-data/","type":"x_result"}}]}]}`, 403, vocab.ReasonMetadataAddress},
		{"file_data that is not inline data", "/openrouter/api/v1/chat/completions", `{"model":"gpt-4o-mini","max_tokens":5,"messages":[{"role":"user","content":[{"type":"file","file":{"filename":"a.pdf","file_data":"\u0001https://evil.example/a.pdf"}}]}]}`, 400, vocab.ReasonBadRequest},
		{"count_tokens checked too", "/anthropic/v1/messages/count_tokens", `{"model":"claude-sonnet-4-5","messages":[{"role":"user","content":[{"type":"image","source":{"type":"url","url":"https://evil.example/a.png"}}]}]}`, 403, vocab.ReasonNotAllowlisted},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := newRig(t, anyAnswer, withPolicy(t, "allow: [{host: images.example}]\n"))
			resp, body := r.send("POST", tt.path, tt.body)
			if resp.StatusCode != tt.wantStatus || resp.Header.Get("X-Egressd-Reason") != reasonHeader(tt.wantReason) {
				t.Fatalf("got %d %q %s, want %d %v", resp.StatusCode, resp.Header.Get("X-Egressd-Reason"), body, tt.wantStatus, tt.wantReason)
			}
			if want := map[bool]int{true: 1, false: 0}[tt.wantStatus == 200]; len(r.fake.requests()) != want {
				t.Errorf("provider received %d calls, want %d", len(r.fake.requests()), want)
			}
		})
	}
}

// TestURLsRefusedWithoutPolicy: a gateway with no policy refuses every
// URL the provider would fetch (fail closed).
func TestURLsRefusedWithoutPolicy(t *testing.T) {
	r := newRig(t, anyAnswer)
	resp, body := r.send("POST", "/openai/chat/completions", sprintf(`{"model":"gpt-4o-mini","messages":[{"role":"user","content":[{"type":"image_url","image_url":{"url":%q}}]}]}`, "https://images.example/a.png"))
	if resp.StatusCode != 403 || len(r.fake.requests()) != 0 {
		t.Errorf("got %d %s with %d upstream calls, want 403 and none", resp.StatusCode, body, len(r.fake.requests()))
	}
}

// FuzzCheckReach: no body crashes the tool and URL checks, and a body
// naming an ungranted https URL under image_url is never accepted.
func FuzzCheckReach(f *testing.F) {
	f.Add(`{"a":[{"type":"image","source":{"type":"url","url":"https://x.example"}}]}`)
	f.Add(`{"tools":[{"type":"web_search"}],"image_url":"data:x"}`)
	f.Fuzz(func(t *testing.T, body string) {
		ms, err := topLevel([]byte(body))
		if err != nil {
			return
		}
		g := grants{provider: "p"}
		_ = checkReach([]byte(body), ms, []string{"m"}, g)
		wrapped := `{"image_url":"https://ungranted.example/","x":` + body + `}`
		ms, err = topLevel([]byte(wrapped))
		if err != nil {
			return
		}
		if checkReach([]byte(wrapped), ms, []string{"m"}, g) == nil {
			t.Fatalf("accepted %s", wrapped)
		}
	})
}

func sprintf(format string, args ...any) string { return fmt.Sprintf(format, args...) }

// TestAnthropicBetasAndFileData: beta headers that change the bill or the
// reach are refused unless granted; OpenRouter's URL file_data is judged
// like any fetched URL.
func TestAnthropicBetasAndFileData(t *testing.T) {
	const msg = `{"model":"claude-sonnet-4-5","max_tokens":5,"messages":[]}`
	tests := []struct {
		name, path, body, beta string
		allow                  []string
		wantStatus             int
	}{
		{"harmless betas", "/anthropic/v1/messages", msg, "interleaved-thinking-2025-05-14, fine-grained-tool-streaming-2025-05-14", nil, 200},
		{"long context", "/anthropic/v1/messages", msg, "context-1m-2025-08-07", nil, 403},
		{"mcp connector", "/anthropic/v1/messages", msg, "interleaved-thinking-2025-05-14,mcp-client-2025-04-04", nil, 403},
		{"long context granted", "/anthropic/v1/messages", msg, "context-1m-2025-08-07", []string{"anthropic-beta:context-1m-2025-08-07"}, 200},
		{"file_data URL", "/openrouter/api/v1/chat/completions", `{"model":"gpt-4o-mini","messages":[{"role":"user","content":[{"type":"file","file":{"filename":"a.pdf","file_data":"https://evil.example/a.pdf"}}]}]}`, "", nil, 403},
		{"file_data inline", "/openrouter/api/v1/chat/completions", `{"model":"gpt-4o-mini","messages":[{"role":"user","content":[{"type":"file","file":{"filename":"a.pdf","file_data":"data:application/pdf;base64,JVBERi0="}}]}]}`, "", nil, 200},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := newRig(t, anyAnswer, func(_ *Config, _ *policy.BudgetConfig, p map[string]policy.ProviderConfig) {
				for k, v := range p {
					v.AllowFields = tt.allow
					p[k] = v
				}
			})
			resp := r.post(tt.path, tt.body, "Anthropic-Beta", tt.beta)
			body := readAll(t, resp)
			if resp.StatusCode != tt.wantStatus {
				t.Fatalf("got %d %s, want %d", resp.StatusCode, body, tt.wantStatus)
			}
			if want := map[bool]int{true: 1, false: 0}[tt.wantStatus == 200]; len(r.fake.requests()) != want {
				t.Errorf("provider received %d calls, want %d", len(r.fake.requests()), want)
			}
		})
	}
}

func TestNoDuplicateKeys(t *testing.T) {
	tests := []struct {
		body string
		ok   bool
	}{
		{`{"a":{"url":"x","b":[{"url":"y"},{"url":"z"}]},"c":"url"}`, true},
		{`{"a":[{"type":"image","source":{"type":"url","url":"https://evil.example","url":"https://images.example"}}]}`, false},
		{`{"tools":[{"type":"function","type":"web_search"}]}`, false},
		{`{"a":{"k":1},"b":{"k":2}}`, true},
		{`{"a":[["k","k"]]}`, true},
		{`{"a":{"x":{"y":1},"x":2}}`, false},
	}
	for _, tt := range tests {
		if err := noDuplicateKeys([]byte(tt.body)); (err == nil) != tt.ok {
			t.Errorf("%s: got %v, want ok %v", tt.body, err, tt.ok)
		}
	}
}
