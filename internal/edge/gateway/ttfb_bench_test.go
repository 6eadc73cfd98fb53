package gateway

import (
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/egressd/egressd/internal/lib/testutil"
	"github.com/egressd/egressd/internal/shared/meter"
	"github.com/egressd/egressd/policy"
)

// ttfbFront is a gateway with its ledger on the test's temporary disk (a
// real filesystem, so fsync costs what it costs) in front of a plain-HTTP
// provider that streams a short chat answer.
func ttfbFront(b *testing.B) string {
	b.Helper()
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		w.Header().Set("Content-Type", "text/event-stream")
		io.WriteString(w, `data: {"choices":[{"index":0,"delta":{"content":"hi"}}]}`+"\n\n")
		w.(http.Flusher).Flush()
		io.WriteString(w, `data: {"choices":[],"usage":{"prompt_tokens":10,"completion_tokens":2,"total_tokens":12}}`+"\n\ndata: [DONE]\n\n")
	}))
	b.Cleanup(up.Close)
	m, err := meter.Open(policy.BudgetConfig{CapUSD: 1e9, Ledger: filepath.Join(b.TempDir(), "ledger.json"), Prices: prices},
		meter.Options{Logger: quietLog})
	if err != nil {
		b.Fatal(err)
	}
	provs := map[string]policy.ProviderConfig{"p": {Upstream: up.URL, Format: "openai", APIKeyEnv: "K", ClientTokenEnv: "T"}}
	gw := New(Config{Providers: func() map[string]policy.ProviderConfig { return provs }, Meter: m,
		Env: env{"K": realKey, "T": agentToken}.get, Logger: quietLog})
	srv := httptest.NewServer(gw)
	b.Cleanup(srv.Close)
	b.Cleanup(gw.Close)
	return srv.URL + "/p/v1/chat/completions"
}

// BenchmarkTTFB is the time to the first streamed byte of a metered call
// (body shaping, pricing, the reservation and its ledger write, the
// forward) with 1 and 16 agents calling at once, in µs: mean, median and
// 99th percentile.
func BenchmarkTTFB(b *testing.B) {
	const body = `{"model":"gpt-4o-mini","stream":true,"max_tokens":50,"messages":[{"role":"user","content":"hi"}]}`
	url := ttfbFront(b)
	for _, conc := range []int{1, 16} {
		b.Run(fmt.Sprintf("agents-%d", conc), func(b *testing.B) {
			c := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: conc}}
			defer c.CloseIdleConnections()
			ttfb := testutil.Latencies(b, conc, func() (time.Duration, error) { return firstByte(c, url, body) })
			testutil.ReportLatencies(b, ttfb, "ttfb-µs")
		})
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
	if _, err := io.ReadFull(resp.Body, one[:]); err != nil || resp.StatusCode != 200 {
		return 0, fmt.Errorf("status %d: %v", resp.StatusCode, err)
	}
	d := time.Since(start)
	_, err = io.Copy(io.Discard, resp.Body)
	return d, err
}
