// Command benchrun is the benchmark suite behind benchmarks/run: it
// measures egressd side by side with squid, tinyproxy, smokescreen, a bare
// goproxy, a hand-written Go tunnel and DIRECT (no proxy), all on
// loopback in one run, and writes results/latest.{md,json} and
// results/throughput.png. benchmarks/run installs the peers and builds the
// binaries it expects in -bin.
//
// Every load loop is bounded by a duration and a count; every process it
// starts is stopped by PID; all traffic stays on 127.0.0.0/8.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/egressd/egressd/benchmarks/internal/load"
	"github.com/egressd/egressd/benchmarks/internal/origin"
	"github.com/egressd/egressd/benchmarks/internal/wire"
)

// options are the knobs; the defaults are the published run.
type options struct {
	binDir, outDir, readme, repo string
	reps                         int
	systems                      string
	compare                      string
	phases                       string
	quietLoad                    float64
	quietWait                    time.Duration
	skipMicro                    bool
	render                       string
	perfDir, statDir             string

	httpConns, httpMax     int
	httpDur                time.Duration
	bulkDur                time.Duration
	bulkMax                uint64
	setupWorkers, setupMax int
	setupDur               time.Duration
	idleTunnels            int
	dnsWorkers, dnsMax     int
	dnsRate                float64
	dnsDur                 time.Duration
	gwRequests, gwEvents   int
	gwDur                  time.Duration
}

func parseFlags() options {
	var o options
	flag.StringVar(&o.binDir, "bin", "benchmarks/.bin", "directory with egressd, smokescreen, goproxy-bare, tunnel-ceiling")
	flag.StringVar(&o.outDir, "out", "benchmarks/results", "where latest.md, latest.json and throughput.png go")
	flag.StringVar(&o.readme, "readme", "benchmarks/README.md", "README whose results section is replaced (\"\" = none)")
	flag.StringVar(&o.repo, "repo", ".", "repository root, for the decision micro-benchmarks")
	flag.IntVar(&o.reps, "reps", 3, "runs per system; the report shows their median and range")
	flag.StringVar(&o.systems, "systems", "", "comma-separated subset of systems, DNS servers included (default: all)")
	flag.StringVar(&o.phases, "phases", "proxy,dns,gateway", "comma-separated phases to run")
	flag.StringVar(&o.compare, "compare", "", "a second egressd `binary`, measured as system egressd-b beside egressd in the proxy and DNS phases")
	flag.Float64Var(&o.quietLoad, "quiet-load", 0.7, "wait for the 1-minute load average to drop below this")
	flag.DurationVar(&o.quietWait, "quiet-wait", 2*time.Minute, "...but for at most this long")
	flag.BoolVar(&o.skipMicro, "skip-micro", false, "skip the decision micro-benchmarks")
	flag.StringVar(&o.render, "render", "", "measure nothing: redraw the report, chart and README section from this latest.json")
	flag.StringVar(&o.perfDir, "perf", "", "record `perf` profiles of egressd per step into this directory (skews the numbers)")
	flag.StringVar(&o.statDir, "perf-stat", "", "count system calls and context switches of every system per step into this directory")
	flag.IntVar(&o.httpConns, "http-conns", 32, "wrk keep-alive connections")
	flag.DurationVar(&o.httpDur, "http-dur", 4*time.Second, "wrk duration per run")
	flag.IntVar(&o.httpMax, "http-max", 2_000_000, "request cap per wrk run")
	flag.DurationVar(&o.bulkDur, "bulk-dur", 3*time.Second, "CONNECT bulk duration per run")
	flag.Uint64Var(&o.bulkMax, "bulk-max", 64<<30, "byte cap per tunnel per bulk run")
	flag.IntVar(&o.setupWorkers, "setup-workers", 16, "concurrent new-tunnel loops")
	flag.DurationVar(&o.setupDur, "setup-dur", 3*time.Second, "new-tunnels duration per run")
	flag.IntVar(&o.setupMax, "setup-max", 60_000, "tunnel cap per new-tunnels run")
	flag.IntVar(&o.idleTunnels, "idle-tunnels", 2000, "idle tunnels held open for the memory measurement")
	flag.IntVar(&o.dnsWorkers, "dns-workers", 16, "queries in flight for peak DNS queries/s")
	flag.IntVar(&o.dnsMax, "dns-max", 500_000, "query cap per DNS run")
	flag.Float64Var(&o.dnsRate, "dns-rate", 2000, "fixed DNS query rate for latency (queries/s)")
	flag.DurationVar(&o.dnsDur, "dns-dur", 3*time.Second, "DNS duration per run")
	flag.IntVar(&o.gwRequests, "gw-requests", 300, "short streamed calls per gateway TTFB run")
	flag.IntVar(&o.gwEvents, "gw-events", 100_000, "SSE events in the gateway throughput stream")
	flag.DurationVar(&o.gwDur, "gw-dur", 5*time.Second, "gateway TTFB duration cap per run")
	printPolicy := flag.Bool("print-policy", false, "print the policy egressd runs with and exit")
	flag.Parse()
	if *printPolicy {
		fmt.Print(egressdPolicy("/tmp/egressd-bench-XXXX/egressd"))
		os.Exit(0)
	}
	return o
}

