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

// scanEvent reads one SSE event's data in a single pass without decoding
// it: content is the size of the model output it carries (see
// contentBytes), and usage reports whether it may carry usage, that is,
// whether its top-level object has a member that encoding/json would
// match to one of probe's usage-bearing fields (usage, message, response)
// with a value other than null. Only such events are decoded; an ordinary
// content event, including OpenAI's `"usage":null` on every chunk, is not.
// Strings are skipped whole, so text the agent steers into the output
// (a "usage" key, escaped quotes) cannot be mistaken for structure. For
// input that is not valid JSON the answer does not matter: decoding it
// fails and yields nothing, the same as not decoding it.
func scanEvent(event, data []byte) (content int64, usage bool) {
	var text, reasoning, details int64
	kind := event
	var key []byte
	var objects uint64 // bit d set: nesting level d is an object
	depth, expectKey, topKey := 0, false, false
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
			if topKey {
				topKey = false
				usage = usage || !isNull(data[i+1:])
			}
		case '"':
			end, n := stringEnd(data, i)
			s := data[i+1 : end]
			i = end // the loop steps past the closing quote
			if expectKey {
				key, expectKey = s, false
				topKey = depth == 1 && mayNameUsage(s)
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
		return 0, usage
	}
	return text + max(reasoning, details), usage
}

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
	n, _ := scanEvent(event, data)
	return n
}

// usageNames are probe's members that can lead to usage.
var usageNames = [...]string{"usage", "message", "response"}

// mayNameUsage reports whether encoding/json could match the raw (still
// escaped) key to one of usageNames. It matches names case-insensitively
// and after unescaping, and folds some non-ASCII letters onto ASCII ones
// (U+017F, long s, matches "s"), so a key with an escape or a non-ASCII
// byte is answered yes: rare in real streams, and decoding is always safe.
func mayNameUsage(key []byte) bool {
	for _, c := range key {
		if c == '\\' || c >= 0x80 {
			return true
		}
	}
	for _, name := range usageNames {
		if bytes.EqualFold(key, []byte(name)) {
			return true
		}
	}
	return false
}

// isNull reports whether b, after JSON whitespace, starts with null.
func isNull(b []byte) bool {
	b = bytes.TrimLeft(b, " \t\r\n")
	return bytes.HasPrefix(b, []byte("null"))
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
