package hostwall

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os/exec"
	"strings"
)

// tools are the iptables front ends Apply and Remove drive, IPv4 then IPv6.
// Whatever backend they use (nft or legacy), they are the ones Docker uses
// on the same host, so the rules land in the tables Docker's own rules are
// in.
var tools = []string{"iptables", "ip6tables"}

// maxDuplicates bounds Remove's loop: each pass deletes one copy of the
// rule, and a rule inserted by hand several times is taken out too.
const maxDuplicates = 32

// Apply installs the drop rule for bridge in INPUT for IPv4 and IPv6. It is
// idempotent: a rule already present (checked with -C) is left alone, so
// running it at every boot or every deploy never stacks copies. It needs
// root. It tries both families and returns every failure joined.
func Apply(ctx context.Context, bridge string) error {
	if err := ValidBridge(bridge); err != nil {
		return err
	}
	var errs []error
	for _, tool := range tools {
		present, err := check(ctx, tool, bridge)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if present {
			continue
		}
		args := append([]string{"-w", "-I", "INPUT", "1"}, ruleSpec(bridge)...)
		if _, err := run(ctx, tool, args...); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// Remove deletes every copy of the drop rule for bridge, IPv4 and IPv6. A
// rule that is not there is not an error. It needs root.
func Remove(ctx context.Context, bridge string) error {
	if err := ValidBridge(bridge); err != nil {
		return err
	}
	var errs []error
	for _, tool := range tools {
		if err := removeAll(ctx, tool, bridge); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

func removeAll(ctx context.Context, tool, bridge string) error {
	for range maxDuplicates {
		present, err := check(ctx, tool, bridge)
		if err != nil || !present {
			return err
		}
		args := append([]string{"-w", "-D", "INPUT"}, ruleSpec(bridge)...)
		if _, err := run(ctx, tool, args...); err != nil {
			return err
		}
	}
	return fmt.Errorf("%s: more than %d copies of the %s rule for %s", tool, maxDuplicates, Tag, bridge)
}

// State says which families have the drop rule installed.
type State struct {
	IPv4, IPv6 bool
}

// Installed reports whether the drop rule for bridge is in INPUT, per
// family.
func Installed(ctx context.Context, bridge string) (State, error) {
	if err := ValidBridge(bridge); err != nil {
		return State{}, err
	}
	v4, err4 := check(ctx, tools[0], bridge)
	v6, err6 := check(ctx, tools[1], bridge)
	return State{IPv4: v4, IPv6: v6}, errors.Join(err4, err6)
}

// check runs `-C`: exit 0 means the rule exists, exit 1 means it does not;
// anything else (no permission, no such table, missing tool) is an error.
func check(ctx context.Context, tool, bridge string) (bool, error) {
	args := append([]string{"-w", "-C", "INPUT"}, ruleSpec(bridge)...)
	code, err := run(ctx, tool, args...)
	switch {
	case err == nil:
		return true, nil
	case code == 1:
		return false, nil
	}
	return false, err
}

// run executes tool with args (never through a shell; bridge names are
// validated before they get here) and returns its exit code. A non-zero
// exit is an error carrying the tool's output.
func run(ctx context.Context, tool string, args ...string) (int, error) {
	path, err := exec.LookPath(tool)
	if err != nil {
		return -1, fmt.Errorf("hostwall needs %s: %w", tool, err)
	}
	var out bytes.Buffer
	cmd := exec.CommandContext(ctx, path, args...)
	cmd.Stdout, cmd.Stderr = &out, &out
	err = cmd.Run()
	if err == nil {
		return 0, nil
	}
	var exit *exec.ExitError
	if errors.As(err, &exit) {
		return exit.ExitCode(), fmt.Errorf("%s %s: exit %d: %s", tool, strings.Join(args, " "), exit.ExitCode(), strings.TrimSpace(out.String()))
	}
	return -1, fmt.Errorf("%s %s: %w", tool, strings.Join(args, " "), err)
}
