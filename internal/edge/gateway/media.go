package gateway

import (
	"bytes"
	"encoding/json"
)

// Media parts. The input estimate counts a request's bytes, which prices
// an image, a document or an audio clip sent inline (base64) far above
// what it costs; but a part given by reference (a URL, a file id) is a few
// bytes that cost thousands of tokens. So every media part is reserved at
// least a fixed number of tokens: the part's own bytes count towards it
// (an inline part that already costs more adds nothing), and the rest is
// added to the call's input estimate.
//
// A part is an object whose "type" is one of the media types of the three
// APIs (Chat Completions image_url, input_audio, file; Responses
// input_image, input_file; Anthropic image, document; OpenRouter video),
// or, whatever its type says, an object carrying one of their payload
// keys (image_url, input_audio, file_data, file_id, file_url, video_url),
// so that a spelling the estimate does not know errs towards counting.
//
// The figures are per part, not per model: what an image costs varies by
// model from under 100 to a few thousand tokens. ImagePartTokens covers
// Claude (about 1,600 at most) and GPT-4o, GPT-4.1, o-series and GPT-5
// images (at most about 3,800); gpt-4o-mini counts an image as up to about
// 48,000 tokens (priced so that the dollars match GPT-4o's), which this
// under-reserves. A document or video by reference can be longer than any
// fixed figure; what it costs past its reservation is charged as billed.
const (
	ImagePartTokens    = 4_000
	AudioPartTokens    = 4_000
	DocumentPartTokens = 32_000 // documents (PDF) and video: some 10-20 pages, a minute or two
)

type mediaKind uint8

const (
	mediaNone mediaKind = iota
	mediaImage
	mediaAudio
	mediaDocument // ordered by tokens: a part seen as two kinds counts as the larger
)

func (k mediaKind) tokens() int64 {
	switch k {
	case mediaImage:
		return ImagePartTokens
	case mediaAudio:
		return AudioPartTokens
	case mediaDocument:
		return DocumentPartTokens
	}
	return 0
}

// typeKind classifies a folded "type" value.
func typeKind(v []byte) mediaKind {
	switch string(v) {
	case "image_url", "input_image", "image":
		return mediaImage
	case "input_audio", "audio":
		return mediaAudio
	case "document", "input_file", "file", "video_url", "input_video", "video":
		return mediaDocument
	}
	return mediaNone
}

// keyKind classifies a folded object key that carries a media payload.
func keyKind(k []byte) mediaKind {
	switch string(k) {
	case "image_url":
		return mediaImage
	case "input_audio":
		return mediaAudio
	case "file_data", "file_id", "file_url", "video_url":
		return mediaDocument
	}
	return mediaNone
}

// frame is one open object or array while scanning.
type frame struct {
	object     bool
	start      int // offset of the opening brace
	kind       mediaKind
	expectKey  bool
	typeNext   bool  // the value being read belongs to a "type" key
	inner      int64 // tokens added by the parts inside it
	innerParts int
	innerKind  mediaKind
}

// mediaTokens scans a request body (already checked to be valid JSON) and
// returns how many tokens its media parts add to the byte estimate, and
// how many parts it found. Keys and type values are read the way the most
// lenient provider parser might (foldKey, escapes decoded).
func mediaTokens(body []byte) (extra int64, parts int) {
	var buf [foldBuf]byte
	stack := make([]frame, 0, 16)
	for i := 0; i < len(body); i++ {
		switch c := body[i]; c {
		case '{', '[':
			stack = append(stack, frame{object: c == '{', start: i, expectKey: c == '{'})
		case '}', ']':
			if len(stack) == 0 {
				return extra, parts
			}
			f := stack[len(stack)-1]
			stack = stack[:len(stack)-1]
			add, n, k := f.inner, f.innerParts, f.innerKind
			if f.kind != mediaNone {
				// One part, priced by its own bytes, whatever payload
				// object it nests (a "file" part holds {"file_id": ...});
				// several parts inside one keep their sum if larger.
				k = max(f.kind, f.innerKind)
				own := (int64(i+1-f.start) + BytesPerInputToken - 1) / BytesPerInputToken
				add, n = max(k.tokens()-own, 0), 1
				if f.innerParts > 1 {
					add = max(add, f.inner)
				}
			}
			if len(stack) == 0 {
				extra, parts = extra+add, parts+n
			} else {
				p := &stack[len(stack)-1]
				p.inner, p.innerParts, p.innerKind = p.inner+add, p.innerParts+n, max(p.innerKind, k)
			}
		case ',':
			if n := len(stack); n > 0 && stack[n-1].object {
				stack[n-1].expectKey = true
			}
		case '"':
			end := jsonStringEnd(body, i)
			if n := len(stack); n > 0 && stack[n-1].object {
				onObjectString(&stack[n-1], body[i:end+1], &buf)
			}
			i = end
		}
	}
	return extra, parts
}

// onObjectString handles a string (quotes included) met directly inside
// an object: a key, or a key's value.
func onObjectString(f *frame, lit []byte, buf *[foldBuf]byte) {
	if f.expectKey {
		f.expectKey = false
		k := folded(lit, buf)
		f.typeNext = string(k) == "type"
		f.kind = max(f.kind, keyKind(k))
		return
	}
	if f.typeNext {
		f.kind = max(f.kind, typeKind(folded(lit, buf)))
		f.typeNext = false
	}
}

// foldBuf bounds the keys and type values compared: none of those looked
// for is longer.
const foldBuf = 16

// folded is foldKey of a string literal's value, in buf, or nil when it is
// longer than any key or type looked for. Plain ASCII, nearly every key,
// is lowered in place without allocating; anything else is decoded first,
// unless even fully escaped it would be too long.
func folded(lit []byte, buf *[foldBuf]byte) []byte {
	if len(lit) < 2 {
		return nil
	}
	s := lit[1 : len(lit)-1]
	plain := true
	for _, c := range s {
		if c >= 0x80 || c == '\\' {
			plain = false
			break
		}
	}
	if plain {
		if len(s) > foldBuf {
			return nil
		}
		for i, c := range s {
			if 'A' <= c && c <= 'Z' {
				c += 'a' - 'A'
			}
			buf[i] = c
		}
		return buf[:len(s)]
	}
	if len(s) > 12*foldBuf { // a \u escape is 6 bytes; 12 leaves room for surrogate pairs
		return nil
	}
	d := foldKey(decodeJSONString(lit))
	if len(d) > foldBuf {
		return nil
	}
	return buf[:copy(buf[:], d)]
}

// jsonStringEnd is the index of the quote closing the string opening at
// body[open], or len(body)-1 if it is unterminated.
func jsonStringEnd(body []byte, open int) int {
	for i := open + 1; i < len(body); {
		j := bytes.IndexByte(body[i:], '"')
		if j < 0 {
			break
		}
		q := i + j
		bs := 0
		for k := q - 1; k > open && body[k] == '\\'; k-- {
			bs++
		}
		if bs%2 == 0 {
			return q
		}
		i = q + 1
	}
	return len(body) - 1
}

// decodeJSONString decodes a string literal, "" if it is not one.
func decodeJSONString(lit []byte) string {
	if len(lit) < 2 {
		return ""
	}
	if bytes.IndexByte(lit, '\\') < 0 {
		return string(lit[1 : len(lit)-1])
	}
	var s string
	if json.Unmarshal(lit, &s) != nil {
		return ""
	}
	return s
}
