package daemon

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"sync"
	"time"

	"github.com/egressd/egressd/dnsfilter"
	"github.com/egressd/egressd/internal/edge/apiroute"
	"github.com/egressd/egressd/internal/edge/gateway"
	"github.com/egressd/egressd/internal/lib/catrust"
	"github.com/egressd/egressd/internal/lib/statusline"
	"github.com/egressd/egressd/internal/operator/ask"
	"github.com/egressd/egressd/internal/operator/telegram"
	"github.com/egressd/egressd/internal/run/admin"
	"github.com/egressd/egressd/internal/shared/declog"
	"github.com/egressd/egressd/internal/shared/meter"
	"github.com/egressd/egressd/internal/shared/resolver"
	"github.com/egressd/egressd/internal/shared/safedial"
	"github.com/egressd/egressd/policy"
	"github.com/egressd/egressd/proxy"
)

// Options configure Run. Zero values work.
type Options struct {
	// ConfigPath is policy.yaml; "" runs the built-in default (loopback,
	// deny all) with EGRESSD_* overrides.
	ConfigPath string
	// Logger is the operational log (start, reloads, errors); nil writes
	// JSON to stderr. The decision log is separate (policy log.*).
	Logger *slog.Logger
	// Stdout receives the decision log lines; nil means os.Stdout.
	Stdout io.Writer
	// Env reads provider keys and tokens; nil means os.Getenv.
	Env func(string) string
	// Reload forces a policy reload (SIGHUP).
	Reload <-chan struct{}
	// Ready is called once every listener is up, with the bound addresses.
	Ready func(Addrs)
	// Version is shown in /status.
	Version string
	// TelegramPoll is the Telegram long-poll timeout; 0 = 50s.
	TelegramPoll time.Duration
}

// daemon is one running egressd: what Run builds, in wiring order.
type daemon struct {
	opts   Options
	log    *slog.Logger
	holder *Holder

	declog   *declog.Logger
	recorder declog.Recorder
	resolver *resolver.Resolver
	proxy    *proxy.Server
	dns      *dnsfilter.Server
	meter    *meter.Meter
	gateway  *gateway.Handler
	apis     *apiroute.Handler
	admin    *admin.Server
	ask      *ask.Broker
	bot      *telegram.Bot // nil without ask.telegram
	budget   budgetWatch
	started  time.Time

	crashCalls int64   // calls a crash left in flight, charged at start
	crashUSD   float64 // and what they were charged

	reloadMu sync.Mutex // one reload at a time: the watcher's, or an "always" answer's
}

// Run serves until ctx ends, then drains within timeouts.shutdown.
//
// The wiring order, written down once: policy holder → decision log (the
// recorder every edge writes to, teed to the admin metrics) → shared
// resolver → listeners bound → proxy, DNS, gateway (each asks the same
// policy through the holder) → admin → policy watcher. Stopping runs the
// same list backwards. The order of checks inside each edge is written
// once, in that edge's package doc: proxy, dnsfilter (serve), gateway, and
// internal/apiroute for apis: routes, which gatewayMux picks by the first
// path segment.
func Run(ctx context.Context, opts Options) error {
	d := &daemon{opts: opts, log: opts.Logger, started: time.Now()}
	if d.log == nil {
		d.log = slog.New(slog.NewJSONHandler(os.Stderr, nil))
	}
	d.holder = &Holder{Path: opts.ConfigPath}
	if err := d.initPolicy(); err != nil {
		return err
	}
	pol := d.holder.Current()
	cfg := pol.Config()

	if err := d.openDecisionLog(cfg); err != nil {
		return err
	}
	defer d.declog.Close()

	ls, err := bind(cfg.Listen.Proxy, cfg.Listen.DNS, cfg.Listen.Gateway, cfg.Listen.Admin)
	if err != nil {
		return err
	}
	defer ls.close()
	addrs := ls.addrs()
	if err := d.build(cfg, addrs); err != nil {
		return err
	}
	return d.serve(ctx, ls, addrs)
}

