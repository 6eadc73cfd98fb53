package meter

import "strings"

// ToolUses counts the provider-run tool uses a response reports, by
// family: Anthropic's usage.server_tool_use counters, and the tool-call
// output items of an OpenAI Responses answer (one item per call).
type ToolUses struct {
	WebSearch       int64
	WebFetch        int64
	FileSearch      int64
	CodeExecution   int64 // code_interpreter (OpenAI) and code_execution (Anthropic)
	ImageGeneration int64
}

// Get returns the count for a tool family name (see ToolFamily).
func (t ToolUses) Get(family string) int64 {
	switch family {
	case "web_search":
		return t.WebSearch
	case "web_fetch":
		return t.WebFetch
	case "file_search":
		return t.FileSearch
	case "code_execution":
		return t.CodeExecution
	case "image_generation":
		return t.ImageGeneration
	}
	return 0
}

// ToolFamily maps a tool type as written in a request (web_search_20250305,
// web_search_preview, code_interpreter, plugin:web) to the family its fee
// and its reported uses are kept under; "" when it has none.
func ToolFamily(typ string) string {
	t := strings.ToLower(typ)
	switch {
	case t == "plugin:web" || t == "web_search_options":
		return t
	case strings.HasPrefix(t, "web_search"):
		return "web_search"
	case strings.HasPrefix(t, "web_fetch"):
		return "web_fetch"
	case strings.HasPrefix(t, "file_search"):
		return "file_search"
	case strings.HasPrefix(t, "code_interpreter"), strings.HasPrefix(t, "code_execution"):
		return "code_execution"
	case strings.HasPrefix(t, "image_generation"):
		return "image_generation"
	}
	return ""
}

// DefaultToolFees are the per-use fees (USD) egressd reserves and charges
// for provider-run tools when budget.tool_fees does not say otherwise.
// From the providers' public pricing pages as of 2026-06 (OpenAI API
// pricing "Built-in tools", Anthropic "Pricing: tool use", OpenRouter "Web
// search"); each is the dearest variant, so the cap holds when the cheaper
// one runs:
//   - web_search: OpenAI $25 per 1,000 calls for the preview tool on
//     non-reasoning models ($10 elsewhere), Anthropic $10 per 1,000;
//   - file_search: OpenAI $2.50 per 1,000 calls;
//   - code_execution: OpenAI code_interpreter $0.03 per container,
//     Anthropic $0.05 per container-hour (one hour reserved per call);
//   - image_generation: gpt-image-1 at high quality, $0.25 per image;
//   - plugin:web: OpenRouter $4 per 1,000 results (per result; 5 a
//     request unless max_results says otherwise);
//   - web_search_options: one search per Chat Completions call, $25 per
//     1,000;
//   - web_fetch: no fee beyond the tokens of what is fetched.
var DefaultToolFees = map[string]float64{
	"web_search":         0.025,
	"file_search":        0.0025,
	"code_execution":     0.05,
	"image_generation":   0.25,
	"plugin:web":         0.004,
	"web_search_options": 0.025,
	"web_fetch":          0,
}

// toolItem maps an OpenAI Responses output item type to its family.
func (t *ToolUses) addItem(typ string) {
	switch typ {
	case "web_search_call":
		t.WebSearch++
	case "file_search_call":
		t.FileSearch++
	case "code_interpreter_call":
		t.CodeExecution++
	case "image_generation_call":
		t.ImageGeneration++
	}
}

// ToolFee is the per-use fee of a tool family: budget.tool_fees, else
// DefaultToolFees; ok is false for a family with no fee known.
func (m *Meter) ToolFee(family string) (fee float64, ok bool) {
	m.mu.Lock()
	fees := m.cfg.ToolFees
	m.mu.Unlock()
	for k, v := range fees {
		if strings.EqualFold(k, family) {
			return v, true
		}
	}
	fee, ok = DefaultToolFees[family]
	return fee, ok
}
