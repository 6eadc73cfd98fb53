package gateway

import (
	"encoding/json"
	"fmt"
	"math"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/egressd/egressd/internal/lib/testutil"

	"github.com/egressd/egressd/internal/shared/vocab"

	"github.com/egressd/egressd/internal/shared/meter"
	"github.com/egressd/egressd/policy"
)

// openRouterJSON answers like OpenRouter: usage with its own cost.
func openRouterJSON(cost float64, in, out int) func(http.ResponseWriter, *http.Request, []byte) {
	return func(w http.ResponseWriter, r *http.Request, _ []byte) {
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprintf(w, `{"id":"gen-1","object":"chat.completion","model":"anthropic/claude-sonnet-4.5","choices":[{"index":0,"message":{"role":"assistant","content":"ok"},"finish_reason":"stop"}],"usage":{"prompt_tokens":%d,"completion_tokens":%d,"total_tokens":%d,"cost":%v}}`, in, out, in+out, cost)
	}
}

const sonnetCall = `{"model":"anthropic/claude-sonnet-4.5","max_tokens":100,"messages":[{"role":"user","content":"hi"}]}`

// TestConcurrentCallsNeverPassTheCap races 200 calls against a cap that
// admits a fraction of them: spend ends at or under the cap and equals
// exactly what the provider reported for the admitted calls; every refused
// call got the budget error and never reached the provider.
func TestConcurrentCallsNeverPassTheCap(t *testing.T) {
	const capUSD, cost = 0.05, 0.001
	r := newRig(t, openRouterJSON(cost, 40, 100), withBudget(func(b *policy.BudgetConfig) { b.CapUSD = capUSD }))
	var wg sync.WaitGroup
	var mu sync.Mutex
	statuses := map[int]int{}
	for range 200 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			resp, body := r.chat(sonnetCall)
			if resp == nil {
				return
			}
			if resp.StatusCode != 200 && (resp.StatusCode != 429 || errType(t, body) != "budget_exceeded" ||
				resp.Header.Get("X-Egressd-Reason") != "budget_exceeded") {
				t.Errorf("got %d %s, want 200 or the 429 budget error", resp.StatusCode, body)
			}
			mu.Lock()
			statuses[resp.StatusCode]++
			mu.Unlock()
		}()
	}
	wg.Wait()
	waitFor(t, "every call settled", func() bool { return len(r.rec.ByEvent(vocab.EventDecision)) == 200 })
	ok := statuses[200]
	t.Logf("admitted %d of 200, spent $%.4f", ok, r.meter.Snapshot().SpentUSD)
	s := r.meter.Snapshot()
	if s.SpentUSD > capUSD || s.ReservedUSD != 0 {
		t.Errorf("spent %v reserved %v, want <= %v and 0", s.SpentUSD, s.ReservedUSD, capUSD)
	}
	if want := float64(ok) * cost; math.Abs(s.SpentUSD-want) > 1e-12 {
		t.Errorf("spent %v, want exactly %d x %v = %v", s.SpentUSD, ok, cost, want)
	}
	if n := len(r.fake.requests()); n != ok || ok == 0 || statuses[429] != 200-ok {
		t.Errorf("provider saw %d calls, %d got 200, %d got 429: want equal, non-zero, and the rest refused", n, ok, statuses[429])
	}
	// Spend the rest one by one: the cap is reached, never passed.
	for i := 0; i < 200; i++ {
		if resp := r.post("/openrouter/api/v1/chat/completions", sonnetCall); resp.StatusCode == 429 {
			break
		}
	}
	if s := r.meter.Snapshot(); s.SpentUSD > capUSD || s.SpentUSD < capUSD-0.002 {
		t.Errorf("after spending the rest: spent %v, want within one call of %v and not over", s.SpentUSD, capUSD)
	}
}

