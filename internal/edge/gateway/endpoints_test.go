package gateway

import (
	"net/http"
	"strings"
	"testing"

	"github.com/egressd/egressd/internal/shared/vocab"

	"github.com/egressd/egressd/internal/shared/meter"
	"github.com/egressd/egressd/policy"
)

// send makes one call with the agent token, of any method.
func (r *rig) send(method, path, body string) (*http.Response, []byte) {
	r.t.Helper()
	var rd *strings.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, r.srv.URL+path, nil)
	if rd != nil {
		req, err = http.NewRequest(method, r.srv.URL+path, rd)
	}
	if err != nil {
		r.t.Fatal(err)
	}
	if rd != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	req.Header.Set("Authorization", "Bearer "+agentToken)
	req.Header.Set("X-Api-Key", agentToken)
	resp := r.do(req)
	return resp, readAll(r.t, resp)
}

// anyAnswer answers every call with a chat completion billing 10 and 5
// tokens at $0.0001, whatever the endpoint.
var anyAnswer = openRouterJSON(0.0001, 10, 5)

const chatBody = `{"model":"gpt-4o-mini","max_tokens":10,"messages":[{"role":"user","content":"hi"}]}`

// TestEndpointTable: what the table lists is forwarded to exactly its
// canonical path (case, repeated and trailing slashes, escapes rewritten);
// everything else is refused with endpoint_not_allowed and the provider
// receives nothing.
func TestEndpointTable(t *testing.T) {
	tests := []struct {
		name, method, path, body string
		wantStatus               int
		wantReason               vocab.Reason
		wantUpstream             string // the path the provider received; "" = nothing sent
		wantCharged              bool
	}{
		{"openrouter chat", "POST", "/openrouter/api/v1/chat/completions", chatBody, 200, vocab.ReasonAllowlisted, "/api/v1/chat/completions", true},
		{"case and slashes rewritten", "POST", "/openrouter//API/V1/Chat//Completions/", chatBody, 200, vocab.ReasonAllowlisted, "/api/v1/chat/completions", true},
		{"escapes rewritten", "POST", "/openrouter/api/v1/chat/%63ompletions", chatBody, 200, vocab.ReasonAllowlisted, "/api/v1/chat/completions", true},
		{"openai base path joined", "POST", "/openai/chat/completions", chatBody, 200, vocab.ReasonAllowlisted, "/v1/chat/completions", true},
		{"legacy completions", "POST", "/openai/completions", `{"model":"gpt-4o-mini","prompt":"hi","max_tokens":3}`, 200, vocab.ReasonAllowlisted, "/v1/completions", true},
		{"embeddings", "POST", "/openai/embeddings", `{"model":"gpt-4o-mini","input":"hi"}`, 200, vocab.ReasonAllowlisted, "/v1/embeddings", true},
		{"model list free", "GET", "/openrouter/api/v1/models", "", 200, vocab.ReasonAllowlisted, "/api/v1/models", false},
		{"key info free", "GET", "/openrouter/api/v1/key", "", 200, vocab.ReasonAllowlisted, "/api/v1/key", false},
		{"model by id keeps its spelling", "GET", "/openai/Models/GPT-4o-Mini", "", 200, vocab.ReasonAllowlisted, "/v1/models/GPT-4o-Mini", false},
		{"anthropic count_tokens free", "POST", "/anthropic/v1/messages/count_tokens", `{"model":"claude-sonnet-4-5","messages":[]}`, 200, vocab.ReasonAllowlisted, "/v1/messages/count_tokens", false},
		{"stored response", "GET", "/openai/responses/resp_123", "", 403, vocab.ReasonEndpointNotAllowed, "", false},
		{"delete stored response", "DELETE", "/openai/responses/resp_123", "", 403, vocab.ReasonEndpointNotAllowed, "", false},
		{"files", "POST", "/openai/files", `{"purpose":"batch"}`, 403, vocab.ReasonEndpointNotAllowed, "", false},
		{"batches", "POST", "/openai/batches", `{"model":"gpt-4o-mini"}`, 403, vocab.ReasonEndpointNotAllowed, "", false},
		{"fine-tuning with a priced model", "POST", "/openai/fine_tuning/jobs", `{"model":"gpt-4o-mini","training_file":"f"}`, 403, vocab.ReasonEndpointNotAllowed, "", false},
		{"anthropic batches", "POST", "/anthropic/v1/messages/batches", `{"requests":[]}`, 403, vocab.ReasonEndpointNotAllowed, "", false},
		{"images", "POST", "/openai/images/generations", `{"model":"gpt-4o-mini","prompt":"x"}`, 403, vocab.ReasonEndpointNotAllowed, "", false},
		{"openrouter path without api/v1", "POST", "/openrouter/chat/completions", chatBody, 403, vocab.ReasonEndpointNotAllowed, "", false},
		{"suffix after a metered path", "POST", "/openai/chat/completions/x", chatBody, 403, vocab.ReasonEndpointNotAllowed, "", false},
		{"metered path by GET", "GET", "/openai/chat/completions", "", 403, vocab.ReasonEndpointNotAllowed, "", false},
		{"HEAD", "HEAD", "/openai/models", "", 403, vocab.ReasonEndpointNotAllowed, "", false},
		{"chat on anthropic format", "POST", "/anthropic/v1/chat/completions", chatBody, 403, vocab.ReasonEndpointNotAllowed, "", false},
		{"dot segment", "POST", "/openai/x/%2e%2e/chat/completions", chatBody, 400, vocab.ReasonBadRequest, "", false},
		{"encoded slash", "POST", "/openai/chat%2Fcompletions", chatBody, 400, vocab.ReasonBadRequest, "", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := newRig(t, anyAnswer)
			resp, body := r.send(tt.method, tt.path, tt.body)
			if resp.StatusCode != tt.wantStatus || resp.Header.Get("X-Egressd-Reason") != reasonHeader(tt.wantReason) {
				t.Errorf("got %d %q %s, want %d %v", resp.StatusCode, resp.Header.Get("X-Egressd-Reason"), body, tt.wantStatus, tt.wantReason)
			}
			seen := r.fake.requests()
			switch {
			case tt.wantUpstream == "" && len(seen) != 0:
				t.Errorf("provider received %s %s, want nothing", seen[0].Method, seen[0].Path)
			case tt.wantUpstream != "" && (len(seen) != 1 || seen[0].Path != tt.wantUpstream):
				t.Errorf("provider received %+v, want one call to %s", seen, tt.wantUpstream)
			}
			if tt.wantStatus == 403 && tt.method != "HEAD" && !strings.Contains(string(body), "not metered") {
				t.Errorf("refusal %s does not say the endpoint is not metered", body)
			}
			dec := r.rec.ByEvent(vocab.EventDecision)
			if len(dec) != 1 || dec[0].Reason != tt.wantReason {
				t.Errorf("decision entries %+v, want one with reason %v", dec, tt.wantReason)
			}
			if got := r.meter.Snapshot().SpentUSD; (got > 0) != tt.wantCharged {
				t.Errorf("spent $%v, want charged %v", got, tt.wantCharged)
			}
		})
	}
}

