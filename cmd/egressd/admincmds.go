package main

import (
	"context"
	"fmt"
	"os"
	"time"

	"github.com/egressd/egressd/internal/run/admin"
	"github.com/egressd/egressd/internal/shared/declog"
	"github.com/spf13/cobra"
)

// adminStream follows a running egressd's live decision stream.
func adminStream(url, tokenEnv string, denied bool) func(ctx context.Context, fn func(declog.Entry) error) error {
	token := os.Getenv(tokenEnv)
	return func(ctx context.Context, fn func(declog.Entry) error) error {
		if denied {
			return admin.StreamDenied(ctx, url, token, fn)
		}
		return admin.Stream(ctx, url, token, fn)
	}
}

// defaultAdminURL is the admin listener of a local egressd.
func defaultAdminURL() string {
	if a := os.Getenv("EGRESSD_LISTEN_ADMIN"); a != "" {
		return "http://" + a
	}
	return "http://127.0.0.1:9090"
}

func newStatusCmd() *cobra.Command {
	var url, tokenEnv string
	var asJSON, noColor bool
	cmd := &cobra.Command{
		Use:   "status [--admin URL]",
		Short: "One screen: policy in force, recent denials, spend against the cap",
		Long: `Status asks a running egressd's admin listener and prints, for a person:
which policy is loaded and when, the last reload error, denials in the last
hour by host, and spend against the cap as a bar with the period's reset
time.`,
		Example: `  egressd status
  docker compose exec egressd egressd status
  egressd status --admin http://127.0.0.1:9090 --json`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx, cancel := context.WithTimeout(cmd.Context(), 10*time.Second)
			defer cancel()
			st, err := admin.FetchStatus(ctx, url, os.Getenv(tokenEnv))
			if err != nil {
				return fmt.Errorf("status from %s: %w", url, err)
			}
			if asJSON {
				return writeJSON(cmd.OutOrStdout(), st)
			}
			return admin.PrintStatus(cmd.OutOrStdout(), st, !noColor && colorOut())
		},
	}
	f := cmd.Flags()
	f.StringVar(&url, "admin", defaultAdminURL(), "admin listener URL")
	f.StringVar(&tokenEnv, "token-env", "EGRESSD_ADMIN_TOKEN", "env var holding the admin bearer token, if one is set")
	f.BoolVar(&asJSON, "json", false, "print the raw status JSON")
	f.BoolVar(&noColor, "no-color", false, "never colour the output")
	return cmd
}