func (d *daemon) initPolicy() error {
	if d.opts.ConfigPath == "" {
		p, err := policy.LoadDefault()
		if err != nil {
			return fmt.Errorf("built-in policy: %w", err)
		}
		d.holder.mu.Lock()
		d.holder.storeLocked(p)
		d.holder.loadedAt = time.Now()
		d.holder.mu.Unlock()
		d.log.Warn("no --config: running the built-in default policy (loopback listeners, empty allow-list): every destination is denied")
		return nil
	}
	if err := d.holder.Init(); err != nil {
		return err
	}
	p := d.holder.Current()
	d.log.Info("policy loaded", "file", d.opts.ConfigPath, "hash", p.Hash(), "summary", p.Summary())
	return nil
}

func (d *daemon) openDecisionLog(cfg *policy.Config) error {
	stdout := d.opts.Stdout
	if stdout == nil {
		stdout = os.Stdout
	}
	l, err := declog.New(declog.Options{
		File: cfg.Log.File, MaxSizeMB: cfg.Log.MaxSizeMB, Keep: cfg.Log.Keep, Stdout: stdout,
	})
	if err != nil {
		return fmt.Errorf("decision log: %w", err)
	}
	d.declog = l
	d.openAsk(cfg)
	if d.admin, err = d.newAdmin(); err != nil {
		l.Close()
		return err
	}
	d.budget.d = d
	d.recorder = declog.Tee(l, d.admin, &d.budget)
	return nil
}

func resolverConfig(cfg *policy.Config, log *slog.Logger) resolver.Config {
	r := cfg.Resolver
	// The policy already filled in its defaults, so an explicit
	// min_ttl: 0 means "no floor"; the resolver reads 0 as "my default".
	minTTL := r.MinTTL
	if minTTL == 0 {
		minTTL = time.Nanosecond
	}
	return resolver.Config{Upstreams: r.Upstreams, Timeout: r.Timeout, MinTTL: minTTL, MaxTTL: r.MaxTTL, CacheSize: r.CacheSize, Logger: log}
}

// build constructs the edges; nothing serves yet.
func (d *daemon) build(cfg *policy.Config, addrs Addrs) error {
	d.resolver = resolver.New(resolverConfig(cfg, d.log))
	selfPorts, selfIPs := selfAddrs(addrs)
	var err error
	d.proxy, err = proxy.New(proxy.Config{
		Policy: d.holder.Current, Resolver: d.resolver, Recorder: d.recorder,
		Self: selfPorts, Logger: d.log, Ask: d.ask,
	})
	if err != nil {
		return fmt.Errorf("proxy: %w", err)
	}
	d.dns = dnsfilter.New(dnsfilter.Config{
		Policy: d.holder.Current, Resolver: d.resolver, Recorder: d.recorder,
		Self: selfIPs, Logger: d.log,
	})
	d.openMeter(cfg)
	// The gateway's own calls obey the proxy's rule too: resolve through
	// the shared resolver, check every address, dial a checked one.
	// apis: routes dial the same way.
	dialer := &safedial.Dialer{Policy: d.holder.Current, Resolver: d.resolver, Self: safedial.NewSelfSet(selfPorts)}
	newUpstream := func() *http.Transport {
		t := gateway.NewTransport()
		t.DialContext = dialer.DialContext
		return t
	}
	// A provider's ca_file swaps the trust roots of its calls only.
	upstream := providerTrust{policy: d.holder.Current, def: newUpstream(), cas: catrust.New(newUpstream)}
	if err := d.openChannels(cfg, safedial.NewSelfSet(selfPorts)); err != nil {
		return err
	}
	d.gateway = gateway.New(gateway.Config{
		Providers: func() map[string]policy.ProviderConfig { return d.holder.Current().Config().Providers },
		Policy:    d.holder.Current,
		Meter:     d.meter, Recorder: d.recorder, Env: d.opts.Env, Logger: d.log, Transport: upstream,
	})
	d.apis = apiroute.New(apiroute.Config{
		Policy: d.holder.Current, Recorder: d.recorder, Env: d.opts.Env, Dial: dialer.DialContext, Logger: d.log,
	})
	d.startupEvents()
	return nil
}

// openMeter opens the spend ledger when providers are configured. A ledger
// that cannot be opened leaves the meter nil: the gateway then refuses
// every metered call (fail closed) and the rest of egressd still runs.
func (d *daemon) openMeter(cfg *policy.Config) {
	if len(cfg.Providers) == 0 {
		return
	}
	d.crashCalls, d.crashUSD = inFlightAtStart(cfg.Budget.Ledger)
	m, err := meter.Open(cfg.Budget, meter.Options{Logger: d.log, Env: d.opts.Env})
	if err != nil {
		d.log.Error("spend ledger unavailable: refusing every gateway call until egressd restarts with a readable ledger",
			"store", cfg.Budget.Store, "ledger", cfg.Budget.Ledger, "error", err)
		return
	}
	d.meter = m
}

