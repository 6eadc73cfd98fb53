package policy

import "math"

// budgetStore checks where the ledger lives: the postgres store needs the
// env var its connection string comes from (never the string itself) and a
// budget name; a shared parent needs a name of its own and a cap.
func (c *compiler) budgetStore() {
	b := &c.p.cfg.Budget
	switch b.Store {
	case StoreFile:
		if b.Shared.Name != "" || b.Shared.CapUSD != 0 {
			c.errf("budget.shared", "needs store: postgres (a file ledger has one budget)")
		}
		return
	case StorePostgres:
	default:
		c.errf("budget.store", "%q: want file or postgres", b.Store)
		return
	}
	c.envName("budget.dsn_env", b.DSNEnv)
	if b.Name == "" {
		c.errf("budget.name", "required with store: postgres")
	} else if len(b.Name) > maxBudgetName {
		c.errf("budget.name", "longer than %d bytes", maxBudgetName)
	}
	s := b.Shared
	switch {
	case s.Name == "" && s.CapUSD != 0:
		c.errf("budget.shared.name", "required when budget.shared.cap_usd is set")
	case s.Name == "":
	case s.Name == b.Name:
		c.errf("budget.shared.name", "%q: must differ from budget.name", s.Name)
	case len(s.Name) > maxBudgetName:
		c.errf("budget.shared.name", "longer than %d bytes", maxBudgetName)
	case math.IsNaN(s.CapUSD) || math.IsInf(s.CapUSD, 0) || s.CapUSD <= 0:
		c.errf("budget.shared.cap_usd", "%v: must be a positive amount", s.CapUSD)
	}
}

// maxBudgetName bounds budget names, which are keys in the store.
const maxBudgetName = 128
