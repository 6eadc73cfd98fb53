package daemon

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net/http"
	"os"
	"strconv"
	"time"

	"github.com/egressd/egressd/internal/edge/gateway"
	"github.com/egressd/egressd/internal/operator/ask"
	"github.com/egressd/egressd/internal/operator/policyedit"
	"github.com/egressd/egressd/internal/operator/telegram"
	"github.com/egressd/egressd/internal/operator/webhook"
	"github.com/egressd/egressd/internal/run/admin"
	"github.com/egressd/egressd/internal/run/console"
	"github.com/egressd/egressd/internal/shared/declog"
	"github.com/egressd/egressd/internal/shared/safedial"
	"github.com/egressd/egressd/policy"
)

// openAsk builds the broker behind ask:: the standing answers come from the
// grants file beside the spend ledger and go into the holder's overlay, so
// that the proxy and DNS both honour them. It exists even while ask: is off
// (then nothing is askable), so a reload can turn ask: on.
func (d *daemon) openAsk(cfg *policy.Config) {
	cb := ask.Config{
		Policy:    d.holder.Current,
		StatePath: ask.StatePath(cfg),
		Apply: func(o *policy.Overlay) {
			d.holder.SetOverlay(o)
			if d.proxy != nil {
				d.proxy.Revoke() // an expired grant closes its tunnels
			}
		},
		Recorder: lateRecorder{d},
		Logger:   d.log,
	}
	if d.opts.ConfigPath != "" {
		cb.Always = d.appendAllow
	}
	d.ask = ask.New(cb)
}

// appendAllow is the "always" answer: the entry is added to policy.yaml
// (or an error says why not) and applied at once like any edit; the
// watcher then sees an unchanged policy.
func (d *daemon) appendAllow(host string, port uint16, by string, at time.Time) error {
	d.reloadMu.Lock()
	data, err := policyedit.AppendFile(d.opts.ConfigPath, policyedit.Entry{Host: host, Port: port, By: by, At: at})
	d.reloadMu.Unlock()
	if err != nil {
		return err
	}
	d.reload(data, nil)
	return nil
}

// runAsk expires questions and grants, and polls Telegram, until ctx
// ends.
func (d *daemon) runAsk(ctx context.Context) <-chan struct{} {
	done := make(chan struct{})
	go func() {
		defer close(done)
		if d.bot != nil {
			botDone := make(chan struct{})
			go func() { defer close(botDone); d.bot.Run(ctx) }()
			defer func() { <-botDone }()
		}
		d.ask.Run(ctx)
	}()
	return done
}

func (d *daemon) askStatus() *admin.AskStatus {
	if d.ask == nil || d.holder.Current().Config().Ask == nil {
		return nil
	}
	return &admin.AskStatus{Pending: len(d.ask.Pending()), Grants: d.ask.Grants()}
}

// askChannels renders the channel settings, which are read at start.
func askChannels(c *policy.Config) string {
	if c.Ask == nil {
		return ""
	}
	var s string
	if t := c.Ask.Telegram; t != nil {
		s += t.TokenEnv + t.API + t.CAFile
		for _, id := range t.Operators {
			s += "," + strconv.FormatInt(id, 10)
		}
	}
	if w := c.Ask.Webhook; w != nil {
		s += "|" + w.URL + w.SecretEnv
	}
	return s
}

// openChannels starts the notification channels of ask: (read at start).
// Their calls leave through safedial like the gateway's: resolved by the
// shared resolver, every address checked, a checked address dialed.
func (d *daemon) openChannels(cfg *policy.Config, self *safedial.SelfSet) error {
	a := cfg.Ask
	if a == nil || a.Telegram == nil && a.Webhook == nil {
		return nil
	}
	hc, err := d.channelClient(a, self)
	if err != nil {
		return err
	}
	if t := a.Telegram; t != nil {
		token := d.getenv(t.TokenEnv)
		if token == "" {
			return fmt.Errorf("ask.telegram.token_env names $%s, which is empty: set it to the bot token", t.TokenEnv)
		}
		d.bot = telegram.New(telegram.Config{API: t.API, Token: token, Operators: t.Operators, HTTP: hc,
			Broker: d.ask, Logger: d.log, PollTimeout: d.opts.TelegramPoll})
		d.ask.AddNotifier(d.bot)
	}
	if w := a.Webhook; w != nil {
		secret := d.getenv(w.SecretEnv)
		if secret == "" {
			return fmt.Errorf("ask.webhook.secret_env names $%s, which is empty: set it to the signing secret", w.SecretEnv)
		}
		d.ask.AddNotifier(webhook.New(w.URL, []byte(secret), hc))
	}
	return nil
}

// channelClient is the HTTP client of the channels: safedial's dialer,
// and the system roots plus ask.telegram.ca_file when given.
func (d *daemon) channelClient(a *policy.AskConfig, self *safedial.SelfSet) (*http.Client, error) {
	tr := gateway.NewTransport()
	tr.DialContext = (&safedial.Dialer{Policy: d.holder.Current, Resolver: d.resolver, Self: self}).DialContext
	if a.Telegram != nil && a.Telegram.CAFile != "" {
		pemBytes, err := os.ReadFile(a.Telegram.CAFile)
		if err != nil {
			return nil, fmt.Errorf("ask.telegram.ca_file: %w", err)
		}
		pool, err := x509.SystemCertPool()
		if err != nil {
			pool = x509.NewCertPool()
		}
		if !pool.AppendCertsFromPEM(pemBytes) {
			return nil, fmt.Errorf("ask.telegram.ca_file %s: no PEM certificate in it", a.Telegram.CAFile)
		}
		tr.TLSClientConfig = &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
	}
	return &http.Client{Transport: tr, Timeout: time.Minute}, nil
}

// newConsole is the web console on the admin listener.
func (d *daemon) newConsole(token string) *console.Console {
	return console.New(console.Config{
		Token:  token,
		Status: func() admin.Status { return d.admin.Status() },
		Broker: d.ask,
		Spend:  d.consoleSpend,
		Rules: func() []string {
			rules := d.holder.Current().Rules()
			out := make([]string, len(rules))
			for i := range rules {
				out[i] = rules[i].String()
			}
			return out
		},
		Logger: d.log,
	})
}

// consoleSpend is the budget for the console's chart; nil without a meter.
func (d *daemon) consoleSpend() *console.Spend {
	if d.meter == nil {
		return nil
	}
	s := d.meter.Snapshot()
	sp := &console.Spend{CapUSD: s.CapUSD, WarnAt: s.WarnAt, SpentUSD: s.SpentUSD, Period: s.Period, Start: s.PeriodStart, End: s.PeriodEnd}
	for _, p := range d.budget.History() {
		sp.Points = append(sp.Points, console.Point{At: p.At, USD: p.USD})
	}
	for name, m := range s.Models {
		sp.Models = append(sp.Models, console.Model{Name: name, USD: float64(m.SpentNano) / 1e9, Requests: m.Requests})
	}
	return sp
}

// lateRecorder is the decision log for the broker, which is built before
// the recorder it writes to (the admin listener it tees to needs the
// broker's endpoints); nothing is recorded before serving starts.
type lateRecorder struct{ d *daemon }

func (r lateRecorder) Record(e declog.Entry) {
	if r.d.recorder != nil {
		r.d.recorder.Record(e)
	}
}
