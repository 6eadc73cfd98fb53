package gateway

import (
	"bytes"
	"encoding/json"
	"math"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/egressd/egressd/internal/lib/scrub"
	"github.com/egressd/egressd/internal/shared/vocab"

	"github.com/egressd/egressd/policy"
)

func TestUsagePerFormat(t *testing.T) {
	tests := []struct {
		fixture, path, body string
		wantCost            float64
		wantIn, wantOut     int64
		wantIncludeUsage    bool
	}{
		{"openai_chat.json", "/openai/chat/completions", `{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}]}`,
			(86*0.15 + 1920*0.075 + 300*0.6) / 1e6, 2006, 300, false},
		{"openai_chat_stream.sse", "/openai/chat/completions", `{"model":"gpt-4o-mini","stream":true,"messages":[]}`,
			(176*0.15 + 1024*0.075 + 35*0.6) / 1e6, 1200, 35, true},
		{"openrouter_chat_stream.sse", "/openrouter/api/v1/chat/completions", `{"model":"Anthropic/Claude-Sonnet-4.5","stream":true,"stream_options":{"include_usage":true},"messages":[]}`,
			0.01734, 5000, 120, false},
		{"openai_responses.json", "/openai/responses", `{"model":"gpt-4.1","input":"hi"}`,
			(36*2 + 87*8) / 1e6, 36, 87, false},
		{"openai_responses_stream.sse", "/openai/responses", `{"model":"gpt-4.1","input":"hi","stream":true}`,
			(300*2 + 200*0.5 + 80*8) / 1e6, 500, 80, false},
		{"anthropic.json", "/anthropic/v1/messages", `{"model":"claude-sonnet-4-5","max_tokens":1024,"messages":[]}`,
			(2095*3 + 2048*3.75 + 503*15) / 1e6, 2095 + 2048, 503, false},
		{"anthropic_stream.sse", "/anthropic/v1/messages", `{"model":"claude-sonnet-4-5","max_tokens":1024,"stream":true,"messages":[]}`,
			(25*3 + 3000*0.3 + 1000*3.75 + 42*15) / 1e6, 25 + 3000 + 1000, 42, false},
	}
	for _, tt := range tests {
		t.Run(tt.fixture, func(t *testing.T) {
			r := newRig(t, serveFixture(t, tt.fixture))
			resp := r.post(tt.path, tt.body)
			got := readAll(t, resp)
			want, _ := os.ReadFile(filepath.Join("..", "..", "shared", "meter", "testdata", tt.fixture))
			if resp.StatusCode != 200 || !bytes.Equal(got, want) {
				t.Fatalf("got status %d body %q, want 200 and the provider's bytes unchanged", resp.StatusCode, got)
			}
			if s := r.meter.Snapshot(); math.Abs(s.SpentUSD-tt.wantCost) > 1e-9 || s.ReservedUSD != 0 {
				t.Errorf("spent %v reserved %v, want %v 0", s.SpentUSD, s.ReservedUSD, tt.wantCost)
			}
			use := r.rec.ByEvent(vocab.EventUsage)
			if len(use) != 1 || use[0].InputTokens != tt.wantIn || use[0].OutputTokens != tt.wantOut || use[0].Estimated {
				t.Fatalf("usage entries %+v, want one with in %d out %d not estimated", use, tt.wantIn, tt.wantOut)
			}
			seen := r.fake.requests()
			var sent map[string]any
			json.Unmarshal(seen[0].Body, &sent)
			opts, _ := sent["stream_options"].(map[string]any)
			if got := opts["include_usage"] == true; got != (tt.wantIncludeUsage || strings.Contains(tt.body, "include_usage")) {
				t.Errorf("upstream stream_options %v, want include_usage set: %v", sent["stream_options"], tt.wantIncludeUsage)
			}
			dec := r.rec.ByEvent(vocab.EventDecision)
			if len(dec) != 1 || dec[0].Verdict != vocab.Allow || dec[0].Reason != vocab.ReasonAllowlisted ||
				dec[0].Proto != vocab.ProtoGateway || dec[0].Status != 200 || dec[0].BytesDn != int64(len(want)) {
				t.Errorf("decision entries %+v, want one allow/allowlisted gateway entry with status 200", dec)
			}
		})
	}
}

