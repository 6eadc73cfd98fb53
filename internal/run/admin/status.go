package admin

import (
	"fmt"
	"io"
	"math"
	"net"
	"strconv"
	"strings"
	"time"

	"github.com/egressd/egressd/internal/lib/money"
	"github.com/egressd/egressd/internal/shared/declog"
	"github.com/egressd/egressd/policy"
)

// Status is what /status serves and `egressd status` prints. The daemon
// fills Version, StartedAt, Mode, Policy, Budget (Config.Status); the
// Server fills Now, Ready, Counts and RecentDenials.
type Status struct {
	Now       time.Time `json:"now"`
	Ready     bool      `json:"ready"`
	Version   string    `json:"version,omitempty"`
	StartedAt time.Time `json:"started_at,omitzero"`
	Mode      string    `json:"mode,omitempty"` // enforce | report

	Policy PolicyStatus `json:"policy"`
	Counts Counts       `json:"counts"`
	Budget *Budget      `json:"budget,omitempty"` // nil: no providers configured
	Ask    *AskStatus   `json:"ask,omitempty"`    // nil: ask: is off

	// RecentDenials: denials and would-denies in the last hour by host,
	// most first, at most 20 rows plus an OtherHosts row.
	RecentDenials []HostCount `json:"recent_denials"`
}

// PolicyStatus says which policy is in force and how the last reload went.
type PolicyStatus struct {
	File            string    `json:"file"`                    // "" = built-in default policy
	Hash            string    `json:"hash"`                    // policy.Hash of the one in force
	LoadedAt        time.Time `json:"loaded_at,omitzero"`      // when the one in force was applied
	Rules           int       `json:"rules"`                   // allow: entries
	LastReloadAt    time.Time `json:"last_reload_at,omitzero"` // last attempt, good or bad
	LastReloadError string    `json:"last_reload_error,omitempty"`
}

// Counts are totals since egressd started.
type Counts struct {
	Allowed     uint64 `json:"allowed"`
	Denied      uint64 `json:"denied"`
	WouldDeny   uint64 `json:"would_deny"`
	DNSQueries  uint64 `json:"dns_queries"`
	TunnelsOpen int64  `json:"tunnels_open"`
	BytesUp     uint64 `json:"bytes_up"`
	BytesDown   uint64 `json:"bytes_down"`
}

// Budget is the gateway's spend against its cap in the current period.
type Budget struct {
	SpendUSD             float64   `json:"spend_usd"`
	CapUSD               float64   `json:"cap_usd"`
	WarnAt               float64   `json:"warn_at"`             // fraction of the cap
	Period               string    `json:"period"`              // day | week | month | total
	PeriodEnd            time.Time `json:"period_end,omitzero"` // zero for total
	ReservationsInFlight int       `json:"reservations_in_flight"`
	// With budget.store: postgres: this budget's name in the store and
	// its shared parent (figures summed over every instance).
	Name   string        `json:"name,omitempty"`
	Shared *SharedBudget `json:"shared,omitempty"`
}

// SharedBudget is a parent cap several named budgets reserve against.
type SharedBudget struct {
	Name     string  `json:"name"`
	SpendUSD float64 `json:"spend_usd"`
	CapUSD   float64 `json:"cap_usd"`
}

// AskStatus is ask: at a glance: open questions and the operator's
// standing answers with their expiry.
type AskStatus struct {
	Pending int            `json:"pending"`
	Grants  []policy.Grant `json:"grants"`
}

// HostCount is one row of the recent-denials table.
type HostCount struct {
	Host       string        `json:"host"`
	Count      int           `json:"count"`
	LastReason string        `json:"last_reason"`
	LastSeen   time.Time     `json:"last_seen"`
	Reasons    []ReasonCount `json:"reasons"` // Count split by reason, most first
}

// ReasonCount is how many of a host's denials had one reason.
type ReasonCount struct {
	Reason string `json:"reason"`
	Count  int    `json:"count"`
}

const (
	barWidth  = 30
	ansiRed   = "\x1b[31m"
	ansiYel   = "\x1b[33m"
	ansiGreen = "\x1b[32m"
	ansiBold  = "\x1b[1m"
	ansiReset = "\x1b[0m"
)

// PrintStatus writes the one-screen summary of `egressd status`. Relative
// times are computed from st.Now (the daemon's clock); absolute ones are
// shown in local time. Hosts come from the agent and are escaped.
func PrintStatus(w io.Writer, st Status, color bool) error {
	p := &printer{color: color}
	ready := p.paint("not ready", ansiRed)
	if st.Ready {
		ready = p.paint("ready", ansiGreen)
	}
	line := ready
	if st.Mode != "" {
		line += ", mode " + st.Mode
	}
	if !st.StartedAt.IsZero() {
		line += ", up " + ago(st.Now, st.StartedAt)
	}
	if st.Version != "" {
		line += ", " + st.Version
	}
	p.row("egressd", line)
	p.policy(st)
	c := st.Counts
	p.row("traffic", fmt.Sprintf("%d allowed, %d denied, %d would-deny; %d DNS queries; %d tunnels open; up %s, down %s",
		c.Allowed, c.Denied, c.WouldDeny, c.DNSQueries, c.TunnelsOpen, declog.FormatBytes(int64(min(c.BytesUp, math.MaxInt64))), declog.FormatBytes(int64(min(c.BytesDown, math.MaxInt64)))))
	p.budget(st)
	p.ask(st)
	p.recent(st)
	_, err := io.WriteString(w, p.b.String())
	return err
}

type printer struct {
	b     strings.Builder
	color bool
}

