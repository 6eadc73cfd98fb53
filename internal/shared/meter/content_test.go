package meter

import (
	"bytes"
	"strings"
	"testing"
)

func TestContentBytes(t *testing.T) {
	tests := []struct {
		name, event, data string
		want              int64
	}{
		{"chat text", "", `{"id":"c1","object":"chat.completion.chunk","model":"gpt-4o","choices":[{"index":0,"delta":{"role":"assistant","content":"Hello"}}]}`, 5},
		{"chat escapes decode", "", `{"choices":[{"delta":{"content":"a\nb\"\u00e9"}}]}`, 1 + 1 + 1 + 1 + 3},
		{"chat tool arguments", "", `{"choices":[{"delta":{"tool_calls":[{"index":0,"id":"call_1","function":{"name":"get_weather","arguments":"{\"city\":"}}]}}]}`, 8},
		{"chat refusal", "", `{"choices":[{"delta":{"refusal":"no"}}]}`, 2},
		{"openrouter reasoning sent twice counts once", "",
			`{"choices":[{"delta":{"content":"","reasoning":"think","reasoning_details":[{"type":"reasoning.text","text":"think","format":"anthropic-claude-v1"}]}}]}`, 5},
		{"deepseek reasoning_content", "", `{"choices":[{"delta":{"reasoning_content":"hmm"}}]}`, 3},
		{"reasoning signature and encrypted data are not output", "",
			`{"choices":[{"delta":{"reasoning_details":[{"type":"reasoning.encrypted","data":"QUJDREVGR0g="}]}}]}`, 0},
		{"chat usage chunk", "", `{"choices":[],"usage":{"prompt_tokens":5,"completion_tokens":9}}`, 0},
		{"chat audio data is not text", "", `{"choices":[{"delta":{"audio":{"id":"a1","data":"AAAAAAAAAAAA","transcript":"hi"}}}]}`, 0},
		{"done marker", "", `[DONE]`, 0},
		{"anthropic text delta", "content_block_delta", `{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"Hi there"}}`, 8},
		{"anthropic thinking delta", "content_block_delta", `{"type":"content_block_delta","index":0,"delta":{"type":"thinking_delta","thinking":"let me"}}`, 6},
		{"anthropic tool input delta", "content_block_delta", `{"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta","partial_json":"{\"a\": 1"}}`, 7},
		{"anthropic signature delta", "content_block_delta", `{"type":"content_block_delta","index":0,"delta":{"type":"signature_delta","signature":"EqQBCgIYAhIM1gbcDa9GJwZA2b3h"}}`, 0},
		{"anthropic block start", "content_block_start", `{"type":"content_block_start","index":0,"content_block":{"type":"text","text":"x"}}`, 0},
		{"anthropic message delta", "message_delta", `{"type":"message_delta","delta":{"stop_reason":"stop_sequence","stop_sequence":"END"},"usage":{"output_tokens":9}}`, 0},
		{"responses text delta", "response.output_text.delta", `{"type":"response.output_text.delta","item_id":"msg_1","output_index":0,"content_index":0,"delta":"Hi"}`, 2},
		{"responses arguments delta", "response.function_call_arguments.delta", `{"type":"response.function_call_arguments.delta","item_id":"fc_1","delta":"{\"q\""}`, 4},
		{"responses done repeats the text", "response.output_text.done", `{"type":"response.output_text.done","text":"Hi"}`, 0},
		{"responses completed repeats everything", "response.completed", `{"type":"response.completed","response":{"output":[{"content":[{"type":"output_text","text":"Hi"}]}]}}`, 0},
		{"responses audio delta is not text", "response.audio.delta", `{"type":"response.audio.delta","delta":"AAAAAAAA"}`, 0},
		{"event named only in the data", "", `{"type":"response.output_text.delta","delta":"abc"}`, 3},
		{"unnamed done event", "", `{"type":"response.output_text.done","text":"abc"}`, 0},
		{"unterminated string", "", `{"content":"abc`, 3},
		{"unbalanced brackets", "", `]]]]}}{"content":"ab"`, 2},
		{"deep nesting", "", strings.Repeat("[", 100) + `{"content":"ab"}` + strings.Repeat("]", 100), 2},
		{"trailing backslash", "", `{"content":"ab\`, 3},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := contentBytes([]byte(tt.event), []byte(tt.data)); got != tt.want {
				t.Errorf("got %d, want %d", got, tt.want)
			}
		})
	}
}

func TestOutputTokensSeenOnFixtures(t *testing.T) {
	want := map[string]int64{
		"anthropic_stream.sse":        2, // "Hello" "!"
		"openai_responses_stream.sse": 1, // "Hi", not again in done/completed
		"openrouter_chat_stream.sse":  1, // "Hi"
	}
	for _, fx := range fixtures {
		b := readFixture(t, fx.file)
		e := NewExtractor(fx.format, fx.sse)
		e.Write(b)
		e.Result()
		w, ok := want[fx.file]
		if !fx.sse {
			w, ok = (int64(len(b))+ContentBytesPerToken-1)/ContentBytesPerToken, true
		}
		if got := e.OutputTokensSeen(); ok && got != w {
			t.Errorf("%s: got %d tokens seen, want %d", fx.file, got, w)
		}
	}
}

// chatChunk is a Chat Completions event whose content is text.
func chatChunk(text, eol string) string {
	return `data: {"choices":[{"index":0,"delta":{"content":"` + text + `"}}]}` + eol + eol
}

func TestFeedStopsAfterTheEventThatPassesTheLimit(t *testing.T) {
	for _, eol := range []string{"\n", "\r\n", "\r"} {
		ev := chatChunk("abcdef", eol) // 6 bytes = 2 tokens
		stream := []byte(strings.Repeat(ev, 10))
		// 5 tokens: the third event takes it to 6, past the limit.
		wantN := 3 * len(ev)
		e := NewExtractor(FormatOpenAI, true)
		n, over := e.Feed(stream, 5)
		if n != wantN || !over || e.OutputTokensSeen() != 6 {
			t.Errorf("eol %q: whole: consumed %d over %v seen %d, want %d true 6", eol, n, over, e.OutputTokensSeen(), wantN)
		}
		if n, over := e.Feed(stream, 5); n != 0 || !over {
			t.Errorf("eol %q: after the stop: consumed %d over %v, want 0 true", eol, n, over)
		}
		// Byte by byte, the stop falls on the same event; a \r\n split
		// between reads may leave its \n unread.
		e = NewExtractor(FormatOpenAI, true)
		total := 0
		for i := 0; i < len(stream); i++ {
			n, over := e.Feed(stream[i:i+1], 5)
			total += n
			if over {
				break
			}
		}
		if total != wantN && !(eol == "\r\n" && total == wantN-1) {
			t.Errorf("eol %q: byte by byte consumed %d, want %d", eol, total, wantN)
		}
		if !bytes.HasSuffix(stream[:total], []byte(eol[:1])) || e.OutputTokensSeen() != 6 {
			t.Errorf("eol %q: byte by byte stopped at %q, seen %d; want the end of the third event", eol, stream[:total], e.OutputTokensSeen())
		}
	}
}

func TestFeedWithoutLimitAndJSONNeverStop(t *testing.T) {
	stream := []byte(strings.Repeat(chatChunk("abcdef", "\n"), 10))
	e := NewExtractor(FormatOpenAI, true)
	if n, over := e.Feed(stream, 0); n != len(stream) || over || e.OutputTokensSeen() != 20 {
		t.Errorf("no limit: consumed %d over %v seen %d, want all, false, 20", n, over, e.OutputTokensSeen())
	}
	body := readFixture(t, "openai_chat.json")
	j := NewExtractor(FormatOpenAI, false)
	if n, over := j.Feed(body, 1); n != len(body) || over {
		t.Errorf("JSON body: consumed %d over %v, want all and false", n, over)
	}
	if u, state := j.Result(); state != UsageFinal || u.OutputTokens != 300 {
		t.Errorf("JSON body past the limit: got %+v state %d, want its usage read", u, state)
	}
}

// FuzzContentBytes: any event data is counted without a crash, the count
// never exceeds the data's size, and the stop point of a bounded feed does
// not depend on how the stream was cut into reads.
func FuzzContentBytes(f *testing.F) {
	f.Add([]byte(chatChunk("hello", "\n")+chatChunk(`a\u00e9\"`, "\r\n")), uint8(3), uint8(2))
	f.Add([]byte("event: content_block_delta\ndata: {\"delta\":{\"text\":\"abcdefgh\"}}\n\n"), uint8(10), uint8(1))
	f.Add([]byte(`data: {"content":"ab\`), uint8(1), uint8(1))
	f.Fuzz(func(t *testing.T, stream []byte, split, limit uint8) {
		if n := contentBytes(nil, stream); n < 0 || n > int64(len(stream)) {
			t.Fatalf("contentBytes = %d for %d bytes", n, len(stream))
		}
		whole := NewExtractor(FormatOpenAI, true)
		n1, over1 := whole.Feed(stream, int64(limit))
		at := min(int(split), len(stream))
		parts := NewExtractor(FormatOpenAI, true)
		n2, over2 := parts.Feed(stream[:at], int64(limit))
		if !over2 {
			m, o := parts.Feed(stream[at:], int64(limit))
			n2, over2 = n2+m, o
		}
		if over1 != over2 || whole.OutputTokensSeen() != parts.OutputTokensSeen() || n1-n2 < 0 || n1-n2 > 1 {
			t.Fatalf("whole: consumed %d over %v seen %d; split at %d: %d %v %d",
				n1, over1, whole.OutputTokensSeen(), at, n2, over2, parts.OutputTokensSeen())
		}
	})
}
