package meter

import (
	"bytes"
	"encoding/json"
	"fmt"
	"testing"
)

// oracle is the extractor's event handling as it was before scanEvent:
// every event that contains `"usage"` is decoded with encoding/json, and
// content is counted by oracleContentBytes. It is kept here, unchanged,
// as the reference the scanning extractor must agree with.
type oracle struct {
	format  Format
	acc     wireUsage
	state   Completeness
	content int64
}

func (o *oracle) onEvent(event, data []byte) {
	o.content += oracleContentBytes(event, data)
	if !bytes.Contains(data, []byte(`"usage"`)) {
		return
	}
	var p probe
	if json.Unmarshal(data, &p) != nil {
		return
	}
	u, final := p.Usage, true
	switch {
	case u != nil:
	case p.Message != nil && p.Message.Usage != nil:
		u = p.Message.Usage
	case p.Response != nil && p.Response.Usage != nil:
		u = p.Response.Usage
	default:
		return
	}
	if o.format == FormatAnthropic && p.Type == "message_start" {
		final = false
	}
	if !u.any() {
		return
	}
	o.acc.merge(u)
	if final {
		o.state = UsageFinal
	} else if o.state == UsageNone {
		o.state = UsagePartial
	}
}

// oracleContentBytes is contentBytes as it was before it learnt to look
// for usage in the same pass.
func oracleContentBytes(event, data []byte) int64 {
	var text, reasoning, details int64
	kind := event
	var key []byte
	var objects uint64
	depth, expectKey := 0, false
	for i := 0; i < len(data); i++ {
		switch data[i] {
		case '{', '[':
			depth++
			expectKey = data[i] == '{'
			if depth > 0 && depth < 64 {
				objects = objects&^(1<<depth) | b2u(expectKey)<<depth
			}
		case '}', ']':
			depth--
			expectKey = false
		case ',':
			expectKey = depth > 0 && depth < 64 && objects&(1<<depth) != 0
		case ':':
			expectKey = false
		case '"':
			end, n := stringEnd(data, i)
			s := data[i+1 : end]
			i = end
			if expectKey {
				key, expectKey = s, false
				continue
			}
			if depth == 1 && len(kind) == 0 && string(key) == "type" {
				kind = s
			}
			switch string(key) {
			case "content", "refusal", "arguments", "partial_json", "thinking", "delta", "input":
				text += n
			case "reasoning", "reasoning_content":
				reasoning += n
			case "text", "summary":
				details += n
			}
		}
	}
	if len(kind) > 0 && (!bytes.HasSuffix(kind, []byte("delta")) || bytes.HasSuffix(kind, []byte("audio.delta"))) {
		return 0
	}
	return text + max(reasoning, details)
}

// events splits a fuzz input into events: records separated by 0x1e,
// each an event name and its data separated by 0x1f (no 0x1f: no name).
func events(raw []byte) (names, datas [][]byte) {
	for rec := range bytes.SplitSeq(raw, []byte{0x1e}) {
		name, data, ok := bytes.Cut(rec, []byte{0x1f})
		if !ok {
			name, data = nil, rec
		}
		names, datas = append(names, name), append(datas, data)
	}
	return names, datas
}

// diffOracle feeds the events to the scanning extractor and to the
// oracle and reports how they differ, or "".
func diffOracle(f Format, raw []byte) string {
	e := NewExtractor(f, true)
	o := &oracle{format: f}
	names, datas := events(raw)
	for i := range names {
		e.onEvent(names[i], datas[i])
		o.onEvent(names[i], datas[i])
	}
	got, gotState := e.Result()
	want := o.acc.normalise(f)
	if got != want || gotState != o.state || e.content != o.content {
		return fmt.Sprintf("scanner: %+v state %d content %d; oracle: %+v state %d content %d",
			got, gotState, e.content, want, o.state, o.content)
	}
	return ""
}