func (d *daemon) serve(ctx context.Context, ls *listeners, addrs Addrs) error {
	runCtx, stopDNS := context.WithCancel(context.WithoutCancel(ctx))
	defer stopDNS()
	var wg sync.WaitGroup
	errc := make(chan error, 4)
	goServe := func(name string, f func() error) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := f(); err != nil && !errors.Is(err, http.ErrServerClosed) {
				errc <- fmt.Errorf("%s: %w", name, err)
			}
		}()
	}
	var gw, adm *http.Server
	if ls.proxy != nil {
		goServe("proxy", func() error { return d.proxy.Serve(ls.proxy) })
	}
	if ls.dnsUDP != nil {
		goServe("dns", func() error { return d.dns.Serve(runCtx, ls.dnsUDP, ls.dnsTCP) })
	}
	if ls.gateway != nil {
		// The policy's header and idle timeouts bound the agent here as on
		// the proxy. No WriteTimeout: provider streams run for minutes.
		// ReadTimeout bounds a slow upload of a request body.
		t := d.holder.Current().Config().Timeouts
		// statusline puts the refusal reason into the status line.
		mux := gatewayMux{policy: d.holder.Current, apis: d.apis, providers: d.gateway}
		gw = &http.Server{Handler: mux, ReadHeaderTimeout: t.Header,
			ReadTimeout: 2 * time.Minute, IdleTimeout: t.Idle, ConnContext: statusline.ConnContext}
		goServe("gateway", func() error { return gw.Serve(statusline.Listener(ls.gateway)) })
	}
	if ls.admin != nil {
		adm = &http.Server{Handler: d.admin, ReadHeaderTimeout: 10 * time.Second, IdleTimeout: time.Minute}
		adm.RegisterOnShutdown(d.admin.Close)
		goServe("admin", func() error { return adm.Serve(ls.admin) })
	}
	watchCtx, stopWatch := context.WithCancel(ctx)
	defer stopWatch()
	watchDone := d.watch(watchCtx)
	askDone := d.runAsk(watchCtx)

	d.admin.SetReady(true)
	d.log.Info("egressd serving", "proxy", addrs.Proxy, "dns", addrs.DNS, "gateway", addrs.Gateway, "admin", addrs.Admin)
	if d.opts.Ready != nil {
		d.opts.Ready(addrs)
	}

	var runErr error
	select {
	case <-ctx.Done():
	case runErr = <-errc:
		d.log.Error("listener failed; stopping", "error", runErr)
	}
	stopWatch()
	<-watchDone
	<-askDone
	d.shutdown(gw, adm, stopDNS)
	wg.Wait()
	return runErr
}

// shutdown stops the edges in reverse wiring order within timeouts.shutdown.
func (d *daemon) shutdown(gw, adm *http.Server, stopDNS func()) {
	d.admin.SetReady(false)
	grace := d.holder.Current().Config().Timeouts.Shutdown
	ctx, cancel := context.WithTimeout(context.Background(), grace)
	defer cancel()
	d.log.Info("stopping: draining open connections", "deadline", grace.String())
	var wg sync.WaitGroup
	wg.Add(2)
	go func() {
		defer wg.Done()
		if err := d.proxy.Shutdown(ctx); err != nil {
			d.log.Warn("proxy drain cut connections at the deadline", "error", err)
		}
	}()
	go func() {
		defer wg.Done()
		// Close first: drains of streams whose agent already left are cut
		// and charged now, so their settles reach the ledger before exit.
		// Streams with a connected agent are left to finish.
		d.gateway.Close()
		if gw != nil {
			if err := gw.Shutdown(ctx); err != nil {
				gw.Close()
			}
		}
		// Leave the ledger file current on its own (the journal folded
		// in) for whoever reads it while egressd is stopped.
		if d.meter != nil {
			if err := d.meter.Close(); err != nil {
				d.log.Warn("spend ledger not compacted at stop; its journal holds the spend", "error", err)
			}
		}
	}()
	wg.Wait()
	stopDNS()
	d.admin.Close()
	if adm != nil {
		adm.Close()
	}
}
