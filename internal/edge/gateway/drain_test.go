package gateway

import (
	"context"
	"math"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/egressd/egressd/internal/lib/testutil"

	"github.com/egressd/egressd/internal/shared/vocab"

	"github.com/egressd/egressd/policy"
)

const (
	firstChunk = "data: {\"id\":\"c1\",\"object\":\"chat.completion.chunk\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hel\"}}]}\n\n"
	usageChunk = "data: {\"id\":\"c1\",\"object\":\"chat.completion.chunk\",\"choices\":[],\"usage\":{\"prompt_tokens\":100,\"completion_tokens\":50,\"cost\":0.0042}}\n\n"
	doneChunk  = "data: [DONE]\n\n"
)

// gatedStream sends the first chunk, then waits for release before
// sending tail; it gives up when the gateway cuts the upstream.
func gatedStream(release <-chan struct{}, tail string) func(http.ResponseWriter, *http.Request, []byte) {
	return func(w http.ResponseWriter, r *http.Request, _ []byte) {
		w.Header().Set("Content-Type", "text/event-stream")
		w.Write([]byte(firstChunk))
		w.(http.Flusher).Flush()
		select {
		case <-release:
		case <-r.Context().Done():
			return
		}
		w.Write([]byte(tail))
		w.(http.Flusher).Flush()
	}
}

// startAndLeave starts a streaming call, reads the first chunk, then
// drops the connection and waits until the gateway is draining.
func startAndLeave(t *testing.T, r *rig) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, r.srv.URL+"/openrouter/api/v1/chat/completions",
		strings.NewReader(`{"model":"anthropic/claude-sonnet-4.5","max_tokens":1000,"stream":true}`))
	req.Header.Set("Authorization", "Bearer "+agentToken)
	resp, err := r.srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, len(firstChunk))
	if _, err := resp.Body.Read(buf); err != nil {
		t.Fatalf("reading the first chunk: %v", err)
	}
	cancel()
	resp.Body.Close()
	waitFor(t, "the gateway to notice the agent left", func() bool { return r.gw.Draining() == 1 })
}

func TestDisconnectMidStream(t *testing.T) {
	tests := []struct {
		name          string
		tail          string
		opts          []rigOpt
		release       bool // let the provider finish; else the drain is cut
		close         bool // cut by Handler.Close instead of the deadline
		wantEstimated bool
		wantCost      float64 // exact when not estimated
	}{
		{name: "usage arrives after the agent left", tail: usageChunk + doneChunk, release: true, wantCost: 0.0042},
		{name: "stream ends without usage", tail: doneChunk, release: true, wantEstimated: true},
		{name: "drain deadline", opts: []rigOpt{withDrainTimeout(20 * time.Millisecond)}, wantEstimated: true},
		{name: "gateway closing", close: true, wantEstimated: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			release := make(chan struct{})
			defer func() {
				select {
				case <-release:
				default:
					close(release)
				}
			}()
			r := newRig(t, gatedStream(release, tt.tail), tt.opts...)
			startAndLeave(t, r)
			switch {
			case tt.release:
				close(release)
			case tt.close:
				r.gw.Close()
			}
			waitFor(t, "the call to settle", func() bool { return len(r.rec.ByEvent(vocab.EventUsage)) == 1 })
			u := r.rec.ByEvent(vocab.EventUsage)[0]
			s := r.meter.Snapshot()
			if u.Estimated != tt.wantEstimated || s.ReservedUSD != 0 || r.gw.Draining() != 0 {
				t.Errorf("usage %+v reserved %v draining %d, want estimated=%v, nothing reserved or draining",
					u, s.ReservedUSD, r.gw.Draining(), tt.wantEstimated)
			}
			// Unknown outcome: the full reservation of the call's
			// estimated input and its 1000 output tokens.
			if q, _ := r.meter.Quote("anthropic/claude-sonnet-4.5", u.InputTokens, 1000); tt.wantEstimated && math.Abs(s.SpentUSD-q.MaxCostUSD) > 1e-9 {
				t.Errorf("estimated spend %v, want the full reservation %v", s.SpentUSD, q.MaxCostUSD)
			}
			if !tt.wantEstimated && math.Abs(s.SpentUSD-tt.wantCost) > 1e-12 {
				t.Errorf("spent %v, want the provider's %v", s.SpentUSD, tt.wantCost)
			}
			waitFor(t, "the decision entry", func() bool { return len(r.rec.ByEvent(vocab.EventDecision)) == 1 })
		})
	}
}

func TestDrainSlotsAreBounded(t *testing.T) {
	release := make(chan struct{})
	defer close(release)
	r := newRig(t, gatedStream(release, usageChunk+doneChunk), withMaxDrains(1))
	startAndLeave(t, r) // takes the only slot
	// A second leaver finds no slot: its upstream is cut and it is estimated.
	ctx, cancel := context.WithCancel(context.Background())
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, r.srv.URL+"/openrouter/api/v1/chat/completions",
		strings.NewReader(`{"model":"anthropic/claude-sonnet-4.5","max_tokens":10,"stream":true}`))
	req.Header.Set("Authorization", "Bearer "+agentToken)
	resp, err := r.srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Read(make([]byte, 16))
	cancel()
	resp.Body.Close()
	waitFor(t, "the second call to settle", func() bool { return len(r.rec.ByEvent(vocab.EventUsage)) == 1 })
	if u := r.rec.ByEvent(vocab.EventUsage)[0]; !u.Estimated || r.gw.Draining() != 1 {
		t.Errorf("got %+v with %d draining, want an estimated charge while the first still drains", u, r.gw.Draining())
	}
}

