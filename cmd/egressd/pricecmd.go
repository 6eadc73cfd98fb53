package main

import (
	"fmt"
	"maps"
	"slices"
	"text/tabwriter"

	"github.com/egressd/egressd/internal/shared/meter"
	"github.com/spf13/cobra"
)

func newPricesCmd() *cobra.Command {
	var config string
	cmd := &cobra.Command{
		Use:   "prices [--config POLICY]",
		Short: "Show the model prices and tool fees the gateway reserves and charges",
		Long: `Prices prints every model price in force: the table egressd ships (dated)
with the policy's budget.prices entries in place of the rows they name, in
USD per million tokens, and the per-use fees of provider-run tools. A
provider's own reported cost (OpenRouter's usage.cost) still wins when a
call settles.`,
		Example: "  egressd prices --config policy.yaml",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			p, err := loadPolicy(config)
			if err != nil {
				return err
			}
			budget := p.Config().Budget
			out := cmd.OutOrStdout()
			fmt.Fprintf(out, "model prices, USD per million tokens (shipped table checked %s; policy entries replace a row)\n", meter.DefaultPricesDate)
			w := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
			fmt.Fprintln(w, "MODEL\tINPUT\tCACHED INPUT\tCACHE WRITE 5M\tCACHE WRITE 1H\tOUTPUT\tPRIORITY\tSOURCE")
			for _, r := range meter.PricesInForce(budget) {
				prio := "refused"
				if r.Price.Priority > 0 {
					prio = fmt.Sprintf("×%g", r.Price.Priority)
				}
				fmt.Fprintf(w, "%s\t%g\t%g\t%g\t%g\t%g\t%s\t%s\n", r.Model, r.Price.Input, r.Price.CacheRead,
					r.Price.CacheWrite, r.Price.CacheWrite1h, r.Price.Output, prio, r.Source)
			}
			w.Flush()
			fmt.Fprintln(out, "\nprovider-run tool fees, USD per use (budget.tool_fees replaces a row)")
			w = tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
			fmt.Fprintln(w, "TOOL\tFEE\tSOURCE")
			fees := maps.Clone(meter.DefaultToolFees)
			for k, v := range budget.ToolFees {
				fees[k] = v
			}
			for _, k := range slices.Sorted(maps.Keys(fees)) {
				src := "default"
				if _, ok := budget.ToolFees[k]; ok {
					src = "policy"
				}
				fmt.Fprintf(w, "%s\t%g\t%s\n", k, fees[k], src)
			}
			return w.Flush()
		},
	}
	cmd.Flags().StringVarP(&config, "config", "c", "", "policy file (default: the built-in policy)")
	return cmd
}
