package daemon

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/egressd/egressd/internal/shared/meter"
)

// TestServeGateway runs the gateway end to end through Run: the agent's
// token is swapped for the real key, usage is metered into the ledger, and
// a restart keeps the spend.
func TestServeGateway(t *testing.T) {
	const realKey, agentToken = "sk-real-key-never-shown", "agent-token"
	seenAuth := make(chan string, 4)
	provider := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		seenAuth <- r.Header.Get("Authorization")
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, `{"id":"x","model":"test-model","choices":[{"message":{"content":"hi"}}],"usage":{"prompt_tokens":1000000,"completion_tokens":0}}`)
	}))
	ln, err := net.Listen("tcp", "127.0.0.2:0")
	if err != nil {
		t.Fatal(err)
	}
	provider.Listener = ln
	provider.Start()
	defer provider.Close()

	dir := t.TempDir()
	ledger := filepath.Join(dir, "ledger.json")
	path := filepath.Join(dir, "policy.yaml")
	body := fmt.Sprintf(`version: 1
listen: {proxy: "", dns: "", admin: "", gateway: 127.0.0.1:0}
networks:
  allow: [127.0.0.2/32]   # the fake provider; the gateway checks addresses like the proxy
providers:
  fake:
    upstream: %s
    format: openai
    api_key_env: FAKE_KEY
    client_token_env: FAKE_TOKEN
budget:
  cap_usd: 10
  ledger: %s
  prices:
    test-model: {input: 2, output: 4}
`, provider.URL, ledger)
	if err := os.WriteFile(path, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
	env := func(k string) string {
		return map[string]string{"FAKE_KEY": realKey, "FAKE_TOKEN": agentToken}[k]
	}
	runOnce := func() {
		a, stop := runGateway(t, path, env)
		defer stop()

		req, _ := http.NewRequest("POST", "http://"+a.Gateway+"/fake/v1/chat/completions",
			strings.NewReader(`{"model":"test-model","max_tokens":10,"messages":[{"role":"user","content":"hi"}]}`))
		req.Header.Set("Authorization", "Bearer "+agentToken)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		got, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Fatalf("gateway call: status %d body %s", resp.StatusCode, got)
		}
		if auth := <-seenAuth; auth != "Bearer "+realKey {
			t.Errorf("provider saw Authorization %q, want the real key", auth)
		}
		if strings.Contains(string(got), realKey) || strings.Contains(fmt.Sprint(resp.Header), realKey) {
			t.Error("the real key reached the agent")
		}
	}
	runOnce()
	spend := ledgerSpend(t, ledger)
	// 1M prompt tokens at $2/M.
	if spend < 1.99 || spend > 2.01 {
		t.Errorf("ledger spend after one call = %v, want 2", spend)
	}
	runOnce()
	if got := ledgerSpend(t, ledger); got < 3.99 || got > 4.01 {
		t.Errorf("ledger spend after a restart and a second call = %v, want 4 (spend survives restarts)", got)
	}
}

// runGateway runs the daemon on path until stop is called.
func runGateway(t *testing.T, path string, env func(string) string) (Addrs, func()) {
	t.Helper()
	ready := make(chan Addrs, 1)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- Run(ctx, Options{ConfigPath: path, Env: env, Stdout: io.Discard,
			Logger: slog.New(slog.NewTextHandler(io.Discard, nil)), Ready: func(a Addrs) { ready <- a }})
	}()
	select {
	case a := <-ready:
		return a, func() { cancel(); <-done }
	case err := <-done:
		t.Fatalf("Run: %v", err)
	case <-time.After(10 * time.Second):
		t.Fatal("not ready")
	}
	return Addrs{}, nil
}

// TestGatewayNeverDialsPrivateProviders: a provider upstream on a private
// address is only dialed when networks.allow grants it, like the proxy.
func TestGatewayNeverDialsPrivateProviders(t *testing.T) {
	hits := make(chan struct{}, 1)
	provider := httptest.NewServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) { hits <- struct{}{} }))
	defer provider.Close()
	dir := t.TempDir()
	path := filepath.Join(dir, "policy.yaml")
	body := fmt.Sprintf(`version: 1
listen: {proxy: "", dns: "", admin: "", gateway: 127.0.0.1:0}
providers:
  fake: {upstream: %s, format: openai, api_key_env: K, client_token_env: T}
budget: {cap_usd: 10, ledger: %s, unknown_model: default, prices: {default: {input: 1, output: 1}}}
`, provider.URL, filepath.Join(dir, "ledger.json"))
	if err := os.WriteFile(path, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
	a, stop := runGateway(t, path, func(k string) string { return map[string]string{"K": "key", "T": "tok"}[k] })
	defer stop()
	req, _ := http.NewRequest("POST", "http://"+a.Gateway+"/fake/v1/chat/completions", strings.NewReader(`{"model":"m","max_tokens":1}`))
	req.Header.Set("Authorization", "Bearer tok")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode < 500 {
		t.Errorf("call to a loopback provider without networks.allow: status %d, want a 5xx refusal", resp.StatusCode)
	}
	select {
	case <-hits:
		t.Error("the provider on 127.0.0.1 was reached without networks.allow")
	default:
	}
}

// ledgerSpend reads the period's spend from the ledger file.
func ledgerSpend(t *testing.T, path string) float64 {
	t.Helper()
	l, err := meter.ReadLedger(path) // the ledger file with its journal
	if err != nil {
		t.Fatalf("ledger not readable: %v", err)
	}
	return l.SpentUSD
}
