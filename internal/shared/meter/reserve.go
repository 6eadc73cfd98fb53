package meter

import (
	"fmt"
	"strings"
	"time"
)

// Reservation is money set aside for one call. Exactly one of Settle or
// Release takes effect; later calls are no-ops, so `defer r.Release()`
// after a Settle is safe.
type Reservation struct {
	m     *Meter
	nano  int64
	model string
	key   string // where the ledger holds it in flight
	id    int64  // its row in a shared store
	done  bool   // guarded by m.mu
}

// USD is the amount reserved.
func (r *Reservation) USD() float64 { return toUSD(r.nano) }

// Exceeds reports whether charging usd would cost more than was reserved,
// judged in the ledger's unit as Settle judges it.
func (r *Reservation) Exceeds(usd float64) bool { return toNano(usd, false) > r.nano }

// Reserve sets maxCostUSD aside for a call to model, atomically against
// the cap, and returns once the reservation is durably in the ledger: a
// call forwarded after Reserve returns is on disk, so a crash before it
// settles charges its reservation (see Open) instead of forgetting it.
// Concurrent reservations share one ledger write. It fails with a
// *BudgetError (errors.Is ErrBudgetExceeded) when spent + reserved +
// maxCostUSD would exceed the cap, and with ErrLedgerUnavailable when the
// ledger cannot be written (this write, or an earlier one not yet retried:
// failed writes are retried at most once per writeRetryBackoff); then
// nothing is reserved and the call must not be forwarded.
func (m *Meter) Reserve(model string, maxCostUSD float64) (*Reservation, error) {
	// At least one nano-USD, so that a free-priced call is still refused at
	// the cap and a zero cap admits nothing.
	need := max(toNano(maxCostUSD, true), 1)
	if m.remote != nil {
		return m.reserveShared(model, need)
	}
	m.mu.Lock()
	if m.writeErr != nil && !m.retryDue() {
		err := m.writeErr
		m.mu.Unlock()
		return nil, fmt.Errorf("%w: %w", ErrLedgerUnavailable, err)
	}
	m.adoptPeriod(m.clock())
	if satAdd(satAdd(m.led.SpentNano, m.reserved), need) > m.capNano {
		defer m.mu.Unlock()
		return nil, &BudgetError{
			SpentUSD: toUSD(m.led.SpentNano), ReservedUSD: toUSD(m.reserved),
			CapUSD: toUSD(m.capNano), NeedUSD: toUSD(need),
			ResetsAt: periodEnd(m.cfg.Period, m.led.PeriodStart),
		}
	}
	r := &Reservation{m: m, nano: need, model: strings.ToLower(model)}
	r.key = m.led.reserve(r.model, need)
	m.reserved += need
	m.inFlight++
	m.version++
	v := m.version
	m.mu.Unlock()
	if err := m.persist(v); err != nil {
		// Not known to be on disk (a write can fail after its rename);
		// if it is, a crash overcharges it and the next write removes it.
		r.drop()
		return nil, err
	}
	return r, nil
}

// drop ends the reservation without charging it and returns the ledger
// version that no longer holds it; ok is false if it had already ended.
func (r *Reservation) drop() (v uint64, ok bool) {
	m := r.m
	m.mu.Lock()
	defer m.mu.Unlock()
	if r.done {
		return 0, false
	}
	r.done = true
	m.reserved -= r.nano
	m.inFlight--
	m.led.unreserve(r.key, r.nano)
	m.version++
	return m.version, true
}

// Release returns the reservation unspent (the call failed before the
// provider billed anything) and writes the ledger, so that a later crash
// does not charge it. A failed write is logged and puts the meter in the
// unavailable state; the reservation then stays on disk, which can only
// overcharge.
func (r *Reservation) Release() {
	if r.m.remote != nil {
		_, _ = r.settleShared(0, Usage{}, false, true) // logged, and retried by the lease loop
		return
	}
	if v, ok := r.drop(); ok {
		_ = r.m.persist(v)
	}
}

