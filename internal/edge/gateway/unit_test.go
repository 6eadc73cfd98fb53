package gateway

import (
	"bytes"
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/egressd/egressd/policy"
)

func TestShapeBody(t *testing.T) {
	tests := []struct {
		name, path, body string
		wantModel        string
		wantStream       bool
		wantMaxOut       int64
		wantChoices      int64
		wantOpts         string // stream_options as forwarded; "" = absent
		wantErr          string
	}{
		{name: "chat stream gets include_usage", path: "/v1/chat/completions",
			body: `{"model":"m","stream":true,"max_tokens":10}`, wantModel: "m", wantStream: true, wantMaxOut: 10, wantChoices: 1,
			wantOpts: `{"include_usage":true}`},
		{name: "other stream options kept", path: "/v1/chat/completions",
			body: `{"model":"m","stream":true,"stream_options":{"include_obfuscation":false}}`, wantModel: "m", wantStream: true, wantChoices: 1,
			wantOpts: `{"include_obfuscation":false,"include_usage":true}`},
		{name: "include_usage false is forced", path: "/v1/chat/completions",
			body: `{"model":"m","stream":true,"stream_options":{"include_usage":false}}`, wantModel: "m", wantStream: true, wantChoices: 1,
			wantOpts: `{"include_usage":true}`},
		{name: "responses stream untouched", path: "/v1/responses",
			body: `{"model":"m","stream":true,"max_output_tokens":99}`, wantModel: "m", wantStream: true, wantMaxOut: 99, wantChoices: 1},
		{name: "non-stream chat untouched", path: "/v1/chat/completions",
			body: `{"model":"m","max_completion_tokens":7,"max_tokens":5,"n":3}`, wantModel: "m", wantMaxOut: 7, wantChoices: 3},
		{name: "null values", path: "/v1/chat/completions",
			body: `{"model":"m","stream":null,"max_tokens":null}`, wantModel: "m", wantChoices: 1},
		{name: "duplicate model", path: "/v1/chat/completions", body: `{"model":"cheap","model":"dear"}`, wantErr: "duplicate key"},
		{name: "duplicate model by case", path: "/v1/chat/completions", body: `{"model":"cheap","Model":"dear"}`, wantErr: "duplicate key"},
		{name: "max_tokens twice via the Kelvin sign", path: "/v1/messages", body: `{"model":"m","max_tokens":1,"max_to\u212aens":9}`, wantErr: "duplicate key"},
		{name: "keys read case-blind", path: "/v1/responses",
			body: `{"MODEL":"m","Max_Output_Tokens":5}`, wantModel: "m", wantMaxOut: 5, wantChoices: 1},
		{name: "not an object", path: "/v1/chat/completions", body: `["model"]`, wantErr: "JSON object"},
		{name: "trailing data", path: "/v1/chat/completions", body: `{"model":"m"} {"model":"x"}`, wantErr: "after the object"},
		{name: "model not a string", path: "/v1/chat/completions", body: `{"model":5}`, wantErr: "model"},
		{name: "stream not a bool", path: "/v1/chat/completions", body: `{"model":"m","stream":"yes"}`, wantErr: "stream"},
		{name: "negative max_tokens", path: "/v1/messages", body: `{"model":"m","max_tokens":-1}`, wantErr: "max_tokens"},
		{name: "truncated", path: "/v1/messages", body: `{"model":"m",`, wantErr: "invalid JSON"},
		{name: "empty", path: "/v1/messages", body: ``, wantErr: "JSON object"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, err := shapeBody([]byte(tt.body), pathKind(tt.path))
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("got error %v, want one containing %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if s.model != tt.wantModel || s.stream != tt.wantStream || s.maxOut != tt.wantMaxOut || s.choices != tt.wantChoices {
				t.Errorf("got model %q stream %v max %d n %d, want %q %v %d %d",
					s.model, s.stream, s.maxOut, s.choices, tt.wantModel, tt.wantStream, tt.wantMaxOut, tt.wantChoices)
			}
			var out map[string]json.RawMessage
			if err := json.Unmarshal(s.body, &out); err != nil {
				t.Fatalf("forwarded body %q is not JSON: %v", s.body, err)
			}
			if got := string(out["stream_options"]); got != tt.wantOpts {
				t.Errorf("stream_options %q, want %q", got, tt.wantOpts)
			}
			if tt.wantOpts == "" && !bytes.Equal(s.body, []byte(tt.body)) {
				t.Errorf("body rewritten to %q, want it forwarded byte for byte", s.body)
			}
		})
	}
}

func TestBodyTooLarge(t *testing.T) {
	r := newRig(t, openRouterJSON(0.001, 1, 1), func(c *Config, _ *policy.BudgetConfig, _ map[string]policy.ProviderConfig) { c.MaxBodyBytes = 64 })
	resp := r.post("/openrouter/api/v1/chat/completions", `{"model":"anthropic/claude-sonnet-4.5","messages":[{"content":"`+strings.Repeat("x", 100)+`"}]}`)
	if body := readAll(t, resp); resp.StatusCode != http.StatusRequestEntityTooLarge || errType(t, body) != "request_too_large" {
		t.Errorf("got %d %s, want 413 request_too_large", resp.StatusCode, body)
	}
	if n := len(r.fake.requests()); n != 0 {
		t.Errorf("provider saw %d calls, want 0", n)
	}
}

