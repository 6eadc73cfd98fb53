package main

import (
	"context"
	"fmt"
	"os"
	"time"

	"github.com/egressd/egressd/internal/cli/hostwall"
	"github.com/egressd/egressd/internal/cli/probe"
	"github.com/spf13/cobra"
)

func newProbeCmd() *cobra.Command {
	var o probe.Options
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "probe [flags]",
		Short: "Audit containment from inside the agent's network",
		Long: `Probe runs from inside the agent's network (same image, on hermes-net only)
and checks that the wall holds: no route to the host's addresses or
other networks, no direct egress, egressd's proxy denying an ungranted
name with 403, its DNS answering NXDOMAIN quickly, its admin port
unreachable. It prints PASS / HOLE / INFO with a one-line fix for each
hole and exits 1 when there is any hole.`,
		Example: `  docker compose run --rm probe
  egressd probe --proxy http://172.30.0.2:3128 --dns 172.30.0.2:53 --admin 172.30.0.2:9090 \
      --host gateway --direct 1.1.1.1:443 --direct 8.8.8.8:53 --bridge hermes0`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx, stop := signalContext(cmd.Context())
			defer stop()
			rep, err := probe.Run(ctx, o)
			if err != nil {
				return err
			}
			if asJSON {
				err = rep.JSON(cmd.OutOrStdout())
			} else {
				err = rep.Print(cmd.OutOrStdout())
			}
			if err != nil {
				return err
			}
			if !rep.OK() {
				return exitError{1}
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&o.Proxy, "proxy", "", "egressd's proxy URL, e.g. http://172.30.0.2:3128")
	f.StringSliceVar(&o.DNS, "dns", nil, "DNS servers (ip:port) that must answer NXDOMAIN for an ungranted name (repeatable)")
	f.StringVar(&o.Admin, "admin", "", "egressd's admin address (ip:port), which must be unreachable")
	f.StringSliceVar(&o.Hosts, "host", nil, `host addresses to try ("gateway" = the default route's gateway; repeatable)`)
	f.IntSliceVar(&o.Ports, "ports", nil, "ports to try on hosts and in the lateral scan (default: 22,80,443,2375,2376,3306,5432,6379,8080,9090)")
	f.StringSliceVar(&o.Direct, "direct", nil, "ip:port targets that must be unreachable without the proxy (repeatable)")
	f.StringVar(&o.DeniedName, "denied-name", "", "a name the policy does not grant (default: a reserved .invalid name)")
	f.StringVar(&o.Lateral, "lateral", "", `CIDR to scan for other hosts, or "auto" for the agent's own subnet`)
	f.StringVar(&o.Bridge, "bridge", "", "the agent network's bridge name on the host, for the fix text")
	f.DurationVar(&o.Timeout, "timeout", time.Second, "per TCP attempt")
	f.BoolVar(&asJSON, "json", false, "print the report as JSON")
	return cmd
}

func newHostwallCmd() *cobra.Command {
	var bridge string
	var apply, remove, nft bool
	cmd := &cobra.Command{
		Use:   "hostwall --bridge NAME [--apply | --remove] [--nft]",
		Short: "Print (or install) host rules that drop the agent bridge's traffic to the host",
		Long: `On an internal Docker network the agent still reaches every address the
host listens on (sshd, the reverse proxy on 80/443) because those packets
go through INPUT, not FORWARD. Hostwall writes the rules that drop
everything arriving from the agent's bridge to the host. The agent needs
nothing from the host: its DNS goes through Docker's resolver in its own
namespace to egressd. Without flags it prints the iptables commands (or,
with --nft, an nftables ruleset); --apply installs them idempotently and
--remove takes them out (both as root).`,
		Example: `  egressd hostwall --bridge hermes0
  egressd hostwall --bridge hermes0 --nft > /etc/nftables.d/egressd-hostwall.nft
  sudo egressd hostwall --bridge hermes0 --apply`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if apply && remove {
				return fmt.Errorf("--apply and --remove exclude each other")
			}
			ctx, cancel := context.WithTimeout(cmd.Context(), 30*time.Second)
			defer cancel()
			switch {
			case apply:
				if err := hostwall.Apply(ctx, bridge); err != nil {
					return err
				}
				fmt.Fprintf(cmd.OutOrStdout(), "host wall installed for bridge %s\n", bridge)
				return nil
			case remove:
				if err := hostwall.Remove(ctx, bridge); err != nil {
					return err
				}
				fmt.Fprintf(cmd.OutOrStdout(), "host wall removed for bridge %s\n", bridge)
				return nil
			}
			form := hostwall.IPTables
			if nft {
				form = hostwall.NFTables
			}
			lines, err := hostwall.Rules(bridge, form)
			if err != nil {
				return err
			}
			for _, l := range lines {
				fmt.Fprintln(cmd.OutOrStdout(), l)
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&bridge, "bridge", "", "the agent network's bridge interface (compose names it hermes0)")
	f.BoolVar(&apply, "apply", false, "install the rules now (idempotent)")
	f.BoolVar(&remove, "remove", false, "remove the rules")
	f.BoolVar(&nft, "nft", false, "print an nftables ruleset instead of iptables commands")
	cmd.MarkFlagRequired("bridge")
	return cmd
}

func newHealthCmd() *cobra.Command {
	var addr, tokenEnv string
	cmd := &cobra.Command{
		Use:   "health [--admin ADDR]",
		Short: "Exit 0 when the local egressd's admin listener is healthy (Docker HEALTHCHECK)",
		Long: `Health asks egressd's admin listener for /healthz. A FROM scratch image has
no curl, so the binary checks itself.`,
		Example: "  egressd health\n  egressd health --admin 127.0.0.1:9090",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx, cancel := context.WithTimeout(cmd.Context(), 4*time.Second)
			defer cancel()
			if err := probe.Health(ctx, addr, os.Getenv(tokenEnv)); err != nil {
				fmt.Fprintln(cmd.ErrOrStderr(), "unhealthy:", err)
				return exitError{1}
			}
			return nil
		},
	}
	def := os.Getenv("EGRESSD_LISTEN_ADMIN")
	if def == "" {
		def = "127.0.0.1:9090"
	}
	cmd.Flags().StringVar(&addr, "admin", def, "admin listener address (default $EGRESSD_LISTEN_ADMIN or 127.0.0.1:9090)")
	cmd.Flags().StringVar(&tokenEnv, "token-env", "EGRESSD_ADMIN_TOKEN", "env var holding the admin bearer token, if one is set")
	return cmd
}
