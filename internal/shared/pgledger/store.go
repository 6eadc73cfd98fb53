// Package pgledger keeps egressd's spend ledger in PostgreSQL, so that
// several egressd instances share one cap: reservations and settles are
// transactions with conditional updates on each budget's row, and every
// reservation carries its instance's id and a lease that others charge
// when it runs out.
//
// Amounts are integer nano-USD, as in the meter. Periods are computed by
// the caller (the meter's UTC period code) and passed in, so that both
// ledgers roll over at the same instants.
package pgledger

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// Defaults for zero Config fields.
const (
	DefaultLease   = 30 * time.Second
	DefaultTimeout = 2 * time.Second
	defaultConns   = 8
)

// Config is how Open reaches the database.
type Config struct {
	DSN      string
	Instance string        // this egressd's id on its reservations; "" = host-pid-random
	Lease    time.Duration // how long a reservation outlives its last renewal; 0 = DefaultLease
	Timeout  time.Duration // bound on each ledger operation; 0 = DefaultTimeout
}

// Store is a connection pool to one ledger database. Safe for concurrent
// use.
type Store struct {
	pool     *pgxpool.Pool
	instance string
	lease    time.Duration
	timeout  time.Duration

	mu       sync.Mutex
	migrated bool
}

// Open parses cfg.DSN and returns a store. It does not connect: the first
// operation does (and creates or migrates the schema), so that an egressd
// started while its database is down runs, refusing metered calls, and
// recovers when the database returns. A DSN that does not parse is an
// error; the error never contains the DSN, which may hold a password.
func Open(cfg Config) (*Store, error) {
	pc, err := pgxpool.ParseConfig(cfg.DSN)
	if err != nil {
		return nil, errors.New("parse ledger connection string: invalid (not shown: it may contain a password)")
	}
	if !strings.Contains(cfg.DSN, "pool_max_conns") {
		pc.MaxConns = defaultConns
	}
	s := &Store{instance: cfg.Instance, lease: cfg.Lease, timeout: cfg.Timeout}
	if s.instance == "" {
		s.instance = newInstanceID()
	}
	if s.lease <= 0 {
		s.lease = DefaultLease
	}
	if s.timeout <= 0 {
		s.timeout = DefaultTimeout
	}
	// A connect that hangs must not outlast an operation's timeout. A
	// timed-out operation only closes its connection on this side, so the
	// server bounds its statements and idle transactions too: an abandoned
	// transaction must not keep a budget row locked.
	pc.ConnConfig.ConnectTimeout = s.timeout
	for k, v := range map[string]time.Duration{"statement_timeout": s.timeout, "idle_in_transaction_session_timeout": 2 * s.timeout} {
		if _, set := pc.ConnConfig.RuntimeParams[k]; !set {
			pc.ConnConfig.RuntimeParams[k] = strconv.FormatInt(v.Milliseconds(), 10)
		}
	}
	s.pool, err = pgxpool.NewWithConfig(context.Background(), pc)
	if err != nil {
		return nil, fmt.Errorf("open ledger pool: %w", err)
	}
	return s, nil
}

// Instance is the id this store writes on its reservations.
func (s *Store) Instance() string { return s.instance }

// Lease is how long a reservation lives past its last renewal.
func (s *Store) Lease() time.Duration { return s.lease }

// Close closes the pool.
func (s *Store) Close() { s.pool.Close() }

func newInstanceID() string {
	host, _ := os.Hostname()
	var b [4]byte
	_, _ = rand.Read(b[:])
	return fmt.Sprintf("%s-%d-%s", host, os.Getpid(), hex.EncodeToString(b[:]))
}

// inTx runs f in one transaction bounded by the store's timeout, after
// making sure the schema is current. f's error rolls back.
func (s *Store) inTx(ctx context.Context, f func(context.Context, pgx.Tx) error) error {
	ctx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()
	if err := s.ensureSchema(ctx); err != nil {
		return err
	}
	tx, err := s.pool.Begin(ctx)
	if err != nil {
		return fmt.Errorf("begin: %w", err)
	}
	defer tx.Rollback(context.WithoutCancel(ctx)) //nolint:errcheck // a no-op after Commit
	if err := f(ctx, tx); err != nil {
		return err
	}
	if err := tx.Commit(ctx); err != nil {
		return fmt.Errorf("commit: %w", err)
	}
	return nil
}

// ensureSchema migrates once per store; a failure is retried by the next
// operation.
func (s *Store) ensureSchema(ctx context.Context) error {
	s.mu.Lock()
	done := s.migrated
	s.mu.Unlock()
	if done {
		return nil
	}
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error { return migrate(ctx, tx) })
	if err != nil {
		return err
	}
	s.mu.Lock()
	s.migrated = true
	s.mu.Unlock()
	return nil
}

// CheckSchema connects, migrates if needed, and reports a schema that a
// newer egressd has moved past this one since.
func (s *Store) CheckSchema(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()
	if err := s.ensureSchema(ctx); err != nil {
		return err
	}
	return checkVersion(ctx, s.pool)
}
