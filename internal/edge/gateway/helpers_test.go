package gateway

import (
	"bytes"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/egressd/egressd/internal/lib/testutil"
	"github.com/egressd/egressd/internal/shared/declog/declogtest"

	"github.com/egressd/egressd/internal/shared/vocab"

	"github.com/egressd/egressd/internal/lib/statusline"
	"github.com/egressd/egressd/internal/shared/meter"
	"github.com/egressd/egressd/policy"
)

const (
	realKey    = "sk-or-v1-REALKEY-0123456789abcdef0123456789abcdef"
	agentToken = "egressd-agent-token-7f3a9c"
)

var quietLog = slog.New(slog.NewTextHandler(io.Discard, nil))

// seenRequest is what the fake provider received.
type seenRequest struct {
	Method, Path, Query string
	Header              http.Header
	Body                []byte
}

// fakeProvider is an in-process TLS provider; handle answers each call.
type fakeProvider struct {
	srv    *httptest.Server
	mu     sync.Mutex
	seen   []seenRequest
	handle func(w http.ResponseWriter, r *http.Request, body []byte)
}

func newFakeProvider(t *testing.T, handle func(w http.ResponseWriter, r *http.Request, body []byte)) *fakeProvider {
	fp := &fakeProvider{handle: handle}
	fp.srv = httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		fp.mu.Lock()
		fp.seen = append(fp.seen, seenRequest{r.Method, r.URL.Path, r.URL.RawQuery, r.Header.Clone(), body})
		fp.mu.Unlock()
		fp.handle(w, r, body)
	}))
	t.Cleanup(fp.srv.Close)
	return fp
}

func (fp *fakeProvider) requests() []seenRequest {
	fp.mu.Lock()
	defer fp.mu.Unlock()
	return append([]seenRequest(nil), fp.seen...)
}

