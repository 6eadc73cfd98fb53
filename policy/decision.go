// Package policy owns egressd's rules: the policy.yaml schema, strict loading
// and validation, the host matcher, IP classification and the one pure
// decision function, Decide. It does no I/O beyond reading the policy file;
// every edge (proxy, DNS, gateway) asks it the same question and acts on the
// same answer.
package policy

import (
	"net/netip"

	"github.com/egressd/egressd/internal/shared/vocab"
)

// Request is the question an edge asks. Host is the target as the client
// wrote it (a name or an IP literal in any spelling); Decide normalises it.
type Request struct {
	Client netip.Addr
	Host   string
	Port   uint16
	Proto  vocab.Proto
}

// Decision is the one answer every downstream reads: the 403 body, the log
// line, the metric label and `egressd explain`.
type Decision struct {
	Verdict vocab.Verdict
	Reason  vocab.Reason
	// Rule is the allow rule that matched (or, for port_not_allowed, the rule
	// that granted the host on other ports); nil when none did.
	Rule *Rule
}
