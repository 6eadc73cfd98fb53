package main

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/egressd/egressd/internal/cli/suggest"
	"github.com/egressd/egressd/internal/shared/declog"
	"github.com/egressd/egressd/policy"
	"github.com/spf13/cobra"
)

// defaultLogFile is where the compose setup writes the decision log.
const defaultLogFile = "/var/log/egressd/decisions.log"

// logFile picks the decision log: --file, else log.file of --config, else
// $EGRESSD_LOG_FILE, else the compose default.
func logFile(file, config string) (string, error) {
	if file != "" {
		return file, nil
	}
	if config != "" {
		p, err := loadPolicy(config)
		if err != nil {
			return "", err
		}
		if f := p.Config().Log.File; f != "" {
			return f, nil
		}
		return "", fmt.Errorf("%s has no log.file: egressd logs decisions to stdout only; pass --file or --admin", config)
	}
	if f := os.Getenv("EGRESSD_LOG_FILE"); f != "" {
		return f, nil
	}
	return defaultLogFile, nil
}

// listenIPs are the addresses egressd listens on by name, so that suggest
// never proposes granting egressd itself; a wildcard listener names none.
func listenIPs(l policy.ListenConfig) []netip.Addr {
	var out []netip.Addr
	for _, a := range []string{l.Proxy, l.DNS, l.Gateway, l.Admin} {
		if ap, err := netip.ParseAddrPort(a); err == nil && !ap.Addr().IsUnspecified() {
			out = append(out, ap.Addr())
		}
	}
	return out
}

// colorOut reports whether stdout is a terminal that wants colour.
func colorOut() bool {
	if os.Getenv("NO_COLOR") != "" {
		return false
	}
	fi, err := os.Stdout.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}

func signalContext(parent context.Context) (context.Context, context.CancelFunc) {
	return signal.NotifyContext(parent, syscall.SIGTERM, syscall.SIGINT)
}

func newTailCmd() *cobra.Command {
	var o declog.TailOptions
	var file, config, adminURL, tokenEnv string
	var noColor bool
	cmd := &cobra.Command{
		Use:   "tail [--denied] [-f] [--json] [--file PATH | --admin URL]",
		Short: "Show what the agent tried: the decision log, for a person",
		Long: `Tail prints the decision log in aligned columns (colour on a terminal) or,
with --json, as the raw JSON lines. --denied shows only denials and
would-denies (mode: report). -f keeps following, across rotation. With
--admin it follows the live stream of a running egressd instead of a file.`,
		Example: `  egressd tail --denied -f
  egressd tail --file /var/log/egressd/decisions.log -n 50
  egressd tail -f --admin http://127.0.0.1:9090
  docker compose exec egressd egressd tail --denied -f`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx, stop := signalContext(cmd.Context())
			defer stop()
			o.Out = cmd.OutOrStdout()
			o.Color = !noColor && !o.JSON && colorOut()
			if adminURL != "" {
				o.Stream = adminStream(adminURL, tokenEnv, o.DeniedOnly)
			} else {
				f, err := logFile(file, config)
				if err != nil {
					return err
				}
				o.File = f
			}
			err := declog.Tail(ctx, o)
			if ctx.Err() != nil {
				return nil // interrupted while following: a normal end
			}
			return err
		},
	}
	f := cmd.Flags()
	f.BoolVar(&o.DeniedOnly, "denied", false, "only denials and would-denies")
	f.BoolVarP(&o.Follow, "follow", "f", false, "keep printing new entries")
	f.BoolVar(&o.JSON, "json", false, "print the raw JSON lines")
	f.IntVarP(&o.Lines, "lines", "n", 0, "past entries to show first (0: all, or 10 with -f)")
	f.StringVar(&file, "file", "", "decision log file (default: log.file of --config, $EGRESSD_LOG_FILE, or "+defaultLogFile+")")
	f.StringVarP(&config, "config", "c", "", "policy file whose log.file to read")
	f.StringVar(&adminURL, "admin", "", "follow a running egressd's admin stream, e.g. http://127.0.0.1:9090")
	f.StringVar(&tokenEnv, "token-env", "EGRESSD_ADMIN_TOKEN", "env var holding the admin bearer token, if one is set")
	f.BoolVar(&noColor, "no-color", false, "never colour the output")
	return cmd
}

func newSuggestCmd() *cobra.Command {
	var file, config string
	var since time.Duration
	cmd := &cobra.Command{
		Use:   "suggest [--since 24h] [--file PATH]",
		Short: "Propose allow: entries from what was denied",
		Long: `Suggest reads denials and would-denies from the decision log and prints
ready-to-paste allow: entries, most frequent first, with counts and first
and last seen. Subdomains are grouped into "*.example.com" only when
several distinct ones were seen. It never edits the policy: read each
entry, and grant only what the agent should really reach. Together with
mode: report this is a way to learn an allow-list.`,
		Example: `  egressd suggest
  egressd suggest --since 1h --file /var/log/egressd/decisions.log`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			path, err := logFile(file, config)
			if err != nil {
				return err
			}
			var from time.Time
			if since > 0 {
				from = time.Now().Add(-since)
			}
			c := suggest.NewCollector(from)
			if config != "" {
				p, err := loadPolicy(config)
				if err != nil {
					return err
				}
				c.SetSelf(listenIPs(p.Config().Listen))
			}
			err = declog.ReadFiles(path, func(e declog.Entry) error { c.Add(e); return nil })
			if err != nil {
				return fmt.Errorf("read decision log: %w", err)
			}
			return suggest.Print(cmd.OutOrStdout(), c.Report())
		},
	}
	f := cmd.Flags()
	f.DurationVar(&since, "since", 24*time.Hour, "only entries this recent (0: the whole log)")
	f.StringVar(&file, "file", "", "decision log file (default: log.file of --config, $EGRESSD_LOG_FILE, or "+defaultLogFile+")")
	f.StringVarP(&config, "config", "c", "", "policy file whose log.file to read")
	return cmd
}
