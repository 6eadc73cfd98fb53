package pgledger

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
)

// ModelSpend is one model's share of a budget's period.
type ModelSpend struct {
	Requests, InputTokens, OutputTokens, SpentNano, Estimated int64
}

// Figures is one budget as status shows it.
type Figures struct {
	Name         string
	Found        bool // false: no call has reserved against it yet
	Period       string
	PeriodStart  time.Time
	CapNano      int64
	SpentNano    int64
	ReservedNano int64
	LifetimeNano int64
	Warned       bool
	InFlight     int64 // open reservations not yet charged by a sweep
	Models       map[string]ModelSpend
}

// Figures reads the named budgets as they stand in period p: a row still
// in an earlier period of the same kind reads as rolled over (nothing
// spent yet). It writes nothing and migrates nothing, so that the spend
// of a read-only database, or of one at a newer schema, still shows.
func (s *Store) Figures(ctx context.Context, names []string, p Period) ([]Figures, error) {
	ctx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()
	out := make([]Figures, len(names))
	for i, name := range names {
		f, err := s.figures(ctx, name, p)
		if err != nil {
			return nil, err
		}
		out[i] = f
	}
	return out, nil
}

func (s *Store) figures(ctx context.Context, name string, p Period) (Figures, error) {
	f := Figures{Name: name, Period: p.Kind, PeriodStart: p.Start}
	err := s.pool.QueryRow(ctx, `SELECT period, period_start, cap_nano, spent_nano, reserved_nano, lifetime_nano, warned,
			(SELECT count(*) FROM egressd_reservation r WHERE NOT r.charged AND (r.budget = $1 OR r.shared = $1))
		FROM egressd_budget WHERE name = $1`, name).Scan(&f.Period, &f.PeriodStart, &f.CapNano, &f.SpentNano,
		&f.ReservedNano, &f.LifetimeNano, &f.Warned, &f.InFlight)
	if errors.Is(err, pgx.ErrNoRows) {
		return f, nil
	}
	if err != nil {
		return f, fmt.Errorf("read budget %q: %w", name, err)
	}
	f.Found = true
	if f.Period != p.Kind || (p.Kind != periodTotal && p.Start.After(f.PeriodStart)) {
		if f.Period == p.Kind {
			f.SpentNano, f.Warned = 0, false
		}
		f.Period, f.PeriodStart = p.Kind, p.Start
		return f, nil
	}
	rows, err := s.pool.Query(ctx, `SELECT model, requests, input_tokens, output_tokens, spent_nano, estimated
		FROM egressd_model_spend WHERE budget = $1 AND period_start = $2`, name, f.PeriodStart)
	if err != nil {
		return f, fmt.Errorf("read model spend of %q: %w", name, err)
	}
	defer rows.Close()
	f.Models = map[string]ModelSpend{}
	for rows.Next() {
		var m string
		var ms ModelSpend
		if err := rows.Scan(&m, &ms.Requests, &ms.InputTokens, &ms.OutputTokens, &ms.SpentNano, &ms.Estimated); err != nil {
			return f, fmt.Errorf("read model spend of %q: %w", name, err)
		}
		f.Models[m] = ms
	}
	return f, rows.Err()
}

// ErrBudgetExists: Import found the budget already in the store.
var ErrBudgetExists = errors.New("budget already in the store")

// Import writes a budget moved from a file ledger: its period, spend,
// lifetime and per-model breakdown, in one transaction. The spend is also
// added to shared (when not nil), which caps what its budgets spend
// together. A budget already in the store is refused with ErrBudgetExists,
// so that running a migration twice cannot count its spend twice.
func (s *Store) Import(ctx context.Context, f Figures, shared *Budget) error {
	return s.inTx(ctx, func(ctx context.Context, tx pgx.Tx) error {
		tag, err := tx.Exec(ctx, `INSERT INTO egressd_budget (name, period, period_start, cap_nano, spent_nano, lifetime_nano, warned)
			VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (name) DO NOTHING`,
			f.Name, f.Period, f.PeriodStart, f.CapNano, f.SpentNano, f.LifetimeNano, f.Warned)
		if err != nil {
			return fmt.Errorf("import budget %q: %w", f.Name, err)
		}
		if tag.RowsAffected() == 0 {
			return fmt.Errorf("import budget %q: %w", f.Name, ErrBudgetExists)
		}
		for m, ms := range f.Models {
			d := modelDelta{requests: ms.Requests, input: ms.InputTokens, output: ms.OutputTokens, spent: ms.SpentNano, estimated: ms.Estimated}
			if err := addModel(ctx, tx, f.Name, f.PeriodStart, m, d); err != nil {
				return err
			}
		}
		if shared == nil {
			return nil
		}
		b := &pgx.Batch{}
		queueRoll(b, shared.Name, shared.CapNano, Period{Kind: f.Period, Start: f.PeriodStart})
		b.Queue(`UPDATE egressd_budget SET spent_nano = spent_nano + $2, lifetime_nano = lifetime_nano + $3
			WHERE name = $1`, shared.Name, f.SpentNano, f.LifetimeNano)
		br := tx.SendBatch(ctx, b)
		err = readRoll(br, shared.Name)
		if err == nil {
			if _, err = br.Exec(); err != nil {
				err = fmt.Errorf("import into shared budget %q: %w", shared.Name, err)
			}
		}
		if cerr := br.Close(); err == nil && cerr != nil {
			err = fmt.Errorf("import into shared budget %q: %w", shared.Name, cerr)
		}
		return err
	})
}
