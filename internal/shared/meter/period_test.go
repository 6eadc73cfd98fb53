package meter

import (
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/egressd/egressd/internal/lib/testutil"
)

func TestPeriodBounds(t *testing.T) {
	at := time.Date(2026, 3, 1, 2, 0, 0, 0, time.FixedZone("UTC+5", 5*3600)) // 2026-02-28 21:00 UTC, a Saturday
	tests := []struct {
		period     string
		start, end time.Time
	}{
		{PeriodDay, time.Date(2026, 2, 28, 0, 0, 0, 0, time.UTC), time.Date(2026, 3, 1, 0, 0, 0, 0, time.UTC)},
		{PeriodWeek, time.Date(2026, 2, 23, 0, 0, 0, 0, time.UTC), time.Date(2026, 3, 2, 0, 0, 0, 0, time.UTC)},
		{PeriodMonth, time.Date(2026, 2, 1, 0, 0, 0, 0, time.UTC), time.Date(2026, 3, 1, 0, 0, 0, 0, time.UTC)},
		{PeriodTotal, time.Time{}, time.Time{}},
	}
	for _, tt := range tests {
		start := periodStart(tt.period, at)
		if end := periodEnd(tt.period, start); !start.Equal(tt.start) || !end.Equal(tt.end) {
			t.Errorf("%s: got [%v, %v), want [%v, %v)", tt.period, start, end, tt.start, tt.end)
		}
	}
	// A Monday is the start of its own week.
	mon := time.Date(2026, 3, 2, 0, 0, 0, 0, time.UTC)
	if got := periodStart(PeriodWeek, mon); !got.Equal(mon) {
		t.Errorf("week of a Monday: got %v, want %v", got, mon)
	}
}

func TestPeriodRollOver(t *testing.T) {
	tests := []struct {
		period string
		stay   time.Time // still the same period as t0
		next   time.Time // the next one
	}{
		{PeriodDay, time.Date(2026, 3, 18, 23, 59, 59, 0, time.UTC), time.Date(2026, 3, 19, 0, 0, 0, 0, time.UTC)},
		{PeriodWeek, time.Date(2026, 3, 22, 23, 0, 0, 0, time.UTC), time.Date(2026, 3, 23, 0, 0, 0, 0, time.UTC)},
		{PeriodMonth, time.Date(2026, 3, 31, 23, 0, 0, 0, time.UTC), time.Date(2026, 4, 1, 0, 0, 0, 0, time.UTC)},
		{PeriodTotal, time.Date(2027, 1, 1, 0, 0, 0, 0, time.UTC), time.Time{}},
	}
	for _, tt := range tests {
		t.Run(tt.period, func(t *testing.T) {
			cfg := budget(t, 1)
			cfg.Period = tt.period
			clk := testutil.NewClock(t0)
			m := open(t, cfg, clk)
			r, _ := m.Reserve("m", 0.9)
			if _, err := r.Settle(0.9, Usage{}, false); err != nil {
				t.Fatal(err)
			}
			clk.Set(tt.stay)
			if _, err := m.Reserve("m", 0.2); !errors.Is(err, ErrBudgetExceeded) {
				t.Fatalf("same period: got %v, want ErrBudgetExceeded", err)
			}
			if tt.next.IsZero() {
				return // total never resets
			}
			clk.Set(tt.next)
			r, err := m.Reserve("m", 0.2)
			if err != nil {
				t.Fatalf("next period: got %v, want a reservation", err)
			}
			r.Release()
			s := m.Snapshot()
			if s.SpentUSD != 0 || !s.PeriodStart.Equal(tt.next) || s.LifetimeUSD != 0.9 {
				t.Errorf("got spent %v start %v lifetime %v, want 0 %v 0.9", s.SpentUSD, s.PeriodStart, s.LifetimeUSD, tt.next)
			}
			// A restart after the roll-over does not bring the old spend back.
			m2 := open(t, cfg, clk)
			if s := m2.Snapshot(); s.SpentUSD != 0 {
				t.Errorf("reopened in the next period: spent %v, want 0", s.SpentUSD)
			}
		})
	}
}

func TestPeriodKindChangeKeepsSpend(t *testing.T) {
	cfg := budget(t, 1)
	m := open(t, cfg, testutil.NewClock(t0))
	r, _ := m.Reserve("m", 0.5)
	r.Settle(0.5, Usage{}, false)
	cfg.Period = PeriodDay
	if err := m.Reconfigure(cfg); err != nil {
		t.Fatal(err)
	}
	if s := m.Snapshot(); s.SpentUSD != 0.5 || s.Period != PeriodDay {
		t.Errorf("got spent %v period %s, want 0.5 day", s.SpentUSD, s.Period)
	}
}

func TestWarnOncePerPeriod(t *testing.T) {
	cfg := budget(t, 1)
	cfg.WarnAt = 0.5
	clk := testutil.NewClock(t0)
	m := open(t, cfg, clk)
	var crossings []bool
	for _, cost := range []float64{0.3, 0.3, 0.1} {
		r, _ := m.Reserve("m", cost)
		w, err := r.Settle(cost, Usage{}, false)
		if err != nil {
			t.Fatal(err)
		}
		crossings = append(crossings, w)
	}
	if crossings[0] || !crossings[1] || crossings[2] {
		t.Errorf("got crossings %v, want [false true false]", crossings)
	}
	// A restart in the same period remembers the warning was given.
	m = open(t, cfg, clk)
	r, _ := m.Reserve("m", 0.1)
	if w, _ := r.Settle(0.1, Usage{}, false); w {
		t.Error("after restart: warned again in the same period")
	}
	clk.Set(time.Date(2026, 4, 2, 0, 0, 0, 0, time.UTC))
	for i, want := range []bool{false, true} {
		r, _ := m.Reserve("m", 0.3)
		if w, _ := r.Settle(0.3, Usage{}, false); w != want {
			t.Errorf("next period, settle %d: got crossed %v, want %v", i, w, want)
		}
	}
}

