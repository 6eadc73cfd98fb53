package policy

import (
	"fmt"
	"net/url"
	"slices"
	"time"

	"github.com/egressd/egressd/internal/shared/vocab"
)

// Defaults of ask: when the section is present.
const (
	DefaultAskHold         = 20 * time.Second
	DefaultAskOpenFor      = time.Hour
	DefaultAskRememberDeny = time.Hour
	DefaultTelegramAPI     = "https://api.telegram.org"
	// maxAskHold bounds hold: a client's own timeout is usually a minute,
	// and every held request keeps a connection and a handler busy.
	maxAskHold = 5 * time.Minute
)

// askableReasons are the only reasons a person may be asked about: misses
// of the allow-list. Address checks, malformed requests, SNI mismatches
// and rate limits protect egressd itself and are never put to a person.
var askableReasons = []vocab.Reason{vocab.ReasonNotAllowlisted, vocab.ReasonPortNotAllowed}

// fillAskDefaults fills zero values of a present ask: section.
func fillAskDefaults(a *AskConfig) {
	if a == nil {
		return
	}
	if a.Reasons == nil {
		for _, r := range askableReasons {
			a.Reasons = append(a.Reasons, r.String())
		}
	}
	if a.Hold == 0 {
		a.Hold = DefaultAskHold
	}
	if a.OpenFor == 0 {
		a.OpenFor = DefaultAskOpenFor
	}
	if a.RememberDeny == 0 {
		a.RememberDeny = DefaultAskRememberDeny
	}
	if a.Telegram != nil && a.Telegram.API == "" {
		a.Telegram.API = DefaultTelegramAPI
	}
}

// Askable reports whether a denial for r may be put to a person under this
// policy's ask: section; false when ask: is absent.
func (p *Policy) Askable(r vocab.Reason) bool {
	return p.askMask&(1<<r) != 0
}

func (c *compiler) ask() {
	a := c.p.cfg.Ask
	if a == nil {
		return
	}
	for i, name := range a.Reasons {
		r, ok := vocab.ParseReason(name)
		if !ok || !slices.Contains(askableReasons, r) {
			c.errf(fmt.Sprintf("ask.reasons[%d]", i), "%q: only not_allowlisted and port_not_allowed can be asked about", name)
			continue
		}
		c.p.askMask |= 1 << r
	}
	if a.Hold < 0 || a.Hold > maxAskHold {
		c.errf("ask.hold", "%v: want a duration up to %v", a.Hold, maxAskHold)
	}
	if a.OpenFor < 0 || a.OpenFor < a.Hold {
		c.errf("ask.open_for", "%v: must be at least ask.hold (%v)", a.OpenFor, a.Hold)
	}
	if a.RememberDeny < 0 {
		c.errf("ask.remember_deny", "%v: must not be negative", a.RememberDeny)
	}
	if t := a.Telegram; t != nil {
		c.telegram(t)
	}
	if w := a.Webhook; w != nil {
		c.webhook(w)
	}
}

func (c *compiler) telegram(t *TelegramConfig) {
	if !validEnvName(t.TokenEnv) {
		c.errf("ask.telegram.token_env", "%q: required, the environment variable holding the bot token", t.TokenEnv)
	}
	if len(t.Operators) == 0 {
		c.errf("ask.telegram.operators", "empty: list the Telegram user IDs whose answers count")
	}
	for i, id := range t.Operators {
		if id <= 0 {
			c.errf(fmt.Sprintf("ask.telegram.operators[%d]", i), "%d: not a Telegram user ID", id)
		}
	}
	if msg := checkChannelURL(t.API); msg != "" {
		c.errf("ask.telegram.api", "%q: %s", t.API, msg)
	}
}

func (c *compiler) webhook(w *WebhookConfig) {
	if msg := checkChannelURL(w.URL); msg != "" {
		c.errf("ask.webhook.url", "%q: %s", w.URL, msg)
	}
	if !validEnvName(w.SecretEnv) {
		c.errf("ask.webhook.secret_env", "%q: required, the environment variable holding the signing secret", w.SecretEnv)
	}
}

// checkChannelURL accepts https URLs, and http only to loopback (a local
// relay): questions and answers must not cross a network in clear text.
func checkChannelURL(s string) string {
	u, err := url.Parse(s)
	switch {
	case err != nil || u.Host == "" || u.User != nil:
		return "want an absolute https:// URL without userinfo"
	case u.Scheme == "https":
		return ""
	case u.Scheme == "http" && loopbackListen(hostPortOf(u)):
		return ""
	}
	return "want https:// (http:// only to a loopback address)"
}

func hostPortOf(u *url.URL) string {
	if u.Port() != "" {
		return u.Host
	}
	return u.Host + ":80"
}
