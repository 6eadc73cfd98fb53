package pgledger_test

import (
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/egressd/egressd/internal/edge/gateway"
	"github.com/egressd/egressd/internal/lib/testutil"
	"github.com/egressd/egressd/internal/shared/meter"
	"github.com/egressd/egressd/policy"
)

// benchMeter opens a meter with a cap far above what the benchmark spends,
// on the file ledger (in the test's temporary directory, fsync and all) or
// on the package's PostgreSQL cluster (default, durable settings).
func benchMeter(b *testing.B, store string) *meter.Meter {
	b.Helper()
	cfg := pgBudget("bench", 1e6, "team", 1e6)
	opt := meter.Options{Logger: quiet}
	if store == policy.StoreFile {
		cfg = policy.BudgetConfig{CapUSD: 1e6, Ledger: filepath.Join(b.TempDir(), "ledger.json"), Prices: cfg.Prices}
	} else {
		dsn := freshDB(b)
		opt.Env = func(string) string { return dsn }
	}
	m, err := meter.Open(cfg, opt)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = m.Close() })
	return m
}

// BenchmarkReserveSettle is one call's ledger work (a reservation, then
// its settle) on each store, with 1 and 16 calls at once, in µs.
func BenchmarkReserveSettle(b *testing.B) {
	for _, store := range []string{policy.StoreFile, policy.StorePostgres} {
		for _, conc := range []int{1, 16} {
			b.Run(fmt.Sprintf("%s/calls-%d", store, conc), func(b *testing.B) {
				m := benchMeter(b, store)
				lat := testutil.Latencies(b, conc, func() (time.Duration, error) {
					start := time.Now()
					r, err := m.Reserve("gpt-4o-mini", 0.001)
					if err != nil {
						return 0, err
					}
					_, err = r.Settle(0.0005, meter.Usage{InputTokens: 10, OutputTokens: 2}, false)
					return time.Since(start), err
				})
				testutil.ReportLatencies(b, lat, "reserve+settle-µs")
			})
		}
	}
}

// BenchmarkGatewayTTFB is the time to the first streamed byte of a
// metered call through the gateway (pricing, the reservation, the
// forward) on each store, with 1 and 16 agents calling at once, in µs.
func BenchmarkGatewayTTFB(b *testing.B) {
	const body = `{"model":"gpt-4o-mini","stream":true,"max_tokens":50,"messages":[{"role":"user","content":"hi"}]}`
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		w.Header().Set("Content-Type", "text/event-stream")
		io.WriteString(w, `data: {"choices":[{"index":0,"delta":{"content":"hi"}}]}`+"\n\n")
		w.(http.Flusher).Flush()
		io.WriteString(w, `data: {"choices":[],"usage":{"prompt_tokens":10,"completion_tokens":2,"total_tokens":12}}`+"\n\ndata: [DONE]\n\n")
	}))
	defer up.Close()
	provs := map[string]policy.ProviderConfig{"p": {Upstream: up.URL, Format: "openai", APIKeyEnv: "K", ClientTokenEnv: "T"}}
	for _, store := range []string{policy.StoreFile, policy.StorePostgres} {
		for _, conc := range []int{1, 16} {
			b.Run(fmt.Sprintf("%s/agents-%d", store, conc), func(b *testing.B) {
				gw := gateway.New(gateway.Config{Providers: func() map[string]policy.ProviderConfig { return provs },
					Meter: benchMeter(b, store), Logger: quiet,
					Env: func(k string) string { return map[string]string{"K": providerKey, "T": agentToken}[k] }})
				defer gw.Close()
				srv := httptest.NewServer(gw)
				defer srv.Close()
				c := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: conc}}
				defer c.CloseIdleConnections()
				lat := testutil.Latencies(b, conc, func() (time.Duration, error) {
					return firstByte(c, srv.URL+"/p/v1/chat/completions", body)
				})
				testutil.ReportLatencies(b, lat, "ttfb-µs")
			})
		}
	}
}

// firstByte sends one call, returns when its first body byte arrived,
// then reads the rest so the call settles.
func firstByte(c *http.Client, url, body string) (time.Duration, error) {
	req, _ := http.NewRequest(http.MethodPost, url, strings.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+agentToken)
	start := time.Now()
	resp, err := c.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	var one [1]byte
	if _, err := io.ReadFull(resp.Body, one[:]); err != nil || resp.StatusCode != http.StatusOK {
		return 0, fmt.Errorf("status %d: %v", resp.StatusCode, err)
	}
	d := time.Since(start)
	_, err = io.Copy(io.Discard, resp.Body)
	return d, err
}
