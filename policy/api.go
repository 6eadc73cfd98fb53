package policy

import (
	"errors"
	"net/netip"
)

// Rule is one compiled allow entry, or the reservation of a provider's
// upstream host for the gateway (Provider set, Index -1).
type Rule struct {
	Index  int          // position in allow:, for allow[i] in messages; -1 for provider rules
	Host   string       // normalised exact name, or "*.suffix"; "" for cidr rules
	Prefix netip.Prefix // cidr rules only
	Ports  []uint16     // granted ports (default [443])
	Rate   *RateConfig  // per-destination override, nil = limits.host

	// Provider names the providers: entry whose upstream host this is, for
	// use_gateway denials (and gateway allows); "" for allow rules.
	Provider string
	// API names the apis: entry whose upstream host this is, likewise,
	// and Base is that route's upstream URL, for the use_gateway hint.
	API  string
	Base string

	text string // String(), rendered once when the policy is compiled
}

// Policy is a compiled, validated, immutable policy. Safe for concurrent use;
// a reload builds a new one and swaps the pointer. The zero Policy denies
// everything.
type Policy struct {
	cfg    Config
	hash   string
	report bool // mode: report

	rules     []Rule           // allow:, by index
	exact     map[string]*Rule // host: name
	exactLens lenSet           // lengths of the keys of exact
	wild      map[string]*Rule // host: "*.suffix", keyed by suffix
	wildLens  lenSet           // lengths of the keys of wild, to skip hopeless lookups
	wildMin   int              // shortest and longest key of wild
	wildMax   int
	cidr      prefixTable[*Rule] // cidr:
	prov      []Rule             // provider reservations, one per providers: entry
	provHosts map[string]*Rule   // provider and apis: upstream names, reserved for the gateway
	provIPs   map[netip.Addr]*Rule
	apis      map[string]*APIRoute // apis: routes by name
	apiRes    []Rule               // apis: reservations, one per route

	netAllow prefixTable[struct{}]
	netDeny  prefixTable[struct{}]

	qtypes [1 << 10]uint64 // bitset of answered DNS types

	askMask uint64   // bit r set: reason r is askable (ask.reasons)
	overlay *Overlay // the operator's standing answers; nil = none
}

// ErrInvalid wraps every validation failure; errors.As to *ValidationError
// (or Errors) gives each problem with its key path and line.
var ErrInvalid = errors.New("invalid policy")

// Config returns the validated config with defaults filled in. Read only.
func (p *Policy) Config() *Config { return &p.cfg }

// Hash is a short stable hash of the effective config (after defaults and
// environment overrides), for status output and reload logs.
func (p *Policy) Hash() string { return p.hash }

// Rules returns the compiled allow rules in file order. Read only.
func (p *Policy) Rules() []Rule { return p.rules }

// ReportMode reports whether the policy runs in mode: report, where
// allow-list denials are logged as would_deny and let through.
func (p *Policy) ReportMode() bool { return p.report }
