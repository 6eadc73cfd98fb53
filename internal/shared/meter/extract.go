package meter

import (
	"bytes"
	"encoding/json"
	"math"
)

// DefaultMaxJSONBytes bounds the copy of a non-streaming response kept to
// read its usage after the last byte went to the client. A larger body is
// still passed through; its usage is then estimated.
const DefaultMaxJSONBytes = 16 << 20

// Completeness says how much of a call's usage the provider reported.
type Completeness uint8

// Completeness values.
const (
	UsageNone    Completeness = iota // no usage seen
	UsagePartial                     // input usage only (Anthropic message_start without its message_delta)
	UsageFinal                       // the provider's final figure
)

// Extractor reads usage out of a response body as it streams past. Feed it
// every byte with Write (it never fails and never blocks), then call Result.
// Streaming bodies are parsed incrementally, event by event; a JSON body is
// copied (bounded) and parsed once at Result. Not safe for concurrent use.
type Extractor struct {
	format  Format
	sse     bool
	parser  SSEParser
	body    []byte
	over    bool
	bytes   int64
	content int64 // output bytes of the events seen (contentBytes)
	limit   int64 // Feed's bound, in tokens; 0 = none
	acc     wireUsage
	items   ToolUses // tool-call output items of the final Responses answer
	state   Completeness
	closed  bool
}

// NewExtractor returns an extractor for a response in format; sse is true
// when the response is text/event-stream.
func NewExtractor(format Format, sse bool) *Extractor {
	e := &Extractor{format: format, sse: sse}
	e.parser.OnEvent = e.onEvent
	return e
}

// Write implements io.Writer.
func (e *Extractor) Write(p []byte) (int, error) {
	n, _ := e.Feed(p, 0)
	return n, nil
}

// Feed is Write with a bound on output: in an event stream it stops right
// after the event that takes OutputTokensSeen past maxTokens, and returns
// how much of p it consumed (p[:n] ends at that event's blank line) and
// true. Nothing is consumed after that. maxTokens <= 0 means no bound; a
// JSON body is never stopped (it arrives after the provider has finished
// and billed, so there is nothing left to save by cutting it).
func (e *Extractor) Feed(p []byte, maxTokens int64) (n int, over bool) {
	if e.sse {
		if e.parser.stop {
			return 0, true
		}
		e.limit = maxTokens
		n = e.parser.feed(p)
		e.bytes += int64(n)
		return n, e.parser.stop
	}
	e.bytes += int64(len(p))
	if !e.over {
		if len(e.body)+len(p) > DefaultMaxJSONBytes {
			e.over, e.body = true, nil
		} else {
			e.body = append(e.body, p...)
		}
	}
	return len(p), false
}

// Bytes is how many body bytes were seen.
func (e *Extractor) Bytes() int64 { return e.bytes }

// OutputTokensSeen is a running estimate of the output tokens the response
// has carried so far: for an event stream, the output bytes of its events
// (text, tool arguments, reasoning; not framing) over ContentBytesPerToken;
// for a JSON body, its whole size over the same, since the body holds the
// output once plus a little framing. Rounded up.
func (e *Extractor) OutputTokensSeen() int64 {
	n := e.content
	if !e.sse {
		n = e.bytes
	}
	return (n + ContentBytesPerToken - 1) / ContentBytesPerToken
}

// Result ends the body and returns the usage found and how complete it is.
func (e *Extractor) Result() (Usage, Completeness) {
	if !e.closed {
		e.closed = true
		if e.sse {
			e.parser.Close()
		} else if !e.over {
			e.onJSON(e.body)
			e.body = nil
		}
	}
	u := e.acc.normalise(e.format)
	if e.format != FormatAnthropic {
		u.Tools = e.items
	}
	return u, e.state
}

// usageKey is the old pre-filter, kept in front of the decode so that
// exactly the events it let through can still yield usage: scanEvent only
// narrows them further.
var usageKey = []byte(`"usage"`)

// onEvent counts the event's output and decodes it only when scanEvent
// says it may carry usage: most events carry text only (and OpenAI's
// carry "usage":null), and a JSON decode per token was most of a stream's
// CPU.
func (e *Extractor) onEvent(event, data []byte) {
	n, usage := scanEvent(event, data)
	e.content += n
	if usage && bytes.Contains(data, usageKey) {
		e.onJSON(data)
	}
	if e.limit > 0 && e.OutputTokensSeen() > e.limit {
		e.parser.stop = true
	}
}

// probe is the union of the places each format puts usage: top level
// (Chat Completions chunks and bodies, Responses bodies, Anthropic bodies
// and message_delta), message.usage (Anthropic message_start) and
// response.usage (Responses stream events).
type probe struct {
	Type     string     `json:"type"`
	Usage    *wireUsage `json:"usage"`
	Message  *nested    `json:"message"`
	Response *nested    `json:"response"`
	Output   []outItem  `json:"output"` // Responses body: tool-call items
}

type nested struct {
	Usage  *wireUsage `json:"usage"`
	Output []outItem  `json:"output"` // Responses response.completed
}

type outItem struct {
	Type string `json:"type"`
}

