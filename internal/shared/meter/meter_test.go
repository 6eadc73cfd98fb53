package meter

import (
	"errors"
	"io"
	"log/slog"
	"math"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/egressd/egressd/internal/lib/testutil"

	"github.com/egressd/egressd/policy"
)

var quietLog = slog.New(slog.NewTextHandler(io.Discard, nil))

func budget(t testing.TB, capUSD float64) policy.BudgetConfig {
	return policy.BudgetConfig{
		CapUSD: capUSD,
		Period: "month",
		Ledger: filepath.Join(t.TempDir(), "ledger.json"),
		Prices: map[string]policy.Price{
			"Anthropic/Claude-Sonnet-4.5": {Input: 3, Output: 15, CacheRead: 0.3, CacheWrite: 3.75},
			"default":                     {Input: 5, Output: 15},
		},
	}
}

func open(t testing.TB, cfg policy.BudgetConfig, clk *testutil.Clock) *Meter {
	t.Helper()
	m, err := Open(cfg, Options{Clock: clk.Now, Logger: quietLog})
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	return m
}

var t0 = time.Date(2026, 3, 18, 15, 4, 5, 0, time.UTC) // a Wednesday

func TestReserveSettleRelease(t *testing.T) {
	m := open(t, budget(t, 1), testutil.NewClock(t0))
	r1, err := m.Reserve("m", 0.4)
	if err != nil {
		t.Fatal(err)
	}
	r2, err := m.Reserve("m", 0.5)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := m.Reserve("m", 0.2); !errors.Is(err, ErrBudgetExceeded) {
		t.Fatalf("third reservation: got %v, want ErrBudgetExceeded", err)
	}
	if _, err := r1.Settle(0.1, Usage{InputTokens: 10}, false); err != nil {
		t.Fatal(err)
	}
	r2.Release()
	r2.Release() // idempotent
	if _, err := r1.Settle(5, Usage{}, false); err != nil {
		t.Fatal(err) // second settle is a no-op
	}
	s := m.Snapshot()
	if s.SpentUSD != 0.1 || s.ReservedUSD != 0 || s.InFlight != 0 {
		t.Errorf("got spent %v reserved %v in flight %d, want 0.1 0 0", s.SpentUSD, s.ReservedUSD, s.InFlight)
	}
	var be *BudgetError
	_, err = m.Reserve("m", 0.95)
	if !errors.As(err, &be) {
		t.Fatalf("got %v, want *BudgetError", err)
	}
	if be.SpentUSD != 0.1 || be.CapUSD != 1 || !be.ResetsAt.Equal(time.Date(2026, 4, 1, 0, 0, 0, 0, time.UTC)) {
		t.Errorf("got %+v, want spent 0.1 cap 1 resets 2026-04-01", be)
	}
}

func TestZeroCapAdmitsNothing(t *testing.T) {
	m := open(t, budget(t, 0), testutil.NewClock(t0))
	if _, err := m.Reserve("free", 0); !errors.Is(err, ErrBudgetExceeded) {
		t.Errorf("zero cap, free call: got %v, want ErrBudgetExceeded", err)
	}
}

// TestConcurrentReservationsNeverOvershoot races many reservations against
// a cap that admits only some of them.
func TestConcurrentReservationsNeverOvershoot(t *testing.T) {
	m := open(t, budget(t, 0.05), testutil.NewClock(t0))
	var wg sync.WaitGroup
	var ok, refused atomic.Int64
	for range 200 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r, err := m.Reserve("m", 0.002)
			if err != nil {
				if !errors.Is(err, ErrBudgetExceeded) {
					t.Errorf("got %v, want ErrBudgetExceeded", err)
				}
				refused.Add(1)
				return
			}
			ok.Add(1)
			if _, err := r.Settle(0.001, Usage{}, false); err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	s := m.Snapshot()
	if s.SpentUSD > 0.05 {
		t.Errorf("spent %v, want <= cap 0.05", s.SpentUSD)
	}
	// The meter counts integer nano-dollars; compare there, since
	// n*0.001 in float64 is not always the decimal the meter holds.
	if got, want := int64(math.Round(s.SpentUSD*1e9)), ok.Load()*1_000_000; got != want {
		t.Errorf("spent %d nano-USD, want %d (%d settled calls)", got, want, ok.Load())
	}
	if ok.Load()+refused.Load() != 200 || ok.Load() < 25 {
		t.Errorf("got %d admitted %d refused, want 200 in all and at least 25 admitted", ok.Load(), refused.Load())
	}
}

func TestQuote(t *testing.T) {
	cfg := budget(t, 10)
	cfg.DefaultMaxTokens = 1000
	m := open(t, cfg, testutil.NewClock(t0))
	q, err := m.Quote("anthropic/claude-sonnet-4.5", 1000, 0)
	if err != nil {
		t.Fatal(err)
	}
	// Input at the highest input-side price (cache write 3.75), output at 15.
	if want := (1000*3.75 + 1000*15) / 1e6; q.MaxCostUSD != want || q.OutputTokens != 1000 {
		t.Errorf("got cost %v out %d, want %v 1000", q.MaxCostUSD, q.OutputTokens, want)
	}
	if _, err := m.Quote("gpt-9", 10, 10); !errors.Is(err, ErrUnknownModel) {
		t.Fatalf("unknown model: got %v, want ErrUnknownModel", err)
	} else if want := `model "gpt-9" has no price: add budget.prices."gpt-9": {input: ..., output: ...} to the policy (USD per million tokens) or set budget.unknown_model: default`; err.Error() != want {
		t.Errorf("got %q, want %q", err, want)
	}
	cfg.UnknownModel = "default"
	if err := m.Reconfigure(cfg); err != nil {
		t.Fatal(err)
	}
	q, err = m.Quote("GPT-9", 1e6, 1e6)
	if err != nil || q.PriceKey != "default" || q.MaxCostUSD != 20 {
		t.Errorf("default price: got %+v, %v, want key default cost 20", q, err)
	}
	if _, err := m.Quote("", 1, 1); !errors.Is(err, ErrUnknownModel) {
		t.Errorf("no model: got %v, want ErrUnknownModel", err)
	}
}