func TestBudgetErrorShapes(t *testing.T) {
	clk := testutil.NewClock(time.Date(2026, 3, 18, 12, 0, 0, 0, time.UTC))
	r := newRig(t, openRouterJSON(0.001, 1, 1), withClock(clk), withBudget(func(b *policy.BudgetConfig) { b.CapUSD = 0.001 }))
	// A call whose worst case (1024 output tokens at $15/M) is over the cap.
	openai := r.post("/openrouter/api/v1/chat/completions", `{"model":"anthropic/claude-sonnet-4.5","max_tokens":1024}`)
	var oe struct {
		Error struct {
			Message, Type, Code string
			Spend, Cap          float64
			ResetsAt            string `json:"resets_at"`
		}
	}
	if err := json.NewDecoder(openai.Body).Decode(&oe); err != nil {
		t.Fatal(err)
	}
	if openai.StatusCode != 429 || oe.Error.Type != "budget_exceeded" || oe.Error.Code != "budget_exceeded" ||
		oe.Error.Cap != 0.001 || oe.Error.ResetsAt != "2026-04-01T00:00:00Z" || !strings.Contains(oe.Error.Message, "2026-04-01") {
		t.Errorf("openai shape: got %d %+v, want 429 budget_exceeded cap 0.001 resets 2026-04-01", openai.StatusCode, oe)
	}
	if got, want := openai.Status, "429 egressd budget_exceeded: the spend cap is reached"; got != want {
		t.Errorf("status line: got %q, want %q", got, want)
	}
	if openai.Header.Get("X-Should-Retry") != "false" {
		t.Errorf("x-should-retry %q, want false so SDKs do not retry", openai.Header.Get("X-Should-Retry"))
	}
	anth := r.post("/anthropic/v1/messages", `{"model":"claude-sonnet-4-5","max_tokens":1024}`)
	var ae struct {
		Type  string
		Error struct{ Type, Message string }
	}
	if err := json.NewDecoder(anth.Body).Decode(&ae); err != nil {
		t.Fatal(err)
	}
	if anth.StatusCode != 429 || ae.Type != "error" || ae.Error.Type != "budget_exceeded" || ae.Error.Message == "" {
		t.Errorf("anthropic shape: got %d %+v, want 429 type error / budget_exceeded", anth.StatusCode, ae)
	}
	if n := len(r.fake.requests()); n != 0 {
		t.Errorf("provider saw %d calls, want 0", n)
	}
	for _, e := range r.rec.ByEvent(vocab.EventDecision) {
		if e.Reason != vocab.ReasonBudgetExceeded || e.Verdict != vocab.Deny || e.Status != 429 {
			t.Errorf("entry %+v, want deny budget_exceeded 429", e)
		}
	}
	// The next month the budget is back.
	clk.Set(time.Date(2026, 4, 1, 0, 0, 1, 0, time.UTC))
	if resp := r.post("/openrouter/api/v1/chat/completions", `{"model":"anthropic/claude-sonnet-4.5","max_tokens":10}`); resp.StatusCode != 200 {
		t.Errorf("after roll-over: got %d, want 200", resp.StatusCode)
	}
}

func TestUnknownModel(t *testing.T) {
	r := newRig(t, openRouterJSON(0.001, 1, 1))
	resp := r.post("/openrouter/api/v1/chat/completions", `{"model":"Evil/Expensive-1","max_tokens":10}`)
	body := readAll(t, resp)
	if resp.StatusCode != 403 || errType(t, body) != "unknown_model" || !strings.Contains(string(body), `budget.prices.\"evil/expensive-1\"`) {
		t.Errorf("got %d %s, want 403 unknown_model naming budget.prices.\"evil/expensive-1\"", resp.StatusCode, body)
	}
	if e := r.rec.ByEvent(vocab.EventDecision); e[0].Reason != vocab.ReasonUnknownModel || e[0].Model != "Evil/Expensive-1" {
		t.Errorf("entry %+v, want reason unknown_model for the model", e[0])
	}
	resp = r.post("/openrouter/api/v1/chat/completions", `{"messages":[]}`)
	if body := readAll(t, resp); resp.StatusCode != 403 || !strings.Contains(string(body), "names no model") {
		t.Errorf("no model: got %d %s, want 403 naming the missing model", resp.StatusCode, body)
	}

	d := newRig(t, openRouterJSON(0.002, 1, 1), withBudget(func(b *policy.BudgetConfig) {
		b.UnknownModel = "default"
		b.Prices = map[string]policy.Price{"default": {Input: 5, Output: 15}}
	}))
	if resp := d.post("/openrouter/api/v1/chat/completions", `{"model":"evil/expensive-1","max_tokens":10}`); resp.StatusCode != 200 {
		t.Errorf("unknown_model: default: got %d, want 200", resp.StatusCode)
	}
	if s := d.meter.Snapshot(); s.SpentUSD != 0.002 {
		t.Errorf("spent %v, want the provider's 0.002", s.SpentUSD)
	}
}

