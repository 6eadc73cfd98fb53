package policy

import (
	"strings"

	"github.com/egressd/egressd/internal/shared/vocab"
)

// MaxPhrase bounds StatusPhrase in bytes. Clients print the reason phrase
// on one line of an error; long enough for a host:port and the reason,
// short enough that no client wraps or cuts it.
const MaxPhrase = 120

// StatusPhrase is the HTTP reason phrase of every refusal egressd answers:
// "egressd <reason>: <short hint>", e.g. "egressd not_allowlisted:
// denied.test:443 is not granted". Clients that show no response body (a
// CONNECT refusal's body is never shown) still print the status line, so
// the reason token reaches whoever reads the client's error.
//
// target is the request's host:port ("" when it did not parse); detail,
// when given, replaces the per-reason hint (a bad request's own words).
// The result is printable ASCII without CR or LF (anything else becomes
// '?') and at most MaxPhrase bytes, cut at a word with " ...".
func StatusPhrase(r vocab.Reason, target, detail string) string {
	hint := detail
	if hint == "" {
		hint = shortHint(r, target)
	}
	return clampPhrase("egressd " + r.String() + ": " + hint)
}

// shortHint says in a few words why target was refused; the body and the
// log line carry the grant to add.
func shortHint(r vocab.Reason, target string) string {
	if target == "" {
		target = "the target"
	}
	switch r {
	case vocab.ReasonNotAllowlisted:
		return target + " is not granted"
	case vocab.ReasonPortNotAllowed:
		return target + ": the host is granted, this port is not"
	case vocab.ReasonIPLiteralNotAllowed:
		return target + " is an IP literal without a cidr grant"
	case vocab.ReasonPrivateAddress:
		return target + " is or resolves to a private address"
	case vocab.ReasonMetadataAddress:
		return target + " is a cloud metadata address"
	case vocab.ReasonSelfAddress:
		return target + " is egressd itself"
	case vocab.ReasonDeniedNetwork:
		return target + " is in networks.deny"
	case vocab.ReasonUseGateway:
		return target + " is reached through the egressd gateway"
	case vocab.ReasonResolveFailed:
		return target + " did not resolve"
	case vocab.ReasonRevoked:
		return "the grant of " + target + " was revoked"
	case vocab.ReasonSNIMismatch:
		return "TLS SNI is not " + target
	case vocab.ReasonHostMismatch:
		return "the Host header is not " + target
	case vocab.ReasonRateLimited:
		return "too many requests, retry later"
	case vocab.ReasonTooManyConnections:
		return "too many connections, retry later"
	case vocab.ReasonBadRequest:
		return "malformed request"
	case vocab.ReasonQTypeNotAllowed:
		return "this DNS query type is not answered"
	case vocab.ReasonUnauthorized:
		return "wrong or missing agent token"
	case vocab.ReasonBudgetExceeded:
		return "the spend cap is reached"
	case vocab.ReasonUnknownModel:
		return "the model has no price"
	case vocab.ReasonLedgerUnavailable:
		return "the spend ledger is unavailable"
	case vocab.ReasonApprovalPending:
		return "a person was asked; retry later"
	case vocab.ReasonOperatorDenied:
		return "a person refused " + target
	case vocab.ReasonEndpointNotAllowed:
		return "the gateway does not forward " + target + ": not metered"
	case vocab.ReasonFieldNotAllowed:
		return "a request field egressd does not price"
	case vocab.ReasonToolNotAllowed:
		return "a provider-run tool the policy does not grant"
	case vocab.ReasonPathNotAllowed:
		return "no rule of the route allows " + target
	}
	return target + " is refused"
}

// clampPhrase makes s safe for a status line: printable ASCII only, at
// most MaxPhrase bytes.
func clampPhrase(s string) string {
	var b strings.Builder
	b.Grow(min(len(s), MaxPhrase))
	for _, c := range s {
		if c < ' ' || c > '~' {
			c = '?' // one per character, so a name in another script stays short
		}
		b.WriteByte(byte(c))
	}
	out := b.String()
	if len(out) <= MaxPhrase {
		return out
	}
	cut := out[:MaxPhrase-4]
	if i := strings.LastIndexByte(cut, ' '); i > len(cut)-maxWordCut {
		cut = cut[:i] // end on a whole word when one ends near the limit
	}
	return strings.TrimRight(cut, " ") + " ..."
}

// maxWordCut is how far back clampPhrase looks for a word's end.
const maxWordCut = 24