func reasonHeader(r vocab.Reason) string {
	if r == vocab.ReasonAllowlisted {
		return ""
	}
	return r.String()
}

// TestPolicyEndpoints: a policy may add an unmetered GET, or a POST at a
// declared price that is reserved and charged per call; nothing else.
func TestPolicyEndpoints(t *testing.T) {
	r := newRig(t, anyAnswer, func(_ *Config, _ *policy.BudgetConfig, p map[string]policy.ProviderConfig) {
		o := p["openai"]
		o.Endpoints = []policy.EndpointConfig{
			{Method: "GET", Path: "/v1/dashboard/**"},
			{Method: "POST", Path: "/v1/images/generations", PerCallUSD: 0.25},
		}
		p["openai"] = o
	})
	if resp, body := r.send("GET", "/openai/dashboard/usage/today", ""); resp.StatusCode != 200 {
		t.Fatalf("policy GET: got %d %s, want 200", resp.StatusCode, body)
	}
	if got := r.meter.Snapshot().SpentUSD; got != 0 {
		t.Errorf("policy GET charged $%v, want nothing", got)
	}
	if resp, body := r.send("POST", "/openai/images/generations", `{"prompt":"a cat","n":4}`); resp.StatusCode != 200 {
		t.Fatalf("priced POST: got %d %s, want 200", resp.StatusCode, body)
	}
	if got := r.meter.Snapshot().SpentUSD; got != 0.25 {
		t.Errorf("priced POST charged $%v, want the declared $0.25", got)
	}
	if resp, _ := r.send("POST", "/openai/dashboard/usage", `{}`); resp.StatusCode != 403 {
		t.Errorf("POST to a GET-only policy path: got %d, want 403", resp.StatusCode)
	}
	if resp, _ := r.send("GET", "/openai/Dashboard/x", ""); resp.StatusCode != 403 {
		t.Errorf("policy paths match as written: got %d for another case, want 403", resp.StatusCode)
	}
	if n := len(r.fake.requests()); n != 2 {
		t.Errorf("provider received %d calls, want the 2 allowed", n)
	}
}

// FuzzLookup: any path the table accepts is forwarded as a canonical
// path that the table accepts again unchanged.
func FuzzLookup(f *testing.F) {
	f.Add("POST", "/api/v1/chat/completions")
	f.Add("GET", "/v1/models/GPT-4o")
	f.Add("GET", "/API/V1/models/a/b/endpoints")
	f.Fuzz(func(t *testing.T, method, full string) {
		for _, format := range []string{"openai", "anthropic"} {
			fm, _ := meter.ParseFormat(format)
			e, fwd, ok := lookup(fm, nil, method, full)
			if !ok {
				continue
			}
			e2, fwd2, ok2 := lookup(fm, nil, method, fwd)
			if !ok2 || fwd2 != fwd || e2.kind != e.kind {
				t.Fatalf("%s %q forwarded as %q, which looks up as %q %v %v", method, full, fwd, fwd2, ok2, e2.kind)
			}
			if !strings.EqualFold(fwd, full) {
				t.Fatalf("%q forwarded as %q: only case may change", full, fwd)
			}
		}
	})
}
