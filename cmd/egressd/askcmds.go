package main

import (
	"fmt"
	"io"
	"net"
	"os"
	"os/user"
	"strconv"
	"time"

	"github.com/spf13/cobra"

	"github.com/egressd/egressd/internal/operator/ask"
	"github.com/egressd/egressd/internal/run/admin"
	"github.com/egressd/egressd/internal/shared/declog"
)

// adminFlags are the flags every admin-listener command takes.
type adminFlags struct{ url, tokenEnv string }

func (a *adminFlags) add(cmd *cobra.Command) {
	f := cmd.Flags()
	f.StringVar(&a.url, "admin", defaultAdminURL(), "admin listener URL")
	f.StringVar(&a.tokenEnv, "token-env", "EGRESSD_ADMIN_TOKEN", "env var holding the admin bearer token, if one is set")
}

func (a *adminFlags) token() string { return os.Getenv(a.tokenEnv) }

func newPendingCmd() *cobra.Command {
	var af adminFlags
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "pending [--json]",
		Short: "List the questions egressd is asking a person (ask:)",
		Long: `Pending lists the open questions of ask: (a request egressd holds, or
held, while it asks whether to allow its destination) with their IDs, and
the standing answers with their expiry. Answer with approve or deny.`,
		Example: `  egressd pending
  egressd pending --json | jq '.pending[].id'`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var l ask.PendingList
			if err := admin.GetJSON(cmd.Context(), af.url, ask.PathPending, af.token(), &l); err != nil {
				return fmt.Errorf("pending from %s: %w", af.url, err)
			}
			if asJSON {
				return writeJSON(cmd.OutOrStdout(), l)
			}
			printPending(cmd.OutOrStdout(), l)
			return nil
		},
	}
	af.add(cmd)
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the raw JSON")
	return cmd
}

// printPending writes one line per question and grant; hosts came from the
// agent and are escaped.
func printPending(w io.Writer, l ask.PendingList) {
	if len(l.Pending) == 0 {
		fmt.Fprintln(w, "no open questions")
	}
	for _, q := range l.Pending {
		fmt.Fprintf(w, "%s  %-40s %-8s %-16s from %s, asked %s, %d waiting, open until %s\n",
			q.ID, declog.Sanitize(q.Target()), q.Proto, q.Reason, declog.Sanitize(q.Client),
			q.Asked.Local().Format(time.TimeOnly), q.Waiting, q.Expires.Local().Format(time.TimeOnly))
	}
	for _, g := range l.Grants {
		what := "allowed"
		if g.Deny {
			what = "denied "
		}
		fmt.Fprintf(w, "%s  %-40s until %s (%s, by %s)\n", what,
			declog.Sanitize(net.JoinHostPort(g.Host, strconv.Itoa(int(g.Port)))),
			g.Until.Local().Format("2006-01-02 15:04:05"), declog.Sanitize(g.Kind), declog.Sanitize(g.By))
	}
}

func newApproveCmd() *cobra.Command {
	var af adminFlags
	var forD time.Duration
	var always bool
	cmd := &cobra.Command{
		Use:   "approve ID [--for DURATION | --always]",
		Short: "Allow the destination of an open question: once, for a while, or always",
		Long: `Approve answers an open question (see egressd pending). Without a flag
it allows once: the requests waiting now, and new ones for a minute. --for
grants the destination until then (kept across restarts, shown by status
and explain); --always adds it to policy.yaml as an allow: entry with a
comment saying who approved it and when.`,
		Example: `  egressd approve 3f9a01c2
  egressd approve 3f9a01c2 --for 8h
  egressd approve 3f9a01c2 --always`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if always && forD != 0 {
				return fmt.Errorf("give --for or --always, not both")
			}
			req := ask.AnswerRequest{ID: args[0], Always: always, By: cliUser()}
			if forD != 0 {
				req.For = forD.String()
			}
			return answerCmd(cmd, af, ask.PathApprove, req)
		},
	}
	af.add(cmd)
	cmd.Flags().DurationVar(&forD, "for", 0, "allow until this long from now, e.g. 1h")
	cmd.Flags().BoolVar(&always, "always", false, "add an allow: entry to policy.yaml")
	return cmd
}

func newDenyCmd() *cobra.Command {
	var af adminFlags
	cmd := &cobra.Command{
		Use:     "deny ID",
		Short:   "Refuse the destination of an open question (remembered for ask.remember_deny)",
		Example: `  egressd deny 3f9a01c2`,
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return answerCmd(cmd, af, ask.PathDeny, ask.AnswerRequest{ID: args[0], By: cliUser()})
		},
	}
	af.add(cmd)
	return cmd
}

func answerCmd(cmd *cobra.Command, af adminFlags, path string, req ask.AnswerRequest) error {
	var res ask.AnswerResult
	if err := admin.PostJSON(cmd.Context(), af.url, path, af.token(), req, &res); err != nil {
		return err
	}
	fmt.Fprintln(cmd.OutOrStdout(), res.Outcome)
	return nil
}

// cliUser names who answered from the command line, for the grant's "by".
func cliUser() string {
	if u, err := user.Current(); err == nil && u.Username != "" {
		return "cli:" + u.Username
	}
	return "cli"
}
