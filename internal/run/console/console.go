// Package console is the web console on the admin listener: a
// server-rendered page (html/template, no script, no CDN, a strict
// Content-Security-Policy) with the open ask: questions and their buttons,
// the standing answers, the recent denials, the policy in force and its
// last reload, and spend against the cap as an SVG chart. Answers are
// POSTed forms carrying a CSRF token.
package console

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"embed"
	"encoding/hex"
	"errors"
	"html/template"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/egressd/egressd/internal/operator/ask"
	"github.com/egressd/egressd/internal/run/admin"
	"github.com/egressd/egressd/policy"
)

// Paths the console serves on the admin listener.
const (
	PathPage   = "/"
	PathLogin  = "/console/login"
	PathLogout = "/console/logout"
	PathAnswer = "/console/answer"
	PathCSS    = "/console/style.css"
)

// Cookie names.
const (
	sessionCookie = "egressd_session"
	csrfCookie    = "egressd_csrf"
)

// csp allows the page's own stylesheet and forms to itself, nothing else:
// no script at all, no inline style, no frames.
const csp = "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"

//go:embed assets/*
var assets embed.FS

var page = template.Must(template.New("page.html").Funcs(funcs).ParseFS(assets, "assets/page.html"))

// Broker is what the console needs of the ask: broker.
type Broker interface {
	Pending() []ask.Question
	Grants() []policy.Grant
	Answer(id string, a ask.Answer) (string, error)
}

// Spend is the budget as the chart shows it.
type Spend struct {
	CapUSD, WarnAt, SpentUSD float64
	Period                   string
	Start, End               time.Time // End zero for period total
	Points                   []Point   // spend over the period, oldest first
	Models                   []Model   // largest first
}

// Point is the period's spend at a moment.
type Point struct {
	At  time.Time
	USD float64
}

// Model is one model's spend in the period.
type Model struct {
	Name     string
	USD      float64
	Requests int64
}

// Config wires a Console. Status is required; nil Broker hides the
// questions (ask: off), nil Spend hides the chart (no providers).
type Config struct {
	// Token is the admin bearer token; "" = no login (loopback only).
	Token  string
	Status func() admin.Status
	Broker Broker
	Spend  func() *Spend
	Rules  func() []string // the policy's allow rules, rendered
	Logger *slog.Logger
	Clock  func() time.Time
}

// Console is the http.Handler for PathPage and everything under /console/.
type Console struct {
	cfg Config
	key []byte // signs CSRF tokens; new at every start
	log *slog.Logger
	now func() time.Time
}

// New builds a Console.
func New(cfg Config) *Console {
	c := &Console{cfg: cfg, key: make([]byte, 32), log: cfg.Logger, now: cfg.Clock}
	_, _ = rand.Read(c.key)
	if c.log == nil {
		c.log = slog.Default()
	}
	if c.now == nil {
		c.now = time.Now
	}
	return c
}

// ServeHTTP routes the console's paths.
func (c *Console) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	h := w.Header()
	h.Set("Content-Security-Policy", csp)
	h.Set("X-Frame-Options", "DENY")
	h.Set("Referrer-Policy", "same-origin") // keeps Origin on form posts
	switch r.URL.Path {
	case PathCSS:
		b, _ := assets.ReadFile("assets/style.css")
		h.Set("Content-Type", "text/css; charset=utf-8")
		_, _ = w.Write(b)
	case PathLogin:
		c.serveLogin(w, r)
	case PathLogout:
		c.serveLogout(w, r)
	case PathPage:
		if !c.authorized(r) {
			c.render(w, r, http.StatusUnauthorized, view{Login: true})
			return
		}
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
			return
		}
		c.render(w, r, http.StatusOK, c.view(r))
	case PathAnswer:
		c.serveAnswer(w, r)
	default:
		http.NotFound(w, r)
	}
}

// authorized accepts the bearer token (what a forward-auth proxy adds) or
// the session cookie the login form sets.
func (c *Console) authorized(r *http.Request) bool {
	if admin.BearerOK(r, c.cfg.Token) {
		return true
	}
	ck, err := r.Cookie(sessionCookie)
	return err == nil && subtle.ConstantTimeCompare([]byte(ck.Value), []byte(c.sessionValue())) == 1
}

// sessionValue is derived from the token, so a login survives restarts
// and ends when the token changes; it reveals nothing of the token.
func (c *Console) sessionValue() string {
	m := hmac.New(sha256.New, []byte(c.cfg.Token))
	m.Write([]byte("egressd console session v1"))
	return hex.EncodeToString(m.Sum(nil))
}

