package meter

import (
	"testing"

	"github.com/egressd/egressd/policy"
)

func TestToolUsesReported(t *testing.T) {
	tests := []struct {
		name   string
		format Format
		sse    bool
		body   string
		want   ToolUses
	}{
		{"anthropic body", FormatAnthropic, false,
			`{"type":"message","usage":{"input_tokens":10,"output_tokens":5,"server_tool_use":{"web_search_requests":3,"web_fetch_requests":1}}}`,
			ToolUses{WebSearch: 3, WebFetch: 1}},
		{"anthropic stream", FormatAnthropic, true,
			"event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"usage\":{\"input_tokens\":10,\"output_tokens\":1}}}\n\n" +
				"event: message_delta\ndata: {\"type\":\"message_delta\",\"usage\":{\"output_tokens\":9,\"server_tool_use\":{\"web_search_requests\":2}}}\n\n",
			ToolUses{WebSearch: 2}},
		{"responses body", FormatOpenAI, false,
			`{"object":"response","output":[{"type":"web_search_call"},{"type":"web_search_call"},{"type":"file_search_call"},{"type":"message"},{"type":"image_generation_call"}],"usage":{"input_tokens":1,"output_tokens":1}}`,
			ToolUses{WebSearch: 2, FileSearch: 1, ImageGeneration: 1}},
		{"responses stream", FormatOpenAI, true,
			"event: response.completed\ndata: {\"type\":\"response.completed\",\"response\":{\"output\":[{\"type\":\"code_interpreter_call\"}],\"usage\":{\"input_tokens\":1,\"output_tokens\":1}}}\n\n",
			ToolUses{CodeExecution: 1}},
		{"items without usage do not count", FormatOpenAI, false, `{"output":[{"type":"web_search_call"}]}`, ToolUses{}},
	}
	for _, tt := range tests {
		e := NewExtractor(tt.format, tt.sse)
		e.Write([]byte(tt.body))
		if u, _ := e.Result(); u.Tools != tt.want {
			t.Errorf("%s: got %+v, want %+v", tt.name, u.Tools, tt.want)
		}
	}
}

func TestToolFamily(t *testing.T) {
	for typ, want := range map[string]string{
		"web_search_20250305": "web_search", "web_search_preview": "web_search", "WEB_SEARCH": "web_search",
		"web_fetch_20250910": "web_fetch", "code_interpreter": "code_execution", "code_execution_20250825": "code_execution",
		"file_search": "file_search", "image_generation": "image_generation", "plugin:web": "plugin:web",
		"mcp": "", "function": "",
	} {
		if got := ToolFamily(typ); got != want {
			t.Errorf("ToolFamily(%q) = %q, want %q", typ, got, want)
		}
	}
}

func TestCostAddsFeesUnlessProviderCost(t *testing.T) {
	p := policy.Price{Input: 1, Output: 2}
	if got := Cost(p, Usage{InputTokens: 1e6, FeesUSD: 0.5}); got != 1.5 {
		t.Errorf("got %v, want tokens $1 + fees $0.5", got)
	}
	if got := Cost(p, Usage{InputTokens: 1e6, FeesUSD: 0.5, HasCost: true, CostUSD: 0.7}); got != 0.7 {
		t.Errorf("got %v, want the provider's $0.7", got)
	}
}
