package daemon

import (
	"context"
	"strconv"
	"time"

	"github.com/egressd/egressd/admin"
	"github.com/egressd/egressd/internal/ask"
	"github.com/egressd/egressd/internal/policyedit"
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
		Logger: d.log,
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

// runAsk expires questions and grants until ctx ends.
func (d *daemon) runAsk(ctx context.Context) <-chan struct{} {
	done := make(chan struct{})
	go func() {
		defer close(done)
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