func (p *printer) paint(s, code string) string {
	if !p.color {
		return s
	}
	return code + s + ansiReset
}

func (p *printer) row(label, value string) {
	fmt.Fprintf(&p.b, "%-9s %s\n", label, value)
}

func (p *printer) policy(st Status) {
	pol := st.Policy
	file := pol.File
	if file == "" {
		file = "built-in default (deny all)"
	}
	line := fmt.Sprintf("%s, %d allow rules", declog.Sanitize(file), pol.Rules)
	if pol.Hash != "" {
		line += ", hash " + pol.Hash
	}
	if !pol.LoadedAt.IsZero() {
		line += fmt.Sprintf(", loaded %s (%s ago)", clock(pol.LoadedAt), ago(st.Now, pol.LoadedAt))
	}
	p.row("policy", line)
	switch {
	case pol.LastReloadError != "":
		p.row("reload", p.paint("FAILED", ansiRed)+fmt.Sprintf(" at %s: %s; the policy above is still in force",
			clock(pol.LastReloadAt), declog.Sanitize(pol.LastReloadError)))
	case !pol.LastReloadAt.IsZero():
		p.row("reload", fmt.Sprintf("ok, last at %s", clock(pol.LastReloadAt)))
	}
}

func (p *printer) budget(st Status) {
	b := st.Budget
	if b == nil {
		p.row("spend", "no LLM providers configured")
		return
	}
	if b.CapUSD <= 0 {
		p.row("spend", money.Format(b.SpendUSD)+", cap $0: gateway calls are refused")
		return
	}
	frac := b.SpendUSD / b.CapUSD
	filled := min(max(int(frac*barWidth+0.5), 0), barWidth)
	col := ansiGreen
	switch {
	case frac >= 1:
		col = ansiRed
	case b.WarnAt > 0 && frac >= b.WarnAt:
		col = ansiYel
	}
	bar := "[" + p.paint(strings.Repeat("#", filled), col) + strings.Repeat("-", barWidth-filled) + "]"
	line := fmt.Sprintf("%s %s of %s (%.0f%%)", bar, money.Format(b.SpendUSD), money.Format(b.CapUSD), frac*100)
	switch b.Period {
	case "":
	case "total":
		line += " in total, never resets"
	default:
		line += " this " + b.Period
	}
	if !b.PeriodEnd.IsZero() {
		line += fmt.Sprintf(", resets %s (in %s)", b.PeriodEnd.Local().Format("2006-01-02 15:04 MST"), ago(b.PeriodEnd, st.Now))
	}
	if b.ReservationsInFlight > 0 {
		line += fmt.Sprintf("; %d calls in flight", b.ReservationsInFlight)
	}
	if b.Name != "" {
		line += " (budget " + declog.Sanitize(b.Name) + ")"
	}
	p.row("spend", line)
	if sh := b.Shared; sh != nil && sh.CapUSD > 0 {
		p.row("shared", fmt.Sprintf("$%.2f of $%.2f (%.0f%%) across budget %s",
			sh.SpendUSD, sh.CapUSD, sh.SpendUSD/sh.CapUSD*100, declog.Sanitize(sh.Name)))
	}
}

func (p *printer) ask(st Status) {
	a := st.Ask
	if a == nil {
		return
	}
	p.row("ask", fmt.Sprintf("%d questions open (egressd pending), %d standing answers", a.Pending, len(a.Grants)))
	for _, g := range a.Grants {
		what := "allow"
		if g.Deny {
			what = "deny "
		}
		fmt.Fprintf(&p.b, "  %s %-40s until %s (in %s), %s by %s\n", what,
			declog.Sanitize(net.JoinHostPort(g.Host, strconv.Itoa(int(g.Port)))), clock(g.Until), ago(g.Until, st.Now),
			declog.Sanitize(g.Kind), declog.Sanitize(g.By))
	}
}

func (p *printer) recent(st Status) {
	if len(st.RecentDenials) == 0 {
		p.row("denials", "none in the last hour")
		return
	}
	p.b.WriteString("denials in the last hour, by host:\n")
	for _, hc := range st.RecentDenials {
		fmt.Fprintf(&p.b, "  %7d  %-40s last %s  %s\n", hc.Count, declog.Sanitize(hc.Host), clock(hc.LastSeen), reasonList(hc))
	}
}

// reasonList is a row's count per reason, "not_allowlisted 40, rate_limited
// 2"; a lone reason stands alone.
func reasonList(hc HostCount) string {
	if len(hc.Reasons) == 0 {
		return declog.Sanitize(hc.LastReason) // a status from an egressd without per-reason counts
	}
	if len(hc.Reasons) == 1 {
		return declog.Sanitize(hc.Reasons[0].Reason)
	}
	parts := make([]string, len(hc.Reasons))
	for i, rc := range hc.Reasons {
		parts[i] = declog.Sanitize(rc.Reason) + " " + strconv.Itoa(rc.Count)
	}
	return strings.Join(parts, ", ")
}

// ago is the positive duration from then to now, rounded for people.
func ago(now, then time.Time) string {
	d := now.Sub(then)
	if d < 0 {
		d = 0
	}
	switch {
	case d < time.Minute:
		return d.Round(time.Second).String()
	case d < 24*time.Hour:
		return strings.TrimSuffix(d.Round(time.Minute).String(), "0s")
	}
	days := int(d / (24 * time.Hour))
	hours := int((d % (24 * time.Hour)) / time.Hour)
	return fmt.Sprintf("%dd%dh", days, hours)
}

func clock(t time.Time) string {
	if t.IsZero() {
		return "never"
	}
	return t.Local().Format("2006-01-02 15:04:05")
}
