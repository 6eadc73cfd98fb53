package policy

import (
	"strings"
	"testing"
)

// withProviderKey adds lines under providers.p.
func withProviderKey(lines string) string {
	return strings.Replace(withUpstream("https://a.example"), "    format: openai", "    format: openai\n"+lines, 1)
}

func TestValidateProviderExtras(t *testing.T) {
	tests := []struct{ name, yaml, path, msg string }{
		{"endpoint method", withProviderKey("    endpoints: [{method: DELETE, path: /v1/files/*}]"), "providers.p.endpoints[0].method", "want GET"},
		{"endpoint POST unpriced", withProviderKey("    endpoints: [{method: POST, path: /v1/images}]"), "providers.p.endpoints[0].per_call_usd", "required for a POST"},
		{"endpoint GET priced", withProviderKey("    endpoints: [{method: GET, path: /v1/x, per_call_usd: 1}]"), "providers.p.endpoints[0].per_call_usd", "unmetered"},
		{"endpoint negative price", withProviderKey("    endpoints: [{method: POST, path: /v1/x, per_call_usd: -1}]"), "providers.p.endpoints[0].per_call_usd", "non-negative"},
		{"endpoint path not canonical", withProviderKey("    endpoints: [{method: GET, path: /v1//x/}]"), "providers.p.endpoints[0].path", "not canonical"},
		{"endpoint path dots", withProviderKey("    endpoints: [{method: GET, path: /v1/../x}]"), "providers.p.endpoints[0].path", ". or .."},
		{"endpoint unknown key", withProviderKey("    endpoints: [{method: GET, path: /v1/x, price: 1}]"), "providers.p.endpoints[0].price", ""},
		{"allow_fields empty", withProviderKey("    allow_fields: [\"\"]"), "providers.p.allow_fields[0]", "field name"},
		{"allow_tools space", withProviderKey("    allow_tools: [\"web search\"]"), "providers.p.allow_tools[0]", "tool type"},
	}
	for _, tt := range tests {
		wantProblem(t, tt.name, tt.yaml, tt.path, tt.msg)
	}
	p, err := LoadBytes([]byte("version: 1\n"+withProviderKey(
		"    endpoints: [{method: get, path: /v1/dashboard/**}, {method: POST, path: /v1/images/generations, per_call_usd: 0.2}]\n"+
			"    allow_fields: [top_a]\n    allow_tools: [web_search_20250305, plugin:web]")+"\n"), "p.yaml")
	if err != nil {
		t.Fatalf("valid extras refused: %v", err)
	}
	if got := p.Config().Providers["p"].Endpoints[0].Method; got != "GET" {
		t.Errorf("method stored as %q, want GET", got)
	}
}
