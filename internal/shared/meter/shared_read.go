package meter

import (
	"context"
	"maps"

	"github.com/egressd/egressd/internal/shared/pgledger"
	"github.com/egressd/egressd/policy"
)

// snapshotShared reads this budget and its parent from the shared store.
// A store that does not answer gives the configured caps, zero figures and
// LedgerErr set.
func (m *Meter) snapshotShared() Snapshot {
	m.mu.Lock()
	p, budgets, cfg := m.period(), m.budgets(), m.cfg
	m.mu.Unlock()
	s := Snapshot{
		CapUSD: toUSD(budgets[0].CapNano), Period: cfg.Period, PeriodStart: p.Start,
		PeriodEnd: periodEnd(cfg.Period, p.Start), WarnAt: cfg.WarnAt, Ledger: "postgres",
		Store: policy.StorePostgres, Budget: budgets[0].Name, Models: map[string]ModelSpend{},
	}
	if len(budgets) > 1 {
		s.Shared = &SharedSnapshot{Name: budgets[1].Name, CapUSD: toUSD(budgets[1].CapNano)}
	}
	names := make([]string, len(budgets))
	for i, b := range budgets {
		names[i] = b.Name
	}
	figs, err := m.remote.st.Figures(context.Background(), names, p)
	if err != nil {
		m.remote.setErr(err)
		last := m.remote.lastSnapshot()
		if last == nil {
			s.LedgerErr = err
			return s
		}
		// The figures last read, marked stale by the error: the
		// store still holds that spend, it only does not answer.
		last.LedgerErr = err
		return *last
	}
	s.LedgerErr = m.remote.lastErr()
	defer m.remote.keepSnapshot(s)
	own := figs[0]
	s.SpentUSD, s.ReservedUSD, s.LifetimeUSD = toUSD(own.SpentNano), toUSD(own.ReservedNano), toUSD(own.LifetimeNano)
	s.InFlight, s.Warned = int(own.InFlight), own.Warned
	for k, v := range own.Models {
		s.Models[k] = ModelSpend{Requests: v.Requests, InputTokens: v.InputTokens, OutputTokens: v.OutputTokens,
			SpentNano: v.SpentNano, Estimated: v.Estimated}
	}
	if s.Shared != nil {
		sh := figs[1]
		s.Shared.SpentUSD, s.Shared.ReservedUSD, s.Shared.InFlight = toUSD(sh.SpentNano), toUSD(sh.ReservedNano), int(sh.InFlight)
	}
	return s
}

// keepSnapshot remembers s for when the store stops answering.
func (rm *remote) keepSnapshot(s Snapshot) {
	rm.mu.Lock()
	defer rm.mu.Unlock()
	rm.snap = &s
}

// lastSnapshot is the last snapshot read from the store, nil before one.
func (rm *remote) lastSnapshot() *Snapshot {
	rm.mu.Lock()
	defer rm.mu.Unlock()
	if rm.snap == nil {
		return nil
	}
	c := *rm.snap
	c.Models = maps.Clone(c.Models)
	if c.Shared != nil {
		sh := *c.Shared
		c.Shared = &sh
	}
	return &c
}

// compile-time check that the PostgreSQL store is a sharedStore.
var _ sharedStore = (*pgledger.Store)(nil)
