package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/egressd/egressd/benchmarks/internal/load"
	"github.com/egressd/egressd/benchmarks/internal/origin"
)

// sample is one run's value for each metric of one system.
type sample map[string]float64

// cpuMeter charges a test the CPU time of the system's processes; DIRECT
// (no process) gets NaN.
type cpuMeter struct {
	p     *proc
	start time.Duration
}

func startCPU(p *proc) (*cpuMeter, error) {
	if p == nil {
		return &cpuMeter{}, nil
	}
	u, err := p.usage()
	if err != nil {
		return nil, err
	}
	return &cpuMeter{p: p, start: u.CPU}, nil
}

// per returns the CPU time used since start divided by n, in unit.
func (m *cpuMeter) per(n float64, unit time.Duration) float64 {
	if m.p == nil || n <= 0 {
		return math.NaN()
	}
	u, err := m.p.usage()
	if err != nil {
		return math.NaN()
	}
	return float64(u.CPU-m.start) / float64(unit) / n
}

// proxyRun measures one system once: a fresh process, warm-up, then idle
// memory (first, while the process's heap is still its own), HTTP
// forwarding, CONNECT bulk with 1 and 8 tunnels, and new tunnels/s.
func proxyRun(ctx context.Context, e *env, s system) (sample, error) {
	var p *proc
	if s.start != nil {
		var err error
		if p, err = s.start(e); err != nil {
			if p != nil {
				p.stop(3 * time.Second)
			}
			return nil, err
		}
		defer p.stop(5 * time.Second)
	}
	tun := e.tunnel(s)
	if err := warmUp(ctx, e, s, tun); err != nil {
		return nil, fmt.Errorf("warm-up: %w", err)
	}
	out := sample{}
	steps := []struct {
		name string
		run  func() error
	}{
		{"idle tunnels", func() error { return idleMemory(ctx, e, p, tun, out) }},
		{"http", func() error { return httpRun(ctx, e, s, p, out) }},
		{"connect bulk", func() error { return bulkRun(ctx, e, p, tun, out) }},
		{"new tunnels", func() error { return setupRun(ctx, e, p, tun, out) }},
	}
	for _, st := range steps {
		endProfile := e.profile(p, s.name, strings.ReplaceAll(st.name, " ", "-"))
		err := st.run()
		endProfile()
		if err != nil {
			slog.Warn("step failed", "system", s.name, "step", st.name, "err", err)
			e.fail(s.name, st.name, err)
		}
		if ctx.Err() != nil {
			return out, ctx.Err()
		}
	}
	return out, nil
}

// warmUp proves the path works end to end before anything is timed.
func warmUp(ctx context.Context, e *env, s system, tun load.Tunnel) error {
	if s.http {
		tr := &http.Transport{Proxy: nil}
		target := "http://" + originIP + ":" + httpPort + "/"
		if s.addr() != "" {
			tr.Proxy = http.ProxyURL(&url.URL{Scheme: "http", Host: s.addr()})
			target = s.httpTarget()
		}
		c := &http.Client{Transport: tr, Timeout: 10 * time.Second}
		defer tr.CloseIdleConnections()
		for range 20 {
			resp, err := c.Get(target)
			if err != nil {
				return err
			}
			n, _ := io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK || n != origin.BodySize {
				return fmt.Errorf("GET %s: status %d with %d bytes, want 200 with %d", target, resp.StatusCode, n, origin.BodySize)
			}
		}
	}
	for range 5 {
		c, err := tun.Open(ctx)
		if err != nil {
			return err
		}
		err = load.Echo(c, []byte("warm-up"))
		c.Close()
		if err != nil {
			return err
		}
	}
	return nil
}

// idleMemory opens e.idleTunnels tunnels, waits for the proxy's RSS to
// settle, and charges it the growth per tunnel.
func idleMemory(ctx context.Context, e *env, p *proc, tun load.Tunnel, out sample) error {
	if p == nil {
		return nil
	}
	before, err := p.usage()
	if err != nil {
		return err
	}
	conns, err := load.OpenIdle(ctx, tun, e.opt.idleTunnels)
	if err != nil {
		return err
	}
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	rss, err := settledRSS(p)
	if err != nil {
		return err
	}
	out["idle_kib"] = float64(rss-before.RSS) / 1024 / float64(len(conns))
	return nil
}

