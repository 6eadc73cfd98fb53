package meter

import (
	"context"
	"fmt"
	"os"
	"time"

	"github.com/egressd/egressd/internal/shared/pgledger"
	"github.com/egressd/egressd/policy"
)

// Migration is what MigrateToShared moved.
type Migration struct {
	Budget        string
	Period        string
	PeriodStart   time.Time
	SpentUSD      float64 // this period's spend, in-flight calls included
	LifetimeUSD   float64
	InFlightCalls int64 // calls the file held in flight, charged in full as estimates
	InFlightUSD   float64
	Models        int
}

// MigrateToShared moves the file ledger at path (with its journal) into
// the shared store cfg names (budget.store: postgres): the period, its
// spend to the nano-USD, the lifetime total and the per-model breakdown,
// in one transaction. Calls the file still holds in flight are charged in
// full, as the next Open of the file would. The spend is also added to the
// shared parent, when cfg has one. The file is not changed. A budget the
// store already holds is refused (pgledger.ErrBudgetExists), so that a
// second run cannot count the spend twice. Stop the egressd that writes
// the file first.
func MigrateToShared(path string, cfg policy.BudgetConfig, opt Options) (Migration, error) {
	cfg, err := normalise(cfg)
	if err != nil {
		return Migration{}, err
	}
	if cfg.Store != policy.StorePostgres {
		return Migration{}, fmt.Errorf("budget.store: %q: the policy must name the postgres store to migrate to", cfg.Store)
	}
	led, found, _, err := readLedger(path)
	if err != nil {
		return Migration{}, err
	}
	if !found {
		return Migration{}, fmt.Errorf("ledger %s: %w", path, os.ErrNotExist)
	}
	calls, inFlight := led.chargeInFlight()
	getenv := opt.Env
	if getenv == nil {
		getenv = os.Getenv
	}
	dsn := getenv(cfg.DSNEnv)
	if dsn == "" {
		return Migration{}, fmt.Errorf("budget.dsn_env: environment variable %s is empty", cfg.DSNEnv)
	}
	st, err := pgledger.Open(pgledger.Config{DSN: dsn, Timeout: max(opt.StoreTimeout, 30*time.Second)})
	if err != nil {
		return Migration{}, err
	}
	defer st.Close()
	f := pgledger.Figures{
		Name: cfg.Name, Period: led.Period, PeriodStart: led.PeriodStart, CapNano: toNano(cfg.CapUSD, false),
		SpentNano: led.SpentNano, LifetimeNano: led.LifetimeNano, Warned: led.Warned,
		Models: make(map[string]pgledger.ModelSpend, len(led.Models)),
	}
	for k, v := range led.Models {
		f.Models[k] = pgledger.ModelSpend{Requests: v.Requests, InputTokens: v.InputTokens,
			OutputTokens: v.OutputTokens, SpentNano: v.SpentNano, Estimated: v.Estimated}
	}
	var shared *pgledger.Budget
	if cfg.Shared.Name != "" {
		shared = &pgledger.Budget{Name: cfg.Shared.Name, CapNano: toNano(cfg.Shared.CapUSD, false)}
	}
	if err := st.Import(context.Background(), f, shared); err != nil {
		return Migration{}, fmt.Errorf("migrate %s to budget %q: %w", path, cfg.Name, err)
	}
	return Migration{
		Budget: cfg.Name, Period: led.Period, PeriodStart: led.PeriodStart, SpentUSD: toUSD(led.SpentNano),
		LifetimeUSD: toUSD(led.LifetimeNano), InFlightCalls: calls, InFlightUSD: toUSD(inFlight), Models: len(led.Models),
	}, nil
}
