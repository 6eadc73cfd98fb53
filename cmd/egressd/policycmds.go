package main

import (
	"errors"
	"fmt"
	"io"
	"net/netip"
	"strings"
	"time"

	"github.com/egressd/egressd/internal/shared/vocab"

	"strconv"

	"github.com/egressd/egressd/internal/operator/ask"

	"github.com/egressd/egressd/internal/edge/gateway"
	"github.com/egressd/egressd/policy"
	"github.com/spf13/cobra"
)

func newCheckCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "check POLICY",
		Short: "Validate a policy file",
		Long: `Validate a policy file without running anything. Prints one summary line and
exits 0 when it is valid; otherwise prints every problem with its key path
and line, and exits 1. Environment overrides (EGRESSD_*) apply, as in serve.`,
		Example: "  egressd check policy.yaml\n  egressd check /etc/egressd/policy.yaml && systemctl reload egressd",
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			p, err := policy.Load(args[0])
			if err != nil {
				fmt.Fprintln(cmd.ErrOrStderr(), err)
				return exitError{1}
			}
			fmt.Fprintf(cmd.OutOrStdout(), "ok: %s: %s\n", args[0], p.Summary())
			return nil
		},
	}
}

func newExplainCmd() *cobra.Command {
	var config, method string
	cmd := &cobra.Command{
		Use:   "explain [--config POLICY] TARGET | api:ROUTE METHOD PATH",
		Short: "Say what the policy decides for a destination, and why",
		Long: `Explain asks the policy the same question the proxy asks and prints the
verdict, the reason and the rule (or the line that would grant it).
TARGET is host[:port] (a CONNECT, port 443 by default) or an http:// or
https:// URL. Names are not resolved: the addresses a name resolves to are
checked again when egressd dials them. For an apis: route, give
api:ROUTE, the method and the path after /ROUTE (with its query, if any):
the rules are matched on the canonical path, as the gateway does. A TARGET
gateway:<provider>/<path> asks the gateway instead: whether a call to that
path is forwarded, where, and how it is billed and reserved (every method
the endpoint table allows, or --method). With ask: on, the standing
answers a person gave (egressd pending) count too, shown with their
expiry. Exit status is 0 when allowed, 1 when denied.`,
		Example: `  egressd explain --config policy.yaml api.github.com
  egressd explain --config policy.yaml http://pypi.org/simple/
  egressd explain --config policy.yaml 169.254.169.254:80
  egressd explain --config policy.yaml gateway:openrouter/api/v1/chat/completions
  egressd explain --config policy.yaml --method DELETE gateway:openai/v1/responses/resp_1
  egressd explain --config policy.yaml api:github GET /repos/acme/app/issues
  egressd explain --config policy.yaml api:git GET '/acme/app.git/info/refs?service=git-receive-pack'`,
		Args: cobra.RangeArgs(1, 3),
		RunE: func(cmd *cobra.Command, args []string) error {
			p, err := loadPolicy(config)
			if err != nil {
				return err
			}
			if route, ok := strings.CutPrefix(args[0], "api:"); ok {
				return explainAPI(cmd, p, route, args[1:])
			}
			if len(args) != 1 {
				return fmt.Errorf("explain takes one TARGET (or api:ROUTE METHOD PATH)")
			}
			if prov, path, err := gateway.ParseGatewayTarget(args[0]); !errors.Is(err, gateway.ErrNotGateway) {
				if err != nil {
					return err
				}
				return explainGateway(cmd.OutOrStdout(), p, prov, method, path)
			}
			p = withGrants(cmd.ErrOrStderr(), p)
			req, err := policy.ParseTarget(args[0])
			if err != nil {
				return err
			}
			d := decideTarget(p, req)
			detail := d.Rule.String()
			if d.Verdict != vocab.Allow {
				if hint := policy.Hint(req, d); hint != "" {
					detail = "(" + hint + ")"
				}
			}
			fmt.Fprintf(cmd.OutOrStdout(), "%-10s %s  %s  %s\n", d.Verdict, hostPort(req), d.Reason, detail)
			if !d.Verdict.Allowed() {
				return exitError{1}
			}
			return nil
		},
	}
	cmd.Flags().StringVarP(&config, "config", "c", "", "policy file (default: the built-in deny-all policy)")
	cmd.Flags().StringVar(&method, "method", "", "for gateway: targets, the HTTP method (default: every method the endpoint table allows)")
	return cmd
}

