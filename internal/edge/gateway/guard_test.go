package gateway

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/egressd/egressd/internal/lib/testutil"
	"github.com/egressd/egressd/internal/shared/vocab"

	"github.com/egressd/egressd/internal/shared/meter"
	"github.com/egressd/egressd/policy"
)

// endlessStream is a provider that ignores the output limit: after head it
// sends event until the gateway cuts the connection (or 20,000 of them),
// then reports how many it sent.
func endlessStream(head, event string, sent chan<- int) func(http.ResponseWriter, *http.Request, []byte) {
	return func(w http.ResponseWriter, r *http.Request, _ []byte) {
		w.Header().Set("Content-Type", "text/event-stream")
		io.WriteString(w, head)
		n := 0
		for ; n < 20000 && r.Context().Err() == nil; n++ {
			if _, err := io.WriteString(w, event); err != nil {
				break
			}
			w.(http.Flusher).Flush()
		}
		sent <- n
	}
}

// Each event carries "abcdef": 6 bytes, 2 estimated tokens.
const (
	chatDelta      = "data: {\"id\":\"c1\",\"object\":\"chat.completion.chunk\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"abcdef\"}}]}\n\n"
	anthropicStart = "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_1\",\"type\":\"message\",\"role\":\"assistant\",\"content\":[],\"model\":\"claude-sonnet-4-5\",\"usage\":{\"input_tokens\":25,\"output_tokens\":1}}}\n\n"
	anthropicDelta = "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"abcdef\"}}\n\n"
	responsesDelta = "event: response.output_text.delta\ndata: {\"type\":\"response.output_text.delta\",\"item_id\":\"msg_1\",\"output_index\":0,\"content_index\":0,\"delta\":\"abcdef\"}\n\n"
)

// TestStreamGuardCutsRunawayOutput: a provider that writes past the
// reserved output is cut where the estimate passes the guard; the agent
// gets every whole event up to there, then an error event in its
// provider's shape, then the end of the stream; the upstream connection is
// closed; the charge is the estimate, past the reservation by at most the
// guard's margin; both log entries say budget_exceeded.
func TestStreamGuardCutsRunawayOutput(t *testing.T) {
	tests := []struct {
		name, path, body, head, event string
		wantInput                     int64 // 0 = the body estimate
	}{
		{"chat completions", "/openrouter/api/v1/chat/completions",
			`{"model":"anthropic/claude-sonnet-4.5","stream":true,"max_tokens":100,"messages":[]}`, "", chatDelta, 0},
		{"anthropic messages", "/anthropic/v1/messages",
			`{"model":"claude-sonnet-4-5","stream":true,"max_tokens":100,"messages":[]}`, anthropicStart, anthropicDelta, 25},
		{"responses", "/openai/responses",
			`{"model":"gpt-4.1","stream":true,"max_output_tokens":100,"input":"hi"}`, "", responsesDelta, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			sent := make(chan int, 1)
			r := newRig(t, endlessStream(tt.head, tt.event, sent))
			resp := r.post(tt.path, tt.body)
			got := readAll(t, resp)
			// 100 reserved: the guard is at 125+64 = 189 tokens, passed by
			// the 95th event (190).
			const wantEvents, wantSeen = 95, 190
			if want := tt.head + strings.Repeat(tt.event, wantEvents); resp.StatusCode != 200 || !bytes.HasPrefix(got, []byte(want)) {
				t.Fatalf("got %d %q..., want 200 and the first %d events whole", resp.StatusCode, got[:min(len(got), 300)], wantEvents)
			}
			checkErrorEvent(t, got[len(tt.head)+wantEvents*len(tt.event):], strings.HasPrefix(tt.path, "/anthropic/"))
			select {
			case n := <-sent:
				if n >= 20000 {
					t.Errorf("provider sent all %d events, want the upstream cut", n)
				}
			case <-time.After(10 * time.Second):
				t.Fatal("the provider never noticed the cut")
			}
			waitFor(t, "the usage entry", func() bool { return len(r.rec.ByEvent(vocab.EventUsage)) == 1 })
			u := r.rec.ByEvent(vocab.EventUsage)[0]
			q, err := r.meter.Quote(u.Model, int64(len(tt.body)+1)/2, 100)
			if err != nil {
				t.Fatal(err)
			}
			bound := q.MaxCostUSD*GuardFactor + float64(GuardSlackTokens+2)*q.Price.Output/1e6
			if !u.Estimated || u.Reason != vocab.ReasonBudgetExceeded || u.OutputTokens != wantSeen ||
				u.CostUSD <= q.MaxCostUSD || u.CostUSD > bound {
				t.Errorf("usage %+v, want estimated budget_exceeded, %d output tokens, cost in (%v, %v]", u, wantSeen, q.MaxCostUSD, bound)
			}
			if tt.wantInput != 0 && u.InputTokens != tt.wantInput {
				t.Errorf("charged %d input tokens, want the %d reported", u.InputTokens, tt.wantInput)
			}
			if s := r.meter.Snapshot(); math.Abs(s.SpentUSD-u.CostUSD) > 1e-12 || s.ReservedUSD != 0 {
				t.Errorf("spent %v reserved %v, want %v and 0", s.SpentUSD, s.ReservedUSD, u.CostUSD)
			}
			d := r.rec.ByEvent(vocab.EventDecision)
			if len(d) != 1 || d[0].Verdict != vocab.Deny || d[0].Reason != vocab.ReasonBudgetExceeded {
				t.Errorf("decision entries %+v, want one deny/budget_exceeded", d)
			}
		})
	}
}

