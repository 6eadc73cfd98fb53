package pgledger_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/egressd/egressd/internal/run/daemon"
	"github.com/egressd/egressd/internal/shared/meter"
)

// serveHelper runs egressd (daemon.Run, what `egressd serve` runs) on the
// policy named by HELPER_POLICY, prints its gateway address, and serves
// until killed.
func serveHelper() int {
	ready := make(chan daemon.Addrs, 1)
	done := make(chan error, 1)
	go func() {
		done <- daemon.Run(context.Background(), daemon.Options{ConfigPath: os.Getenv("HELPER_POLICY"), Stdout: io.Discard,
			Logger: slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelError})),
			Ready:  func(a daemon.Addrs) { ready <- a }})
	}()
	select {
	case a := <-ready:
		fmt.Println("gateway " + a.Gateway)
	case err := <-done:
		fmt.Fprintln(os.Stderr, "serve:", err)
		return 2
	}
	if err := <-done; err != nil {
		fmt.Fprintln(os.Stderr, "serve:", err)
		return 2
	}
	return 0
}

// egressdPolicy is a policy with one OpenAI-format provider at upstream and
// the spend ledger in PostgreSQL under budget name, capped at capUSD.
func egressdPolicy(upstream, name string, capUSD float64) string {
	return fmt.Sprintf(`version: 1
listen: {proxy: "", dns: "", gateway: "127.0.0.1:0", admin: ""}
resolver: {upstreams: ["127.0.0.1:1"]}
networks: {allow: [127.0.0.0/8]}
limits: {client: {rps: 100000, burst: 100000}, max_conns_per_client: 4096}
providers:
  openai: {upstream: "%s/v1", format: openai, api_key_env: TEST_PROVIDER_KEY, client_token_env: TEST_AGENT_TOKEN}
budget:
  store: postgres
  dsn_env: %s
  name: %s
  cap_usd: %v
  prices: {gpt-4o-mini: {input: 0.15, output: 0.6}}
`, upstream, dsnEnv, name, capUSD)
}

// TestThreeEgressdOneCap runs 3 egressd processes on one PostgreSQL
// ledger and sends 200 concurrent calls through each gateway against one
// small cap: spend ends at or under the cap and is exactly what the
// forwarded calls cost, and every refusal is a budget refusal.
func TestThreeEgressdOneCap(t *testing.T) {
	const procs, calls, capUSD = 3, 200, 0.005
	// Each call costs (10 × 0.15 + 50 × 0.6) / 1e6 = $0.0000315, less
	// than its reservation, so the cap binds on reservations alone.
	const costNano = 31_500
	var forwarded atomic.Int64
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") != "Bearer "+providerKey {
			http.Error(w, "bad key", http.StatusUnauthorized)
			return
		}
		forwarded.Add(1)
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, `{"id":"chatcmpl-1","object":"chat.completion","created":1732700000,"model":"gpt-4o-mini",
"choices":[{"index":0,"message":{"role":"assistant","content":"Hi."},"finish_reason":"stop"}],
"usage":{"prompt_tokens":10,"completion_tokens":50,"total_tokens":60}}`)
	}))
	defer up.Close()
	dsn := freshDB(t)
	pol := filepath.Join(t.TempDir(), "policy.yaml")
	if err := os.WriteFile(pol, []byte(egressdPolicy(up.URL, "hermes", capUSD)), 0o600); err != nil {
		t.Fatal(err)
	}
	gws := make([]string, procs)
	for i := range gws {
		h := startHelper(t, "serve", dsn, "HELPER_POLICY="+pol, "TEST_PROVIDER_KEY="+providerKey, "TEST_AGENT_TOKEN="+agentToken)
		line, err := h.out.ReadString('\n')
		addr, ok := strings.CutPrefix(strings.TrimSpace(line), "gateway ")
		if err != nil || !ok {
			t.Fatalf("egressd %d said %q, %v", i, line, err)
		}
		gws[i] = "http://" + addr + "/openai/chat/completions"
	}
	var ok, refused, other atomic.Int64
	var wg sync.WaitGroup
	start := make(chan struct{})
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: calls}}
	defer client.CloseIdleConnections()
	for _, gw := range gws {
		for range calls {
			wg.Go(func() {
				<-start
				code, body := post(client, gw)
				switch {
				case code == http.StatusOK:
					ok.Add(1)
				case code == http.StatusTooManyRequests && strings.Contains(body, "budget_exceeded"):
					refused.Add(1)
				default:
					if other.Add(1) <= 3 {
						t.Errorf("call: %d %s", code, body)
					}
				}
			})
		}
	}
	close(start)
	wg.Wait()
	if other.Load() != 0 || refused.Load() == 0 || ok.Load() == 0 {
		t.Errorf("got %d served, %d refused for the budget, %d other; want some of each of the first two, none other",
			ok.Load(), refused.Load(), other.Load())
	}
	m := openMeter(t, dsn, pgBudget("hermes", capUSD, "", 0), meter.Options{})
	s := waitSpent(m, func(usd float64) bool { return toNano(usd) >= ok.Load()*costNano })
	if got, want := toNano(s.SpentUSD), ok.Load()*costNano; got != want || s.SpentUSD > capUSD || forwarded.Load() != ok.Load() {
		t.Errorf("spent %d nano-USD (cap %v USD), forwarded %d; want %d = %d served × %d, all forwarded",
			got, capUSD, forwarded.Load(), want, ok.Load(), costNano)
	}
	t.Logf("3 egressd × %d calls: %d served, %d refused, spent $%.6f of $%v", calls, ok.Load(), refused.Load(), s.SpentUSD, capUSD)
}