// withGrants adds the operator's standing answers (ask:) from the grants
// file a running egressd keeps; an unreadable file is reported and ignored.
func withGrants(stderr io.Writer, p *policy.Policy) *policy.Policy {
	if p.Config().Ask == nil {
		return p
	}
	g, err := ask.LoadGrants(p.Config(), time.Now())
	if err != nil {
		fmt.Fprintf(stderr, "egressd: ignoring the ask: grants: %v\n", err)
		return p
	}
	return p.WithOverlay(policy.NewOverlay(g))
}

// explainGateway prints one line per method for a gateway path.
func explainGateway(w io.Writer, p *policy.Policy, prov, method, path string) error {
	routes, err := gateway.Explain(p.Config().Providers, prov, method, path)
	if err != nil {
		return err
	}
	denied := false
	for _, r := range routes {
		target := "gateway:" + prov + r.Path
		if !r.Forwarded {
			denied = true
			fmt.Fprintf(w, "%-10s %s %s  %s  (%s)\n", vocab.Deny, r.Method, target, r.Reason, gatewayHint(r.Reason, prov))
			continue
		}
		fmt.Fprintf(w, "%-10s %s %s  %s  -> %s  %s; billed: %s; reserved: %s\n",
			vocab.Allow, r.Method, target, r.Reason, r.Upstream, r.Endpoint, r.Billing, r.Reservation)
	}
	if denied {
		return exitError{1}
	}
	return nil
}

func gatewayHint(r vocab.Reason, prov string) string {
	switch r {
	case vocab.ReasonEndpointNotAllowed:
		return "not metered: the gateway forwards only its endpoint table; add it under providers." + prov +
			".endpoints as an unmetered GET or a POST with per_call_usd"
	case vocab.ReasonNotAllowlisted:
		return "no provider " + strconv.Quote(prov) + " under providers:"
	}
	return "not a path the gateway forwards"
}

// decideTarget is Decide plus, for an IP literal that a rule grants, the
// address check the proxy would make before dialing.
func decideTarget(p *policy.Policy, req policy.Request) policy.Decision {
	d := p.Decide(req)
	if !d.Verdict.Allowed() {
		return d
	}
	if _, ip, err := policy.NormalizeHost(req.Host); err == nil && ip.IsValid() {
		if ad := p.CheckAddr(ip); !ad.Verdict.Allowed() {
			return ad
		}
	}
	return d
}

func hostPort(req policy.Request) string {
	if a, err := netip.ParseAddr(req.Host); err == nil && a.Is6() {
		return fmt.Sprintf("[%s]:%d", req.Host, req.Port)
	}
	return fmt.Sprintf("%s:%d", req.Host, req.Port)
}

// loadPolicy loads path, or the built-in default (with environment
// overrides) when path is empty.
func loadPolicy(path string) (*policy.Policy, error) {
	if path == "" {
		return policy.LoadDefault()
	}
	p, err := policy.Load(path)
	if err != nil {
		var errs policy.Errors
		if errors.As(err, &errs) {
			return nil, fmt.Errorf("%s is not valid:\n%w", path, err)
		}
		return nil, err
	}
	return p, nil
}

// explainAPI decides one call on an apis: route as the gateway would.
func explainAPI(cmd *cobra.Command, p *policy.Policy, route string, args []string) error {
	if len(args) != 2 {
		return fmt.Errorf("explain api:%s needs METHOD and PATH, e.g. explain api:%s GET /repos/acme/app/issues", route, route)
	}
	if p.API(route) == nil {
		return fmt.Errorf("the policy has no apis: route %q", route)
	}
	method := args[0]
	path, query, _ := strings.Cut(args[1], "?")
	d := p.DecideAPI(route, method, path, query)
	detail := d.RuleText()
	switch {
	case d.Reason == vocab.ReasonBadRequest:
		detail = "(" + d.Detail + ")"
	case d.Verdict != vocab.Allow:
		detail = "(" + policy.APIHint(d, method, query) + ")"
	}
	shown := d.Path
	if shown == "" {
		shown = path
	}
	fmt.Fprintf(cmd.OutOrStdout(), "%-10s api:%s %s %s  %s  %s\n", d.Verdict, strings.ToLower(route), method, shown, d.Reason, detail)
	if d.Verdict != vocab.Allow {
		return exitError{1}
	}
	return nil
}
