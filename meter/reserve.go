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
	done  bool // guarded by m.mu
}

// USD is the amount reserved.
func (r *Reservation) USD() float64 { return toUSD(r.nano) }

// Exceeds reports whether charging usd would cost more than was reserved,
// judged in the ledger's unit as Settle judges it.
func (r *Reservation) Exceeds(usd float64) bool { return toNano(usd, false) > r.nano }

// Reserve sets maxCostUSD aside for a call to model, atomically against
// the cap: it fails with a *BudgetError (errors.Is ErrBudgetExceeded) when
// spent + reserved + maxCostUSD would exceed the cap, and with
// ErrLedgerUnavailable while the ledger cannot be written.
func (m *Meter) Reserve(model string, maxCostUSD float64) (*Reservation, error) {
	// At least one nano-USD, so that a free-priced call is still refused at
	// the cap and a zero cap admits nothing.
	need := max(toNano(maxCostUSD, true), 1)
	m.mu.Lock()
	failing := m.writeErr != nil
	m.mu.Unlock()
	if failing {
		m.retryWrite()
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.writeErr != nil {
		return nil, fmt.Errorf("%w: %w", ErrLedgerUnavailable, m.writeErr)
	}
	m.adoptPeriod(m.clock())
	if satAdd(satAdd(m.led.SpentNano, m.reserved), need) > m.capNano {
		return nil, &BudgetError{
			SpentUSD: toUSD(m.led.SpentNano), ReservedUSD: toUSD(m.reserved),
			CapUSD: toUSD(m.capNano), NeedUSD: toUSD(need),
			ResetsAt: periodEnd(m.cfg.Period, m.led.PeriodStart),
		}
	}
	m.reserved += need
	m.inFlight++
	return &Reservation{m: m, nano: need, model: strings.ToLower(model)}, nil
}

// Release returns the reservation unspent (the call failed before the
// provider billed anything).
func (r *Reservation) Release() {
	m := r.m
	m.mu.Lock()
	defer m.mu.Unlock()
	if r.done {
		return
	}
	r.done = true
	m.reserved -= r.nano
	m.inFlight--
}

// Settle charges actualUSD (which may exceed the reservation: the provider
// billed it, so it is recorded, and logged at WARN with both figures; if it
// takes spend to the cap or past it, every later Reserve is refused until
// the period resets) and releases the rest, then writes the ledger. crossedWarn is true for the one settle per period that took
// spend past warn_at (the meter has logged it). A write failure is
// returned wrapping ErrLedgerUnavailable; the spend stays counted in
// memory and metered calls are refused until a write succeeds.
func (r *Reservation) Settle(actualUSD float64, u Usage, estimated bool) (crossedWarn bool, err error) {
	m := r.m
	cost := toNano(actualUSD, false)
	m.mu.Lock()
	if r.done {
		m.mu.Unlock()
		return false, nil
	}
	r.done = true
	m.reserved -= r.nano
	m.inFlight--
	m.adoptPeriod(m.clock())
	m.led.SpentNano = min(m.led.SpentNano+cost, maxNano)
	m.led.LifetimeNano = min(m.led.LifetimeNano+cost, maxNano)
	m.led.Updated = m.clock().UTC()
	m.addModel(r.model, u, cost)
	m.version++
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
	return crossedWarn, m.persist()
}

// addModel updates the per-model breakdown. Called with mu held.
func (m *Meter) addModel(model string, u Usage, cost int64) {
	if m.led.Models == nil {
		m.led.Models = make(map[string]*ModelSpend)
	}
	ms := m.led.Models[model]
	if ms == nil {
		if len(m.led.Models) >= maxModels {
			model = otherModel
		}
		if ms = m.led.Models[model]; ms == nil {
			ms = &ModelSpend{}
			m.led.Models[model] = ms
		}
	}
	ms.Requests++
	ms.InputTokens = satAdd(ms.InputTokens, u.TotalInput())
	ms.OutputTokens = satAdd(ms.OutputTokens, u.OutputTokens)
	ms.SpentNano = min(ms.SpentNano+cost, maxNano)
}

// persist writes the newest state unless a newer or equal version is
// already on disk (concurrent settles share one write). Returns the write
// error wrapped in ErrLedgerUnavailable.
func (m *Meter) persist() error {
	m.wmu.Lock()
	defer m.wmu.Unlock()
	m.mu.Lock()
	if m.written >= m.version && m.writeErr == nil {
		m.mu.Unlock()
		return nil
	}
	snap, v, path := m.led.clone(), m.version, m.path
	m.lastTry = m.clock()
	m.mu.Unlock()

	err := writeLedger(path, snap)

	m.mu.Lock()
	defer m.mu.Unlock()
	if err != nil {
		if m.writeErr == nil {
			m.log.Error("spend ledger write failed: refusing metered calls until it can be written; spend is kept in memory",
				"ledger", path, "spent_usd", toUSD(m.led.SpentNano), "err", err)
		}
		m.writeErr = err
		return fmt.Errorf("%w: %w", ErrLedgerUnavailable, err)
	}
	if m.writeErr != nil {
		m.log.Info("spend ledger writable again", "ledger", path)
	}
	m.writeErr, m.written = nil, max(m.written, v)
	return nil
}

// retryWrite retries a failed write at most once per writeRetryBackoff,
// so a broken disk is not hammered by every refused call.
func (m *Meter) retryWrite() {
	m.mu.Lock()
	due := m.clock().Sub(m.lastTry) >= writeRetryBackoff || m.clock().Before(m.lastTry)
	m.mu.Unlock()
	if due {
		_ = m.persist()
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
}

// Snapshot returns the current state (after any due period roll-over).
func (m *Meter) Snapshot() Snapshot {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.adoptPeriod(m.clock())
	s := Snapshot{
		SpentUSD: toUSD(m.led.SpentNano), ReservedUSD: toUSD(m.reserved), CapUSD: toUSD(m.capNano),
		LifetimeUSD: toUSD(m.led.LifetimeNano), InFlight: m.inFlight,
		Period: m.cfg.Period, PeriodStart: m.led.PeriodStart, PeriodEnd: periodEnd(m.cfg.Period, m.led.PeriodStart),
		WarnAt: m.cfg.WarnAt, Warned: m.led.Warned, Ledger: m.path, LedgerErr: m.writeErr,
		Models: make(map[string]ModelSpend, len(m.led.Models)),
	}
	for k, v := range m.led.Models {
		s.Models[k] = *v
	}
	return s
}
