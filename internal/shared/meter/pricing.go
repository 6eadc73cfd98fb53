package meter

import (
	"fmt"
	"strings"

	"github.com/egressd/egressd/policy"
)

// UnknownModelError is the ErrUnknownModel error; Key is the policy key an
// operator would add to price the model.
type UnknownModelError struct {
	Model string
	Key   string // e.g. budget.prices."gpt-9"
}

func (e *UnknownModelError) Error() string {
	if e.Model == "" {
		return "the request names no model; the gateway can only forward priced models"
	}
	return fmt.Sprintf("model %q has no price: add %s: {input: ..., output: ...} to the policy (USD per million tokens) or set budget.unknown_model: default", e.Model, e.Key)
}

// Is makes errors.Is(err, ErrUnknownModel) true.
func (e *UnknownModelError) Is(target error) bool { return target == ErrUnknownModel }

// Quote is the worst-case price of one call, computed before it is sent.
type Quote struct {
	Model        string       // lowercased, as looked up
	PriceKey     string       // the budget.prices key used ("default" for the fallback)
	Price        policy.Price // cache prices filled in
	InputTokens  int64        // estimated from the request
	OutputTokens int64        // max tokens of the request, or default_max_tokens
	MaxCostUSD   float64      // what to Reserve
}

// NoOutput as an output limit prices a call that generates no output
// (embeddings).
const NoOutput = -1

// Call is what QuoteCall prices.
type Call struct {
	Model        string
	InputTokens  int64 // estimated from the request
	OutputTokens int64 // the request's output limit; 0 = default_max_tokens, NoOutput = none
	// CacheWrite1h: the request may write one-hour cache entries, so its
	// input is reserved at that rate.
	CacheWrite1h bool
	// Priority: the request asks for service_tier priority, priced at the
	// model's priority multiplier (an error when it has none).
	Priority bool
}

// Quote prices a call to model with an estimated inputTokens and the
// request's output limit maxOutputTokens (0 = none given, use
// budget.default_max_tokens; NoOutput = none generated).
func (m *Meter) Quote(model string, inputTokens, maxOutputTokens int64) (Quote, error) {
	return m.QuoteCall(Call{Model: model, InputTokens: inputTokens, OutputTokens: maxOutputTokens})
}

// QuoteCall prices one call's worst case. Model names are compared
// lowercased because the policy loader lowercases map keys; a model
// missing from budget.prices is looked up in DefaultPrices. The input
// estimate is priced at the highest input-side price the call can incur
// so that cache writes cannot outrun it.
func (m *Meter) QuoteCall(c Call) (Quote, error) {
	m.mu.Lock()
	cfg := m.cfg
	m.mu.Unlock()
	key := strings.ToLower(c.Model)
	q := Quote{Model: key, PriceKey: key, InputTokens: max(c.InputTokens, 0), OutputTokens: c.OutputTokens}
	if key == "" {
		return q, &UnknownModelError{}
	}
	p, ok := lookupPrice(cfg.Prices, key)
	if !ok && cfg.UnknownModel == "default" {
		p, ok = cfg.Prices[defaultPriceKey]
		q.PriceKey = defaultPriceKey
	}
	if !ok {
		return q, &UnknownModelError{Model: c.Model, Key: fmt.Sprintf("budget.prices.%q", key)}
	}
	if c.Priority {
		if p.Priority <= 0 {
			return q, &TierError{Model: key}
		}
		p = scalePrice(p, p.Priority)
	}
	switch {
	case q.OutputTokens < 0:
		q.OutputTokens = 0
	case q.OutputTokens == 0:
		q.OutputTokens = int64(cfg.DefaultMaxTokens)
	}
	q.InputTokens, q.OutputTokens = min(q.InputTokens, maxTokens), min(q.OutputTokens, maxTokens)
	q.Price = p
	inPrice := max(p.Input, p.CacheRead, p.CacheWrite)
	if c.CacheWrite1h {
		inPrice = max(inPrice, p.CacheWrite1h)
	}
	q.MaxCostUSD = clampUSD((float64(q.InputTokens)*inPrice + float64(q.OutputTokens)*p.Output) / 1e6)
	return q, nil
}

// TierError refuses service_tier priority for a model priced without it.
type TierError struct{ Model string }

func (e *TierError) Error() string {
	return fmt.Sprintf("service_tier priority is billed above the price table and model %q has no priority multiplier: add priority: <multiplier> to budget.prices.%q", e.Model, e.Model)
}

func scalePrice(p policy.Price, k float64) policy.Price {
	p.Input, p.Output, p.CacheRead, p.CacheWrite, p.CacheWrite1h =
		p.Input*k, p.Output*k, p.CacheRead*k, p.CacheWrite*k, p.CacheWrite1h*k
	return p
}

// DefaultOutputLimit is budget.default_max_tokens (DefaultMaxTokens when
// unset): the output a call that names no limit is priced for, and the
// limit the gateway then sends on its behalf.
func (m *Meter) DefaultOutputLimit() int64 {
	m.mu.Lock()
	defer m.mu.Unlock()
	return int64(m.cfg.DefaultMaxTokens)
}

// Reconfigure applies a reloaded budget section: cap, period, warn_at,
// prices and unknown_model take effect at once. A changed ledger path is
// reopened: an existing valid file there is adopted (never lowering the
// current period's spend; calls it holds in flight are charged first, as
// Open does), a missing one receives the current state, and an unreadable
// or corrupt one is an error that leaves the old ledger in use. The calls
// in flight now move to the new file with the rest of the state.
func (m *Meter) Reconfigure(cfg policy.BudgetConfig) error {
	cfg, err := normalise(cfg)
	if err != nil {
		return err
	}
	m.mu.Lock()
	m.holdWrites() // no write to the old file may land after the switch
	oldPath := m.path
	m.mu.Unlock()
	var other ledger
	var found bool
	if cfg.Ledger != oldPath {
		other, found, err = m.loadLedger(cfg.Ledger)
	}
	m.mu.Lock()
	if err != nil {
		m.releaseWrites()
		m.mu.Unlock()
		return fmt.Errorf("reopen ledger: %w", err)
	}
	m.cfg, m.capNano = cfg, toNano(cfg.CapUSD, false)
	m.adoptPeriod(m.clock())
	if cfg.Ledger != oldPath {
		m.path = cfg.Ledger
		if found {
			m.mergeLedger(other)
		}
		m.written, m.attempted = 0, 0 // the new file must receive the state
	}
	// Always written, as a snapshot: a reload is also how an operator
	// retries a ledger that failed after fixing its disk.
	m.version++
	m.full = true
	v := m.version
	m.releaseWrites()
	m.mu.Unlock()
	// Writes the new path, or a period change; a failure is logged and
	// puts the meter in the unavailable state.
	return m.persist(v)
}

// mergeLedger adopts a ledger found at a new path: same period, the larger
// spend wins, so pointing at a stale copy cannot lower spend. Called with
// mu held.
func (m *Meter) mergeLedger(other ledger) {
	if other.Period != m.cfg.Period || !other.PeriodStart.Equal(m.led.PeriodStart) {
		return // a different period's figures: the live one stands
	}
	if other.SpentNano > m.led.SpentNano {
		m.led.SpentNano, m.led.Models = other.SpentNano, other.Models
	}
	m.led.LifetimeNano = max(m.led.LifetimeNano, other.LifetimeNano)
	m.led.Warned = m.led.Warned || other.Warned
}
