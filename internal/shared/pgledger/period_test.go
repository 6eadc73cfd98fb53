package pgledger_test

import (
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/egressd/egressd/internal/shared/meter"
	"github.com/egressd/egressd/policy"
)

// clock is a settable clock shared by the meters under test.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) set(t time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = t
}

// TestPeriodsMatchFileLedger drives a file meter and a PostgreSQL meter
// with one clock through the same calls across a month's end and a change
// of period kind: both report the same spend and period at every step.
func TestPeriodsMatchFileLedger(t *testing.T) {
	clk := &clock{t: time.Date(2026, 1, 31, 23, 59, 0, 0, time.UTC)}
	fileCfg := policy.BudgetConfig{CapUSD: 1, Period: "month", Ledger: filepath.Join(t.TempDir(), "ledger.json")}
	fm, err := meter.Open(fileCfg, meter.Options{Clock: clk.now, Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	defer fm.Close()
	pgCfg := pgBudget("hermes", 1, "", 0)
	pm := openMeter(t, freshDB(t), pgCfg, meter.Options{Clock: clk.now})
	steps := []struct {
		name  string
		at    time.Time
		spend float64 // 0 = none
		kind  string  // "" = unchanged
		want  float64 // spend after the step
	}{
		{"january", time.Date(2026, 1, 31, 23, 59, 0, 0, time.UTC), 0.7, "", 0.7},
		{"last second of january", time.Date(2026, 1, 31, 23, 59, 59, 0, time.UTC), 0, "", 0.7},
		{"february", time.Date(2026, 2, 1, 0, 0, 1, 0, time.UTC), 0.9, "", 0.9},
		{"to weekly (spend kept)", time.Date(2026, 2, 4, 12, 0, 0, 0, time.UTC), 0.05, "week", 0.95},
		{"next monday", time.Date(2026, 2, 9, 0, 0, 0, 0, time.UTC), 0.01, "", 0.01},
	}
	for _, st := range steps {
		clk.set(st.at)
		if st.kind != "" {
			fileCfg.Period, pgCfg.Period = st.kind, st.kind
			if err := fm.Reconfigure(fileCfg); err != nil {
				t.Fatal(err)
			}
			if err := pm.Reconfigure(pgCfg); err != nil {
				t.Fatal(err)
			}
		}
		for _, m := range []*meter.Meter{fm, pm} {
			if st.spend == 0 {
				continue
			}
			r, err := m.Reserve("gpt-4o-mini", st.spend)
			if err != nil {
				t.Fatalf("%s: Reserve: %v", st.name, err)
			}
			if _, err := r.Settle(st.spend, meter.Usage{}, false); err != nil {
				t.Fatal(err)
			}
		}
		f, p := fm.Snapshot(), pm.Snapshot()
		if toNano(p.SpentUSD) != toNano(st.want) {
			t.Errorf("%s: postgres spent $%v, want $%v", st.name, p.SpentUSD, st.want)
		}
		if toNano(f.SpentUSD) != toNano(p.SpentUSD) || !f.PeriodStart.Equal(p.PeriodStart) || !f.PeriodEnd.Equal(p.PeriodEnd) || f.Period != p.Period {
			t.Errorf("%s: file %v $%v [%v, %v), postgres %v $%v [%v, %v)", st.name,
				f.Period, f.SpentUSD, f.PeriodStart, f.PeriodEnd, p.Period, p.SpentUSD, p.PeriodStart, p.PeriodEnd)
		}
	}
}
