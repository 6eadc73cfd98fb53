//go:build hardening

package hardening

import (
	"fmt"
	"strings"
	"time"
)

// rule is one allow: entry.
type rule struct {
	Host  string
	CIDR  string
	Ports []int
}

// policyFile is the subset of policy.yaml the suite varies; render fills the
// rest with values that keep tests fast (short timeouts) and lets limits
// be opened up for load.
type policyFile struct {
	Mode      string
	DNS       []string // resolver.upstreams
	ResTO     time.Duration
	MinTTL    time.Duration // written as is (the resolver reads 0 as 5s)
	Allow     []rule
	NetAllow  []string
	NetDeny   []string
	QTypes    []string
	Unlimited bool // client, host and DNS buckets unlimited
	MaxPer    int  // limits.max_conns_per_client (0 = default)
	MaxConns  int  // limits.max_conns (0 = default)
	Dial      time.Duration
	Header    time.Duration
	Idle      time.Duration
	Shutdown  time.Duration
	Gateway   bool   // listen.gateway on 127.0.0.1:0
	Providers string // providers: section body, indented by two spaces
	Budget    string // budget: section body, indented by two spaces
	LogFile   string // set by the harness
}

func (p policyFile) render() string {
	var b strings.Builder
	w := func(format string, args ...any) { fmt.Fprintf(&b, format, args...) }
	w("version: 1\n")
	if p.Mode != "" {
		w("mode: %s\n", p.Mode)
	}
	gw := `""`
	if p.Gateway {
		gw = "127.0.0.1:0"
	}
	w("listen: {proxy: 127.0.0.1:0, dns: 127.0.0.1:0, gateway: %s, admin: 127.0.0.1:0}\n", gw)
	w("resolver:\n  upstreams: [%s]\n", strings.Join(p.DNS, ", "))
	w("  timeout: %s\n  min_ttl: %s\n  max_ttl: 5m\n", orDur(p.ResTO, 500*time.Millisecond), p.MinTTL)
	w("allow:\n")
	if len(p.Allow) == 0 {
		w("  []\n")
	}
	for _, r := range p.Allow {
		if r.Host != "" {
			w("  - host: %q\n", r.Host)
		} else {
			w("  - cidr: %s\n", r.CIDR)
		}
		if len(r.Ports) > 0 {
			w("    ports: %s\n", intList(r.Ports))
		}
	}
	w("networks:\n  allow: [%s]\n  deny: [%s]\n", strings.Join(p.NetAllow, ", "), strings.Join(p.NetDeny, ", "))
	w("limits:\n")
	if p.Unlimited {
		w("  client: {rps: 0, burst: 0}\n  host: {rps: 0, burst: 0}\n  dns: {rps: 0, burst: 0}\n")
	}
	if p.MaxPer > 0 {
		w("  max_conns_per_client: %d\n", p.MaxPer)
	}
	if p.MaxConns > 0 {
		w("  max_conns: %d\n", p.MaxConns)
	}
	w("  max_header_bytes: 16384\n")
	w("timeouts:\n  dial: %s\n  header: %s\n  idle: %s\n  shutdown: %s\n",
		orDur(p.Dial, 2*time.Second), orDur(p.Header, time.Second),
		orDur(p.Idle, 30*time.Second), orDur(p.Shutdown, 3*time.Second))
	if len(p.QTypes) > 0 {
		w("dns:\n  qtypes: [%s]\n", strings.Join(p.QTypes, ", "))
	}
	w("log:\n  file: %s\n  max_size_mb: 500\n  keep: 1\n", p.LogFile)
	if p.Providers != "" {
		w("providers:\n%s", p.Providers)
	}
	if p.Budget != "" {
		w("budget:\n%s", p.Budget)
	}
	return b.String()
}

func orDur(d, def time.Duration) time.Duration {
	if d == 0 {
		return def
	}
	return d
}

func intList(ns []int) string {
	s := make([]string, len(ns))
	for i, n := range ns {
		s[i] = fmt.Sprint(n)
	}
	return "[" + strings.Join(s, ", ") + "]"
}