// env is what every phase shares.
type env struct {
	opt      options
	tmp      string
	dnsmasq  *proc
	hello    []byte
	failures []string
	notes    map[string]string // one per system: how it behaved, not a failure
}

func (e *env) note(system, msg string) {
	if e.notes == nil {
		e.notes = map[string]string{}
	}
	e.notes[system] = msg
}

// bin finds a program: the suite's own build directory first, then PATH
// (squid and dnsmasq live in /usr/sbin, which may not be on it).
func (e *env) bin(name string) string {
	p := filepath.Join(e.opt.binDir, name)
	if _, err := os.Stat(p); err == nil {
		abs, _ := filepath.Abs(p)
		return abs
	}
	if p, err := exec.LookPath(name); err == nil {
		return p
	}
	for _, d := range []string{"/usr/sbin", "/usr/bin", "/sbin"} {
		if _, err := os.Stat(filepath.Join(d, name)); err == nil {
			return filepath.Join(d, name)
		}
	}
	return name
}

func (e *env) fail(system, step string, err error) {
	e.failures = append(e.failures, fmt.Sprintf("%s, %s: %v", system, step, err))
}

// tunnel is how the load generator reaches the tunnel target through s.
func (e *env) tunnel(s system) load.Tunnel {
	if s.addr() == "" {
		return load.Tunnel{Direct: originIP + ":" + tunnelPort, Hello: e.hello}
	}
	return load.Tunnel{Proxy: s.addr(), Authority: s.tunnelTarget(), Hello: e.hello}
}

func main() {
	slog.SetDefault(slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo})))
	opt := parseFlags()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	var err error
	if opt.render != "" {
		err = render(opt)
	} else {
		err = run(ctx, opt)
	}
	stopAll()
	if err != nil {
		fmt.Fprintln(os.Stderr, "benchrun:", err)
		os.Exit(1)
	}
}

func selected(opt options) []system {
	all := allSystems()
	if opt.compare != "" {
		b := system{name: sysEgressdB, ip: egressdIP, http: true, targetHost: originHost, start: startEgressdB}
		all = slices.Insert(all, 2, b)
	}
	if opt.systems == "" {
		return all
	}
	want := strings.Split(opt.systems, ",")
	var out []system
	for _, s := range all {
		if slices.Contains(want, s.name) || s.name == sysDirect || s.name == sysEgressdB {
			out = append(out, s)
		}
	}
	return out
}

func run(ctx context.Context, opt options) error {
	tmp, err := os.MkdirTemp("", "egressd-bench-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	if err := os.Chmod(tmp, 0o755); err != nil { // squid runs as "proxy" and reads its config here
		return err
	}
	e := &env{opt: opt, tmp: tmp}
	if e.hello, err = wire.ClientHello(originHost); err != nil {
		return err
	}
	stopServers, err := startServers(ctx, e)
	if err != nil {
		return err
	}
	defer stopServers()

	res := &results{Started: time.Now(), Reps: opt.reps, Versions: versions(e), Settings: settings(opt),
		Command: command(os.Args[1:])}
	if !opt.skipMicro {
		slog.Info("decision micro-benchmarks")
		micro, out, err := runMicro(ctx, opt.repo)
		if err != nil {
			e.fail("micro-benchmarks", "go test -bench", fmt.Errorf("%w: %s", err, tail(out)))
		}
		res.Micro = micro
	}
	waitQuiet(opt.quietLoad, opt.quietWait, func(msg string, args ...any) { slog.Info(msg, args...) })
	res.Machine = readMachine()
	slog.Info("measuring", "load1", res.Machine.LoadStart, "reps", opt.reps)

	systems := selected(opt)
	names := make([]string, len(systems))
	for i, s := range systems {
		names[i] = s.name
	}
	gs := groupDefs(names)
	col := newCollector()
	others := startOtherCPU()
	if err := measureAll(ctx, e, systems, gs, col); err != nil {
		return err
	}
	res.Machine.OtherCPU = others.share()
	res.Machine.LoadEnd = load1()
	res.Seconds = time.Since(res.Started).Seconds()
	res.Groups = col.summarize(gs)
	res.Goals = goals(res.Groups, res.Micro)
	res.Failures = e.failures
	res.Notes = e.notes
	res.DecisionLogBytes, res.DecisionLogDropped = decisionLogStats(e)
	return publish(res, opt)
}