// checkErrorEvent wants rest to be exactly one SSE error event that the
// provider's SDK raises: data with an error object of type
// budget_exceeded (Anthropic's also says type: error).
func checkErrorEvent(t *testing.T, rest []byte, anthropic bool) {
	t.Helper()
	data, ok := bytes.CutPrefix(rest, []byte("event: error\ndata: "))
	if !ok || !bytes.HasSuffix(data, []byte("\n\n")) || bytes.Count(data, []byte("\n")) != 2 {
		t.Fatalf("stream ends with %q, want one error event and nothing after it", rest)
	}
	var ev struct {
		Type  string `json:"type"`
		Error struct {
			Type, Message string
		} `json:"error"`
	}
	if err := json.Unmarshal(data, &ev); err != nil {
		t.Fatalf("error event data %q: %v", data, err)
	}
	if ev.Error.Type != "budget_exceeded" || !strings.Contains(ev.Error.Message, "100 tokens reserved") || anthropic != (ev.Type == "error") {
		t.Errorf("error event %+v, want type budget_exceeded naming the 100 reserved tokens", ev)
	}
}

// TestStreamWithinTheMarginIsNotCut: output a little past the reserved
// estimate (the estimate errs high on ordinary text) streams through, and
// the provider's usage is charged as reported.
func TestStreamWithinTheMarginIsNotCut(t *testing.T) {
	tail := "data: {\"choices\":[],\"usage\":{\"prompt_tokens\":20,\"completion_tokens\":100,\"cost\":0.0016}}\n\ndata: [DONE]\n\n"
	stream := strings.Repeat(chatDelta, 90) + tail // 180 estimated tokens, guard at 189
	r := newRig(t, func(w http.ResponseWriter, _ *http.Request, _ []byte) {
		w.Header().Set("Content-Type", "text/event-stream")
		io.WriteString(w, stream)
	})
	resp := r.post("/openrouter/api/v1/chat/completions", `{"model":"anthropic/claude-sonnet-4.5","stream":true,"max_tokens":100}`)
	if got := readAll(t, resp); string(got) != stream {
		t.Fatalf("got %q, want the provider's stream unchanged", got)
	}
	waitFor(t, "the usage entry", func() bool { return len(r.rec.ByEvent(vocab.EventUsage)) == 1 })
	if u := r.rec.ByEvent(vocab.EventUsage)[0]; u.Estimated || u.CostUSD != 0.0016 || u.Reason != vocab.ReasonAllowlisted {
		t.Errorf("usage %+v, want the reported $0.0016, allowlisted", u)
	}
}

