package policy

import (
	"errors"
	"net/netip"
)

// TEMPORARY CONTRACT STUBS: the policy implementation replaces every body in
// this file. Signatures are the contract other packages code against.

// Rule is one compiled allow entry.
type Rule struct {
	Index  int          // position in allow:, for allow[i] in messages
	Host   string       // normalised exact name, or "*.suffix"; "" for cidr rules
	Prefix netip.Prefix // cidr rules only
	Ports  []uint16     // granted ports (default [443])
	Rate   *RateConfig  // per-destination override, nil = limits.host
}

// String renders the rule as it would appear in policy.yaml, one line:
// `allow[3] host: "*.github.com" ports: [443]`.
func (r *Rule) String() string { panic("unimplemented") }

// Policy is a compiled, validated, immutable policy. Safe for concurrent use;
// a reload builds a new one and swaps the pointer.
type Policy struct{ cfg Config }

// ErrInvalid wraps every validation failure; errors.As to *ValidationError
// (or Errors) gives each problem with its key path.
var ErrInvalid = errors.New("invalid policy")

// Load reads, strictly decodes (unknown keys are errors), applies
// EGRESSD_* environment overrides, validates and compiles path.
func Load(path string) (*Policy, error) { panic("unimplemented") }

// Default is the built-in policy used without --config: loopback listeners,
// empty allow-list (deny all).
func Default() *Policy { panic("unimplemented") }

// Config returns the validated config with defaults filled in. Read only.
func (p *Policy) Config() *Config { return &p.cfg }

// Hash is a short stable hash of the effective config, for status output.
func (p *Policy) Hash() string { panic("unimplemented") }

// Decide answers whether req may proceed. Pure: no I/O, no clock, no
// allocation. It does not resolve names; callers classify each resolved
// address with CheckAddr.
func (p *Policy) Decide(req Request) Decision { panic("unimplemented") }

// CheckAddr classifies an address egressd is about to dial (or that DNS is
// about to answer): private/special ranges are denied unless networks.allow
// grants them, metadata addresses always, networks.deny on top. Mode report
// never relaxes this check.
func (p *Policy) CheckAddr(addr netip.Addr) Decision { panic("unimplemented") }

// QTypeAllowed reports whether DNS answers queries of this type (numeric
// RR type, as on the wire).
func (p *Policy) QTypeAllowed(qtype uint16) bool { panic("unimplemented") }

// Hint is the one-line, actionable grant text for a denial, e.g.
// `add "- host: evil.example" under allow:`; "" when no grant can help.
func Hint(req Request, d Decision) string { panic("unimplemented") }