// breakDir makes the ledger's directory unwritable in a way that holds
// even for root (tests run as root in CI): the directory is replaced by a
// regular file. fix undoes it.
func breakDir(t *testing.T, ledgerPath string) (fix func()) {
	t.Helper()
	dir := filepath.Dir(ledgerPath)
	if err := os.RemoveAll(dir); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(dir, []byte("not a directory"), 0o600); err != nil {
		t.Fatal(err)
	}
	return func() {
		if err := os.Remove(dir); err != nil {
			t.Fatal(err)
		}
		if err := os.Mkdir(dir, 0o700); err != nil {
			t.Fatal(err)
		}
	}
}

func TestLedgerWriteFailureFailsClosedAndKeepsSpend(t *testing.T) {
	cfg := budget(t, 10)
	cfg.Ledger = filepath.Join(t.TempDir(), "state", "ledger.json")
	clk := testutil.NewClock(t0)
	m := open(t, cfg, clk)
	r1, _ := m.Reserve("m", 1)
	r2, _ := m.Reserve("m", 1)
	if _, err := r1.Settle(0.5, Usage{}, false); err != nil {
		t.Fatal(err)
	}
	fix := breakDir(t, cfg.Ledger)
	if _, err := r2.Settle(0.25, Usage{}, false); !errors.Is(err, ErrLedgerUnavailable) {
		t.Fatalf("settle with a broken ledger dir: got %v, want ErrLedgerUnavailable", err)
	}
	s := m.Snapshot()
	if s.SpentUSD != 0.75 || s.LedgerErr == nil {
		t.Errorf("got spent %v ledger error %v, want 0.75 and an error", s.SpentUSD, s.LedgerErr)
	}
	if _, err := m.Reserve("m", 0.1); !errors.Is(err, ErrLedgerUnavailable) {
		t.Fatalf("reserve while broken: got %v, want ErrLedgerUnavailable", err)
	}
	fix()
	// Retries are spaced; once due, the next reservation rewrites the ledger.
	clk.Advance(writeRetryBackoff)
	r3, err := m.Reserve("m", 0.1)
	if err != nil {
		t.Fatalf("reserve after the dir was fixed: %v", err)
	}
	r3.Release()
	m2 := open(t, cfg, clk)
	if s := m2.Snapshot(); s.SpentUSD != 0.75 {
		t.Errorf("reopened after recovery: spent %v, want 0.75", s.SpentUSD)
	}
}

func TestReadOnlyDirAsUser(t *testing.T) {
	if os.Geteuid() == 0 {
		t.Skip("root ignores directory permissions; TestLedgerWriteFailureFailsClosedAndKeepsSpend covers the failure")
	}
	cfg := budget(t, 10)
	clk := testutil.NewClock(t0)
	m := open(t, cfg, clk)
	dir := filepath.Dir(cfg.Ledger)
	if err := os.Chmod(dir, 0o500); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.Chmod(dir, 0o700) })
	// Opening on a read-only dir reads fine but cannot write: refused.
	if m2 := open(t, cfg, clk); true {
		if _, err := m2.Reserve("m", 0.1); !errors.Is(err, ErrLedgerUnavailable) {
			t.Errorf("opened read-only: got %v, want ErrLedgerUnavailable", err)
		}
	}
	r, _ := m.Reserve("m", 1)
	if _, err := r.Settle(0.5, Usage{}, false); !errors.Is(err, ErrLedgerUnavailable) {
		t.Errorf("got %v, want ErrLedgerUnavailable", err)
	}
	if s := m.Snapshot(); s.SpentUSD != 0.5 {
		t.Errorf("spent %v, want 0.5 kept in memory", s.SpentUSD)
	}
}

func TestReconfigureLedgerPath(t *testing.T) {
	cfg := budget(t, 10)
	clk := testutil.NewClock(t0)
	m := open(t, cfg, clk)
	r, _ := m.Reserve("m", 1)
	r.Settle(1, Usage{}, false)

	moved := cfg
	moved.Ledger = filepath.Join(t.TempDir(), "moved.json")
	if err := m.Reconfigure(moved); err != nil {
		t.Fatal(err)
	}
	if s := open(t, moved, clk).Snapshot(); s.SpentUSD != 1 {
		t.Errorf("new ledger path: spent %v, want the carried 1", s.SpentUSD)
	}
	bad := cfg
	bad.Ledger = filepath.Join(t.TempDir(), "bad.json")
	os.WriteFile(bad.Ledger, []byte("{"), 0o600)
	if err := m.Reconfigure(bad); !errors.Is(err, ErrLedgerCorrupt) {
		t.Errorf("corrupt new ledger: got %v, want ErrLedgerCorrupt", err)
	}
	if s := m.Snapshot(); s.Ledger != moved.Ledger || s.SpentUSD != 1 {
		t.Errorf("after failed reopen: got ledger %s spent %v, want %s 1", s.Ledger, s.SpentUSD, moved.Ledger)
	}
	capped := moved
	capped.CapUSD = 1
	if err := m.Reconfigure(capped); err != nil {
		t.Fatal(err)
	}
	if _, err := m.Reserve("m", 0.01); !errors.Is(err, ErrBudgetExceeded) {
		t.Errorf("lowered cap: got %v, want ErrBudgetExceeded", err)
	}
}
