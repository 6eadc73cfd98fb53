// Package declog owns egressd's decision log: the one event type every edge
// emits (Entry), the JSON-lines writer with size rotation and throttling of
// repeated denials, live subscribers (the admin SSE stream), and the reader
// behind `egressd tail` and `egressd suggest`.
package declog

import (
	"time"

	"github.com/egressd/egressd/internal/shared/vocab"
)

// Entry is one decision-log line. Field names are constant (they are the
// JSON keys); never log query strings, credentials or bodies.
type Entry struct {
	Time     time.Time     `json:"time"`
	Event    vocab.Event   `json:"event"`
	Client   string        `json:"client"`
	Proto    vocab.Proto   `json:"proto"`
	Host     string        `json:"host"`
	Port     uint16        `json:"port,omitempty"`
	Method   string        `json:"method,omitempty"`
	Path     string        `json:"path,omitempty"` // gateway apis: routes: the canonical path, never the query
	QType    string        `json:"qtype,omitempty"`
	Verdict  vocab.Verdict `json:"verdict"`
	Reason   vocab.Reason  `json:"reason"`
	Rule     string        `json:"rule,omitempty"`
	Hint     string        `json:"hint,omitempty"` // denials: the grant that would allow it (policy.Hint)
	Status   int           `json:"status,omitempty"`
	BytesUp  int64         `json:"bytes_up,omitempty"`
	BytesDn  int64         `json:"bytes_down,omitempty"`
	Duration time.Duration `json:"duration_ms,omitempty"`
	Count    int           `json:"count,omitempty"`
	// Overflow summaries (Host "*", and Client "*" when shared): the first
	// SampleMax distinct hosts and clients that were folded into Count.
	Hosts   []string `json:"hosts,omitempty"`
	Clients []string `json:"clients,omitempty"`

	// Gateway usage (Event == vocab.EventUsage).
	Provider     string  `json:"provider,omitempty"`
	Model        string  `json:"model,omitempty"`
	InputTokens  int64   `json:"input_tokens,omitempty"`
	OutputTokens int64   `json:"output_tokens,omitempty"`
	CostUSD      float64 `json:"cost_usd,omitempty"`
	Estimated    bool    `json:"estimated,omitempty"`
}

// Recorder receives entries. Edges depend on this, not on the writer; nil
// Recorder fields in edge configs mean "discard".
type Recorder interface {
	Record(Entry)
}

// Discard is a Recorder that drops everything.
type Discard struct{}

// Record implements Recorder.
func (Discard) Record(Entry) {}
