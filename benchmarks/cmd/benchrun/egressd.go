package main

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// policyGrants is how many allow entries the benchmark policy has besides
// the ones its traffic uses: "a few hundred grants".
const policyGrants = 300

// egressdPolicy is a realistic policy.yaml: a few hundred grants (exact
// names, wildcards, CIDRs, some with their own rate), rate limits on but
// far above what the benchmark sends, the decision log written to a file,
// loopback dialable (networks.allow) because every target here is on it,
// and one OpenAI-shaped provider on the gateway.
func egressdPolicy(dir string) string {
	var b strings.Builder
	fmt.Fprintf(&b, `version: 1
mode: enforce
listen:
  proxy: %s:%s
  dns: %s
  gateway: %s
  admin: %s
resolver:
  upstreams: [%s:53]
  timeout: 2s
  min_ttl: 5m
  max_ttl: 10m
  cache_size: 10000
networks:
  allow: [127.0.0.0/8]
  deny: [198.51.100.0/24]
limits:
  client: {rps: 1000000, burst: 1000000}
  host: {rps: 1000000, burst: 1000000}
  dns: {rps: 1000000, burst: 1000000}
  max_conns_per_client: 8192
  max_conns: 16384
timeouts:
  dial: 5s
  header: 10s
  idle: 5m
  shutdown: 2s
log:
  file: %s
  max_size_mb: 50
  keep: 2
providers:
  bench:
    upstream: http://%s
    format: openai
    api_key_env: BENCH_PROVIDER_KEY
    client_token_env: BENCH_AGENT_TOKEN
budget:
  cap_usd: 1000000
  period: total
  ledger: %s
  unknown_model: deny
  prices:
    %s: {input: 0.01, output: 0.01}
allow:
  - host: %s
    ports: [%s, %s]
  - host: "*.dns.bench.test"
    ports: [443]
`, egressdIP, proxyPort, egressdDNS, egressdGateway, egressdAdmin, dnsmasqIP,
		filepath.Join(dir, "decisions.jsonl"), providerAddr, filepath.Join(dir, "ledger.json"),
		benchModel, originHost, httpPort, tunnelPort)
	for i := range policyGrants {
		switch i % 6 {
		case 0, 1:
			fmt.Fprintf(&b, "  - host: api-%d.service-%d.example.com\n", i, i%17)
		case 2, 3:
			fmt.Fprintf(&b, "  - host: \"*.tenant-%d.cdn.example.net\"\n    ports: [443, 8443]\n", i)
		case 4:
			fmt.Fprintf(&b, "  - host: pkg-%d.registry.example.org\n    ports: [443]\n    rate: {rps: 100000, burst: 100000}\n", i)
		case 5:
			fmt.Fprintf(&b, "  - cidr: 149.%d.%d.0/24\n", 154+i/256%50, i%256)
		}
	}
	return b.String()
}

func startEgressd(e *env) (*proc, error) { return startEgressdBin(e, sysEgressd, e.bin("egressd")) }

// startEgressdB starts the build given with -compare, on egressd's
// addresses and policy: the two never run at once.
func startEgressdB(e *env) (*proc, error) { return startEgressdBin(e, sysEgressdB, e.opt.compare) }

func startEgressdBin(e *env, name, bin string) (*proc, error) {
	dir := filepath.Join(e.tmp, name)
	path, err := writeFile(dir, "policy.yaml", egressdPolicy(dir))
	if err != nil {
		return nil, err
	}
	p, err := startProcOut(name, filepath.Join(dir, "out.log"), true,
		[]string{"BENCH_PROVIDER_KEY=" + providerKey, "BENCH_AGENT_TOKEN=" + agentToken},
		bin, "serve", "--config", path)
	if err != nil {
		return nil, err
	}
	ready := func() error {
		if err := tcpUp(egressdIP + ":" + proxyPort)(); err != nil {
			return err
		}
		if err := tcpUp(egressdGateway)(); err != nil {
			return err
		}
		return dnsAnswers(egressdDNS)()
	}
	return p, p.waitReady(20*time.Second, ready)
}

// decisionLogStats reads egressd's decision log files (the current one
// and the rotated ones still kept): their size, which shows logging was on,
// and the entries egressd reported dropping because its writer fell
// behind (dropped entries are work it did not do).
func decisionLogStats(e *env) (size, dropped int64) {
	files, _ := filepath.Glob(filepath.Join(e.tmp, "egressd", "decisions.jsonl*"))
	for _, f := range files {
		fi, err := os.Stat(f)
		if err != nil {
			continue
		}
		size += fi.Size()
		b, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		for line := range strings.SplitSeq(string(b), "\n") {
			if !strings.Contains(line, "dropped entries") {
				continue
			}
			var rec struct {
				Dropped int64 `json:"dropped"`
			}
			if json.Unmarshal([]byte(line), &rec) == nil {
				dropped += rec.Dropped
			}
		}
	}
	return size, dropped
}
