package main

import (
	"fmt"
	"runtime/debug"

	"github.com/spf13/cobra"
)

func newRootCmd() *cobra.Command {
	root := &cobra.Command{
		Use:   "egressd",
		Short: "The only way out for an AI agent: allow-list DNS, filtering proxy, metered LLM gateway",
		Long: `egressd sits between an AI agent on an isolated network and everything else.
Names not granted in policy.yaml get NXDOMAIN, requests to them get 403,
private and metadata addresses are never dialed, and LLM spend stops at a
hard cap. Without --config it runs on loopback with an empty allow-list.`,
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.AddCommand(
		newServeCmd(),
		newCheckCmd(),
		newExplainCmd(),
		newPricesCmd(),
		newVersionCmd(),
		newTailCmd(),
		newSuggestCmd(),
		newStatusCmd(),
		newPendingCmd(),
		newApproveCmd(),
		newDenyCmd(),
		newProbeCmd(),
		newHostwallCmd(),
		newHealthCmd(),
		newLedgerCmd(),
	)
	return root
}

func newVersionCmd() *cobra.Command {
	return &cobra.Command{
		Use:     "version",
		Short:   "Print egressd's version",
		Example: "  egressd version",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			v := version
			if bi, ok := debug.ReadBuildInfo(); ok {
				fmt.Fprintf(cmd.OutOrStdout(), "egressd %s (%s)\n", v, bi.GoVersion)
				return nil
			}
			fmt.Fprintf(cmd.OutOrStdout(), "egressd %s\n", v)
			return nil
		},
	}
}