func (c *Console) serveLogin(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		http.Redirect(w, r, PathPage, http.StatusSeeOther)
		return
	}
	if !sameOrigin(r) {
		http.Error(w, "cross-origin login refused", http.StatusForbidden)
		return
	}
	r.Body = http.MaxBytesReader(w, r.Body, 4<<10)
	tok := r.PostFormValue("token")
	if c.cfg.Token == "" || subtle.ConstantTimeCompare([]byte(tok), []byte(c.cfg.Token)) != 1 {
		c.log.Warn("console login with a wrong token", "remote", r.RemoteAddr)
		c.render(w, r, http.StatusUnauthorized, view{Login: true, Error: "wrong token"})
		return
	}
	http.SetCookie(w, &http.Cookie{Name: sessionCookie, Value: c.sessionValue(), Path: "/", HttpOnly: true,
		Secure: r.TLS != nil, SameSite: http.SameSiteStrictMode, MaxAge: int((12 * time.Hour).Seconds())})
	http.Redirect(w, r, PathPage, http.StatusSeeOther)
}

func (c *Console) serveLogout(w http.ResponseWriter, r *http.Request) {
	if r.Method == http.MethodPost && sameOrigin(r) {
		http.SetCookie(w, &http.Cookie{Name: sessionCookie, Value: "", Path: "/", MaxAge: -1, HttpOnly: true, SameSite: http.SameSiteStrictMode})
	}
	http.Redirect(w, r, PathPage, http.StatusSeeOther)
}

// serveAnswer takes a button press. It needs the session (or bearer), the
// same origin, and the form's CSRF token, which only the console's own
// page carries: a page elsewhere can neither read it nor guess it.
func (c *Console) serveAnswer(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", "POST")
		http.Error(w, "POST only", http.StatusMethodNotAllowed)
		return
	}
	if !c.authorized(r) {
		http.Error(w, "log in first", http.StatusUnauthorized)
		return
	}
	r.Body = http.MaxBytesReader(w, r.Body, 4<<10)
	if !sameOrigin(r) || !c.csrfOK(r, r.PostFormValue("csrf")) {
		http.Error(w, "stale or forged form: reload the console and press again", http.StatusForbidden)
		return
	}
	if c.cfg.Broker == nil {
		http.Error(w, "ask: is off", http.StatusNotFound)
		return
	}
	a, err := parseAnswer(r.PostFormValue("answer"))
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	a.By = "console"
	out, err := c.cfg.Broker.Answer(r.PostFormValue("id"), a)
	msg := out
	if err != nil {
		msg = err.Error()
	}
	http.Redirect(w, r, PathPage+"?done="+url.QueryEscape(msg), http.StatusSeeOther)
}

func parseAnswer(s string) (ask.Answer, error) {
	switch s {
	case "once":
		return ask.Answer{Kind: ask.Once}, nil
	case "1h":
		return ask.Answer{Kind: ask.For, For: time.Hour}, nil
	case "8h":
		return ask.Answer{Kind: ask.For, For: 8 * time.Hour}, nil
	case "always":
		return ask.Answer{Kind: ask.Always}, nil
	case "deny":
		return ask.Answer{Kind: ask.Deny}, nil
	}
	return ask.Answer{}, errors.New("unknown answer")
}

// csrfToken is the form token for the browser's CSRF cookie, setting one
// when it has none.
func (c *Console) csrfToken(w http.ResponseWriter, r *http.Request) string {
	v := ""
	if ck, err := r.Cookie(csrfCookie); err == nil && len(ck.Value) == 32 {
		v = ck.Value
	} else {
		b := make([]byte, 16)
		_, _ = rand.Read(b)
		v = hex.EncodeToString(b)
		http.SetCookie(w, &http.Cookie{Name: csrfCookie, Value: v, Path: "/", HttpOnly: true,
			Secure: r.TLS != nil, SameSite: http.SameSiteStrictMode})
	}
	return c.sign(v)
}

func (c *Console) sign(v string) string {
	m := hmac.New(sha256.New, c.key)
	m.Write([]byte(v))
	return hex.EncodeToString(m.Sum(nil))
}

func (c *Console) csrfOK(r *http.Request, token string) bool {
	ck, err := r.Cookie(csrfCookie)
	return err == nil && token != "" && hmac.Equal([]byte(token), []byte(c.sign(ck.Value)))
}

// sameOrigin refuses a POST whose Origin (or, without one, Referer) names
// another host; browsers send one of them on form posts.
func sameOrigin(r *http.Request) bool {
	o := r.Header.Get("Origin")
	if o == "" || o == "null" {
		o = r.Header.Get("Referer")
	}
	if o == "" {
		return true // not a browser: the CSRF token still has to match
	}
	u, err := url.Parse(o)
	return err == nil && strings.EqualFold(u.Host, r.Host)
}
