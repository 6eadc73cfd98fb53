package pgledger_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/egressd/egressd/internal/shared/pgledger"
)

var (
	ctx  = context.Background()
	jan  = pgledger.Period{Kind: "month", Start: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
	feb  = pgledger.Period{Kind: "month", Start: time.Date(2026, 2, 1, 0, 0, 0, 0, time.UTC)}
	usd1 = int64(1_000_000_000) // one USD in nano-USD
)

func openStore(t *testing.T, dsn string, lease time.Duration) *pgledger.Store {
	t.Helper()
	s, err := pgledger.Open(pgledger.Config{DSN: dsn, Lease: lease, Timeout: 10 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	return s
}

func figures(t *testing.T, s *pgledger.Store, p pgledger.Period, names ...string) []pgledger.Figures {
	t.Helper()
	f, err := s.Figures(ctx, names, p)
	if err != nil {
		t.Fatal(err)
	}
	return f
}

func reserve(t *testing.T, s *pgledger.Store, p pgledger.Period, nano int64, budgets ...pgledger.Budget) int64 {
	t.Helper()
	id, err := s.Reserve(ctx, pgledger.Reservation{Budgets: budgets, Period: p, Model: "m", Nano: nano})
	if err != nil {
		t.Fatalf("Reserve(%d): %v", nano, err)
	}
	return id
}

func TestReserveAgainstCap(t *testing.T) {
	s := openStore(t, freshDB(t), time.Minute)
	b := pgledger.Budget{Name: "a", CapNano: usd1}
	id := reserve(t, s, jan, usd1*6/10, b)
	_, err := s.Reserve(ctx, pgledger.Reservation{Budgets: []pgledger.Budget{b}, Period: jan, Model: "m", Nano: usd1 / 2})
	var re *pgledger.RefusedError
	if !errors.As(err, &re) || re.Budget != "a" || re.ReservedNano != usd1*6/10 {
		t.Fatalf("second Reserve: got %v, want a refusal by a with 0.6 reserved", err)
	}
	res, err := s.Settle(ctx, pgledger.Settlement{ID: id, Period: jan, CostNano: usd1 / 10, Usage: pgledger.Usage{InputTokens: 5, OutputTokens: 7}})
	if err != nil || !res.Found || res.Late || res.SpentNano != usd1/10 {
		t.Fatalf("Settle: got %+v, %v; want found, spent 0.1", res, err)
	}
	reserve(t, s, jan, usd1/2, b)
	f := figures(t, s, jan, "a")[0]
	if f.SpentNano != usd1/10 || f.ReservedNano != usd1/2 || f.InFlight != 1 || f.Models["m"].InputTokens != 5 || f.Models["m"].Requests != 1 {
		t.Errorf("figures: got %+v", f)
	}
}

// TestLateSettle covers a reservation whose lease ran out: a sweep charges
// it in full once, and its settle then charges only the difference.
func TestLateSettle(t *testing.T) {
	tests := []struct {
		name      string
		st        pgledger.Settlement
		wantSpent int64
	}{
		{"cheaper", pgledger.Settlement{CostNano: usd1 / 50}, usd1 / 50},
		{"dearer", pgledger.Settlement{CostNano: usd1 / 10}, usd1 / 10},
		{"release", pgledger.Settlement{Release: true}, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dsn := freshDB(t)
			s := openStore(t, dsn, 200*time.Millisecond)
			other := openStore(t, dsn, time.Minute)
			b := []pgledger.Budget{{Name: "a", CapNano: usd1}, {Name: "team", CapNano: usd1}}
			id := reserve(t, s, jan, usd1/20, b...)
			calls := sweepUntil(t, other, 1)
			if calls != 1 {
				t.Fatalf("sweep charged %d, want 1", calls)
			}
			for _, f := range figures(t, other, jan, "a", "team") {
				if f.SpentNano != usd1/20 || f.ReservedNano != 0 || f.InFlight != 0 {
					t.Errorf("after sweep %s: got spent %d reserved %d in flight %d, want %d, 0, 0", f.Name, f.SpentNano, f.ReservedNano, f.InFlight, usd1/20)
				}
			}
			if n, _, err := s.Sweep(ctx); err != nil || n != 0 {
				t.Errorf("second sweep: got %d, %v; want 0 (charged once)", n, err)
			}
			st := tt.st
			st.ID, st.Period = id, jan
			res, err := s.Settle(ctx, st)
			if err != nil || !res.Found || !res.Late {
				t.Fatalf("late Settle: got %+v, %v; want found and late", res, err)
			}
			if res, _ := s.Settle(ctx, st); res.Found {
				t.Errorf("second Settle found the reservation again")
			}
			for _, f := range figures(t, other, jan, "a", "team") {
				if f.SpentNano != tt.wantSpent || f.ReservedNano != 0 {
					t.Errorf("%s: got spent %d reserved %d, want %d, 0", f.Name, f.SpentNano, f.ReservedNano, tt.wantSpent)
				}
			}
		})
	}
}

// sweepUntil sweeps until want reservations were charged or 10 s pass.
func sweepUntil(t *testing.T, s *pgledger.Store, want int64) int64 {
	t.Helper()
	var total int64
	deadline := time.Now().Add(10 * time.Second)
	for total < want && time.Now().Before(deadline) {
		n, _, err := s.Sweep(ctx)
		if err != nil {
			t.Fatal(err)
		}
		total += n
		time.Sleep(20 * time.Millisecond) // polling the database clock past a lease
	}
	return total
}

func TestPeriodRollover(t *testing.T) {
	dsn := freshDB(t)
	s := openStore(t, dsn, time.Minute)
	b := pgledger.Budget{Name: "a", CapNano: usd1}
	id := reserve(t, s, jan, usd1/2, b)
	if _, err := s.Settle(ctx, pgledger.Settlement{ID: id, Period: jan, CostNano: usd1 * 9 / 10}); err != nil {
		t.Fatal(err)
	}
	open := reserve(t, s, feb, usd1/2, b) // refused in January, fits in February
	f := figures(t, s, feb, "a")[0]
	if f.SpentNano != 0 || f.ReservedNano != usd1/2 || !f.PeriodStart.Equal(feb.Start) {
		t.Errorf("february: got %+v, want nothing spent, 0.5 reserved", f)
	}
	// The January call settling in February counts in February.
	if _, err := s.Settle(ctx, pgledger.Settlement{ID: open, Period: feb, CostNano: usd1 / 4}); err != nil {
		t.Fatal(err)
	}
	day := pgledger.Period{Kind: "day", Start: time.Date(2026, 2, 3, 0, 0, 0, 0, time.UTC)}
	if f := figures(t, s, day, "a")[0]; f.SpentNano != usd1/4 {
		t.Errorf("figures in a changed period kind: got spent %d, want the spend kept (0.25)", f.SpentNano)
	}
	reserve(t, s, day, 1, b)
	if f := figures(t, s, day, "a")[0]; f.SpentNano != usd1/4 || f.Period != "day" {
		t.Errorf("after the kind changed: got %+v, want the spend kept (0.25)", f)
	}
	if err := cluster.Exec(dbName(dsn), `DO $$ BEGIN
		IF (SELECT spent_nano FROM egressd_period WHERE budget = 'a' AND period_start = '2026-01-01Z') <> 900000000 THEN
			RAISE EXCEPTION 'january not archived'; END IF; END $$`); err != nil {
		t.Error(err)
	}
}

func TestSchemaNewerRefused(t *testing.T) {
	dsn := freshDB(t)
	s := openStore(t, dsn, time.Minute)
	if err := s.CheckSchema(ctx); err != nil {
		t.Fatal(err)
	}
	if err := cluster.Exec(dbName(dsn), `INSERT INTO egressd_schema (version) VALUES (99)`); err != nil {
		t.Fatal(err)
	}
	if err := s.CheckSchema(ctx); !errors.Is(err, pgledger.ErrSchemaNewer) {
		t.Errorf("running store: got %v, want ErrSchemaNewer", err)
	}
	fresh := openStore(t, dsn, time.Minute)
	_, err := fresh.Reserve(ctx, pgledger.Reservation{Budgets: []pgledger.Budget{{Name: "a", CapNano: usd1}}, Period: jan, Model: "m", Nano: 1})
	if !errors.Is(err, pgledger.ErrSchemaNewer) {
		t.Errorf("new store: got %v, want ErrSchemaNewer", err)
	}
}
