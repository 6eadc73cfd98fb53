package meter

import (
	"os"
	"path/filepath"
	"testing"
)

// fixture is a real-shaped provider response and the usage it must yield.
type fixture struct {
	file   string
	format Format
	sse    bool
	want   Usage
}

var fixtures = []fixture{
	{"openai_chat.json", FormatOpenAI, false,
		Usage{InputTokens: 2006 - 1920, CacheReadTokens: 1920, OutputTokens: 300}},
	{"openai_chat_stream.sse", FormatOpenAI, true,
		Usage{InputTokens: 1200 - 1024, CacheReadTokens: 1024, OutputTokens: 35}},
	{"openrouter_chat_stream.sse", FormatOpenAI, true,
		Usage{InputTokens: 1000, CacheReadTokens: 4000, OutputTokens: 120, CostUSD: 0.01734, HasCost: true}},
	{"openai_responses.json", FormatOpenAI, false,
		Usage{InputTokens: 36, OutputTokens: 87}},
	{"openai_responses_stream.sse", FormatOpenAI, true,
		Usage{InputTokens: 300, CacheReadTokens: 200, OutputTokens: 80}},
	{"anthropic.json", FormatAnthropic, false,
		Usage{InputTokens: 2095, CacheWriteTokens: 2048, OutputTokens: 503}},
	// message_delta output_tokens are cumulative: 42 is the last, not 1+15+42.
	{"anthropic_stream.sse", FormatAnthropic, true,
		Usage{InputTokens: 25, CacheReadTokens: 3000, CacheWriteTokens: 1000, OutputTokens: 42}},
}

func readFixture(t testing.TB, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func extract(f Format, sse bool, chunks ...[]byte) (Usage, Completeness) {
	e := NewExtractor(f, sse)
	for _, c := range chunks {
		e.Write(c)
	}
	return e.Result()
}

func TestExtractFixtures(t *testing.T) {
	for _, fx := range fixtures {
		t.Run(fx.file, func(t *testing.T) {
			b := readFixture(t, fx.file)
			got, state := extract(fx.format, fx.sse, b)
			if got != fx.want || state != UsageFinal {
				t.Errorf("got %+v (state %d), want %+v (state %d)", got, state, fx.want, UsageFinal)
			}
			// One byte at a time is the worst split there is.
			chunks := make([][]byte, len(b))
			for i := range b {
				chunks[i] = b[i : i+1]
			}
			if got, _ := extract(fx.format, fx.sse, chunks...); got != fx.want {
				t.Errorf("byte by byte: got %+v, want %+v", got, fx.want)
			}
		})
	}
}

func TestExtractPartialAndMissing(t *testing.T) {
	anth := readFixture(t, "anthropic_stream.sse")
	cut := anth[:len(anth)/3] // message_start only
	tests := []struct {
		name      string
		format    Format
		sse       bool
		body      string
		want      Usage
		wantState Completeness
	}{
		{"anthropic cut after message_start", FormatAnthropic, true, string(cut),
			Usage{InputTokens: 25, CacheReadTokens: 3000, CacheWriteTokens: 1000, OutputTokens: 1}, UsagePartial},
		{"chat stream without include_usage", FormatOpenAI, true,
			"data: {\"choices\":[{\"delta\":{\"content\":\"x\"}}]}\n\ndata: [DONE]\n\n", Usage{}, UsageNone},
		{"usage null", FormatOpenAI, false, `{"usage":null}`, Usage{}, UsageNone},
		{"not json", FormatOpenAI, false, `<html>bad gateway</html>`, Usage{}, UsageNone},
		{"error body", FormatAnthropic, false,
			`{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}`, Usage{}, UsageNone},
		{"cached more than prompt is clamped", FormatOpenAI, false,
			`{"usage":{"prompt_tokens":10,"completion_tokens":2,"prompt_tokens_details":{"cached_tokens":50}}}`,
			Usage{CacheReadTokens: 10, OutputTokens: 2}, UsageFinal},
		{"negative and fractional counts", FormatOpenAI, false,
			`{"usage":{"prompt_tokens":-5,"completion_tokens":2.5,"cost":-1}}`,
			Usage{OutputTokens: 3, HasCost: true}, UsageFinal},
		{"no trailing blank line", FormatOpenAI, true,
			`data: {"choices":[],"usage":{"prompt_tokens":7,"completion_tokens":1}}`,
			Usage{InputTokens: 7, OutputTokens: 1}, UsageFinal},
		{"data split over two data lines", FormatOpenAI, true,
			"data: {\"choices\":[],\ndata: \"usage\":{\"prompt_tokens\":3,\"completion_tokens\":4}}\n\n",
			Usage{InputTokens: 3, OutputTokens: 4}, UsageFinal},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, state := extract(tt.format, tt.sse, []byte(tt.body))
			if got != tt.want || state != tt.wantState {
				t.Errorf("got %+v (state %d), want %+v (state %d)", got, state, tt.want, tt.wantState)
			}
		})
	}
}

func TestExtractJSONBodyBound(t *testing.T) {
	e := NewExtractor(FormatOpenAI, false)
	big := make([]byte, DefaultMaxJSONBytes/4)
	for range 5 {
		e.Write(big)
	}
	e.Write([]byte(`{"usage":{"prompt_tokens":1}}`))
	if u, state := e.Result(); state != UsageNone || u != (Usage{}) {
		t.Errorf("over-bound body: got %+v state %d, want nothing", u, state)
	}
	if got, want := e.Bytes(), int64(5*len(big)+29); got != want {
		t.Errorf("Bytes() = %d, want %d", got, want)
	}
}