// TestKeyNeverReachesClient has the provider echo the key it received in
// a header, an error body and a stream cut through the middle of the key.
// Nothing the client receives may contain it, and the provider must never
// see the agent token.
func TestKeyNeverReachesClient(t *testing.T) {
	half := len(realKey) / 2
	echo := func(w http.ResponseWriter, r *http.Request, _ []byte) {
		got := r.Header.Get("X-Api-Key") + strings.TrimPrefix(r.Header.Get("Authorization"), "Bearer ")
		w.Header().Set("X-Echo", "you sent "+got)
		w.Header().Set("X-Debug-"+got, "1")
		switch {
		case strings.Contains(r.URL.RawQuery, "error"):
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusUnauthorized)
			w.Write([]byte(`{"error":{"message":"Incorrect API key provided: ` + got + `. Really: ` + got + `","type":"invalid_request_error"}}`))
		default:
			w.Header().Set("Content-Type", "text/event-stream")
			w.Write([]byte("data: {\"choices\":[{\"delta\":{\"content\":\"" + got[:half]))
			w.(http.Flusher).Flush()
			w.Write([]byte(got[half:] + "\"}}]}\n\ndata: {\"choices\":[],\"usage\":{\"prompt_tokens\":1,\"completion_tokens\":1}}\n\ndata: [DONE]\n\n"))
		}
	}
	r := newRig(t, echo)
	cases := []struct{ path, body string }{
		{"/openrouter/api/v1/chat/completions?error=1", `{"model":"gpt-4o-mini"}`},
		{"/openrouter/api/v1/chat/completions", `{"model":"gpt-4o-mini","stream":true}`},
		{"/anthropic/v1/messages?error=1", `{"model":"claude-sonnet-4-5","max_tokens":5}`},
		{"/anthropic/v1/messages", `{"model":"claude-sonnet-4-5","max_tokens":5,"stream":true}`},
	}
	for _, c := range cases {
		resp := r.post(c.path, c.body, "X-Api-Key", agentToken) // both headers for openai paths
		body := readAll(t, resp)
		for k, vs := range resp.Header {
			if strings.Contains(strings.ToLower(k), strings.ToLower(realKey)) || containsAny(vs, realKey) {
				t.Errorf("%s: response header %s: %q carries the key", c.path, k, vs)
			}
		}
		if bytes.Contains(body, []byte(realKey)) || !bytes.Contains(body, []byte(scrub.Mask(len(realKey)))) {
			t.Errorf("%s: body %q: want the key masked", c.path, body)
		}
	}
	for _, s := range r.fake.requests() {
		for k, vs := range s.Header {
			if containsAny(vs, agentToken) {
				t.Errorf("upstream %s got the agent token in %s", s.Path, k)
			}
		}
		anth := strings.HasPrefix(s.Path, "/v1/messages")
		if anth && (s.Header.Get("X-Api-Key") != realKey || s.Header.Get("Authorization") != "") {
			t.Errorf("anthropic upstream %s: x-api-key %q authorization %q, want the key in x-api-key only",
				s.Path, s.Header.Get("X-Api-Key"), s.Header.Get("Authorization"))
		}
		if !anth && (s.Header.Get("Authorization") != "Bearer "+realKey || s.Header.Get("X-Api-Key") != "") {
			t.Errorf("openai upstream %s: authorization %q x-api-key %q, want Bearer key only",
				s.Path, s.Header.Get("Authorization"), s.Header.Get("X-Api-Key"))
		}
	}
}