// startServers runs the origin, the tunnel target, the fake provider and
// dnsmasq for the whole run, after checking every fixed address is free.
func startServers(ctx context.Context, e *env) (func(), error) {
	for _, a := range []string{originIP + ":" + httpPort, originIP + ":" + tunnelPort, providerAddr,
		egressdIP + ":" + proxyPort, egressdGateway, egressdAdmin} {
		if err := portFree(ctx, "tcp", a); err != nil {
			return nil, err
		}
	}
	for _, s := range allSystems() {
		if s.addr() != "" && s.name != sysEgressd {
			if err := portFree(ctx, "tcp", s.addr()); err != nil {
				return nil, err
			}
		}
	}
	for _, a := range []string{dnsmasqIP + ":53", unboundIP + ":53", egressdDNS} {
		if err := portFree(ctx, "udp", a); err != nil {
			return nil, err
		}
	}
	var closers []func() error
	cleanup := func() {
		for i := len(closers) - 1; i >= 0; i-- {
			_ = closers[i]()
		}
	}
	starts := []func() (*origin.Server, error){
		func() (*origin.Server, error) { return origin.StartHTTP(originIP + ":" + httpPort) },
		func() (*origin.Server, error) { return origin.StartTunnelTarget(originIP + ":" + tunnelPort) },
		func() (*origin.Server, error) { return origin.StartProvider(providerAddr, providerKey) },
	}
	for _, start := range starts {
		s, err := start()
		if err != nil {
			cleanup()
			return nil, err
		}
		closers = append(closers, s.Close)
	}
	d, err := startDnsmasq(e)
	if err != nil {
		if d != nil {
			d.stop(3 * time.Second)
		}
		cleanup()
		return nil, fmt.Errorf("dnsmasq: %w", err)
	}
	e.dnsmasq = d
	closers = append(closers, func() error { d.stop(3 * time.Second); return nil })
	return cleanup, nil
}

func tail(b []byte) string {
	s := strings.TrimSpace(string(b))
	if len(s) > 800 {
		s = "..." + s[len(s)-800:]
	}
	return s
}

func settings(o options) map[string]string {
	return map[string]string{
		"http":    fmt.Sprintf("wrk -t1 -c%d -d%v, absolute-URI GET, %d-byte body", o.httpConns, o.httpDur, origin.BodySize),
		"connect": fmt.Sprintf("1 and 8 tunnels for %v each; new tunnels: %d loops for %v", o.bulkDur, o.setupWorkers, o.setupDur),
		"idle":    fmt.Sprintf("%d idle tunnels, RSS delta of the process tree", o.idleTunnels),
		"dns":     fmt.Sprintf("peak with %d in flight for %v; latency at %.0f q/s for %v", o.dnsWorkers, o.dnsDur, o.dnsRate, o.dnsDur),
		"gateway": fmt.Sprintf("%d sequential short streams (TTFB); one stream of %d events", o.gwRequests, o.gwEvents),
		"policy":  fmt.Sprintf("%d grants plus the benchmark's own; rate limits on (1e6/s); decision log to a file", policyGrants),
	}
}

// command is how to repeat this run: benchmarks/run and the flags given,
// less the -bin that benchmarks/run adds itself.
func command(args []string) string {
	out := []string{"benchmarks/run"}
	for i := 0; i < len(args); i++ {
		if args[i] == "-bin" || args[i] == "--bin" {
			i++
			continue
		}
		if strings.HasPrefix(args[i], "-bin=") || strings.HasPrefix(args[i], "--bin=") {
			continue
		}
		out = append(out, args[i])
	}
	return strings.Join(out, " ")
}

// render republishes a saved run (after a change to the report's layout).
func render(opt options) error {
	b, err := os.ReadFile(opt.render)
	if err != nil {
		return err
	}
	var res results
	if err := json.Unmarshal(b, &res); err != nil {
		return fmt.Errorf("read %s: %w", opt.render, err)
	}
	return publish(&res, opt)
}