// serveFixture answers with a real-shaped provider response from
// meter/testdata, event by event with a flush between, like a provider.
func serveFixture(t testing.TB, name string) func(http.ResponseWriter, *http.Request, []byte) {
	b, err := os.ReadFile(filepath.Join("..", "..", "shared", "meter", "testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	return func(w http.ResponseWriter, r *http.Request, _ []byte) {
		if !strings.HasSuffix(name, ".sse") {
			w.Header().Set("Content-Type", "application/json")
			w.Write(b)
			return
		}
		w.Header().Set("Content-Type", "text/event-stream")
		for _, ev := range bytes.SplitAfter(b, []byte("\n\n")) {
			w.Write(ev)
			w.(http.Flusher).Flush()
		}
	}
}

// env is a fixed environment.
type env map[string]string

func (e env) get(k string) string { return e[k] }

var prices = map[string]policy.Price{
	"gpt-4o-mini":                 {Input: 0.15, Output: 0.6, CacheRead: 0.075},
	"gpt-4.1":                     {Input: 2, Output: 8, CacheRead: 0.5},
	"anthropic/claude-sonnet-4.5": {Input: 3, Output: 15, CacheRead: 0.3, CacheWrite: 3.75},
	"claude-sonnet-4-5":           {Input: 3, Output: 15, CacheRead: 0.3, CacheWrite: 3.75},
}

// rig is a gateway in front of one fake provider per format.
type rig struct {
	t      *testing.T
	fake   *fakeProvider
	meter  *meter.Meter
	rec    *declogtest.Recorder
	gw     *Handler
	srv    *httptest.Server
	budget policy.BudgetConfig
	provs  map[string]policy.ProviderConfig
}

type rigOpt func(*Config, *policy.BudgetConfig, map[string]policy.ProviderConfig)

// withBudget adjusts the budget section.
func withBudget(f func(*policy.BudgetConfig)) rigOpt {
	return func(_ *Config, b *policy.BudgetConfig, _ map[string]policy.ProviderConfig) { f(b) }
}

// withClock gives the gateway and its meter a settable clock.
func withClock(c *testutil.Clock) rigOpt {
	return func(cfg *Config, _ *policy.BudgetConfig, _ map[string]policy.ProviderConfig) { cfg.Clock = c.Now }
}

// withPolicy gives the gateway an egress policy (to judge the URLs a
// body asks the provider to fetch), loaded from YAML after "version: 1".
func withPolicy(t *testing.T, yaml string) rigOpt {
	p, err := policy.LoadBytes([]byte("version: 1\n"+yaml), "test.yaml")
	if err != nil {
		t.Fatal(err)
	}
	return func(cfg *Config, _ *policy.BudgetConfig, _ map[string]policy.ProviderConfig) {
		cfg.Policy = func() *policy.Policy { return p }
	}
}

func newRig(t *testing.T, handle func(http.ResponseWriter, *http.Request, []byte), opts ...rigOpt) *rig {
	t.Helper()
	r := &rig{t: t, rec: &declogtest.Recorder{}}
	r.fake = newFakeProvider(t, handle)
	r.budget = policy.BudgetConfig{CapUSD: 10, Period: "month", Ledger: filepath.Join(t.TempDir(), "ledger.json"), Prices: prices}
	r.provs = map[string]policy.ProviderConfig{
		"openrouter": {Upstream: r.fake.srv.URL, Format: "openai", APIKeyEnv: "OR_KEY", ClientTokenEnv: "AGENT_TOKEN"},
		"openai":     {Upstream: r.fake.srv.URL + "/v1", Format: "openai", APIKeyEnv: "OR_KEY", ClientTokenEnv: "AGENT_TOKEN"},
		"anthropic":  {Upstream: r.fake.srv.URL, Format: "anthropic", APIKeyEnv: "OR_KEY", ClientTokenEnv: "AGENT_TOKEN"},
		"nokey":      {Upstream: r.fake.srv.URL, Format: "openai", APIKeyEnv: "UNSET", ClientTokenEnv: "AGENT_TOKEN"},
	}
	cfg := Config{
		Recorder: r.rec, Env: env{"OR_KEY": realKey, "AGENT_TOKEN": agentToken}.get,
		Transport: r.fake.srv.Client().Transport, Logger: quietLog,
	}
	for _, o := range opts {
		o(&cfg, &r.budget, r.provs)
	}
	var err error
	if r.meter, err = meter.Open(r.budget, meter.Options{Clock: cfg.Clock, Logger: cfg.Logger}); err != nil {
		t.Fatal(err)
	}
	cfg.Meter = r.meter
	provs := r.provs
	cfg.Providers = func() map[string]policy.ProviderConfig { return provs }
	r.gw = New(cfg)
	r.srv = httptest.NewUnstartedServer(r.gw)
	r.srv.Listener = statusline.Listener(r.srv.Listener) // as daemon.Run serves it
	r.srv.Config.ConnContext = statusline.ConnContext
	r.srv.Start()
	t.Cleanup(r.srv.Close)
	t.Cleanup(r.gw.Close)
	return r
}

// post sends body to path with the agent token in the format's header.
func (r *rig) post(path, body string, hdr ...string) *http.Response {
	r.t.Helper()
	req, err := http.NewRequest(http.MethodPost, r.srv.URL+path, strings.NewReader(body))
	if err != nil {
		r.t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	if strings.HasPrefix(path, "/anthropic/") {
		req.Header.Set("X-Api-Key", agentToken)
		req.Header.Set("Anthropic-Version", "2023-06-01")
	} else {
		req.Header.Set("Authorization", "Bearer "+agentToken)
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		if hdr[i+1] == "" {
			req.Header.Del(hdr[i])
		} else {
			req.Header.Set(hdr[i], hdr[i+1])
		}
	}
	return r.do(req)
}

// chat sends one OpenRouter chat call with the agent token and returns the
// response and its body. Unlike post it is safe from many goroutines: it
// reports errors with t.Error and returns nil, and waits for nothing.
func (r *rig) chat(body string) (*http.Response, []byte) {
	req, err := http.NewRequest(http.MethodPost, r.srv.URL+"/openrouter/api/v1/chat/completions", strings.NewReader(body))
	if err != nil {
		r.t.Error(err)
		return nil, nil
	}
	req.Header.Set("Authorization", "Bearer "+agentToken)
	resp, err := r.srv.Client().Do(req)
	if err != nil {
		r.t.Error(err)
		return nil, nil
	}
	return resp, readAll(r.t, resp)
}

// do sends req and returns the response with its body read and the
// gateway done with the request: settlement and the decision entry come
// after the last byte, which a Content-Length client sees first.
func (r *rig) do(req *http.Request) *http.Response {
	r.t.Helper()
	before := len(r.rec.ByEvent(vocab.EventDecision))
	resp, err := r.srv.Client().Do(req)
	if err != nil {
		r.t.Fatal(err)
	}
	b := readAll(r.t, resp)
	resp.Body = io.NopCloser(bytes.NewReader(b))
	waitFor(r.t, "the decision entry", func() bool { return len(r.rec.ByEvent(vocab.EventDecision)) > before })
	return resp
}

func readAll(t testing.TB, resp *http.Response) []byte {
	t.Helper()
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// waitFor polls cond until it holds or the deadline passes.
func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}