// post sends one chat completion and returns the status and body.
func post(c *http.Client, url string) (int, string) {
	req, _ := http.NewRequest(http.MethodPost, url,
		strings.NewReader(`{"model":"gpt-4o-mini","max_tokens":100,"messages":[{"role":"user","content":"hi"}]}`))
	req.Header.Set("Authorization", "Bearer "+agentToken)
	req.Header.Set("Content-Type", "application/json")
	resp, err := c.Do(req)
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// TestProxyAndDNSServeWhileLedgerDown runs egressd whose PostgreSQL ledger
// cannot be reached: metered calls are refused with ledger_unavailable
// and never forwarded, while the proxy still forwards a granted request
// and the DNS server still answers.
func TestProxyAndDNSServeWhileLedgerDown(t *testing.T) {
	var forwarded atomic.Int64
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		forwarded.Add(1)
		io.WriteString(w, chatResponse)
	}))
	defer up.Close()
	// The origin is on 127.0.0.2: 127.0.0.1 is the provider's host,
	// which the proxy reserves for the gateway.
	origin := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "origin") }))
	l, err := net.Listen("tcp", "127.0.0.2:0")
	if err != nil {
		t.Fatal(err)
	}
	origin.Listener = l
	origin.Start()
	defer origin.Close()
	_, originPort, _ := net.SplitHostPort(origin.Listener.Addr().String())
	body := strings.Replace(egressdPolicy(up.URL, "hermes", 1),
		`listen: {proxy: "", dns: "", gateway: "127.0.0.1:0", admin: ""}`,
		`listen: {proxy: "127.0.0.1:0", dns: "127.0.0.1:0", gateway: "127.0.0.1:0", admin: ""}`, 1)
	body += fmt.Sprintf("allow:\n  - {cidr: 127.0.0.2/32, ports: [%s]}\n", originPort)
	pol := filepath.Join(t.TempDir(), "policy.yaml")
	if err := os.WriteFile(pol, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	// Port 1 on loopback: nothing listens, the connection is refused.
	env := map[string]string{dsnEnv: "postgres://egressd@127.0.0.1:1/egressd?sslmode=disable&connect_timeout=1",
		"TEST_PROVIDER_KEY": providerKey, "TEST_AGENT_TOKEN": agentToken}
	ctx, cancel := context.WithCancel(context.Background())
	ready := make(chan daemon.Addrs, 1)
	done := make(chan error, 1)
	go func() {
		done <- daemon.Run(ctx, daemon.Options{ConfigPath: pol, Stdout: io.Discard, Logger: quiet,
			Env: func(k string) string { return env[k] }, Ready: func(a daemon.Addrs) { ready <- a }})
	}()
	defer func() { cancel(); <-done }()
	var a daemon.Addrs
	select {
	case a = <-ready:
	case err := <-done:
		t.Fatalf("serve: %v", err)
	case <-time.After(30 * time.Second):
		t.Fatal("egressd not ready")
	}
	if code, body := post(http.DefaultClient, "http://"+a.Gateway+"/openai/chat/completions"); code != http.StatusServiceUnavailable || !strings.Contains(body, "ledger_unavailable") {
		t.Errorf("gateway: got %d %s, want 503 ledger_unavailable", code, body)
	}
	if n := forwarded.Load(); n != 0 {
		t.Errorf("provider saw %d calls, want 0", n)
	}
	proxied := &http.Client{Transport: &http.Transport{Proxy: http.ProxyURL(&url.URL{Scheme: "http", Host: a.Proxy})}}
	resp, err := proxied.Get(origin.URL + "/")
	if err != nil {
		t.Fatal(err)
	}
	got, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || string(got) != "origin" {
		t.Errorf("proxy: got %d %q, want 200 origin", resp.StatusCode, got)
	}
	res := &net.Resolver{PreferGo: true, Dial: func(ctx context.Context, network, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, network, a.DNS)
	}}
	lctx, lcancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer lcancel()
	_, err = res.LookupHost(lctx, "not-granted.test")
	var dnsErr *net.DNSError
	if !errors.As(err, &dnsErr) || !dnsErr.IsNotFound {
		t.Errorf("DNS: got %v, want an NXDOMAIN answer", err)
	}
}
