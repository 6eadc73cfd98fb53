// Package meter owns egressd's LLM spend accounting: usage parsing for each
// provider format (JSON bodies and SSE streams, incrementally), pricing,
// reservations against a hard cap, and the durable ledger that keeps spend
// across restarts. It does no networking; the gateway feeds it bytes and
// asks it for permission.
//
// The cap is enforced with reservations: before a call is forwarded its
// worst case is reserved, and a reservation that would take spent+reserved
// past the cap is refused, so concurrent calls cannot overshoot together.
// Amounts are kept in integer nano-USD so concurrent sums are exact.
//
// Crashes overcharge, never undercharge: a reservation is in the ledger on
// disk before Reserve returns (so before its call is forwarded), and a
// settle replaces it with the real cost. Whatever moment egressd dies at,
// every call the provider may bill is on disk as a reservation or as a
// cost; the next Open charges leftover reservations in full.
//
// With budget.store: postgres the ledger is instead a PostgreSQL database
// shared by several egressd (internal/pgledger) behind the same methods:
// each reservation and settle is one transaction there, reservations carry
// a lease that this meter renews, and the period is still computed here.
package meter

import (
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/egressd/egressd/internal/lib/money"
	"github.com/egressd/egressd/policy"
)

// Sentinel errors; callers branch with errors.Is.
var (
	// ErrBudgetExceeded: the reservation would cross the cap. The error is
	// a *BudgetError carrying the numbers for the client's message.
	ErrBudgetExceeded = errors.New("budget exceeded")
	// ErrLedgerUnavailable: the ledger cannot be written; metered calls are
	// refused until a write succeeds.
	ErrLedgerUnavailable = errors.New("spend ledger unavailable")
	// ErrLedgerCorrupt: the ledger file exists but is not a valid ledger.
	ErrLedgerCorrupt = errors.New("spend ledger corrupt")
	// ErrUnknownModel: the model has no price and unknown_model is deny.
	ErrUnknownModel = errors.New("unknown model")
)

// Defaults for zero BudgetConfig fields (the policy fills the same ones;
// the meter repeats them so a hand-built config works too).
const (
	DefaultPeriod     = PeriodMonth
	DefaultWarnAt     = 0.8
	DefaultLedger     = "/var/lib/egressd/ledger.json"
	DefaultMaxTokens  = 4096
	unknownModelDeny  = "deny"
	defaultPriceKey   = "default"
	writeRetryBackoff = time.Second
)

// BudgetError is the ErrBudgetExceeded error with the figures the client
// is told.
type BudgetError struct {
	Budget                                 string // the named budget that refused (shared store only)
	SpentUSD, ReservedUSD, CapUSD, NeedUSD float64
	ResetsAt                               time.Time // zero for period total
}

func (e *BudgetError) Error() string {
	which := "budget"
	if e.Budget != "" {
		which = fmt.Sprintf("budget %q", e.Budget)
	}
	return fmt.Sprintf("%s exceeded: spent %s + in flight %s + this call up to %s > cap %s", which,
		money.Format(e.SpentUSD), money.Format(e.ReservedUSD), money.Format(e.NeedUSD), money.Format(e.CapUSD))
}

// Is makes errors.Is(err, ErrBudgetExceeded) true.
func (e *BudgetError) Is(target error) bool { return target == ErrBudgetExceeded }

// Options are Open's optional hooks.
type Options struct {
	Clock  func() time.Time // nil = time.Now
	Logger *slog.Logger     // nil = slog.Default()

	// For budget.store: postgres only.
	Env          func(string) string // reads budget.dsn_env; nil = os.Getenv
	Instance     string              // this egressd's id on its reservations; "" = host-pid-random
	Lease        time.Duration       // reservation lease; 0 = pgledger.DefaultLease
	StoreTimeout time.Duration       // bound on each ledger operation; 0 = pgledger.DefaultTimeout
}

// Meter tracks spend against the cap. Safe for concurrent use.
type Meter struct {
	clock func() time.Time
	log   *slog.Logger

	mu        sync.Mutex
	cfg       policy.BudgetConfig // normalised
	capNano   int64
	path      string
	led       ledger
	reserved  int64
	inFlight  int
	version   uint64    // bumped on every change to led
	writeErr  error     // last ledger write failure; nil when healthy
	lastTry   time.Time // last write attempt
	written   uint64    // newest version on disk
	attempted uint64    // newest version a write was tried for
	writing   bool      // a write (or Reconfigure's switch) is running
	wrote     sync.Cond // on mu; broadcast when one ends

	full bool    // the next write must be a snapshot: a record cannot say the change
	jour journal // touched by the one writer only

	write func(b batch) error // jour.store; tests wrap it

	remote *remote // non-nil with budget.store: postgres, which then holds the ledger
}

