package meter

import "bytes"

// ContentBytesPerToken turns the output a response has carried so far into
// a running token estimate, for the gateway's stream guard and for charging
// a response that reported no usage. Tokenisers average 4 bytes of English
// or code per token and about 3 bytes for CJK (one character), so 3 puts
// most real text at or above its true count; denser output (long digit
// runs, rare scripts, emoji) can carry more tokens than this says, and
// output the provider bills but never streams (hidden reasoning, Claude's
// summarised thinking) is not seen at all. It is an estimate, not a bound.
const ContentBytesPerToken = 3

// contentBytes is the size of the model output one SSE event carries: the
// decoded bytes of its text, tool-call arguments and reasoning. Framing
// (ids, roles, model names, usage, signatures, base64 audio) is not
// output and not counted, because it is the bulk of a stream's bytes.
//
// Which events carry new output differs per format: a Chat Completions
// chunk has no event name and no top-level type; Anthropic and Responses
// name their events, and only those whose name ends in "delta" carry new
// output (the "done", "completed" and "start" events repeat it or carry
// none). OpenRouter sends reasoning twice in one chunk (delta.reasoning and
// reasoning_details[].text), so the two are not added up.
func contentBytes(event, data []byte) int64 {
	var text, reasoning, details int64
	kind := event
	var key []byte
	var objects uint64 // bit d set: nesting level d is an object
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
			i = end // the loop steps past the closing quote
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

func b2u(b bool) uint64 {
	if b {
		return 1
	}
	return 0
}

// stringEnd returns the index of the quote closing the JSON string opening
// at data[open], or len(data) for an unterminated one, and an upper bound
// of its decoded size: an escape is one byte, a \u escape at most three
// (a surrogate pair, two escapes, decodes to four).
func stringEnd(data []byte, open int) (end int, n int64) {
	// Fast path, most strings: no escape before the closing quote.
	if q := bytes.IndexByte(data[open+1:], '"'); q >= 0 && bytes.IndexByte(data[open+1:open+1+q], '\\') < 0 {
		return open + 1 + q, int64(q)
	}
	for i := open + 1; i < len(data); i++ {
		switch data[i] {
		case '"':
			return i, n
		case '\\':
			if i+1 < len(data) && data[i+1] == 'u' {
				n += 3
				i += 5
			} else {
				n++
				i++
			}
		default:
			n++
		}
	}
	return len(data), n
}
