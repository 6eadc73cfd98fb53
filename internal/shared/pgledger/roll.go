package pgledger

import (
	"fmt"

	"github.com/jackc/pgx/v5"
)

// The statements that bring a budget's row into period p without reading
// it first, so that a whole reservation or settle goes to the server as
// one pipelined batch and the row locks are held for one round trip and
// the commit, not one per statement. A missing row is created; a changed
// period kind keeps the spend and adopts p's start; a new period of the
// same kind archives the closing spend in egressd_period and starts at
// nothing spent; total never rolls. Each UPDATE re-checks its condition
// on the row it locks, so racing instances roll a row once.
const (
	sqlCreate = `INSERT INTO egressd_budget (name, period, period_start, cap_nano)
		VALUES ($1, $2, $3, $4) ON CONFLICT (name) DO NOTHING`
	sqlKind = `UPDATE egressd_budget SET period = $2, period_start = $3 WHERE name = $1 AND period <> $2`
	sqlRoll = `WITH old AS (
			SELECT name, period, period_start, spent_nano FROM egressd_budget
			WHERE name = $1 AND period = $2 AND $2 <> 'total' AND period_start < $3 FOR UPDATE),
		closed AS (
			INSERT INTO egressd_period (budget, period, period_start, spent_nano)
			SELECT name, period, period_start, spent_nano FROM old ON CONFLICT DO NOTHING)
		UPDATE egressd_budget b SET period_start = $3, spent_nano = 0, warned = false
		FROM old WHERE b.name = old.name`
)

// queueRoll queues the three statements for name.
func queueRoll(b *pgx.Batch, name string, capNano int64, p Period) {
	b.Queue(sqlCreate, name, p.Kind, p.Start, capNano)
	b.Queue(sqlKind, name, p.Kind, p.Start)
	b.Queue(sqlRoll, name, p.Kind, p.Start)
}

// readRoll reads queueRoll's three results.
func readRoll(br pgx.BatchResults, name string) error {
	for range 3 {
		if _, err := br.Exec(); err != nil {
			return fmt.Errorf("roll budget %q: %w", name, err)
		}
	}
	return nil
}
