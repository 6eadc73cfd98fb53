package main

import (
	"fmt"
	"math"
	"strings"

	"github.com/egressd/egressd/benchmarks/internal/stats"
)

// Goal statuses.
const (
	goalMet         = "met"
	goalNotMet      = "not met"
	goalNotMeasured = "not measured"
)

// goal is one of the issues' targets (7: the first round; 20: close to
// the limit), judged on this run's medians.
type goal struct {
	Goal     string `json:"goal"`
	Measured string `json:"measured"`
	Status   string `json:"status"`
}

// judge turns a list of checks into one goal: met when all pass, not
// measured when any input is missing.
type check struct {
	ok      bool
	missing bool
	text    string
}

func judge(name string, checks ...check) goal {
	g := goal{Goal: name, Status: goalMet}
	var parts []string
	for _, c := range checks {
		parts = append(parts, c.text)
		switch {
		case c.missing:
			g.Status = goalNotMeasured
		case !c.ok && g.Status == goalMet:
			g.Status = goalNotMet
		}
	}
	g.Measured = strings.Join(parts, "; ")
	return g
}

// atLeast checks egressd's metric against factor × another system's.
func atLeast(gs []groupResult, id, other string, factor float64, higher bool) check {
	e, o := find(gs, id, sysEgressd), find(gs, id, other)
	r := stats.Ratio(e, o)
	if math.IsNaN(r) {
		return check{missing: true, text: fmt.Sprintf("%s vs %s: not measured", id, other)}
	}
	ok := r >= factor
	if !higher {
		ok = r <= factor
	}
	return check{ok: ok, text: fmt.Sprintf("%s %.2f× %s", id, r, other)}
}

// abovePeers checks egressd beats every peer that was measured.
func abovePeers(gs []groupResult, id string) check {
	e := find(gs, id, sysEgressd)
	if !e.OK() {
		return check{missing: true, text: id + " vs peers: not measured"}
	}
	for _, p := range []string{"squid", "tinyproxy", "smokescreen"} {
		if s := find(gs, id, p); s.OK() && s.Median >= e.Median {
			return check{text: fmt.Sprintf("%s not above %s (%.2f×)", id, p, e.Median/s.Median)}
		}
	}
	return check{ok: true, text: id + " above every peer"}
}

// ceilingOf is the better of the two bare Go references for a metric.
func ceilingOf(gs []groupResult, id string) string {
	g, t := find(gs, id, sysGoproxy), find(gs, id, sysTunnel)
	if t.OK() && (!g.OK() || t.Median > g.Median) {
		return sysTunnel
	}
	return sysGoproxy
}

func goals(gs []groupResult, micro microResults) []goal {
	bulk := []check{}
	for _, id := range []string{"connect1_mibs", "connect8_mibs"} {
		bulk = append(bulk, atLeast(gs, id, ceilingOf(gs, id), 0.95, true), abovePeers(gs, id))
	}
	cpuOverhead := atLeast(gs, "http_cpu_us", sysGoproxy, 1.05, false)
	cpuOverhead.text = strings.Replace(cpuOverhead.text, "http_cpu_us", "CPU per request", 1)
	return []goal{
		judge("20: plain HTTP CPU per request ≤ 0.6× squid's, requests/s ≥ 1.5× squid's, p99 ≤ squid's",
			atLeast(gs, "http_cpu_us", "squid", 0.6, false), atLeast(gs, "http_rps", "squid", 1.5, true),
			atLeast(gs, "http_p99_ms", "squid", 1, false)),
		judge("20: new tunnels CPU per tunnel ≤ the hand-written Go tunnel's, tunnels/s above every peer",
			atLeast(gs, "tunnel_cpu_us", sysTunnel, 1, false), abovePeers(gs, "tunnels_per_s")),
		judge("20: DNS CPU per cached granted query ≤ unbound's; denials no worse than unbound's",
			atLeast(gs, "dns_granted_cpu_us", sysUnbound, 1, false), atLeast(gs, "dns_denied_cpu_us", sysUnbound, 1, false)),
		judge("7: CONNECT bulk throughput (1 and 8 tunnels) ≥ 0.95× the better bare Go reference, and above every peer",
			bulk...),
		judge("7: memory per idle tunnel ≤ bare goproxy's", atLeast(gs, "idle_kib", sysGoproxy, 1, false)),
		judge("7: decision < 200 ns and 0 allocs at 10,000 rules", micro.decideCheck()),
		judge("7: policy + rate limits + decision log add < 5% CPU per request over bare goproxy", cpuOverhead),
		judge("7: DNS cached answers: queries/s ≥ dnsmasq's", atLeast(gs, "dns_granted_qps", sysDnsmasq, 1, true)),
	}
}