// settledRSS polls RSS until two reads 250 ms apart differ by under 0.5%,
// for at most 3 s.
func settledRSS(p *proc) (int64, error) {
	u, err := p.usage()
	if err != nil {
		return 0, err
	}
	last := u.RSS
	for range 12 {
		time.Sleep(250 * time.Millisecond) // sampling interval of a settling measurement
		if u, err = p.usage(); err != nil {
			return 0, err
		}
		if math.Abs(float64(u.RSS-last)) < 0.005*float64(last) {
			return u.RSS, nil
		}
		last = u.RSS
	}
	return last, nil
}

func httpRun(ctx context.Context, e *env, s system, p *proc, out sample) error {
	if !s.http {
		return nil
	}
	w := load.Wrk{Bin: e.bin("wrk"), Dir: e.tmp, Threads: 1, Conns: e.opt.httpConns,
		Duration: e.opt.httpDur, MaxRequests: e.opt.httpMax}
	if s.addr() == "" {
		w.URL = "http://" + originIP + ":" + httpPort + "/"
	} else {
		w.URL, w.Target = "http://"+s.addr()+"/", s.httpTarget()
	}
	cpu, err := startCPU(p)
	if err != nil {
		return err
	}
	r, err := w.Run(ctx)
	if err != nil {
		return err
	}
	// A read error is wrk finding the connection closed after a complete
	// response (a proxy without client keep-alive; wrk reconnects). Every
	// other error, and any non-2xx/3xx answer, fails the run.
	if r.Requests == 0 || r.StatusErrors+r.ConnectErrors+r.WriteErrors+r.Timeouts > 0 || r.ReadErrors > r.Requests {
		return fmt.Errorf("wrk: %d requests, %d errors (status %d, connect %d, read %d, write %d, timeout %d)",
			r.Requests, r.Errors(), r.StatusErrors, r.ConnectErrors, r.ReadErrors, r.WriteErrors, r.Timeouts)
	}
	// wrk's duration is wall time even when a thread stopped at its cap,
	// so a capped run would understate the rate: the cap is a safety
	// bound far above what loopback allows, and hitting it fails the run.
	if r.Requests >= int64(e.opt.httpMax) {
		return fmt.Errorf("wrk hit the request cap (%d): raise -http-max", e.opt.httpMax)
	}
	if r.ReadErrors > r.Requests/100 {
		e.note(s.name, fmt.Sprintf("closed the client connection after %d of %d responses (no client keep-alive); wrk reconnected",
			r.ReadErrors, r.Requests))
	}
	out["http_rps"] = r.RPS()
	out["http_p50_ms"] = float64(r.P50US) / 1000
	out["http_p99_ms"] = float64(r.P99US) / 1000
	out["http_cpu_us"] = cpu.per(float64(r.Requests), time.Microsecond)
	return nil
}

func bulkRun(ctx context.Context, e *env, p *proc, tun load.Tunnel, out sample) error {
	for _, n := range []int{1, 8} {
		cpu, err := startCPU(p)
		if err != nil {
			return err
		}
		r, err := load.Bulk(ctx, tun, n, e.opt.bulkDur, e.opt.bulkMax)
		if err != nil {
			return fmt.Errorf("%d tunnels: %w", n, err)
		}
		key := fmt.Sprintf("connect%d_mibs", n)
		out[key] = r.BytesPerSec() / (1 << 20)
		if n == 8 {
			out["connect_cpu_s_gib"] = cpu.per(float64(r.Bytes)/(1<<30), time.Second)
		}
	}
	return nil
}

func setupRun(ctx context.Context, e *env, p *proc, tun load.Tunnel, out sample) error {
	cpu, err := startCPU(p)
	if err != nil {
		return err
	}
	r := load.Setup(ctx, tun, e.opt.setupWorkers, e.opt.setupDur, e.opt.setupMax)
	if r.Errors > 0 || r.Tunnels == 0 {
		return fmt.Errorf("%d tunnels, %d errors, first: %w", r.Tunnels, r.Errors, r.FirstErr)
	}
	_, p99 := r.Lat.Quantiles()
	out["tunnels_per_s"] = float64(r.Tunnels) / r.Elapsed.Seconds()
	out["tunnel_p99_ms"] = float64(p99) / float64(time.Millisecond)
	out["tunnel_cpu_us"] = cpu.per(float64(r.Tunnels), time.Microsecond)
	return nil
}
