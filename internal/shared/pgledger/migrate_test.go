package pgledger_test

import (
	"errors"
	"path/filepath"
	"testing"

	"github.com/egressd/egressd/internal/shared/meter"
	"github.com/egressd/egressd/internal/shared/pgledger"
	"github.com/egressd/egressd/policy"
)

// TestMigrateFileToPostgres moves a file ledger with odd amounts, two
// models and a call left in flight into the store: the spend arrives to
// the nano-USD, the in-flight call charged in full, the breakdown and the
// lifetime total intact, the shared parent charged too; a second run is
// refused.
func TestMigrateFileToPostgres(t *testing.T) {
	dsn := freshDB(t)
	path := filepath.Join(t.TempDir(), "ledger.json")
	fileCfg := policy.BudgetConfig{CapUSD: 10, Period: "month", Ledger: path}
	fm, err := meter.Open(fileCfg, meter.Options{Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		model string
		usd   float64
	}{{"gpt-4o-mini", 0.000123457}, {"gpt-4o-mini", 0.0333333}, {"claude-sonnet-4-5", 1.234567891}} {
		r, err := fm.Reserve(c.model, 2)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := r.Settle(c.usd, meter.Usage{InputTokens: 100, OutputTokens: 10}, false); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := fm.Reserve("gpt-4o-mini", 0.5); err != nil { // in flight when egressd "stops"
		t.Fatal(err)
	}
	before, err := meter.ReadLedger(path)
	if err != nil {
		t.Fatal(err)
	}
	const inFlight = int64(500_000_000)
	cfg := pgBudget("hermes-1", 10, "team", 100)
	env := meter.Options{Env: func(string) string { return dsn }}
	res, err := meter.MigrateToShared(path, cfg, env)
	if err != nil {
		t.Fatal(err)
	}
	if res.InFlightCalls != 1 || res.Models != 2 {
		t.Errorf("migration: got %+v, want 1 call in flight and 2 models", res)
	}
	s := openMeter(t, dsn, cfg, meter.Options{}).Snapshot()
	wantSpent := before.SpentNano + inFlight
	if got := toNano(s.SpentUSD); got != wantSpent {
		t.Errorf("spent: got %d nano-USD, want %d (file %d + in flight %d)", got, wantSpent, before.SpentNano, inFlight)
	}
	if got := toNano(s.LifetimeUSD); got != wantSpent {
		t.Errorf("lifetime: got %d, want %d", got, wantSpent)
	}
	if got := toNano(s.Shared.SpentUSD); got != wantSpent {
		t.Errorf("shared parent: got %d, want %d", got, wantSpent)
	}
	for model, ms := range before.Models {
		got := s.Models[model]
		want := meter.ModelSpend{Requests: ms.Requests, InputTokens: ms.InputTokens, OutputTokens: ms.OutputTokens, SpentNano: ms.SpentNano}
		if model == "gpt-4o-mini" {
			want.Requests++
			want.Estimated++
			want.SpentNano += inFlight
		}
		if got != want {
			t.Errorf("model %s: got %+v, want %+v", model, got, want)
		}
	}
	if _, err := meter.MigrateToShared(path, cfg, env); !errors.Is(err, pgledger.ErrBudgetExists) {
		t.Errorf("second migration: got %v, want ErrBudgetExists", err)
	}
	if got := toNano(openMeter(t, dsn, cfg, meter.Options{}).Snapshot().SpentUSD); got != wantSpent {
		t.Errorf("after the refused second run: spent %d, want %d", got, wantSpent)
	}
}
