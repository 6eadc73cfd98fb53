package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"

	"github.com/egressd/egressd/internal/run/daemon"
	"github.com/spf13/cobra"
)

func newServeCmd() *cobra.Command {
	var config string
	cmd := &cobra.Command{
		Use:   "serve [--config POLICY]",
		Short: "Run the DNS allow-list, the proxy, the gateway and the admin listener",
		Long: `Serve runs egressd until SIGTERM or SIGINT, then drains open connections
within timeouts.shutdown. The policy file is watched: a valid edit applies
within a second (SIGHUP forces a reload), a broken one is logged and the
last good policy stays. Without --config egressd runs the built-in
default: loopback listeners and an empty allow-list, so everything is
denied. Decision log lines go to stdout (and log.file); operational
messages go to stderr.`,
		Example: `  egressd serve
  egressd serve --config /etc/egressd/policy.yaml
  EGRESSD_LISTEN_PROXY=0.0.0.0:3128 egressd serve -c policy.yaml`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx, stop := signal.NotifyContext(cmd.Context(), syscall.SIGTERM, syscall.SIGINT)
			defer stop()
			return daemon.Run(ctx, daemon.Options{ConfigPath: config, Reload: hangups(ctx), Version: version})
		},
	}
	cmd.Flags().StringVarP(&config, "config", "c", "", "policy file (default: the built-in deny-all policy)")
	return cmd
}

// hangups turns SIGHUP into reload requests until ctx ends.
func hangups(ctx context.Context) <-chan struct{} {
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGHUP)
	out := make(chan struct{})
	go func() {
		defer signal.Stop(sig)
		for {
			select {
			case <-ctx.Done():
				return
			case <-sig:
				select {
				case out <- struct{}{}:
				case <-ctx.Done():
					return
				}
			}
		}
	}()
	return out
}
