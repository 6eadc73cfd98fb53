package policy

import (
	"fmt"
	"net"
	"strconv"
	"time"

	"github.com/egressd/egressd/internal/shared/vocab"
)

// Grant is one standing answer a person gave to an ask: question: an allow
// of Host:Port until Until, or (Deny) a remembered refusal. Expiry is the
// caller's business: Decide has no clock, so whoever holds the grants
// compiles a new Overlay when one expires.
type Grant struct {
	Host  string    `json:"host"` // normalised name or IP literal
	Port  uint16    `json:"port"`
	Until time.Time `json:"until"`
	By    string    `json:"by"`             // who answered, e.g. "telegram:123", "cli", "console"
	Kind  string    `json:"kind,omitempty"` // once | for | always (allows), deny
	Deny  bool      `json:"deny,omitempty"`
	// KeepOpen marks an allow that admits no new request and only keeps
	// the connections it admitted open (an "allow once" past its grace
	// period): a tunnel it let through is not cut when it lapses.
	KeepOpen bool `json:"keep_open,omitempty"`
}

// Overlay is a compiled, immutable set of Grants that Decide consults
// after the allow-list said no. Build it with NewOverlay and pass it with
// WithOverlay; a nil Overlay grants and refuses nothing.
type Overlay struct {
	allow     map[hostPort]*Rule
	kept      map[hostPort]*Rule // KeepOpen grants: DecideOpen only
	names     map[string]*Rule   // a grant on any port answers DNS
	deny      map[hostPort]struct{}
	denyNames map[string]struct{}
}

type hostPort struct {
	host string
	port uint16
}

// NewOverlay compiles grants; entries whose host does not normalise are
// skipped (the caller only stores hosts it took from Decide's requests).
// An allow and a deny for the same target: the deny wins.
func NewOverlay(grants []Grant) *Overlay {
	o := &Overlay{allow: map[hostPort]*Rule{}, kept: map[hostPort]*Rule{}, names: map[string]*Rule{},
		deny: map[hostPort]struct{}{}, denyNames: map[string]struct{}{}}
	for _, g := range grants {
		name, ok := overlayName(g.Host)
		if !ok {
			continue
		}
		k := hostPort{name, g.Port}
		if g.Deny {
			o.deny[k] = struct{}{}
			o.denyNames[name] = struct{}{}
			continue
		}
		r := &Rule{Index: -1, Host: name, Ports: []uint16{g.Port}}
		r.text = fmt.Sprintf("ask grant %s (%s, by %s) until %s", net.JoinHostPort(name, strconv.Itoa(int(g.Port))),
			g.Kind, g.By, g.Until.UTC().Format(time.RFC3339))
		if g.KeepOpen {
			o.kept[k] = r
			continue
		}
		o.allow[k] = r
		if _, ok := o.names[name]; !ok {
			o.names[name] = r
		}
	}
	return o
}

// WithOverlay returns a copy of p that also honours o. The copy shares
// every compiled table with p.
func (p *Policy) WithOverlay(o *Overlay) *Policy {
	q := *p
	q.overlay = o
	return &q
}

// Overlaid reports whether p carries a non-empty Overlay.
func (p *Policy) Overlaid() bool {
	return p.overlay != nil && (len(p.overlay.allow) > 0 || len(p.overlay.deny) > 0)
}

// DecideOpen is Decide for a connection that is already open (a reload or
// a lapsed grant re-checks it): it also honours the grants that only keep
// their connections open.
func (p *Policy) DecideOpen(req Request) Decision {
	d := p.Decide(req)
	if d.Verdict != vocab.Deny || p.overlay == nil || len(p.overlay.kept) == 0 || !p.Askable(d.Reason) {
		return d
	}
	if name, ok := overlayName(req.Host); ok {
		if r := p.overlay.kept[hostPort{name, req.Port}]; r != nil {
			return Decision{Verdict: vocab.Allow, Reason: vocab.ReasonAllowlisted, Rule: r}
		}
	}
	return d
}

// overlayName is the spelling grants are keyed by.
func overlayName(host string) (string, bool) {
	name, ip, prob := normalizeHost(host)
	if prob != hostOK {
		return "", false
	}
	if ip.IsValid() {
		name = ip.String()
	}
	return name, true
}

// decide revisits an askable denial d of req against the operator's
// answers: a remembered deny, then a grant for the host and port (any port
// for DNS).
func (o *Overlay) decide(req Request, d Decision) Decision {
	name, ok := overlayName(req.Host)
	if !ok {
		return d
	}
	if req.Proto == vocab.ProtoDNS {
		if r := o.names[name]; r != nil {
			return Decision{Verdict: vocab.Allow, Reason: vocab.ReasonAllowlisted, Rule: r}
		}
		if _, ok := o.denyNames[name]; ok {
			return Decision{Verdict: vocab.Deny, Reason: vocab.ReasonOperatorDenied}
		}
		return d
	}
	k := hostPort{name, req.Port}
	if _, ok := o.deny[k]; ok {
		return Decision{Verdict: vocab.Deny, Reason: vocab.ReasonOperatorDenied, Rule: d.Rule}
	}
	if r := o.allow[k]; r != nil {
		return Decision{Verdict: vocab.Allow, Reason: vocab.ReasonAllowlisted, Rule: r}
	}
	return d
}
