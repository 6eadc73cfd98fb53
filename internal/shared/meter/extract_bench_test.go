package meter

import (
	"fmt"
	"strings"
	"testing"
)

// benchEvents are one ordinary content event of each streaming shape, as
// providers send them mid-stream: the per-token path.
var benchEvents = []struct {
	name   string
	format Format
	event  string
}{
	{"chat-usage-null", FormatOpenAI, `data: {"id":"chatcmpl-9x1","object":"chat.completion.chunk","created":1732700000,"model":"gpt-4o-mini-2024-07-18","system_fingerprint":"fp_0ba0d124f1","choices":[{"index":0,"delta":{"content":"Hello there"},"logprobs":null,"finish_reason":null}],"usage":null}` + "\n\n"},
	{"openrouter", FormatOpenAI, `data: {"id":"gen-1732700000-abc","provider":"Anthropic","model":"anthropic/claude-sonnet-4.5","object":"chat.completion.chunk","created":1732700000,"choices":[{"index":0,"delta":{"role":"assistant","content":"Hi, \"usage\": 1"},"finish_reason":null,"native_finish_reason":null,"logprobs":null}]}` + "\n\n"},
	{"anthropic", FormatAnthropic, "event: content_block_delta\n" + `data: {"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"Hello there"}}` + "\n\n"},
	{"responses", FormatOpenAI, "event: response.output_text.delta\n" + `data: {"type":"response.output_text.delta","sequence_number":4,"item_id":"msg_1","output_index":0,"content_index":0,"delta":"Hello there","logprobs":[]}` + "\n\n"},
}

// BenchmarkExtractEvent is the extractor's cost per streamed event of
// each format: what the gateway pays per token on top of relaying it.
func BenchmarkExtractEvent(b *testing.B) {
	for _, be := range benchEvents {
		b.Run(be.name, func(b *testing.B) {
			ev := []byte(be.event)
			e := NewExtractor(be.format, true)
			b.ReportAllocs()
			b.SetBytes(int64(len(ev)))
			for b.Loop() {
				e.Feed(ev, 0)
			}
		})
	}
}

// BenchmarkExtractStream is a whole stream of n chat events and its usage
// chunk, as the benchmark's fake provider sends it.
func BenchmarkExtractStream(b *testing.B) {
	for _, n := range []int{1000} {
		b.Run(fmt.Sprintf("events-%d", n), func(b *testing.B) {
			stream := []byte(strings.Repeat(benchEvents[0].event, n) +
				`data: {"choices":[],"usage":{"prompt_tokens":12,"completion_tokens":3000}}` + "\n\ndata: [DONE]\n\n")
			b.ReportAllocs()
			b.SetBytes(int64(len(stream)))
			for b.Loop() {
				e := NewExtractor(FormatOpenAI, true)
				e.Feed(stream, 0)
				if u, _ := e.Result(); u.OutputTokens != 3000 {
					b.Fatalf("usage %+v", u)
				}
			}
		})
	}
}
