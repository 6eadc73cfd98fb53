package daemon

import (
	"context"

	"github.com/egressd/egressd/internal/operator/ask"
	"github.com/egressd/egressd/policy"
)

// watch starts the policy watcher (file changes and SIGHUP) when there is
// a file to watch; the returned channel closes when it has stopped.
func (d *daemon) watch(ctx context.Context) <-chan struct{} {
	if d.opts.ConfigPath == "" {
		done := make(chan struct{})
		go func() {
			defer close(done)
			for {
				select {
				case <-ctx.Done():
					return
				case <-d.opts.Reload:
					d.log.Info("reload requested, but egressd runs the built-in policy: nothing to reload")
				}
			}
		}()
		return done
	}
	w := &Watcher{Path: d.opts.ConfigPath, Reload: d.reload, Trigger: d.opts.Reload, Logger: d.log}
	return w.Start(ctx)
}

// reload applies an edited policy, or keeps the last good one.
func (d *daemon) reload(data []byte, readErr error) {
	d.reloadMu.Lock()
	defer d.reloadMu.Unlock()
	old, cur, err := d.holder.Apply(data, readErr)
	d.admin.ObserveReload(err)
	if err != nil {
		d.log.Error("policy reload failed; the last good policy stays in force", "file", d.opts.ConfigPath, "error", err)
		d.ask.Event(ask.EventReloadFailed, "egressd: the edit of "+d.opts.ConfigPath+" was refused; the last good policy stays in force: "+err.Error())
		return
	}
	d.log.Info("policy reloaded", "file", d.opts.ConfigPath, "hash", cur.Hash(), "summary", cur.Summary())
	oc, nc := old.Config(), cur.Config()
	if keys := restartOnly(oc, nc); len(keys) > 0 {
		d.log.Warn("some changes need a restart; until then the running values stay", "keys", keys)
	}
	if err := d.resolver.Reconfigure(resolverConfig(nc, d.log)); err != nil {
		d.log.Error("resolver reconfigure failed; keeping the previous upstreams", "error", err)
	}
	switch {
	case d.meter != nil:
		if err := d.meter.Reconfigure(nc.Budget); err != nil {
			d.log.Error("budget reconfigure failed; the previous budget stays", "error", err)
		}
	case len(nc.Providers) > 0:
		d.log.Warn("providers were added but no spend ledger is open: gateway calls are refused until egressd restarts")
	}
	// Revoke last: by now every edge decides with the new policy, so
	// connections it no longer grants are the only ones cut.
	d.proxy.Revoke()
}

// restartOnly names the changed keys that are fixed when listeners open:
// addresses, the log file, and what the proxy's HTTP server reads at start.
func restartOnly(o, n *policy.Config) []string {
	var keys []string
	if o.Listen != n.Listen {
		keys = append(keys, "listen")
	}
	if o.Log != n.Log {
		keys = append(keys, "log")
	}
	if o.Admin != n.Admin {
		keys = append(keys, "admin")
	}
	if askChannels(o) != askChannels(n) {
		keys = append(keys, "ask.telegram, ask.webhook")
	}
	if o.Timeouts.Header != n.Timeouts.Header {
		keys = append(keys, "timeouts.header")
	}
	if o.Timeouts.Idle != n.Timeouts.Idle {
		keys = append(keys, "timeouts.idle (client keep-alive)")
	}
	if o.Limits.MaxHeaderBytes != n.Limits.MaxHeaderBytes {
		keys = append(keys, "limits.max_header_bytes")
	}
	if o.Budget.Store != n.Budget.Store || o.Budget.DSNEnv != n.Budget.DSNEnv ||
		o.Budget.Name != n.Budget.Name || o.Budget.Shared.Name != n.Budget.Shared.Name {
		keys = append(keys, "budget.store, budget.dsn_env, budget.name, budget.shared.name")
	}
	return keys
}