// TestOvershootChargedLoggedAndCapCloses: the provider bills more than
// was reserved (input egressd could not see): the charge is what it
// reported, the overshoot is logged at WARN with both figures and flagged
// budget_exceeded, and with spend past the cap the next call is refused.
func TestOvershootChargedLoggedAndCapCloses(t *testing.T) {
	var logs testutil.Buffer
	r := newRig(t, openRouterJSON(0.08, 90000, 10), withBudget(func(b *policy.BudgetConfig) { b.CapUSD = 0.05 }),
		func(c *Config, _ *policy.BudgetConfig, _ map[string]policy.ProviderConfig) {
			c.Logger = slog.New(slog.NewTextHandler(&logs, nil))
		})
	if resp := r.post("/openrouter/api/v1/chat/completions", sonnetCall); resp.StatusCode != 200 {
		t.Fatalf("got %d, want 200", resp.StatusCode)
	}
	u := r.rec.ByEvent(vocab.EventUsage)
	if len(u) != 1 || u[0].CostUSD != 0.08 || u[0].Reason != vocab.ReasonBudgetExceeded || u[0].Estimated {
		t.Errorf("usage entries %+v, want one of $0.08 flagged budget_exceeded", u)
	}
	if s := r.meter.Snapshot(); s.SpentUSD != 0.08 {
		t.Errorf("spent %v, want the 0.08 billed", s.SpentUSD)
	}
	q, _ := r.meter.Quote("anthropic/claude-sonnet-4.5", int64(len(sonnetCall)+1)/2, 100)
	out := logs.String()
	for _, want := range []string{"call cost more than its reservation", fmt.Sprintf("reserved_usd=%v", q.MaxCostUSD),
		"cost_usd=0.08", "cap_reached=true", "more than the $"} {
		if !strings.Contains(out, want) {
			t.Errorf("logs lack %q:\n%s", want, out)
		}
	}
	resp := r.post("/openrouter/api/v1/chat/completions", `{"model":"anthropic/claude-sonnet-4.5","max_tokens":1}`)
	if body := readAll(t, resp); resp.StatusCode != 429 || errType(t, body) != "budget_exceeded" {
		t.Errorf("next call: got %d %s, want 429 budget_exceeded", resp.StatusCode, body)
	}
}

func TestEventEnd(t *testing.T) {
	tests := []struct{ tail, want string }{
		{"", ""}, {"}\n\n", ""}, {"}\r\r", ""}, {"}\r\n\r\n", ""}, {"\n\r\n", ""},
		{"}\r\n\r", "\n"}, {"x}\n", "\n"}, {"x}\r", "\n\r\n"}, {"x}", "\n\n"},
	}
	for _, tt := range tests {
		if got := string(eventEnd([]byte(tt.tail))); got != tt.want {
			t.Errorf("eventEnd(%q) = %q, want %q", tt.tail, got, tt.want)
		}
	}
}

func TestGuardLimit(t *testing.T) {
	for _, tt := range []struct{ reserved, want int64 }{{0, 64}, {100, 189}, {4096, 5184}, {1, 66}} {
		if got := guardLimit(tt.reserved); got != tt.want {
			t.Errorf("guardLimit(%d) = %d, want %d", tt.reserved, got, tt.want)
		}
	}
	if got := guardLimit(meter.DefaultMaxTokens); got <= meter.DefaultMaxTokens {
		t.Errorf("guard %d at or under the reservation %d", got, meter.DefaultMaxTokens)
	}
}