func TestCost(t *testing.T) {
	p := policy.Price{Input: 3, Output: 15, CacheRead: 0.3, CacheWrite: 3.75}
	tests := []struct {
		name string
		p    policy.Price
		u    Usage
		want float64
	}{
		{"all classes", p, Usage{InputTokens: 1e6, CacheReadTokens: 1e6, CacheWriteTokens: 1e6, OutputTokens: 1e6}, 3 + 0.3 + 3.75 + 15},
		{"cache defaults to input", policy.Price{Input: 2, Output: 4}, Usage{CacheReadTokens: 1e6, CacheWriteTokens: 1e6}, 4},
		{"provider cost wins", p, Usage{InputTokens: 1e9, CostUSD: 0.5, HasCost: true}, 0.5},
		{"provider cost zero wins", p, Usage{InputTokens: 1e9, HasCost: true}, 0},
	}
	for _, tt := range tests {
		if got := Cost(tt.p, tt.u); got != tt.want {
			t.Errorf("%s: got %v, want %v", tt.name, got, tt.want)
		}
	}
}

func TestRestartKeepsSpend(t *testing.T) {
	cfg := budget(t, 10)
	clk := testutil.NewClock(t0)
	m := open(t, cfg, clk)
	r, _ := m.Reserve("anthropic/claude-sonnet-4.5", 1)
	if _, err := r.Settle(1.25, Usage{InputTokens: 5, OutputTokens: 7}, false); err != nil {
		t.Fatal(err)
	}
	m2 := open(t, cfg, clk)
	s := m2.Snapshot()
	if s.SpentUSD != 1.25 || s.LifetimeUSD != 1.25 {
		t.Errorf("after reopen: got spent %v lifetime %v, want 1.25 1.25", s.SpentUSD, s.LifetimeUSD)
	}
	if ms := s.Models["anthropic/claude-sonnet-4.5"]; ms.Requests != 1 || ms.InputTokens != 5 || ms.OutputTokens != 7 {
		t.Errorf("model breakdown: got %+v, want 1 request 5 in 7 out", ms)
	}
}

func TestCorruptLedgerFailsClosed(t *testing.T) {
	tests := []struct{ name, body string }{
		{"empty", ""},
		{"garbage", "not json at all"},
		{"truncated", `{"version":1,"period":"month","spent_nano_usd":12`},
		{"wrong version", `{"version":3,"period":"month","period_start":"2026-03-01T00:00:00Z","spent_nano_usd":1}`},
		{"negative spend", `{"version":1,"period":"month","period_start":"2026-03-01T00:00:00Z","spent_nano_usd":-1}`},
		{"unknown field", `{"version":1,"period":"month","period_start":"2026-03-01T00:00:00Z","spent_nano_usd":1,"reset":true}`},
		{"bad period", `{"version":1,"period":"year","period_start":"2026-03-01T00:00:00Z","spent_nano_usd":1}`},
		{"trailing data", `{"version":1,"period":"month","period_start":"2026-03-01T00:00:00Z","spent_nano_usd":1} {}`},
		{"in flight without calls", `{"version":1,"period":"month","period_start":"2026-03-01T00:00:00Z","spent_nano_usd":1,"in_flight":{"m":{"calls":0,"reserved_nano_usd":5}}}`},
		{"in flight negative", `{"version":1,"period":"month","period_start":"2026-03-01T00:00:00Z","spent_nano_usd":1,"in_flight":{"m":{"calls":1,"reserved_nano_usd":-5}}}`},
		{"in flight null", `{"version":1,"period":"month","period_start":"2026-03-01T00:00:00Z","spent_nano_usd":1,"in_flight":{"m":null}}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := budget(t, 10)
			if err := os.WriteFile(cfg.Ledger, []byte(tt.body), 0o600); err != nil {
				t.Fatal(err)
			}
			_, err := Open(cfg, Options{Clock: testutil.NewClock(t0).Now, Logger: quietLog})
			if !errors.Is(err, ErrLedgerCorrupt) {
				t.Errorf("got %v, want ErrLedgerCorrupt", err)
			}
			if b, _ := os.ReadFile(cfg.Ledger); string(b) != tt.body {
				t.Errorf("ledger was rewritten to %q; a corrupt ledger must be left for the operator", b)
			}
		})
	}
	t.Run("unreadable", func(t *testing.T) {
		cfg := budget(t, 10)
		if err := os.Mkdir(cfg.Ledger, 0o700); err != nil { // a directory cannot be read as a file
			t.Fatal(err)
		}
		if _, err := Open(cfg, Options{Logger: quietLog}); err == nil {
			t.Error("got nil error for an unreadable ledger, want an error")
		}
	})
}