func TestAuthAndRouting(t *testing.T) {
	r := newRig(t, serveFixture(t, "openai_chat.json"), func(c *Config, _ *policy.BudgetConfig, p map[string]policy.ProviderConfig) {
		p["notoken"] = policy.ProviderConfig{Upstream: "https://127.0.0.1:1", Format: "openai", APIKeyEnv: "OR_KEY", ClientTokenEnv: "UNSET"}
	})
	body := `{"model":"gpt-4o-mini"}`
	tests := []struct {
		name       string
		path       string
		hdr        []string
		wantStatus int
		wantReason vocab.Reason
		wantType   string
	}{
		{"no token", "/openrouter/api/v1/chat/completions", []string{"Authorization", ""}, 401, vocab.ReasonUnauthorized, "authentication_error"},
		{"wrong bearer", "/openrouter/api/v1/chat/completions", []string{"Authorization", "Bearer nope"}, 401, vocab.ReasonUnauthorized, "authentication_error"},
		{"real key as token", "/openrouter/api/v1/chat/completions", []string{"Authorization", "Bearer " + realKey}, 401, vocab.ReasonUnauthorized, "authentication_error"},
		{"wrong x-api-key", "/anthropic/v1/messages", []string{"X-Api-Key", "nope"}, 401, vocab.ReasonUnauthorized, "authentication_error"},
		{"x-api-key on openai format", "/openrouter/api/v1/chat/completions", []string{"Authorization", "", "X-Api-Key", agentToken}, 200, vocab.ReasonAllowlisted, ""},
		{"bearer on anthropic format", "/anthropic/v1/messages", []string{"X-Api-Key", "", "Authorization", "Bearer " + agentToken}, 200, vocab.ReasonAllowlisted, ""},
		{"unknown provider", "/evil/chat/completions", nil, 404, vocab.ReasonNotAllowlisted, "not_found_error"},
		{"root", "/", nil, 404, vocab.ReasonNotAllowlisted, "not_found_error"},
		{"no provider key in env", "/nokey/api/v1/chat/completions", nil, 503, vocab.ReasonUnauthorized, "gateway_misconfigured"},
		{"no agent token in env", "/notoken/chat/completions", nil, 503, vocab.ReasonUnauthorized, "gateway_misconfigured"},
		{"dot segments", "/openai/x/%2e%2e/%2e%2e/chat/completions", nil, 400, vocab.ReasonBadRequest, "invalid_request_error"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := len(r.fake.requests())
			resp := r.post(tt.path, body, tt.hdr...)
			got := readAll(t, resp)
			if resp.StatusCode != tt.wantStatus {
				t.Fatalf("got status %d (%s), want %d", resp.StatusCode, got, tt.wantStatus)
			}
			entries := r.rec.ByEvent(vocab.EventDecision)
			if last := entries[len(entries)-1]; last.Reason != tt.wantReason {
				t.Errorf("logged reason %v, want %v", last.Reason, tt.wantReason)
			}
			if tt.wantType == "" {
				return
			}
			if n := len(r.fake.requests()); n != before {
				t.Errorf("a refused request reached the provider")
			}
			if typ := errType(t, got); typ != tt.wantType || resp.Header.Get("X-Egressd-Reason") != tt.wantReason.String() {
				t.Errorf("got error type %q reason header %q, want %q %q", typ, resp.Header.Get("X-Egressd-Reason"), tt.wantType, tt.wantReason)
			}
		})
	}
}

// errType reads error.type from either provider shape.
func errType(t testing.TB, body []byte) string {
	t.Helper()
	var e struct {
		Type  string         `json:"type"`
		Error map[string]any `json:"error"`
	}
	if err := json.Unmarshal(body, &e); err != nil {
		t.Fatalf("error body %q is not JSON: %v", body, err)
	}
	typ, _ := e.Error["type"].(string)
	return typ
}

func TestGETIsForwardedUnmetered(t *testing.T) {
	r := newRig(t, func(w http.ResponseWriter, r *http.Request, _ []byte) {
		w.Header().Set("Content-Type", "application/json")
		w.Write([]byte(`{"data":[{"id":"anthropic/claude-sonnet-4.5"}]}`))
	})
	req, _ := http.NewRequest(http.MethodGet, r.srv.URL+"/openrouter/api/v1/models?supported_parameters=tools", nil)
	req.Header.Set("Authorization", "Bearer "+agentToken)
	resp := r.do(req)
	if body := readAll(t, resp); resp.StatusCode != 200 || !bytes.Contains(body, []byte("claude")) {
		t.Fatalf("got %d %q, want the model list", resp.StatusCode, body)
	}
	seen := r.fake.requests()
	if len(seen) != 1 || seen[0].Path != "/api/v1/models" || seen[0].Query != "supported_parameters=tools" ||
		seen[0].Header.Get("Authorization") != "Bearer "+realKey {
		t.Errorf("upstream got %+v, want GET /api/v1/models?supported_parameters=tools with the real key", seen)
	}
	if s := r.meter.Snapshot(); s.SpentUSD != 0 || len(r.rec.ByEvent(vocab.EventUsage)) != 0 {
		t.Errorf("a GET was metered: spent %v", s.SpentUSD)
	}
}
