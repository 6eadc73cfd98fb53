package daemon

import (
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/egressd/egressd/internal/operator/webhook"
	"github.com/egressd/egressd/internal/shared/meter"
	"github.com/egressd/egressd/policy"
)

// hookReceiver is a webhook receiver that keeps every payload whose
// signature checks.
type hookReceiver struct {
	*httptest.Server
	mu    sync.Mutex
	got   []webhook.Payload
	bad   int
	moved chan struct{}
}

func newHookReceiver(t *testing.T, secret string) *hookReceiver {
	h := &hookReceiver{moved: make(chan struct{}, 16)}
	h.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		var p webhook.Payload
		h.mu.Lock()
		if webhook.Verify([]byte(secret), b, r.Header.Get(webhook.SignatureHeader)) && json.Unmarshal(b, &p) == nil {
			h.got = append(h.got, p)
		} else {
			h.bad++
		}
		h.mu.Unlock()
		h.moved <- struct{}{}
	}))
	t.Cleanup(h.Close)
	return h
}

// waitKind waits for a payload of kind and returns it.
func (h *hookReceiver) waitKind(t *testing.T, kind string) webhook.Payload {
	t.Helper()
	deadline := time.After(10 * time.Second)
	for {
		h.mu.Lock()
		for _, p := range h.got {
			if p.Kind == kind {
				h.mu.Unlock()
				return p
			}
		}
		h.mu.Unlock()
		select {
		case <-h.moved:
		case <-deadline:
			t.Fatalf("webhook: no %s within 10s; got %+v", kind, h.got)
		}
	}
}

// TestEventsReachTheWebhook: a restart that charges a crash's calls, the
// budget's warn_at and cap, and a failed reload each post one signed
// payload.
func TestEventsReachTheWebhook(t *testing.T) {
	provider := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
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
	hook := newHookReceiver(t, "hook-secret")

	dir := t.TempDir()
	ledger := filepath.Join(dir, "ledger.json")
	path := filepath.Join(dir, "policy.yaml")
	body := fmt.Sprintf(`version: 1
listen: {proxy: "", dns: "", admin: "", gateway: 127.0.0.1:0}
networks: {allow: [127.0.0.0/8]}
providers:
  fake: {upstream: %s, format: openai, api_key_env: FAKE_KEY, client_token_env: FAKE_TOKEN}
budget:
  cap_usd: 3
  warn_at: 0.5
  ledger: %s
  prices:
    test-model: {input: 2, output: 4}
ask:
  webhook: {url: %q, secret_env: HOOK_SECRET}
`, provider.URL, ledger, hook.URL+"/egressd")
	if err := os.WriteFile(path, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
	// A call left in flight by a crash: reserved, never settled.
	p, err := policy.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	m, err := meter.Open(p.Config().Budget, meter.Options{Logger: discardLogger()})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := m.Reserve("test-model", 0.25); err != nil {
		t.Fatal(err)
	}

	env := func(k string) string {
		return map[string]string{"FAKE_KEY": "k", "FAKE_TOKEN": "agent", "HOOK_SECRET": "hook-secret"}[k]
	}
	a, stop := runGateway(t, path, env)
	defer stop()
	if p := hook.waitKind(t, "crash_charged"); !strings.Contains(p.Text, "1 LLM calls were in flight") || !strings.Contains(p.Text, "$0.25") {
		t.Errorf("crash_charged: %q", p.Text)
	}
	call := func() int {
		req, _ := http.NewRequest("POST", "http://"+a.Gateway+"/fake/v1/chat/completions",
			strings.NewReader(`{"model":"test-model","max_tokens":10,"messages":[{"role":"user","content":"hi"}]}`))
		req.Header.Set("Authorization", "Bearer agent")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp.StatusCode
	}
	if code := call(); code != 200 { // $0.25 + $2: past warn_at (50% of $3)
		t.Fatalf("first call: %d", code)
	}
	if p := hook.waitKind(t, "budget_warn"); !strings.Contains(p.Text, "passed 50% of the $3.00 cap") {
		t.Errorf("budget_warn: %q", p.Text)
	}
	if code := call(); code != 200 { // $4.25: past the cap
		t.Fatalf("second call: %d", code)
	}
	if p := hook.waitKind(t, "budget_cap"); !strings.Contains(p.Text, "reached the $3.00 cap") {
		t.Errorf("budget_cap: %q", p.Text)
	}
	if code := call(); code != 429 {
		t.Errorf("call over the cap: %d, want 429", code)
	}

	if err := os.WriteFile(path, []byte(body+"bogus: 1\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if p := hook.waitKind(t, "reload_failed"); !strings.Contains(p.Text, "bogus") {
		t.Errorf("reload_failed: %q", p.Text)
	}
	hook.mu.Lock()
	defer hook.mu.Unlock()
	counts := map[string]int{}
	for _, p := range hook.got {
		counts[p.Kind]++
	}
	for _, k := range []string{"crash_charged", "budget_warn", "budget_cap"} {
		if counts[k] != 1 {
			t.Errorf("%s posted %d times, want once", k, counts[k])
		}
	}
	if hook.bad != 0 {
		t.Errorf("%d payloads with a bad signature", hook.bad)
	}
}

func discardLogger() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }
