// Package policy owns egressd's rules: the policy.yaml schema, strict loading
// and validation, the host matcher, IP classification and the one pure
// decision function, Decide. It does no I/O beyond reading the policy file;
// every edge (proxy, DNS, gateway) asks it the same question and acts on the
// same answer.
package policy

import (
	"net/netip"
)

// Proto says which edge is asking.
type Proto uint8

// Protocols that ask for decisions.
const (
	ProtoHTTP    Proto = iota // plain-HTTP forward proxy request (absolute URI)
	ProtoConnect              // CONNECT tunnel
	ProtoDNS                  // DNS query; Port is ignored
	ProtoGateway              // LLM provider gateway request
)

var protoNames = [...]string{"http", "connect", "dns", "gateway"}

func (p Proto) String() string {
	if int(p) < len(protoNames) {
		return protoNames[p]
	}
	return "unknown"
}

// Verdict is what the edge must do.
type Verdict uint8

// Verdicts. Report means "allowed, but enforce mode would have denied it":
// the edge lets it through and logs would_deny with the Reason.
const (
	Deny Verdict = iota // zero value: closed by default
	Allow
	Report
)

var verdictNames = [...]string{"deny", "allow", "would_deny"}

func (v Verdict) String() string {
	if int(v) < len(verdictNames) {
		return verdictNames[v]
	}
	return "unknown"
}

// Allowed reports whether the edge should let the request through.
func (v Verdict) Allowed() bool { return v == Allow || v == Report }

// Reason is why a decision was made. Its String is the stable, snake_case
// token used in the log line, the metric label, the X-Egressd-Reason header
// and the 403 body, so never rename a value once shipped.
type Reason uint8

// Reasons. Append only.
const (
	ReasonNone                Reason = iota // no reason given (should not be logged)
	ReasonAllowlisted                       // matched an allow rule
	ReasonNotAllowlisted                    // no allow rule matches the host
	ReasonPortNotAllowed                    // host granted, port not
	ReasonIPLiteralNotAllowed               // IP-literal target without a cidr grant
	ReasonPrivateAddress                    // resolves to / is a private or special address
	ReasonMetadataAddress                   // cloud metadata address; can never be granted
	ReasonSelfAddress                       // egressd's own listener
	ReasonRateLimited                       // a token bucket is empty
	ReasonHostMismatch                      // Host header disagrees with the request URI
	ReasonSNIMismatch                       // TLS SNI disagrees with the CONNECT authority
	ReasonBadRequest                        // malformed target, host or request
	ReasonUseGateway                        // provider host: must go through the gateway
	ReasonQTypeNotAllowed                   // DNS query type not answered
	ReasonResolveFailed                     // name did not resolve (or upstream failed)
	ReasonUnauthorized                      // gateway: wrong or missing agent token
	ReasonBudgetExceeded                    // gateway: spend cap would be crossed
	ReasonUnknownModel                      // gateway: model has no price and unknown_model: deny
	ReasonTooManyConnections                // connection caps reached
	ReasonRevoked                           // a reload revoked the grant of an open connection
	ReasonDeniedNetwork                     // address in networks.deny
	ReasonLedgerUnavailable                 // gateway: spend ledger cannot be read or written
	ReasonPathNotAllowed                    // gateway api route: no rule grants the method and path
	ReasonApprovalPending                   // ask: a person was asked and has not answered yet
	ReasonOperatorDenied                    // ask: a person answered deny (remembered for ask.remember_deny)
	ReasonEndpointNotAllowed                // gateway: method and path not in the endpoint table (not metered)
	ReasonFieldNotAllowed                   // gateway: a request field egressd does not price
	ReasonToolNotAllowed                    // gateway: a provider-run tool the policy does not grant
	reasonCount
)

var reasonNames = [reasonCount]string{
	ReasonNone:                "none",
	ReasonAllowlisted:         "allowlisted",
	ReasonNotAllowlisted:      "not_allowlisted",
	ReasonPortNotAllowed:      "port_not_allowed",
	ReasonIPLiteralNotAllowed: "ip_literal_not_allowed",
	ReasonPrivateAddress:      "private_address",
	ReasonMetadataAddress:     "metadata_address",
	ReasonSelfAddress:         "self_address",
	ReasonRateLimited:         "rate_limited",
	ReasonHostMismatch:        "host_mismatch",
	ReasonSNIMismatch:         "sni_mismatch",
	ReasonBadRequest:          "bad_request",
	ReasonUseGateway:          "use_gateway",
	ReasonQTypeNotAllowed:     "qtype_not_allowed",
	ReasonResolveFailed:       "resolve_failed",
	ReasonUnauthorized:        "unauthorized",
	ReasonBudgetExceeded:      "budget_exceeded",
	ReasonUnknownModel:        "unknown_model",
	ReasonTooManyConnections:  "too_many_connections",
	ReasonRevoked:             "revoked",
	ReasonDeniedNetwork:       "denied_network",
	ReasonLedgerUnavailable:   "ledger_unavailable",
	ReasonPathNotAllowed:      "path_not_allowed",
	ReasonApprovalPending:     "approval_pending",
	ReasonOperatorDenied:      "operator_denied",
	ReasonEndpointNotAllowed:  "endpoint_not_allowed",
	ReasonFieldNotAllowed:     "field_not_allowed",
	ReasonToolNotAllowed:      "tool_not_allowed",
}

func (r Reason) String() string {
	if r < reasonCount {
		return reasonNames[r]
	}
	return "unknown"
}

// ParseReason is the inverse of Reason.String, for log readers.
func ParseReason(s string) (Reason, bool) {
	for i, n := range reasonNames {
		if n == s {
			return Reason(i), true
		}
	}
	return ReasonNone, false
}

// Request is the question an edge asks. Host is the target as the client
// wrote it (a name or an IP literal in any spelling); Decide normalises it.
type Request struct {
	Client netip.Addr
	Host   string
	Port   uint16
	Proto  Proto
}

// Decision is the one answer every downstream reads: the 403 body, the log
// line, the metric label and `egressd explain`.
type Decision struct {
	Verdict Verdict
	Reason  Reason
	// Rule is the allow rule that matched (or, for port_not_allowed, the rule
	// that granted the host on other ports); nil when none did.
	Rule *Rule
}
