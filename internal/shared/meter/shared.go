package meter

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/egressd/egressd/internal/shared/pgledger"
	"github.com/egressd/egressd/policy"
)

// sharedStore is a ledger that several egressd instances share; the meter
// reserves and settles through it instead of its own file. Its operations
// are bounded by the store's timeout; any error other than a refusal
// means the ledger is unavailable.
type sharedStore interface {
	Reserve(ctx context.Context, r pgledger.Reservation) (int64, error)
	Settle(ctx context.Context, s pgledger.Settlement) (pgledger.Settled, error)
	Renew(ctx context.Context, ids []int64) error
	Sweep(ctx context.Context) (calls, nano int64, err error)
	Figures(ctx context.Context, names []string, p pgledger.Period) ([]pgledger.Figures, error)
	CheckSchema(ctx context.Context) error
	Lease() time.Duration
	Close()
}

// maxRetries bounds the settles kept for retry while the store is down;
// past it the oldest are dropped, and their reservations, no longer
// renewed, are charged in full when their leases run out.
const maxRetries = 10000

// remote is the meter's side of a shared store: the leases it renews, the
// settles it retries, and whether the store answers.
type remote struct {
	st  sharedStore
	log *slog.Logger
	// The budget names are fixed at open (a reload changes only the
	// caps), so that a reload cannot move calls to another budget.
	name   string
	shared policy.SharedBudget

	mu      sync.Mutex
	open    map[int64]struct{}    // reservations whose leases this instance renews
	retry   []pgledger.Settlement // settles that failed; retried on every tick
	err     error                 // last failure; nil while the store answers
	snap    *Snapshot             // the last snapshot read, shown while it does not
	stop    context.CancelFunc
	stopped chan struct{}
}

// openShared opens the meter on the shared store cfg names. The store is
// not reached here: a database that is down at start leaves the meter
// refusing metered calls until it answers, and the rest of egressd runs.
func openShared(cfg policy.BudgetConfig, opt Options) (*Meter, error) {
	getenv := opt.Env
	if getenv == nil {
		getenv = os.Getenv
	}
	dsn := getenv(cfg.DSNEnv)
	if dsn == "" {
		return nil, fmt.Errorf("budget.dsn_env: environment variable %s is empty: it must hold the ledger's PostgreSQL connection string", cfg.DSNEnv)
	}
	st, err := pgledger.Open(pgledger.Config{DSN: dsn, Instance: opt.Instance, Lease: opt.Lease, Timeout: opt.StoreTimeout})
	if err != nil {
		return nil, fmt.Errorf("budget.dsn_env %s: %w", cfg.DSNEnv, err)
	}
	return newShared(cfg, opt, st), nil
}

// newShared wires a meter to st and starts its lease loop.
func newShared(cfg policy.BudgetConfig, opt Options, st sharedStore) *Meter {
	m := &Meter{clock: opt.Clock, log: opt.Logger}
	m.wrote.L = &m.mu
	if m.clock == nil {
		m.clock = time.Now
	}
	if m.log == nil {
		m.log = slog.Default()
	}
	// The file machinery still runs for Reconfigure, writing nowhere.
	m.write = func(batch) error { return nil }
	// path stays budget.ledger so that Reconfigure only touches the file
	// when an operator changes that key.
	m.cfg, m.capNano, m.path = cfg, toNano(cfg.CapUSD, false), cfg.Ledger
	m.led = ledger{Version: ledgerVersion, Period: cfg.Period, PeriodStart: periodStart(cfg.Period, m.clock())}
	ctx, stop := context.WithCancel(context.Background())
	m.remote = &remote{st: st, log: m.log, name: cfg.Name, shared: cfg.Shared,
		open: map[int64]struct{}{}, stop: stop, stopped: make(chan struct{})}
	go m.remote.loop(ctx)
	if err := st.CheckSchema(ctx); err != nil {
		m.remote.setErr(err)
	}
	return m
}

