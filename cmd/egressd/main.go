// Command egressd is the only way out for an AI agent on an isolated
// network: an allow-list DNS server, a filtering HTTP/CONNECT proxy and a
// metered LLM gateway, all asking one policy. This package holds commands
// only: flags and wiring; the logic lives in the packages it calls.
package main

import (
	"errors"
	"fmt"
	"os"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

// exitError carries a process exit code through cobra without printing
// usage, for commands whose failure is an answer (check, probe).
type exitError struct{ code int }

func (e exitError) Error() string { return fmt.Sprintf("exit %d", e.code) }

func main() {
	root := newRootCmd()
	if err := root.Execute(); err != nil {
		var ee exitError
		if errors.As(err, &ee) {
			os.Exit(ee.code)
		}
		fmt.Fprintln(os.Stderr, "egressd:", err)
		os.Exit(1)
	}
}