func withDrainTimeout(d time.Duration) rigOpt {
	return func(c *Config, _ *policy.BudgetConfig, _ map[string]policy.ProviderConfig) { c.DrainTimeout = d }
}

func withMaxDrains(n int) rigOpt {
	return func(c *Config, _ *policy.BudgetConfig, _ map[string]policy.ProviderConfig) { c.MaxDrains = n }
}

func TestTokensPerMinute(t *testing.T) {
	clk := testutil.NewClock(time.Date(2026, 3, 18, 12, 0, 0, 0, time.UTC))
	r := newRig(t, openRouterJSON(0.001, 400, 300), withClock(clk),
		func(_ *Config, _ *policy.BudgetConfig, p map[string]policy.ProviderConfig) {
			pc := p["openrouter"]
			pc.TokensPerMinute = 600
			p["openrouter"] = pc
		})
	if resp := r.post("/openrouter/api/v1/chat/completions", sonnetCall); resp.StatusCode != 200 {
		t.Fatalf("first call: got %d, want 200", resp.StatusCode)
	}
	// 700 real tokens against 600 per minute: the bucket is in debt.
	resp := r.post("/openrouter/api/v1/chat/completions", sonnetCall)
	body := readAll(t, resp)
	if resp.StatusCode != 429 || errType(t, body) != "rate_limited" || resp.Header.Get("Retry-After") == "" ||
		resp.Header.Get("X-Should-Retry") != "" {
		t.Errorf("got %d %s retry-after %q, want 429 rate_limited with Retry-After and retries allowed",
			resp.StatusCode, body, resp.Header.Get("Retry-After"))
	}
	if e := r.rec.ByEvent(vocab.EventDecision); e[len(e)-1].Reason != vocab.ReasonRateLimited {
		t.Errorf("logged %v, want rate_limited", e[len(e)-1].Reason)
	}
	clk.Set(clk.Now().Add(time.Minute))
	if resp := r.post("/openrouter/api/v1/chat/completions", sonnetCall); resp.StatusCode != 200 {
		t.Errorf("a minute later: got %d, want 200", resp.StatusCode)
	}
}

func TestWarnAtLogsOncePerPeriod(t *testing.T) {
	r := newRig(t, openRouterJSON(0.3, 1, 1), withBudget(func(b *policy.BudgetConfig) {
		b.CapUSD, b.WarnAt = 1, 0.5
	}))
	for range 3 {
		if resp := r.post("/openrouter/api/v1/chat/completions", sonnetCall); resp.StatusCode != 200 {
			t.Fatalf("got %d, want 200", resp.StatusCode)
		}
	}
	warns := r.rec.ByEvent(vocab.EventBudgetWarn)
	if len(warns) != 1 || math.Abs(warns[0].CostUSD-0.6) > 1e-12 {
		t.Errorf("got warn entries %+v, want one at spend 0.6", warns)
	}
}

// TestLeaveBeforeHeaders: the agent gives up on a slow non-streaming call.
// The wait for the provider is bounded by the drain deadline too, and the
// call, which the provider may have run, is charged its full reservation.
func TestLeaveBeforeHeaders(t *testing.T) {
	arrived := make(chan struct{}, 1)
	r := newRig(t, func(w http.ResponseWriter, r *http.Request, _ []byte) {
		arrived <- struct{}{}
		<-r.Context().Done() // never answers; ends when the gateway cuts the wait
	}, withDrainTimeout(20*time.Millisecond))
	ctx, cancel := context.WithCancel(context.Background())
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, r.srv.URL+"/openrouter/api/v1/chat/completions", strings.NewReader(sonnetCall))
	req.Header.Set("Authorization", "Bearer "+agentToken)
	errc := make(chan error, 1)
	go func() {
		resp, err := r.srv.Client().Do(req)
		if err == nil {
			resp.Body.Close()
		}
		errc <- err
	}()
	<-arrived
	cancel()
	if err := <-errc; err == nil {
		t.Fatal("the agent's request succeeded, want it cancelled")
	}
	// The drain records the usage line before it gives its slot back.
	waitFor(t, "the call to settle and its drain to end", func() bool {
		return len(r.rec.ByEvent(vocab.EventUsage)) == 1 && r.gw.Draining() == 0
	})
	u := r.rec.ByEvent(vocab.EventUsage)[0]
	// The reservation: ceil(len(body)/2) input tokens and the call's 100
	// output tokens.
	wantIn := int64((len(sonnetCall) + 1) / 2)
	q, _ := r.meter.Quote("anthropic/claude-sonnet-4.5", wantIn, 100)
	want := q.MaxCostUSD
	if !u.Estimated || u.InputTokens != wantIn || math.Abs(u.CostUSD-want) > 1e-9 {
		t.Errorf("got %+v, want an estimated charge of the reservation $%v", u, want)
	}
	if s := r.meter.Snapshot(); s.ReservedUSD != 0 || r.gw.Draining() != 0 {
		t.Errorf("reserved %v draining %d, want 0 0", s.ReservedUSD, r.gw.Draining())
	}
}
