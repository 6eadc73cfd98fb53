package main

import (
	"fmt"

	"github.com/egressd/egressd/internal/shared/meter"
	"github.com/spf13/cobra"
)

func newLedgerCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "ledger",
		Short: "Work on the spend ledger",
	}
	cmd.AddCommand(newLedgerMigrateCmd())
	return cmd
}

func newLedgerMigrateCmd() *cobra.Command {
	var config, from, to, path string
	cmd := &cobra.Command{
		Use:   "migrate --from file --to postgres --config POLICY",
		Short: "Move a file ledger's spend into the PostgreSQL store",
		Long: `Migrate moves the file ledger (budget.ledger, or --ledger) into the
PostgreSQL store the policy names (budget.store: postgres, budget.dsn_env,
budget.name): this period's spend to the nano-dollar, the lifetime total and
the per-model breakdown, in one transaction; calls the file held in flight
are charged in full, as a restart would. With budget.shared the spend counts
against the shared cap too. The file is left as it is. A budget the store
already holds is refused, so running it twice cannot count spend twice.
Stop the egressd that writes the file first.`,
		Example: "  EGRESSD_BUDGET_DSN=postgres://egressd@db/egressd egressd ledger migrate --from file --to postgres --config policy.yaml",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if from != "file" || to != "postgres" {
				return fmt.Errorf("ledger migrate: --from %q --to %q: only --from file --to postgres is supported", from, to)
			}
			if config == "" {
				return fmt.Errorf("ledger migrate: --config is required: the policy names the store and the budget")
			}
			p, err := loadPolicy(config)
			if err != nil {
				return err
			}
			b := p.Config().Budget
			if path == "" {
				path = b.Ledger
			}
			res, err := meter.MigrateToShared(path, b, meter.Options{})
			if err != nil {
				return fmt.Errorf("ledger migrate: %w", err)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "migrated %s to budget %q: $%.9f spent this %s (from %s), $%.9f lifetime, %d models",
				path, res.Budget, res.SpentUSD, res.Period, res.PeriodStart.Format("2006-01-02"), res.LifetimeUSD, res.Models)
			if res.InFlightCalls > 0 {
				fmt.Fprintf(cmd.OutOrStdout(), "; %d calls in flight charged in full ($%.9f)", res.InFlightCalls, res.InFlightUSD)
			}
			fmt.Fprintln(cmd.OutOrStdout())
			return nil
		},
	}
	cmd.Flags().StringVarP(&config, "config", "c", "", "policy file naming the postgres store (budget.store, dsn_env, name)")
	cmd.Flags().StringVar(&from, "from", "", "source store: file")
	cmd.Flags().StringVar(&to, "to", "", "destination store: postgres")
	cmd.Flags().StringVar(&path, "ledger", "", "file ledger to read (default: the policy's budget.ledger)")
	return cmd
}
