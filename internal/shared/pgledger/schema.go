package pgledger

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"
)

// SchemaVersion is the newest schema this egressd writes. A database at a
// newer version was migrated by a newer egressd whose rules this one does
// not know, so it is refused rather than written with the old ones.
const SchemaVersion = 1

// ErrSchemaNewer: the database's schema is newer than this egressd's.
var ErrSchemaNewer = errors.New("ledger schema is newer than this egressd")

// schemaLock is the advisory lock key that serialises migrations between
// instances starting together ("egressd" in ASCII).
const schemaLock = 0x65677265737364

// migrations[i] takes the schema from version i to i+1.
var migrations = []string{
	`CREATE TABLE egressd_budget (
		name          text PRIMARY KEY,
		period        text NOT NULL,
		period_start  timestamptz NOT NULL,
		cap_nano      bigint NOT NULL,
		spent_nano    bigint NOT NULL DEFAULT 0,
		reserved_nano bigint NOT NULL DEFAULT 0 CHECK (reserved_nano >= 0),
		lifetime_nano bigint NOT NULL DEFAULT 0,
		warned        boolean NOT NULL DEFAULT false,
		updated_at    timestamptz NOT NULL DEFAULT now()
	);
	CREATE TABLE egressd_reservation (
		id          bigserial PRIMARY KEY,
		budget      text NOT NULL,
		shared      text,
		model       text NOT NULL,
		nano        bigint NOT NULL CHECK (nano > 0),
		instance    text NOT NULL,
		lease_until timestamptz NOT NULL,
		charged     boolean NOT NULL DEFAULT false,
		created_at  timestamptz NOT NULL DEFAULT now()
	);
	CREATE INDEX egressd_reservation_open ON egressd_reservation (lease_until) WHERE NOT charged;
	CREATE TABLE egressd_model_spend (
		budget        text NOT NULL,
		period_start  timestamptz NOT NULL,
		model         text NOT NULL,
		requests      bigint NOT NULL DEFAULT 0,
		input_tokens  bigint NOT NULL DEFAULT 0,
		output_tokens bigint NOT NULL DEFAULT 0,
		spent_nano    bigint NOT NULL DEFAULT 0,
		estimated     bigint NOT NULL DEFAULT 0,
		PRIMARY KEY (budget, period_start, model)
	);
	CREATE TABLE egressd_period (
		budget       text NOT NULL,
		period       text NOT NULL,
		period_start timestamptz NOT NULL,
		spent_nano   bigint NOT NULL,
		closed_at    timestamptz NOT NULL DEFAULT now(),
		PRIMARY KEY (budget, period, period_start)
	);`,
}

// migrate brings the schema to SchemaVersion under an advisory lock, in
// one transaction, and refuses a newer one.
func migrate(ctx context.Context, tx pgx.Tx) error {
	if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock($1)`, int64(schemaLock)); err != nil {
		return fmt.Errorf("lock schema: %w", err)
	}
	if _, err := tx.Exec(ctx, `CREATE TABLE IF NOT EXISTS egressd_schema (version integer NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())`); err != nil {
		return fmt.Errorf("create schema table: %w", err)
	}
	var v int
	if err := tx.QueryRow(ctx, `SELECT coalesce(max(version), 0) FROM egressd_schema`).Scan(&v); err != nil {
		return fmt.Errorf("read schema version: %w", err)
	}
	if v > SchemaVersion {
		return fmt.Errorf("%w: database at version %d, this egressd knows up to %d", ErrSchemaNewer, v, SchemaVersion)
	}
	for ; v < SchemaVersion; v++ {
		if _, err := tx.Exec(ctx, migrations[v]); err != nil {
			return fmt.Errorf("migrate schema to version %d: %w", v+1, err)
		}
		if _, err := tx.Exec(ctx, `INSERT INTO egressd_schema (version) VALUES ($1)`, v+1); err != nil {
			return fmt.Errorf("record schema version %d: %w", v+1, err)
		}
	}
	return nil
}

// checkVersion returns ErrSchemaNewer when another egressd migrated the
// database past this one while it ran.
func checkVersion(ctx context.Context, q querier) error {
	var v int
	if err := q.QueryRow(ctx, `SELECT coalesce(max(version), 0) FROM egressd_schema`).Scan(&v); err != nil {
		return fmt.Errorf("read schema version: %w", err)
	}
	if v > SchemaVersion {
		return fmt.Errorf("%w: database at version %d, this egressd knows up to %d", ErrSchemaNewer, v, SchemaVersion)
	}
	return nil
}

type querier interface {
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}
