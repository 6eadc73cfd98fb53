package meter

import (
	"errors"
	"log/slog"
	"strings"
	"testing"

	"github.com/egressd/egressd/internal/lib/testutil"
)

// TestOvershootIsChargedLoggedAndClosesTheCap: a call that cost more than
// its reservation (an input the estimate missed) is charged in full, the
// overshoot is logged at WARN with both figures, and once spend is at or
// past the cap every reservation is refused, even a free one.
func TestOvershootIsChargedLoggedAndClosesTheCap(t *testing.T) {
	var logs testutil.Buffer
	m, err := Open(budget(t, 1), Options{Clock: testutil.NewClock(t0).Now, Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	if err != nil {
		t.Fatal(err)
	}
	r, err := m.Reserve("m", 0.25)
	if err != nil {
		t.Fatal(err)
	}
	if !r.Exceeds(1.5) || r.Exceeds(0.25) {
		t.Errorf("Exceeds(1.5) = %v, Exceeds(0.25) = %v; want true false", r.Exceeds(1.5), r.Exceeds(0.25))
	}
	if _, err := r.Settle(1.5, Usage{InputTokens: 500000}, false); err != nil {
		t.Fatal(err)
	}
	if s := m.Snapshot(); s.SpentUSD != 1.5 || s.ReservedUSD != 0 {
		t.Errorf("spent %v reserved %v, want the full 1.5 charged and nothing reserved", s.SpentUSD, s.ReservedUSD)
	}
	out := logs.String()
	for _, want := range []string{"level=WARN", "call cost more than its reservation", "reserved_usd=0.25", "cost_usd=1.5", "cap_reached=true"} {
		if !strings.Contains(out, want) {
			t.Errorf("log %q lacks %q", out, want)
		}
	}
	for _, usd := range []float64{0, 1e-9, 0.5} {
		if _, err := m.Reserve("m", usd); !errors.Is(err, ErrBudgetExceeded) {
			t.Errorf("Reserve(%v) after the overshoot: got %v, want ErrBudgetExceeded", usd, err)
		}
	}
}

// TestSpendExactlyAtTheCapRefuses: reaching the cap exactly (no overshoot)
// also closes it.
func TestSpendExactlyAtTheCapRefuses(t *testing.T) {
	m := open(t, budget(t, 1), testutil.NewClock(t0))
	r, err := m.Reserve("m", 1)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := r.Settle(1, Usage{}, false); err != nil {
		t.Fatal(err)
	}
	if _, err := m.Reserve("m", 0); !errors.Is(err, ErrBudgetExceeded) {
		t.Errorf("got %v, want ErrBudgetExceeded", err)
	}
}

func TestDefaultOutputLimit(t *testing.T) {
	cfg := budget(t, 1)
	if got := open(t, cfg, testutil.NewClock(t0)).DefaultOutputLimit(); got != DefaultMaxTokens {
		t.Errorf("unset: got %d, want %d", got, DefaultMaxTokens)
	}
	cfg.DefaultMaxTokens = 1234
	m := open(t, cfg, testutil.NewClock(t0))
	if got := m.DefaultOutputLimit(); got != 1234 {
		t.Errorf("set: got %d, want 1234", got)
	}
	cfg.DefaultMaxTokens = 99
	if err := m.Reconfigure(cfg); err != nil {
		t.Fatal(err)
	}
	if got := m.DefaultOutputLimit(); got != 99 {
		t.Errorf("after a reload: got %d, want 99", got)
	}
}