func TestUpstreamPath(t *testing.T) {
	tests := []struct{ upstream, rest, wantBase, wantFull, wantErr string }{
		{"https://openrouter.ai", "/api/v1/chat/completions", "https://openrouter.ai", "/api/v1/chat/completions", ""},
		{"https://openrouter.ai/api/v1", "/chat/completions", "https://openrouter.ai", "/api/v1/chat/completions", ""},
		{"https://api.openai.com/v1/", "/responses", "https://api.openai.com", "/v1/responses", ""},
		{"https://api.openai.com//v1", "/models", "https://api.openai.com", "/v1/models", ""},
		{"https://h/base", "/", "https://h", "/base", ""},
		{"https://h", "/", "https://h", "/", ""},
		{"https://h/a/../b", "/x", "", "", ". or .. segment"},
		{"ftp://h", "/x", "", "", "not an http(s) URL"},
		{"https://", "/x", "", "", "not an http(s) URL"},
	}
	for _, tt := range tests {
		base, full, err := upstreamPath(tt.upstream, tt.rest)
		if tt.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("%s + %s: got %q %q, %v, want error %q", tt.upstream, tt.rest, base, full, err, tt.wantErr)
			}
			continue
		}
		if err != nil || base != tt.wantBase || full != tt.wantFull {
			t.Errorf("%s + %s: got %q %q, %v, want %q %q", tt.upstream, tt.rest, base, full, err, tt.wantBase, tt.wantFull)
		}
	}
}

// pathKind is the endpoint kind of an OpenAI- or Anthropic-shaped path,
// for tests of the body parser.
func pathKind(p string) kind {
	for _, tab := range [][]endpoint{openAIEndpoints, anthropicEndpoints} {
		for _, e := range tab {
			if e.method == "POST" && e.glob.Match(p) {
				return e.kind
			}
		}
	}
	return kindFixed
}

func TestTPMBuckets(t *testing.T) {
	var b tpmBuckets
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	if ok, _ := b.take("p", 0, 1e9, now); !ok {
		t.Error("limit 0 must be unlimited")
	}
	if ok, _ := b.take("p", 60, 100, now); !ok {
		t.Fatal("a full bucket must admit")
	}
	ok, wait := b.take("p", 60, 1, now)
	if ok || wait != 41*time.Second {
		t.Errorf("in debt by 40 at 1 token/s: got %v wait %v, want refused for 41s", ok, wait)
	}
	b.adjust("p", 60, -100) // refund
	if ok, _ := b.take("p", 60, 1, now); !ok {
		t.Error("after a refund: refused, want admitted")
	}
}

// FuzzShapeBody: agent bodies never crash the parser, and an accepted body
// is forwarded as one JSON object with the same model, asking for usage on
// Chat Completions streams.
func FuzzShapeBody(f *testing.F) {
	f.Add([]byte(`{"model":"m","stream":true,"stream_options":{"x":1}}`), true)
	f.Add([]byte(`{"model":"m","max_tokens":1e3,"n":2}`), false)
	f.Add([]byte(`{"a":{"model":"x"},"model":"m"}`), true)
	f.Fuzz(func(t *testing.T, body []byte, chat bool) {
		path := "/v1/responses"
		if chat {
			path = "/v1/chat/completions"
		}
		s, err := shapeBody(body, pathKind(path))
		if err != nil {
			return
		}
		var out struct {
			Model         string          `json:"model"`
			StreamOptions json.RawMessage `json:"stream_options"`
		}
		if err := json.Unmarshal(s.body, &out); err != nil {
			t.Fatalf("accepted %q, forwarded %q which is not a JSON object: %v", body, s.body, err)
		}
		if out.Model != s.model {
			t.Fatalf("metered model %q, forwarded model %q", s.model, out.Model)
		}
		var opts struct {
			IncludeUsage bool `json:"include_usage"`
		}
		json.Unmarshal(out.StreamOptions, &opts)
		if chat && s.stream && !opts.IncludeUsage {
			t.Fatalf("chat stream forwarded without include_usage: %q", s.body)
		}
		// An injected limit leaves one object, one limit, the same model.
		if s.maxOut != 0 {
			return
		}
		s.limitOutput("max_tokens", 7)
		again, err := shapeBody(s.body, pathKind(path))
		if err != nil || again.maxOut != 7 || again.model != s.model {
			t.Fatalf("after injecting a limit, %q reads as max %d model %q (%v), want 7 %q", s.body, again.maxOut, again.model, err, s.model)
		}
		n := 0
		for _, m := range again.members {
			if isLimitKey(m.key) {
				n++
			}
		}
		if n != 1 {
			t.Fatalf("after injecting a limit, %q has %d limit keys, want 1", s.body, n)
		}
	})
}