// Open loads the ledger named by cfg and returns a meter. A missing ledger
// is a fresh one; a ledger that cannot be read or parsed is an error, never
// a silent reset. Reservations the ledger still holds are calls that were
// in flight when the last egressd stopped: the provider may have billed
// them, so each is charged at its reserved amount (counted as estimated in
// its model's breakdown) and cleared, with one WARN line giving the count
// and the sum. Temporary files left by a write that was killed are
// removed. Open assumes it is the only user of the ledger file. The ledger
// is written once at open, as a snapshot that takes in its journal, to
// prove it can be (and to record any such charge): when that fails the meter is returned in the unavailable state
// (metered calls refused, retried on demand) and the failure is logged.
func Open(cfg policy.BudgetConfig, opt Options) (*Meter, error) {
	cfg, err := normalise(cfg)
	if err != nil {
		return nil, err
	}
	if cfg.Store == policy.StorePostgres {
		return openShared(cfg, opt)
	}
	m := &Meter{clock: opt.Clock, log: opt.Logger}
	m.wrote.L = &m.mu
	if m.clock == nil {
		m.clock = time.Now
	}
	if m.log == nil {
		m.log = slog.Default()
	}
	m.jour.log, m.write = m.log, m.jour.store
	led, found, err := m.loadLedger(cfg.Ledger)
	if err != nil {
		return nil, err
	}
	now := m.clock()
	if !found {
		led = ledger{Version: ledgerVersion, Period: cfg.Period, PeriodStart: periodStart(cfg.Period, now)}
	}
	m.cfg, m.capNano, m.path, m.led = cfg, toNano(cfg.CapUSD, false), cfg.Ledger, led
	m.mu.Lock()
	m.full = true // the journal is replayed into the snapshot and emptied
	m.adoptPeriod(now)
	m.version++
	v := m.version
	m.mu.Unlock()
	_ = m.persist(v) // failure is logged and held in writeErr
	return m, nil
}

// loadLedger reads the ledger at path, charges the calls it holds in
// flight, and removes stale temporary files beside it.
func (m *Meter) loadLedger(path string) (ledger, bool, error) {
	led, found, torn, err := readLedger(path)
	if err != nil {
		return led, found, err
	}
	if torn {
		m.log.Warn("spend ledger journal ended in a torn record, left by a crash while it was written: ignored, as it was never acknowledged",
			"journal", journalPath(path))
	}
	if calls, nano := led.chargeInFlight(); calls > 0 {
		m.log.Warn("spend ledger held calls in flight when egressd last stopped: charged at their reserved amounts as estimates",
			"ledger", path, "calls", calls, "charged_usd", toUSD(nano), "spent_usd", toUSD(led.SpentNano))
	}
	if n, err := removeStaleTemps(path); err != nil {
		m.log.Warn("could not remove stale temporary ledger files", "ledger", path, "removed", n, "err", err)
	} else if n > 0 {
		m.log.Info("removed temporary ledger files left by an interrupted write", "ledger", path, "removed", n)
	}
	return led, found, nil
}

func normalise(cfg policy.BudgetConfig) (policy.BudgetConfig, error) {
	if cfg.Period == "" {
		cfg.Period = DefaultPeriod
	}
	cfg.Period = strings.ToLower(cfg.Period)
	if err := checkPeriod(cfg.Period); err != nil {
		return cfg, err
	}
	if cfg.WarnAt <= 0 {
		cfg.WarnAt = DefaultWarnAt
	}
	if cfg.Ledger == "" {
		cfg.Ledger = DefaultLedger
	}
	if cfg.Store == "" {
		cfg.Store = policy.StoreFile
	}
	switch {
	case cfg.Store != policy.StoreFile && cfg.Store != policy.StorePostgres:
		return cfg, fmt.Errorf("budget.store: %q is not file or postgres", cfg.Store)
	case cfg.Store == policy.StorePostgres && cfg.Name == "":
		return cfg, errors.New("budget.name: required with store: postgres")
	}
	if cfg.UnknownModel == "" {
		cfg.UnknownModel = unknownModelDeny
	}
	if cfg.DefaultMaxTokens <= 0 {
		cfg.DefaultMaxTokens = DefaultMaxTokens
	}
	if cfg.CapUSD < 0 {
		return cfg, fmt.Errorf("budget.cap_usd: %v is negative", cfg.CapUSD)
	}
	prices := make(map[string]policy.Price, len(cfg.Prices))
	for k, p := range cfg.Prices {
		prices[strings.ToLower(k)] = fillPrice(p)
	}
	cfg.Prices = prices
	return cfg, nil
}

// adoptPeriod rolls the period over when the clock has left it, and moves
// the ledger to a changed period kind without resetting it: spend only
// ever resets because time passed. Called with mu held.
func (m *Meter) adoptPeriod(now time.Time) {
	cur := periodStart(m.cfg.Period, now)
	if m.led.Period != m.cfg.Period {
		m.led.Period, m.led.PeriodStart = m.cfg.Period, cur
		m.version++
		m.full = true
		return
	}
	if m.cfg.Period == PeriodTotal || !cur.After(m.led.PeriodStart) {
		return
	}
	m.log.Info("budget period rolled over", "period", m.cfg.Period,
		"previous_start", m.led.PeriodStart, "previous_spent_usd", toUSD(m.led.SpentNano))
	m.led.PeriodStart, m.led.SpentNano, m.led.Warned, m.led.Models = cur, 0, false, nil
	m.version++
	m.full = true
}
