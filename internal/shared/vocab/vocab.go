// Package vocab owns the words of egressd's decision log: which edge asked
// (Proto), what it did (Verdict), why (Reason) and what kind of line it is
// (Event). Each is a small enum whose String is the stable token in the
// log line, the metric label, the X-Egressd-Reason header and the 403 body;
// policy decides with them, every edge reports with them, and the log
// reader parses them back. It imports nothing of egressd.
package vocab

// Proto says which edge is asking.
type Proto uint8

// Protocols that ask for decisions.
const (
	ProtoHTTP    Proto = iota // plain-HTTP forward proxy request (absolute URI)
	ProtoConnect              // CONNECT tunnel
	ProtoDNS                  // DNS query; Port is ignored
	ProtoGateway              // LLM provider gateway request (and apis: routes)
	protoCount
)

var protoNames = [protoCount]string{"http", "connect", "dns", "gateway"}

func (p Proto) String() string { return name(protoNames[:], p) }

// Verdict is what the edge must do.
type Verdict uint8

// Verdicts. Report means "allowed, but enforce mode would have denied it":
// the edge lets it through and logs would_deny with the Reason.
const (
	Deny Verdict = iota // zero value: closed by default
	Allow
	Report
	verdictCount
)

var verdictNames = [verdictCount]string{"deny", "allow", "would_deny"}

func (v Verdict) String() string { return name(verdictNames[:], v) }

// Allowed reports whether the edge should let the request through.
func (v Verdict) Allowed() bool { return v == Allow || v == Report }

// Reason is why a decision was made. Never rename a value's token once
// shipped: operators' alerts and scripts match on it. The numbers are not
// stored anywhere, so the list is grouped by the edge that emits a reason.
type Reason uint8

// Reasons.
const (
	// Decide's answers: every edge.
	ReasonNone                Reason = iota // no reason given (should not be logged)
	ReasonAllowlisted                       // matched an allow rule
	ReasonNotAllowlisted                    // no allow rule matches the host
	ReasonPortNotAllowed                    // host granted, port not
	ReasonIPLiteralNotAllowed               // IP-literal target without a cidr grant
	ReasonPrivateAddress                    // resolves to / is a private or special address
	ReasonMetadataAddress                   // cloud metadata address; can never be granted
	ReasonSelfAddress                       // egressd's own listener
	ReasonUseGateway                        // provider host: must go through the gateway
	ReasonDeniedNetwork                     // address in networks.deny
	// Checks every edge makes around Decide.
	ReasonBadRequest         // malformed target, host or request
	ReasonRateLimited        // a token bucket is empty
	ReasonTooManyConnections // connection caps reached
	ReasonRevoked            // a reload revoked the grant of an open connection
	// The proxy's reading of a request.
	ReasonHostMismatch // Host header disagrees with the request URI
	ReasonSNIMismatch  // TLS SNI disagrees with the CONNECT authority
	// Resolution: the DNS server and the proxy.
	ReasonQTypeNotAllowed // DNS query type not answered
	ReasonResolveFailed   // name did not resolve (or upstream failed)
	// The operator's answers (ask:).
	ReasonApprovalPending // ask: a person was asked and has not answered yet
	ReasonOperatorDenied  // ask: a person answered deny (remembered for ask.remember_deny)
	// The gateway and its ledger.
	ReasonUnauthorized       // gateway: wrong or missing agent token
	ReasonBudgetExceeded     // gateway: spend cap would be crossed
	ReasonUnknownModel       // gateway: model has no price and unknown_model: deny
	ReasonLedgerUnavailable  // gateway: spend ledger cannot be read or written
	ReasonEndpointNotAllowed // gateway: method and path not in the endpoint table (not metered)
	ReasonFieldNotAllowed    // gateway: a request field egressd does not price
	ReasonToolNotAllowed     // gateway: a provider-run tool the policy does not grant
	// Apis: routes.
	ReasonPathNotAllowed // gateway api route: no rule grants the method and path
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

func (r Reason) String() string { return name(reasonNames[:], r) }

// Reasons lists every reason, for tables and tests that must cover them all.
func Reasons() []Reason { return all[Reason](reasonCount) }

// ParseReason is the inverse of Reason.String, for log readers.
func ParseReason(s string) (Reason, bool) { return parse[Reason](reasonNames[:], s) }

// Event is the kind of a decision-log line.
type Event uint8

// Events. The zero value is a decision, so an edge that reports a decision
// need not name the kind.
const (
	EventDecision   Event = iota // a request, tunnel or query was decided
	EventClose                   // a tunnel or request finished: bytes and duration
	EventSummary                 // Count identical denials folded into one line
	EventUsage                   // the gateway settled a metered call
	EventBudgetWarn              // spend crossed budget.warn_at
	EventAsk                     // ask: a person was asked about a denial, answered it, or let it expire
	eventCount
)

var eventNames = [eventCount]string{"decision", "close", "summary", "usage", "budget_warn", "ask"}

func (e Event) String() string { return name(eventNames[:], e) }

// Events lists every kind, for readers and tests that must handle them all.
func Events() []Event { return all[Event](eventCount) }

func all[T ~uint8](n T) []T {
	out := make([]T, n)
	for i := range out {
		out[i] = T(i)
	}
	return out
}

// Parse inverts String for any of the enums here: the log reader's one way
// back from a token.
func Parse[T Proto | Verdict | Reason | Event](s string) (T, bool) {
	var v T
	switch any(v).(type) {
	case Proto:
		return parse[T](protoNames[:], s)
	case Verdict:
		return parse[T](verdictNames[:], s)
	case Reason:
		return parse[T](reasonNames[:], s)
	default:
		return parse[T](eventNames[:], s)
	}
}

func name[T ~uint8](names []string, v T) string {
	if int(v) < len(names) {
		return names[v]
	}
	return "unknown"
}

func parse[T ~uint8](names []string, s string) (T, bool) {
	for i, n := range names {
		if n == s {
			return T(i), true
		}
	}
	return 0, false
}