func TestUpstreamErrorsPassThroughUncharged(t *testing.T) {
	tests := []struct {
		status int
		body   string
	}{
		{402, `{"error":{"message":"Insufficient credits. Add more using https://openrouter.ai/credits","code":402}}`},
		{429, `{"error":{"message":"You exceeded your current quota","type":"insufficient_quota","code":"insufficient_quota"}}`},
		{500, `{"error":{"message":"upstream overloaded"}}`},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprint(tt.status), func(t *testing.T) {
			r := newRig(t, func(w http.ResponseWriter, _ *http.Request, _ []byte) {
				w.Header().Set("Content-Type", "application/json")
				w.WriteHeader(tt.status)
				w.Write([]byte(tt.body))
			})
			resp := r.post("/openrouter/api/v1/chat/completions", sonnetCall)
			if body := readAll(t, resp); resp.StatusCode != tt.status || string(body) != tt.body {
				t.Errorf("got %d %s, want the provider's %d %s", resp.StatusCode, body, tt.status, tt.body)
			}
			if s := r.meter.Snapshot(); s.SpentUSD != 0 || s.ReservedUSD != 0 || s.InFlight != 0 {
				t.Errorf("got spent %v reserved %v in flight %d, want all 0", s.SpentUSD, s.ReservedUSD, s.InFlight)
			}
			if n := len(r.rec.ByEvent(vocab.EventUsage)); n != 0 {
				t.Errorf("%d usage entries, want 0", n)
			}
		})
	}
}

func TestRestartKeepsSpendAndCorruptLedgerRefuses(t *testing.T) {
	r := newRig(t, openRouterJSON(0.25, 1, 1))
	r.post("/openrouter/api/v1/chat/completions", sonnetCall)
	m2, err := meter.Open(r.budget, meter.Options{Logger: quietLog})
	if err != nil {
		t.Fatal(err)
	}
	if s := m2.Snapshot(); s.SpentUSD != 0.25 {
		t.Errorf("reopened ledger: spent %v, want 0.25", s.SpentUSD)
	}

	if err := os.WriteFile(r.budget.Ledger, []byte(`{"version":1,"spent_nano_usd":`), 0o600); err != nil {
		t.Fatal(err)
	}
	m3, err := meter.Open(r.budget, meter.Options{Logger: quietLog})
	if err == nil {
		t.Fatal("Open of a corrupt ledger: got nil error")
	}
	// The daemon serves the gateway without a meter then: metered calls refused.
	gw := New(Config{Meter: m3, Providers: func() map[string]policy.ProviderConfig { return r.provs },
		Env: env{"OR_KEY": realKey, "AGENT_TOKEN": agentToken}.get, Transport: r.fake.srv.Client().Transport,
		Recorder: r.rec, Logger: quietLog})
	req := httptest.NewRequest(http.MethodPost, "/openrouter/api/v1/chat/completions", strings.NewReader(sonnetCall))
	req.Header.Set("Authorization", "Bearer "+agentToken)
	w := httptest.NewRecorder()
	gw.ServeHTTP(w, req)
	if w.Code != 503 || errType(t, w.Body.Bytes()) != "ledger_unavailable" || len(r.fake.requests()) != 1 {
		t.Errorf("got %d %s (provider calls %d), want 503 ledger_unavailable and no new provider call", w.Code, w.Body.String(), len(r.fake.requests()))
	}
}
