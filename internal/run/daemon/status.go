package daemon

import (
	"fmt"
	"os"

	"github.com/egressd/egressd/internal/run/admin"
)

// newAdmin builds the admin listener's handler. A token_env that names an
// empty variable is an error: the operator asked for protection, and
// serving the admin listener open instead would be a silent downgrade.
func (d *daemon) newAdmin() (*admin.Server, error) {
	cfg := d.holder.Current().Config()
	var token string
	if env := cfg.Admin.TokenEnv; env != "" {
		token = d.getenv(env)
		if token == "" {
			return nil, fmt.Errorf("admin.token_env names $%s, which is empty: set it or remove token_env", env)
		}
	}
	return admin.New(admin.Config{
		Token:     token,
		Status:    d.adminStatus,
		Subscribe: d.declog.Subscribe,
		Logger:    d.log,
		Handlers:  d.ask.Handlers(),
		Console:   d.newConsole(token),
	}), nil
}

// adminStatus is the daemon's part of /status; it runs on every scrape, so
// it only reads snapshots.
func (d *daemon) adminStatus() admin.Status {
	p := d.holder.Current()
	cfg := p.Config()
	st := d.holder.State()
	mode := cfg.Mode
	if mode == "" {
		mode = "enforce"
	}
	s := admin.Status{
		Version:   d.opts.Version,
		StartedAt: d.started,
		Mode:      mode,
		Policy: admin.PolicyStatus{
			File: st.Path, Hash: p.Hash(), LoadedAt: st.LoadedAt, Rules: len(p.Rules()),
			LastReloadAt: st.LastAttemptAt, LastReloadError: st.LastError,
		},
	}
	s.Ask = d.askStatus()
	if d.meter != nil {
		m := d.meter.Snapshot()
		s.Budget = &admin.Budget{
			SpendUSD: m.SpentUSD, CapUSD: m.CapUSD, WarnAt: m.WarnAt, Period: m.Period,
			PeriodEnd: m.PeriodEnd, ReservationsInFlight: m.InFlight, Name: m.Budget,
		}
		if m.Shared != nil {
			s.Budget.Shared = &admin.SharedBudget{Name: m.Shared.Name, SpendUSD: m.Shared.SpentUSD, CapUSD: m.Shared.CapUSD}
		}
	}
	return s
}

func (d *daemon) getenv(k string) string {
	if d.opts.Env != nil {
		return d.opts.Env(k)
	}
	return os.Getenv(k)
}
