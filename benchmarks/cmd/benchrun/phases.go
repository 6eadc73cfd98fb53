package main

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/miekg/dns"

	"github.com/egressd/egressd/benchmarks/internal/load"
)

const (
	sysDnsmasq = "dnsmasq"
	sysUnbound = "unbound"
)

// dnsAnswers is a readiness check: the server answers origin.bench.test.
func dnsAnswers(addr string) func() error {
	return func() error {
		m := new(dns.Msg)
		m.SetQuestion(dns.Fqdn(originHost), dns.TypeA)
		c := &dns.Client{Timeout: time.Second}
		r, _, err := c.Exchange(m, addr)
		if err != nil {
			return err
		}
		if r.Rcode != dns.RcodeSuccess || len(r.Answer) == 0 {
			return fmt.Errorf("%s answered %s with %d records", addr, dns.RcodeToString[r.Rcode], len(r.Answer))
		}
		return nil
	}
}

// dnsNames are the queried names: granted ones egressd answers from its
// cache after one warm-up lookup (dnsmasq from its local records), and
// denied ones all refuse without asking anyone (unbound caches the
// granted ones the same way, from dnsmasq).
func dnsNames(kind string) []string {
	zone := "dns.bench.test"
	if kind == "denied" {
		zone = "denied.test"
	}
	names := make([]string, 64)
	for i := range names {
		names[i] = fmt.Sprintf("n%02d.%s", i, zone)
	}
	return names
}

// dnsRun measures one DNS server once: peak queries/s with 16 in flight,
// then latency at a fixed moderate rate, for granted and denied names.
func dnsRun(ctx context.Context, e *env, name string) (sample, error) {
	server, p := dnsmasqIP+":53", e.dnsmasq
	start := map[string]func(*env) (*proc, error){sysEgressd: startEgressd, sysEgressdB: startEgressdB, sysUnbound: startUnbound}[name]
	if start != nil {
		var err error
		if p, err = start(e); err != nil {
			if p != nil {
				p.stop(3 * time.Second)
			}
			return nil, err
		}
		defer p.stop(5 * time.Second)
		server = map[string]string{sysEgressd: egressdDNS, sysEgressdB: egressdDNS, sysUnbound: unboundIP + ":53"}[name]
	}
	out := sample{}
	for _, kind := range []string{"granted", "denied"} {
		q := &load.DNSQueries{Server: server, Names: dnsNames(kind), Answered: kind == "granted"}
		if err := q.Pack(); err != nil {
			return nil, err
		}
		warm := load.DNSPeak(ctx, q, 1, 5*time.Second, len(q.Names))
		if warm.Errors > 0 {
			return nil, fmt.Errorf("%s warm-up: %w", kind, warm.FirstErr)
		}
		cpu, err := startCPU(p)
		if err != nil {
			return nil, err
		}
		endProfile := e.profile(p, name, "dns-"+kind)
		peak := load.DNSPeak(ctx, q, e.opt.dnsWorkers, e.opt.dnsDur, e.opt.dnsMax)
		endProfile()
		if peak.Errors > 0 {
			return nil, fmt.Errorf("%s peak: %d errors, first: %w", kind, peak.Errors, peak.FirstErr)
		}
		out["dns_"+kind+"_qps"] = peak.QPS()
		out["dns_"+kind+"_cpu_us"] = cpu.per(float64(peak.Queries), time.Microsecond)
		fixed := load.DNSFixedRate(ctx, q, 8, e.opt.dnsRate, e.opt.dnsDur, int(e.opt.dnsRate*e.opt.dnsDur.Seconds()))
		if fixed.Errors > 0 {
			return nil, fmt.Errorf("%s fixed rate: %d errors, first: %w", kind, fixed.Errors, fixed.FirstErr)
		}
		p50, p99 := fixed.Lat.Quantiles()
		out["dns_"+kind+"_p50_us"] = float64(p50) / float64(time.Microsecond)
		out["dns_"+kind+"_p99_us"] = float64(p99) / float64(time.Microsecond)
	}
	return out, nil
}

// gatewayRun measures the gateway (or DIRECT to the fake provider) once:
// time to first byte of short streams, then one long stream's throughput.
func gatewayRun(ctx context.Context, e *env, name string) (sample, error) {
	chat := load.Chat{URL: "http://" + providerAddr + "/v1/chat/completions", Token: providerKey,
		Model: benchModel, Client: load.NewChatClient()}
	var p *proc
	if name == sysEgressd {
		var err error
		if p, err = startEgressd(e); err != nil {
			if p != nil {
				p.stop(3 * time.Second)
			}
			return nil, err
		}
		defer p.stop(5 * time.Second)
		chat.URL, chat.Token = "http://"+egressdGateway+"/bench/v1/chat/completions", agentToken
	}
	if _, err := chat.TTFB(ctx, 3, 10*time.Second); err != nil {
		return nil, fmt.Errorf("warm-up: %w", err)
	}
	out := sample{}
	cpu, err := startCPU(p)
	if err != nil {
		return nil, err
	}
	endProfile := e.profile(p, name, "gateway-ttfb")
	lat, err := chat.TTFB(ctx, e.opt.gwRequests, e.opt.gwDur)
	endProfile()
	if err != nil {
		return nil, fmt.Errorf("ttfb: %w", err)
	}
	p50, p99 := lat.Quantiles()
	out["gw_ttfb_p50_ms"] = float64(p50) / float64(time.Millisecond)
	out["gw_ttfb_p99_ms"] = float64(p99) / float64(time.Millisecond)
	out["gw_cpu_us_req"] = cpu.per(float64(lat.Len()), time.Microsecond)

	if cpu, err = startCPU(p); err != nil {
		return out, err
	}
	endProfile = e.profile(p, name, "gateway-stream")
	st, err := chat.Stream(ctx, e.opt.gwEvents, 4*e.opt.gwDur)
	endProfile()
	if err != nil {
		return out, fmt.Errorf("stream: %w", err)
	}
	out["gw_stream_mibs"] = float64(st.Bytes) / (1 << 20) / st.Elapsed.Seconds()
	out["gw_stream_events_s"] = float64(st.Events) / st.Elapsed.Seconds()
	out["gw_cpu_us_event"] = cpu.per(float64(st.Events), time.Microsecond)
	return out, nil
}

var errNoEgressd = errors.New("egressd binary not built")