// hostileEvents are events built to fool a scanner: usage-looking text
// inside strings, escaped quotes, keys spelt the ways encoding/json still
// matches, null in odd places, usage nested where no format puts it.
var hostileEvents = []string{
	`{"choices":[{"delta":{"content":"\"usage\":{\"prompt_tokens\":99}"}}],"usage":null}`,
	`{"choices":[{"delta":{"content":"\\"}}],"usage":{"prompt_tokens":1,"completion_tokens":2}}`,
	`{"choices":[{"delta":{"content":"\\\"usage\\\":{"}}],"usage":null}`,
	`{"choices":[{"delta":{"content":"x\",\"usage\":{\"prompt_tokens\":5}}"}}]}`,
	`{"choices":[{"delta":{"tool_calls":[{"function":{"arguments":"{\"usage\":{\"completion_tokens\":7}}"}}]}}],"usage":null}`,
	`{"USAGE":{"prompt_tokens":3},"usage":null}`,
	`{"Usage":{"prompt_tokens":3},"x":"usage"}`,
	`{"u\u0073age":{"prompt_tokens":4},"note":"usage"}`,
	`{"u` + "\u017f" + `age":{"prompt_tokens":4},"usage":null}`,
	`{"usage":null,"u` + "\u017f" + `age":{"prompt_tokens":4}}`,
	`{"usage":{"prompt_tokens":5},"usage":null}`,
	`{"usage":null,"usage":{"prompt_tokens":6}}`,
	`{"usage" :  null , "message":{"usage":{"input_tokens":8}}}`,
	`{"usage":	null}`,
	`{"usage":nul}`,
	`{"choices":[{"usage":{"prompt_tokens":9}}],"usage":null}`,
	`{"type":"message_start","message":{"usage":{"input_tokens":10,"output_tokens":1}}}`,
	`{"type":"message_delta","delta":{"stop_reason":"end_turn"},"usage":{"output_tokens":11}}`,
	`{"type":"response.completed","response":{"output":[{"content":[{"text":"usage"}]}],"usage":{"input_tokens":12,"output_tokens":13}}}`,
	`{"type":"response.created","response":{"usage":null}}`,
	`{"RESPONSE":{"usage":{"input_tokens":14}},"usage":null}`,
	`[{"usage":{"prompt_tokens":15}}]`,
	`{"usage":{"prompt_tokens":16}} {"usage":null}`,
	` {"usage":{"prompt_tokens":"17"}}`,
	`{"a":{"b":[1,{"c":"}"}],"d":"]"},"usage":{"completion_tokens":18}}`,
	`{"content":"\u005c\u0022usage\u005c\u0022"}`,
}

func TestScanAgreesWithOracleOnHostileEvents(t *testing.T) {
	for _, f := range []Format{FormatOpenAI, FormatAnthropic} {
		for _, ev := range hostileEvents {
			if d := diffOracle(f, []byte(ev)); d != "" {
				t.Errorf("format %v, event %s:\n%s", f, ev, d)
			}
		}
	}
}

// TestScanDecodesOnlyWhatMayHoldUsage: text inside strings never makes an
// event a candidate for decoding, so agent-steered output costs no
// decode; usage-bearing members do.
func TestScanDecodesOnlyWhatMayHoldUsage(t *testing.T) {
	tests := []struct {
		data string
		want bool
	}{
		{`{"choices":[{"delta":{"content":"\"usage\":{\"prompt_tokens\":99}"}}],"usage":null}`, false},
		{`{"choices":[{"delta":{"content":"{\"message\":{\"usage\":1}}"}}]}`, false},
		{`{"choices":[{"usage":{"prompt_tokens":9}}],"usage" : null }`, false},
		{`{"type":"response.output_text.delta","delta":"\"response\":{\"usage\":{}}"}`, false},
		{`{"type":"content_block_delta","delta":{"type":"text_delta","text":"usage"}}`, false},
		{`{"choices":[],"usage":{"prompt_tokens":1}}`, true},
		{`{"usage":null,"usage":{}}`, true},
		{`{"Usage":{}}`, true},
		{`{"u\u0073age":{}}`, true}, // escaped keys are decoded to be sure
		{`{"type":"message_start","message":{"usage":{}}}`, true},
		{`{"type":"response.completed","response":{"usage":{}}}`, true},
	}
	for _, tt := range tests {
		if _, got := scanEvent(nil, []byte(tt.data)); got != tt.want {
			t.Errorf("scanEvent(%s) usage = %v, want %v", tt.data, got, tt.want)
		}
	}
}

// TestOrdinaryEventsAllocateNothing: the per-token path (parse the event,
// count its output, decide not to decode it) allocates nothing.
func TestOrdinaryEventsAllocateNothing(t *testing.T) {
	for _, be := range benchEvents {
		e := NewExtractor(be.format, true)
		ev := []byte(be.event)
		e.Feed(ev, 0) // the parser's buffers grow once
		if got := testing.AllocsPerRun(100, func() { e.Feed(ev, 1<<40) }); got != 0 {
			t.Errorf("%s: %v allocations per event, want 0", be.name, got)
		}
	}
}

// FuzzScanEvent: for any sequence of events, the scanning extractor finds
// the same usage, completeness and output size as the decoding oracle.
func FuzzScanEvent(f *testing.F) {
	for _, ev := range hostileEvents {
		f.Add(false, []byte(ev))
		f.Add(true, []byte(ev))
	}
	for _, fx := range fixtures {
		if !fx.sse {
			continue
		}
		var raw []byte
		p := SSEParser{OnEvent: func(ev, data []byte) {
			raw = append(append(append(append(raw, ev...), 0x1f), data...), 0x1e)
		}}
		p.Write(readFixture(f, fx.file))
		p.Close()
		f.Add(fx.format == FormatAnthropic, raw)
	}
	f.Fuzz(func(t *testing.T, anthropic bool, raw []byte) {
		format := FormatOpenAI
		if anthropic {
			format = FormatAnthropic
		}
		if d := diffOracle(format, raw); d != "" {
			t.Fatalf("events %q:\n%s", raw, d)
		}
	})
}