func (e *Extractor) onJSON(b []byte) {
	var p probe
	if json.Unmarshal(b, &p) != nil {
		return
	}
	u, final := p.Usage, true
	switch {
	case u != nil:
	case p.Message != nil && p.Message.Usage != nil:
		u = p.Message.Usage
	case p.Response != nil && p.Response.Usage != nil:
		u = p.Response.Usage
		p.Output = p.Response.Output
	default:
		return
	}
	if p.Output != nil {
		var t ToolUses
		for _, it := range p.Output {
			t.addItem(it.Type)
		}
		e.items = t
	}
	if e.format == FormatAnthropic && p.Type == "message_start" {
		// Output so far is a placeholder; the message_delta has the total.
		final = false
	}
	if !u.any() {
		return
	}
	e.acc.merge(u)
	if final {
		e.state = UsageFinal
	} else if e.state == UsageNone {
		e.state = UsagePartial
	}
}

// wireUsage is every usage field of every format. Pointers tell "absent"
// from zero so that later events overwrite only what they carry: Anthropic
// output_tokens are cumulative, so the last value wins and nothing is ever
// added. Numbers are float64 because some servers write 12.0.
type wireUsage struct {
	PromptTokens     *float64 `json:"prompt_tokens"`
	CompletionTokens *float64 `json:"completion_tokens"`
	PromptDetails    *details `json:"prompt_tokens_details"`
	InputTokens      *float64 `json:"input_tokens"`
	OutputTokens     *float64 `json:"output_tokens"`
	InputDetails     *details `json:"input_tokens_details"`
	CacheCreation    *float64 `json:"cache_creation_input_tokens"`
	CacheRead        *float64 `json:"cache_read_input_tokens"`
	CacheSplit       *struct {
		OneHour *float64 `json:"ephemeral_1h_input_tokens"`
	} `json:"cache_creation"`
	Cost          *float64 `json:"cost"`
	ServerToolUse *struct {
		WebSearch *float64 `json:"web_search_requests"`
		WebFetch  *float64 `json:"web_fetch_requests"`
	} `json:"server_tool_use"`
}

type details struct {
	CachedTokens *float64 `json:"cached_tokens"`
}

func (w *wireUsage) any() bool {
	return w.PromptTokens != nil || w.CompletionTokens != nil || w.InputTokens != nil ||
		w.OutputTokens != nil || w.CacheCreation != nil || w.CacheRead != nil || w.Cost != nil
}

func (w *wireUsage) merge(o *wireUsage) {
	over := func(dst **float64, src *float64) {
		if src != nil {
			*dst = src
		}
	}
	over(&w.PromptTokens, o.PromptTokens)
	over(&w.CompletionTokens, o.CompletionTokens)
	over(&w.InputTokens, o.InputTokens)
	over(&w.OutputTokens, o.OutputTokens)
	over(&w.CacheCreation, o.CacheCreation)
	over(&w.CacheRead, o.CacheRead)
	over(&w.Cost, o.Cost)
	if o.CacheSplit != nil {
		w.CacheSplit = o.CacheSplit
	}
	if o.ServerToolUse != nil {
		w.ServerToolUse = o.ServerToolUse
	}
	if o.PromptDetails != nil && o.PromptDetails.CachedTokens != nil {
		w.PromptDetails = o.PromptDetails
	}
	if o.InputDetails != nil && o.InputDetails.CachedTokens != nil {
		w.InputDetails = o.InputDetails
	}
}

func (w *wireUsage) normalise(f Format) Usage {
	var u Usage
	if w.Cost != nil {
		u.CostUSD, u.HasCost = clampUSD(*w.Cost), true
	}
	if f == FormatAnthropic {
		u.InputTokens = tokens(w.InputTokens)
		u.CacheReadTokens = tokens(w.CacheRead)
		u.CacheWriteTokens = tokens(w.CacheCreation)
		if w.CacheSplit != nil {
			u.CacheWrite1hTokens = tokens(w.CacheSplit.OneHour)
		}
		u.OutputTokens = tokens(w.OutputTokens)
		if st := w.ServerToolUse; st != nil {
			u.Tools.WebSearch, u.Tools.WebFetch = tokens(st.WebSearch), tokens(st.WebFetch)
		}
		return u
	}
	// OpenAI: cached tokens are a part of the input count.
	total, out, d := w.PromptTokens, w.CompletionTokens, w.PromptDetails
	if total == nil && out == nil {
		total, out, d = w.InputTokens, w.OutputTokens, w.InputDetails
	}
	in := tokens(total)
	var cached int64
	if d != nil {
		cached = min(tokens(d.CachedTokens), in)
	}
	u.InputTokens, u.CacheReadTokens = in-cached, cached
	u.OutputTokens = tokens(out)
	return u
}

// maxTokens bounds a reported count; nothing real comes near it, and it
// keeps prices times counts finite.
const maxTokens = 1 << 40

func tokens(v *float64) int64 {
	if v == nil || math.IsNaN(*v) || *v <= 0 {
		return 0
	}
	return int64(min(math.Ceil(*v), maxTokens))
}