// budgets is what a call reserves against: this budget, then its shared
// parent. Called with mu held.
func (m *Meter) budgets() []pgledger.Budget {
	b := []pgledger.Budget{{Name: m.remote.name, CapNano: m.capNano}}
	if sh := m.remote.shared; sh.Name != "" {
		if m.cfg.Shared.Name == sh.Name {
			sh.CapUSD = m.cfg.Shared.CapUSD
		}
		b = append(b, pgledger.Budget{Name: sh.Name, CapNano: toNano(sh.CapUSD, false)})
	}
	return b
}

// period is the store's view of the current period. Called with mu held.
func (m *Meter) period() pgledger.Period {
	return pgledger.Period{Kind: m.cfg.Period, Start: periodStart(m.cfg.Period, m.clock())}
}

// reserveShared is Reserve on a shared store: one transaction against
// this budget and its parent, refused by whichever would cross its cap.
func (m *Meter) reserveShared(model string, need int64) (*Reservation, error) {
	m.mu.Lock()
	req := pgledger.Reservation{Budgets: m.budgets(), Period: m.period(), Model: strings.ToLower(model), Nano: need}
	kind := m.cfg.Period
	m.mu.Unlock()
	id, err := m.remote.st.Reserve(context.Background(), req)
	if re := (*pgledger.RefusedError)(nil); errors.As(err, &re) {
		m.remote.setErr(nil)
		return nil, &BudgetError{
			Budget: re.Budget, SpentUSD: toUSD(re.SpentNano), ReservedUSD: toUSD(re.ReservedNano),
			CapUSD: toUSD(re.CapNano), NeedUSD: toUSD(need), ResetsAt: periodEnd(kind, re.PeriodStart),
		}
	}
	if err != nil {
		m.remote.setErr(err)
		return nil, fmt.Errorf("%w: %w", ErrLedgerUnavailable, err)
	}
	m.remote.setErr(nil)
	m.remote.track(id, true)
	m.mu.Lock()
	m.reserved += need
	m.inFlight++
	m.mu.Unlock()
	return &Reservation{m: m, nano: need, model: req.Model, id: id}, nil
}

// settleShared is Settle (or, with release, Release) on a shared store. A
// settle that fails is kept and retried by the lease loop with the same
// figures; the store applies each reservation's settle at most once.
func (r *Reservation) settleShared(actualUSD float64, u Usage, estimated, release bool) (bool, error) {
	m := r.m
	m.mu.Lock()
	if r.done {
		m.mu.Unlock()
		return false, nil
	}
	r.done = true
	m.reserved -= r.nano
	m.inFlight--
	st := pgledger.Settlement{
		ID: r.id, Period: m.period(), CostNano: toNano(actualUSD, false), Estimated: estimated, Release: release,
		Usage: pgledger.Usage{InputTokens: u.TotalInput(), OutputTokens: u.OutputTokens},
	}
	if release {
		st.CostNano = 0
	}
	if m.capNano > 0 {
		st.WarnNano = max(int64(m.cfg.WarnAt*float64(m.capNano)), 1)
	}
	warnAt := m.cfg.WarnAt
	m.mu.Unlock()
	m.remote.track(r.id, false)
	res, err := m.remote.st.Settle(context.Background(), st)
	if err != nil {
		m.remote.setErr(err)
		m.remote.queue(st)
		return false, fmt.Errorf("%w: %w", ErrLedgerUnavailable, err)
	}
	m.remote.setErr(nil)
	if res.Late {
		m.log.Warn("settled a call whose lease had run out: it had been charged in full, the difference is reconciled",
			"model", r.model, "reserved_usd", toUSD(r.nano), "cost_usd", toUSD(st.CostNano))
	}
	if !release && st.CostNano > r.nano {
		m.log.Warn("call cost more than its reservation", "model", r.model,
			"reserved_usd", toUSD(r.nano), "cost_usd", toUSD(st.CostNano), "estimated", estimated,
			"spent_usd", toUSD(res.SpentNano), "cap_usd", toUSD(res.CapNano), "cap_reached", res.SpentNano >= res.CapNano)
	}
	if res.CrossedWarn {
		m.log.Warn("budget warning threshold crossed", "spent_usd", toUSD(res.SpentNano),
			"cap_usd", toUSD(res.CapNano), "warn_at", warnAt, "period", st.Period.Kind, "period_start", st.Period.Start)
	}
	return res.CrossedWarn, nil
}