// Settle charges actualUSD (which may exceed the reservation: the provider
// billed it, so it is recorded, and logged at WARN with both figures; if
// it takes spend to the cap or past it, every later Reserve is refused
// until the period resets) in place of the reservation, then writes the
// ledger; estimated marks a charge not reported by the provider.
// crossedWarn is true for the one settle per period that took spend past
// warn_at (the meter has logged it). A write failure is returned wrapping
// ErrLedgerUnavailable; the spend stays counted in memory, the reservation
// stays on disk (a crash then charges the reservation), and metered calls
// are refused until a write succeeds.
func (r *Reservation) Settle(actualUSD float64, u Usage, estimated bool) (crossedWarn bool, err error) {
	m := r.m
	if m.remote != nil {
		return r.settleShared(actualUSD, u, estimated, false)
	}
	cost := toNano(actualUSD, false)
	m.mu.Lock()
	if r.done {
		m.mu.Unlock()
		return false, nil
	}
	r.done = true
	m.reserved -= r.nano
	m.inFlight--
	m.led.unreserve(r.key, r.nano)
	m.adoptPeriod(m.clock())
	m.led.SpentNano = min(m.led.SpentNano+cost, maxNano)
	m.led.LifetimeNano = min(m.led.LifetimeNano+cost, maxNano)
	m.led.Updated = m.clock().UTC()
	m.addModel(r.model, u, cost, estimated)
	m.version++
	v := m.version
	if cost > r.nano {
		m.log.Warn("call cost more than its reservation", "model", r.model,
			"reserved_usd", toUSD(r.nano), "cost_usd", toUSD(cost), "estimated", estimated,
			"spent_usd", toUSD(m.led.SpentNano), "cap_usd", toUSD(m.capNano),
			"cap_reached", m.led.SpentNano >= m.capNano)
	}
	if !m.led.Warned && m.capNano > 0 && float64(m.led.SpentNano) >= m.cfg.WarnAt*float64(m.capNano) {
		m.led.Warned, crossedWarn = true, true
		m.log.Warn("budget warning threshold crossed", "spent_usd", toUSD(m.led.SpentNano),
			"cap_usd", toUSD(m.capNano), "warn_at", m.cfg.WarnAt, "period", m.cfg.Period,
			"period_start", m.led.PeriodStart)
	}
	m.mu.Unlock()
	return crossedWarn, m.persist(v)
}

// addModel updates the per-model breakdown. Called with mu held.
func (m *Meter) addModel(model string, u Usage, cost int64, estimated bool) {
	ms := m.led.model(model)
	ms.Requests++
	ms.InputTokens = satAdd(ms.InputTokens, u.TotalInput())
	ms.OutputTokens = satAdd(ms.OutputTokens, u.OutputTokens)
	ms.SpentNano = min(ms.SpentNano+cost, maxNano)
	if estimated {
		ms.Estimated++
	}
}

// Snapshot is the meter's state for status output and metrics.
type Snapshot struct {
	SpentUSD    float64
	ReservedUSD float64
	CapUSD      float64
	LifetimeUSD float64
	InFlight    int
	Period      string
	PeriodStart time.Time
	PeriodEnd   time.Time // zero for period total
	WarnAt      float64
	Warned      bool
	Ledger      string
	LedgerErr   error // non-nil while metered calls are refused
	Models      map[string]ModelSpend

	// With budget.store: postgres, the figures are the store's, summed
	// over every instance: Budget is budget.name and Shared its parent.
	Store  string // file | postgres
	Budget string
	Shared *SharedSnapshot // nil without budget.shared
}

// SharedSnapshot is a shared parent budget's state.
type SharedSnapshot struct {
	Name                          string
	SpentUSD, ReservedUSD, CapUSD float64
	InFlight                      int
}

// Snapshot returns the current state (after any due period roll-over).
func (m *Meter) Snapshot() Snapshot {
	if m.remote != nil {
		return m.snapshotShared()
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	m.adoptPeriod(m.clock())
	s := Snapshot{
		SpentUSD: toUSD(m.led.SpentNano), ReservedUSD: toUSD(m.reserved), CapUSD: toUSD(m.capNano),
		LifetimeUSD: toUSD(m.led.LifetimeNano), InFlight: m.inFlight,
		Period: m.cfg.Period, PeriodStart: m.led.PeriodStart, PeriodEnd: periodEnd(m.cfg.Period, m.led.PeriodStart),
		WarnAt: m.cfg.WarnAt, Warned: m.led.Warned, Ledger: m.path, LedgerErr: m.writeErr,
		Models: make(map[string]ModelSpend, len(m.led.Models)), Store: m.cfg.Store,
	}
	for k, v := range m.led.Models {
		s.Models[k] = *v
	}
	return s
}
