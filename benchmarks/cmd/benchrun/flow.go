package main

import (
	"context"
	"fmt"
	"log/slog"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/egressd/egressd/benchmarks/internal/chart"
	"github.com/egressd/egressd/benchmarks/internal/stats"
)

// measureAll runs every phase reps times. Within a repetition the order
// of systems (proxies and DNS servers alike) rotates, so a slow drift of
// the machine (another job, heat) does not always land on the same
// system, nor does what the one before left behind.
func measureAll(ctx context.Context, e *env, systems []system, gs []groupDef, col *collector) error {
	names := make([]string, len(systems))
	for i, s := range systems {
		names[i] = s.name
	}
	phase := func(p string) bool { return slices.Contains(strings.Split(e.opt.phases, ","), p) }
	for rep := range e.opt.reps {
		for i := range systems {
			if !phase("proxy") {
				break
			}
			s := systems[(i+rep)%len(systems)]
			t0 := time.Now()
			out, err := proxyRun(ctx, e, s)
			if err != nil {
				if ctx.Err() != nil {
					return ctx.Err()
				}
				slog.Warn("run failed", "system", s.name, "rep", rep+1, "err", err)
				e.fail(s.name, fmt.Sprintf("run %d", rep+1), err)
			}
			col.add(gs[0], s.name, out)
			col.add(gs[1], s.name, out)
			slog.Info("proxy run", "system", s.name, "rep", rep+1, "took", time.Since(t0).Round(time.Millisecond), "metrics", fmtSample(out))
		}
		dns := gs[2].Systems
		for i := range dns {
			name := dns[(i+rep)%len(dns)]
			if !phase("dns") || e.opt.systems != "" && name != sysEgressdB && !slices.Contains(strings.Split(e.opt.systems, ","), name) {
				continue
			}
			out, err := dnsRun(ctx, e, name)
			if err != nil {
				if ctx.Err() != nil {
					return ctx.Err()
				}
				e.fail(name, fmt.Sprintf("dns run %d", rep+1), err)
			}
			col.add(gs[2], name, out)
			slog.Info("dns run", "system", name, "rep", rep+1, "metrics", fmtSample(out))
		}
		for _, name := range []string{sysDirect, sysEgressd} {
			if !phase("gateway") || !slices.Contains(names, name) {
				continue
			}
			out, err := gatewayRun(ctx, e, name)
			if err != nil {
				if ctx.Err() != nil {
					return ctx.Err()
				}
				e.fail(name, fmt.Sprintf("gateway run %d", rep+1), err)
			}
			col.add(gs[3], name, out)
			slog.Info("gateway run", "system", name, "rep", rep+1, "metrics", fmtSample(out))
		}
	}
	return nil
}

func fmtSample(s sample) string {
	keys := make([]string, 0, len(s))
	for k := range s {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	out := ""
	for _, k := range keys {
		out += fmt.Sprintf("%s=%s ", k, fmtNum(s[k]))
	}
	return out
}

// publish writes the report files, the chart and the README section, and
// prints the tables.
func publish(res *results, opt options) error {
	if err := res.write(opt.outDir); err != nil {
		return err
	}
	f, err := os.Create(filepath.Join(opt.outDir, "throughput.png"))
	if err != nil {
		return err
	}
	c := throughputChart(res)
	if err := c.WritePNG(f); err != nil {
		f.Close()
		return fmt.Errorf("draw chart: %w", err)
	}
	if err := f.Close(); err != nil {
		return err
	}
	if opt.readme != "" {
		md := res.markdown() + "\n![throughput relative to DIRECT](results/throughput.png)\n"
		if err := updateReadme(opt.readme, md); err != nil {
			slog.Warn("README not updated", "err", err)
		}
	}
	fmt.Println()
	fmt.Print(res.markdown())
	fmt.Printf("\nwrote %s/latest.md, latest.json, throughput.png\n", opt.outDir)
	return nil
}

// throughputChart is every charted metric relative to DIRECT, one bar per
// system that was measured.
func throughputChart(res *results) *chart.Chart {
	c := &chart.Chart{
		Title: "egressd and peers: throughput relative to DIRECT (no proxy), loopback, same run",
		Subtitle: fmt.Sprintf("median of %d runs, whisker = min-max; higher is better; %d CPUs; other processes used %.0f%% of the CPU meanwhile",
			res.Reps, res.Machine.NProc, 100*res.Machine.OtherCPU),
		RefLabel: "DIRECT = 1.0",
	}
	for _, g := range res.Groups {
		for _, m := range g.Metrics {
			if !m.Chart {
				continue
			}
			ref := m.Values[sysDirect]
			grp := chart.Group{Title: fmt.Sprintf("%s: %s (DIRECT %s %s)", g.Name, m.Title, fmtNum(ref.Median), m.Unit)}
			for _, s := range g.Systems {
				if s == sysDirect {
					continue
				}
				grp.Bars = append(grp.Bars, bar(s, m.Values[s], ref, m.Unit))
			}
			c.Groups = append(c.Groups, grp)
		}
	}
	return c
}

func bar(name string, v, ref stats.Summary, unit string) chart.Bar {
	b := chart.Bar{Label: name, Highlight: name == sysEgressd, Value: math.NaN(), Min: math.NaN(), Max: math.NaN(),
		FailedCaption: "not measured (see failures)"}
	if !v.OK() || !ref.OK() || ref.Median == 0 {
		return b
	}
	b.Value, b.Min, b.Max = v.Median/ref.Median, v.Min/ref.Median, v.Max/ref.Median
	b.ValueCaption = fmt.Sprintf("%.2fx  (%s %s)", b.Value, fmtNum(v.Median), unit)
	return b
}