// track adds (or, with add false, removes) id from the leases to renew.
func (rm *remote) track(id int64, add bool) {
	rm.mu.Lock()
	defer rm.mu.Unlock()
	if add {
		rm.open[id] = struct{}{}
	} else {
		delete(rm.open, id)
	}
}

// queue keeps a failed settle for the lease loop to retry.
func (rm *remote) queue(st pgledger.Settlement) {
	rm.mu.Lock()
	defer rm.mu.Unlock()
	if len(rm.retry) >= maxRetries {
		rm.log.Error("dropping a settle that could not be written: its reservation will be charged in full when its lease runs out",
			"reservation", rm.retry[0].ID)
		rm.retry = rm.retry[1:]
	}
	rm.retry = append(rm.retry, st)
}

// setErr records whether the store answered and logs the changes: one
// line when it stops answering, one when it answers again.
func (rm *remote) setErr(err error) {
	rm.mu.Lock()
	was := rm.err
	rm.err = err
	rm.mu.Unlock()
	switch {
	case err != nil && was == nil:
		rm.log.Error("spend ledger (postgres) unavailable: refusing metered calls until it answers; the spend it holds is kept",
			"err", err)
	case err == nil && was != nil:
		rm.log.Info("spend ledger (postgres) answers again: metered calls are served")
	}
}

// lastErr is the last failure, nil while the store answers.
func (rm *remote) lastErr() error {
	rm.mu.Lock()
	defer rm.mu.Unlock()
	return rm.err
}

// loop renews this instance's leases three times a lease, retries failed
// settles, charges leases others left to run out, and notices a schema a
// newer egressd migrated to. It ends when ctx does.
func (rm *remote) loop(ctx context.Context) {
	defer close(rm.stopped)
	t := time.NewTicker(max(rm.st.Lease()/3, 10*time.Millisecond))
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		rm.tick(ctx)
	}
}

func (rm *remote) tick(ctx context.Context) {
	rm.mu.Lock()
	ids := make([]int64, 0, len(rm.open))
	for id := range rm.open {
		ids = append(ids, id)
	}
	retry := rm.retry
	rm.retry = nil
	rm.mu.Unlock()
	err := rm.st.Renew(ctx, ids)
	for i, st := range retry {
		if err == nil {
			_, err = rm.st.Settle(ctx, st)
		}
		if err != nil {
			rm.mu.Lock()
			rm.retry = append(retry[i:], rm.retry...)
			rm.mu.Unlock()
			break
		}
	}
	if err == nil {
		_, _, err = rm.st.Sweep(ctx)
	}
	if err == nil {
		err = rm.st.CheckSchema(ctx)
	}
	if ctx.Err() == nil {
		rm.setErr(err)
	}
}

// close stops the loop, makes a last attempt at failed settles, and closes
// the store.
func (rm *remote) close() error {
	rm.stop()
	<-rm.stopped
	rm.mu.Lock()
	retry := rm.retry
	rm.retry = nil
	rm.mu.Unlock()
	var errs []error
	for _, st := range retry {
		if _, err := rm.st.Settle(context.Background(), st); err != nil {
			errs = append(errs, err)
		}
	}
	rm.st.Close()
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("%w: %d settles not written (their reservations are charged in full when their leases run out): %w",
			ErrLedgerUnavailable, len(errs), err)
	}
	return nil
}