// TestSinkKeepsTheLastBytes: the tail the cut is judged by is the last
// four bytes sent, however the writes were sized.
func TestSinkKeepsTheLastBytes(t *testing.T) {
	for _, writes := range [][]string{{"abcdef"}, {"a", "b", "c", "d", "e", "f"}, {"abc", "", "def"}, {"abcde", "f"}, {"ab", "cdef"}, {"x"}} {
		rec := httptest.NewRecorder()
		s := newSink(&call{w: rec}, newDrainer(&Handler{}, func() {}))
		for _, w := range writes {
			s.write([]byte(w))
		}
		all := strings.Join(writes, "")
		if got, want := string(s.tail[:s.nt]), all[max(0, len(all)-4):]; got != want || rec.Body.String() != all {
			t.Errorf("writes %q: tail %q body %q, want %q %q", writes, got, rec.Body.String(), want, all)
		}
	}
}

// TestStreamGuardCutsADrain: after the agent left, a provider that keeps
// writing is cut by the guard, not read for the whole drain deadline.
func TestStreamGuardCutsADrain(t *testing.T) {
	release := make(chan struct{})
	sent := make(chan int, 1)
	r := newRig(t, func(w http.ResponseWriter, req *http.Request, _ []byte) {
		w.Header().Set("Content-Type", "text/event-stream")
		io.WriteString(w, firstChunk)
		w.(http.Flusher).Flush()
		select {
		case <-release:
		case <-req.Context().Done():
			sent <- 0
			return
		}
		endlessStream("", chatDelta, sent)(w, req, nil)
	})
	startAndLeave(t, r) // max_tokens 1000; the drain deadline is the default 2 minutes
	close(release)
	select {
	case n := <-sent:
		if n == 0 || n >= 20000 {
			t.Errorf("provider sent %d events after the agent left, want some and then the cut", n)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the drain was not cut")
	}
	waitFor(t, "the usage entry", func() bool { return len(r.rec.ByEvent(vocab.EventUsage)) == 1 })
	if u := r.rec.ByEvent(vocab.EventUsage)[0]; !u.Estimated || u.Reason != vocab.ReasonBudgetExceeded || u.OutputTokens <= 1000 {
		t.Errorf("usage %+v, want an estimate past the 1000 reserved, flagged budget_exceeded", u)
	}
	waitFor(t, "the drain to end", func() bool { return r.gw.Draining() == 0 })
}

// TestJSONBodyPastTheGuardIsNotCut: a non-streaming answer arrives already
// billed, so it is passed on whole; without usage it is charged its size
// estimate in full and flagged, since it shows more output than reserved.
func TestJSONBodyPastTheGuardIsNotCut(t *testing.T) {
	answer := `{"id":"c1","object":"chat.completion","choices":[{"index":0,"message":{"role":"assistant","content":"` +
		strings.Repeat("abcdef ", 700) + `"},"finish_reason":"length"}]}`
	r := newRig(t, func(w http.ResponseWriter, _ *http.Request, _ []byte) {
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, answer)
	})
	body := `{"model":"anthropic/claude-sonnet-4.5","max_tokens":100}`
	resp := r.post("/openrouter/api/v1/chat/completions", body)
	if got := readAll(t, resp); string(got) != answer {
		t.Fatalf("got %d bytes, want the provider's %d unchanged", len(got), len(answer))
	}
	u := r.rec.ByEvent(vocab.EventUsage)
	q, _ := r.meter.Quote("anthropic/claude-sonnet-4.5", int64(len(body)+1)/2, 100)
	wantOut := (int64(len(answer)) + meter.ContentBytesPerToken - 1) / meter.ContentBytesPerToken
	if len(u) != 1 || !u[0].Estimated || u[0].Reason != vocab.ReasonBudgetExceeded || u[0].OutputTokens != wantOut ||
		u[0].CostUSD <= q.MaxCostUSD {
		t.Errorf("usage %+v, want an estimate of %d output tokens above the $%v reserved, flagged", u, wantOut, q.MaxCostUSD)
	}
	if d := r.rec.ByEvent(vocab.EventDecision); len(d) != 1 || d[0].Verdict != vocab.Allow {
		t.Errorf("decision entries %+v, want one allow (nothing was cut)", d)
	}
}
