package pgledger

import (
	"context"
	"fmt"
	"slices"
	"time"

	"github.com/jackc/pgx/v5"
)

// sweepBatch bounds how many expired reservations one sweep charges.
const sweepBatch = 1000

// Renew extends the leases of this instance's open reservations ids. A
// reservation already charged by a sweep is left alone: its settle will
// reconcile it.
func (s *Store) Renew(ctx context.Context, ids []int64) error {
	if len(ids) == 0 {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()
	if err := s.ensureSchema(ctx); err != nil {
		return err
	}
	_, err := s.pool.Exec(ctx, `UPDATE egressd_reservation SET lease_until = clock_timestamp() + $2::interval
		WHERE id = ANY($1) AND NOT charged`, ids, s.lease)
	if err != nil {
		return fmt.Errorf("renew leases: %w", err)
	}
	return nil
}

// Sweep charges, in full, the reservations whose lease ran out: their
// instance died or lost the database for longer than a lease, and the
// provider may have billed up to what was reserved. Each is marked charged
// in the same transaction that moves its amount from reserved to spent on
// every budget it was held against, and rows another sweep holds are
// skipped, so each is charged exactly once; its settle, if it ever comes,
// charges only the difference. It returns how many it charged and their
// sum.
func (s *Store) Sweep(ctx context.Context) (calls, nano int64, err error) {
	err = s.inTx(ctx, func(ctx context.Context, tx pgx.Tx) error {
		calls, nano = 0, 0
		rows, err := tx.Query(ctx, `UPDATE egressd_reservation SET charged = true
			WHERE id IN (SELECT id FROM egressd_reservation WHERE NOT charged AND lease_until < clock_timestamp()
				ORDER BY id LIMIT $1 FOR UPDATE SKIP LOCKED)
			RETURNING budget, shared, model, nano`, sweepBatch)
		if err != nil {
			return fmt.Errorf("charge expired reservations: %w", err)
		}
		perBudget := map[string]int64{}
		type key struct{ budget, model string }
		perModel := map[key]modelDelta{}
		for rows.Next() {
			var budget, model string
			var shared *string
			var n int64
			if err := rows.Scan(&budget, &shared, &model, &n); err != nil {
				rows.Close()
				return fmt.Errorf("read expired reservation: %w", err)
			}
			calls, nano = calls+1, nano+n
			perBudget[budget] += n
			if shared != nil {
				perBudget[*shared] += n
			}
			d := perModel[key{budget, model}]
			d.requests, d.estimated, d.spent = d.requests+1, d.estimated+1, d.spent+n
			perModel[key{budget, model}] = d
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return fmt.Errorf("charge expired reservations: %w", err)
		}
		names := make([]string, 0, len(perBudget))
		for name := range perBudget {
			names = append(names, name)
		}
		slices.Sort(names)
		for _, name := range names {
			if _, err := tx.Exec(ctx, `UPDATE egressd_budget SET reserved_nano = reserved_nano - $2,
				spent_nano = spent_nano + $2, lifetime_nano = lifetime_nano + $2, updated_at = now()
				WHERE name = $1`, name, perBudget[name]); err != nil {
				return fmt.Errorf("charge expired reservations to %q: %w", name, err)
			}
		}
		for k, d := range perModel {
			if err := addModelNow(ctx, tx, k.budget, k.model, d); err != nil {
				return err
			}
		}
		// A charged reservation is kept for its late settle; one that
		// has waited a day will not get one (its instance is gone), and
		// forgetting it leaves its full charge standing.
		if _, err := tx.Exec(ctx, `DELETE FROM egressd_reservation
			WHERE charged AND lease_until < clock_timestamp() - $1::interval`, chargedKeep); err != nil {
			return fmt.Errorf("forget old charged reservations: %w", err)
		}
		return nil
	})
	return calls, nano, err
}

// chargedKeep is how long a reservation charged by a sweep waits for a
// late settle to reconcile it.
const chargedKeep = 24 * time.Hour

// addModelNow is addModel in the budget's current period.
func addModelNow(ctx context.Context, tx pgx.Tx, budget, model string, d modelDelta) error {
	var start time.Time
	if err := tx.QueryRow(ctx, `SELECT period_start FROM egressd_budget WHERE name = $1`, budget).Scan(&start); err != nil {
		return fmt.Errorf("read period of %q: %w", budget, err)
	}
	return addModel(ctx, tx, budget, start, model, d)
}
