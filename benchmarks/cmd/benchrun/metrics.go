package main

import (
	"math"
	"slices"

	"github.com/egressd/egressd/benchmarks/internal/stats"
)

// metricDef describes one reported number.
type metricDef struct {
	ID     string `json:"id"`
	Title  string `json:"title"`
	Unit   string `json:"unit"`
	Higher bool   `json:"higher_is_better"`
	Chart  bool   `json:"charted"` // drawn on the throughput chart, relative to DIRECT
}

// groupDef is a table of the report: the metrics one phase measures, over
// the systems that phase runs.
type groupDef struct {
	Name    string
	Systems []string
	Peers   []string // what "best peer" is chosen from
	Metrics []metricDef
}

func groupDefs(proxySystems []string) []groupDef {
	peers := []string{"squid", "tinyproxy", "smokescreen"}
	dns := []string{sysEgressd}
	if slices.Contains(proxySystems, sysEgressdB) {
		dns = append(dns, sysEgressdB)
	}
	dns = append(dns, sysDnsmasq, sysUnbound)
	return []groupDef{
		{Name: "HTTP forwarding, keep-alive", Systems: withHTTP(proxySystems), Peers: peers, Metrics: []metricDef{
			{"http_rps", "requests/s", "req/s", true, true},
			{"http_p50_ms", "latency p50", "ms", false, false},
			{"http_p99_ms", "latency p99", "ms", false, false},
			{"http_cpu_us", "proxy CPU per request", "µs", false, false},
		}},
		{Name: "CONNECT tunnels", Systems: proxySystems, Peers: peers, Metrics: []metricDef{
			{"connect1_mibs", "bulk throughput, 1 tunnel", "MiB/s", true, true},
			{"connect8_mibs", "bulk throughput, 8 tunnels", "MiB/s", true, true},
			{"connect_cpu_s_gib", "proxy CPU per GiB (8 tunnels)", "s", false, false},
			{"tunnels_per_s", "new tunnels/s (connect + 1 round trip + close)", "1/s", true, true},
			{"tunnel_p99_ms", "tunnel setup p99", "ms", false, false},
			{"tunnel_cpu_us", "proxy CPU per tunnel", "µs", false, false},
			{"idle_kib", "memory per idle tunnel (RSS, 2,000 open)", "KiB", false, false},
		}},
		{Name: "DNS (UDP, cached granted names and denials)", Systems: dns,
			Peers: []string{sysDnsmasq, sysUnbound}, Metrics: []metricDef{
				{"dns_granted_qps", "granted: peak queries/s (16 in flight)", "q/s", true, false},
				{"dns_granted_p50_us", "granted: latency p50 at fixed rate", "µs", false, false},
				{"dns_granted_p99_us", "granted: latency p99 at fixed rate", "µs", false, false},
				{"dns_granted_cpu_us", "granted: server CPU per query", "µs", false, false},
				{"dns_denied_qps", "denied: peak queries/s (16 in flight)", "q/s", true, false},
				{"dns_denied_p50_us", "denied: latency p50 at fixed rate", "µs", false, false},
				{"dns_denied_p99_us", "denied: latency p99 at fixed rate", "µs", false, false},
				{"dns_denied_cpu_us", "denied: server CPU per query", "µs", false, false},
			}},
		{Name: "LLM gateway (OpenAI-shaped SSE fake)", Systems: []string{sysDirect, sysEgressd}, Metrics: []metricDef{
			{"gw_ttfb_p50_ms", "time to first byte p50", "ms", false, false},
			{"gw_ttfb_p99_ms", "time to first byte p99", "ms", false, false},
			{"gw_cpu_us_req", "gateway CPU per short streamed call", "µs", false, false},
			{"gw_stream_mibs", "stream throughput", "MiB/s", true, true},
			{"gw_stream_events_s", "stream events/s", "1/s", true, false},
			{"gw_cpu_us_event", "gateway CPU per SSE event", "µs", false, false},
		}},
	}
}

func withHTTP(names []string) []string {
	var out []string
	for _, n := range names {
		if n != sysTunnel {
			out = append(out, n)
		}
	}
	return out
}

// collector gathers per-run samples: runs[metric][system].
type collector struct {
	runs map[string]map[string][]float64
}

func newCollector() *collector { return &collector{runs: map[string]map[string][]float64{}} }

// add records one run of a system; metrics missing from s (a failed step)
// are recorded as NaN so the run still counts as attempted.
func (c *collector) add(g groupDef, system string, s sample) {
	for _, m := range g.Metrics {
		v, ok := s[m.ID]
		if !ok {
			v = math.NaN()
		}
		if c.runs[m.ID] == nil {
			c.runs[m.ID] = map[string][]float64{}
		}
		c.runs[m.ID][system] = append(c.runs[m.ID][system], v)
	}
}

// metricResult is one metric of the report.
type metricResult struct {
	metricDef
	Values     map[string]stats.Summary `json:"values"`
	Runs       map[string]stats.Runs    `json:"runs"`
	VsDirect   stats.Num                `json:"egressd_vs_direct"`
	BestPeer   string                   `json:"best_peer,omitempty"`
	VsBestPeer stats.Num                `json:"egressd_vs_best_peer"`
}

type groupResult struct {
	Name    string         `json:"name"`
	Systems []string       `json:"systems"`
	Metrics []metricResult `json:"metrics"`
}

func (c *collector) summarize(gs []groupDef) []groupResult {
	var out []groupResult
	for _, g := range gs {
		gr := groupResult{Name: g.Name, Systems: g.Systems}
		for _, m := range g.Metrics {
			mr := metricResult{metricDef: m, Values: map[string]stats.Summary{}, Runs: map[string]stats.Runs{}}
			for _, s := range g.Systems {
				mr.Runs[s] = c.runs[m.ID][s]
				mr.Values[s] = stats.Summarize(c.runs[m.ID][s])
			}
			mr.VsDirect = stats.Num(math.NaN())
			if slices.Contains(g.Systems, sysDirect) {
				mr.VsDirect = stats.Num(stats.Ratio(mr.Values[sysEgressd], mr.Values[sysDirect]))
			}
			mr.BestPeer = best(m, mr.Values, g.Peers)
			mr.VsBestPeer = stats.Num(math.NaN())
			if mr.BestPeer != "" {
				mr.VsBestPeer = stats.Num(stats.Ratio(mr.Values[sysEgressd], mr.Values[mr.BestPeer]))
			}
			gr.Metrics = append(gr.Metrics, mr)
		}
		out = append(out, gr)
	}
	return out
}

// best is the candidate with the best median in the metric's direction.
func best(m metricDef, v map[string]stats.Summary, candidates []string) string {
	name := ""
	for _, c := range candidates {
		s, ok := v[c]
		if !ok || !s.OK() {
			continue
		}
		if name == "" || (m.Higher && s.Median > v[name].Median) || (!m.Higher && s.Median < v[name].Median) {
			name = c
		}
	}
	return name
}

// find returns a metric's summary for a system (N=0 when absent).
func find(gs []groupResult, id, system string) stats.Summary {
	for _, g := range gs {
		for _, m := range g.Metrics {
			if m.ID == id {
				if s, ok := m.Values[system]; ok {
					return s
				}
			}
		}
	}
	return stats.Summarize(nil)
}
