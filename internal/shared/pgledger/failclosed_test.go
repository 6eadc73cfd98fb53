package pgledger_test

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/egressd/egressd/internal/edge/gateway"
	"github.com/egressd/egressd/internal/shared/meter"
	"github.com/egressd/egressd/internal/shared/pgledger"
	"github.com/egressd/egressd/policy"
	"github.com/jackc/pgx/v5"
	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"
)

// chatResponse is an OpenAI chat completion as the provider documents it.
const chatResponse = `{"id":"chatcmpl-1","object":"chat.completion","created":1732700000,"model":"gpt-4o-mini-2024-07-18",
"choices":[{"index":0,"message":{"role":"assistant","content":"Hi."},"finish_reason":"stop"}],
"usage":{"prompt_tokens":1000,"completion_tokens":100,"total_tokens":1100}}`

const (
	agentToken  = "egressd-agent-token-test"
	providerKey = "sk-test-provider-key"
)

// gatewayRig is a gateway on the shared store in front of a fake OpenAI
// endpoint that counts what reaches it.
type gatewayRig struct {
	srv       *httptest.Server
	forwarded atomic.Int64
	meter     *meter.Meter
}

func newGatewayRig(t *testing.T, m *meter.Meter) *gatewayRig {
	g := &gatewayRig{meter: m}
	up := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		g.forwarded.Add(1)
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, chatResponse)
	}))
	t.Cleanup(up.Close)
	provs := map[string]policy.ProviderConfig{
		"openai": {Upstream: up.URL + "/v1", Format: "openai", APIKeyEnv: "KEY", ClientTokenEnv: "TOKEN"},
	}
	gw := gateway.New(gateway.Config{
		Providers: func() map[string]policy.ProviderConfig { return provs },
		Meter:     m, Env: func(k string) string { return map[string]string{"KEY": providerKey, "TOKEN": agentToken}[k] },
		Transport: up.Client().Transport, Logger: quiet,
	})
	t.Cleanup(gw.Close)
	g.srv = httptest.NewServer(gw)
	t.Cleanup(g.srv.Close)
	return g
}

// call sends one chat completion with the official OpenAI Go SDK (no
// retries) and returns the HTTP status and, for a refusal, the error type
// egressd put in the provider-shaped body.
func (g *gatewayRig) call(t *testing.T) (int, string) {
	t.Helper()
	c := openai.NewClient(option.WithBaseURL(g.srv.URL+"/openai/"), option.WithAPIKey(agentToken),
		option.WithMaxRetries(0), option.WithHTTPClient(g.srv.Client()))
	_, err := c.Chat.Completions.New(context.Background(), openai.ChatCompletionNewParams{
		Model: "gpt-4o-mini", MaxTokens: openai.Int(100),
		Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage("hi")},
	})
	var apiErr *openai.Error
	switch {
	case err == nil:
		return http.StatusOK, ""
	case errors.As(err, &apiErr):
		return apiErr.StatusCode, apiErr.Type
	}
	t.Fatalf("chat completion: %v", err)
	return 0, ""
}

// TestDatabaseStoppedMidRun stops PostgreSQL under a running gateway:
// calls are refused with ledger_unavailable within the store timeout and
// none is forwarded; once it is back they are served again and the spend
// from before is intact.
func TestDatabaseStoppedMidRun(t *testing.T) {
	const timeout = time.Second
	dsn := freshDB(t)
	m := openMeter(t, dsn, pgBudget("hermes", 5, "", 0), meter.Options{StoreTimeout: timeout})
	g := newGatewayRig(t, m)
	if code, body := g.call(t); code != http.StatusOK {
		t.Fatalf("before: got %d %s, want 200", code, body)
	}
	// The gateway settles once the response is done, just after the
	// client has it.
	perCall := waitSpent(m, func(usd float64) bool { return usd > 0 }).SpentUSD
	if perCall <= 0 {
		t.Fatalf("before: nothing spent")
	}
	if err := cluster.Stop(); err != nil {
		t.Fatal(err)
	}
	restarted := false
	t.Cleanup(func() {
		if !restarted {
			_ = cluster.Restart()
		}
	})
	for i := range 3 {
		start := time.Now()
		code, body := g.call(t)
		took := time.Since(start)
		if code != http.StatusServiceUnavailable || !strings.Contains(body, "ledger_unavailable") {
			t.Errorf("down, call %d: got %d %s, want 503 ledger_unavailable", i, code, body)
		}
		if took > timeout+time.Second {
			t.Errorf("down, call %d: refused after %v, want within the %v timeout", i, took, timeout)
		}
	}
	if n := g.forwarded.Load(); n != 1 {
		t.Errorf("forwarded while down: provider saw %d calls in all, want 1 (the one before)", n)
	}
	if s := m.Snapshot(); s.LedgerErr == nil {
		t.Errorf("status while down: LedgerErr nil, want the failure")
	}
	if err := cluster.Restart(); err != nil {
		t.Fatal(err)
	}
	restarted = true
	code, body := 0, ""
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); {
		if code, body = g.call(t); code == http.StatusOK {
			break
		}
		time.Sleep(50 * time.Millisecond) // polling the pool's reconnect
	}
	if code != http.StatusOK {
		t.Fatalf("after restart: got %d %s, want 200", code, body)
	}
	s := waitSpent(m, func(usd float64) bool { return toNano(usd) >= 2*toNano(perCall) })
	if toNano(s.SpentUSD) != 2*toNano(perCall) || s.LedgerErr != nil || g.forwarded.Load() != 2 {
		t.Errorf("after restart: spent $%v (err %v), forwarded %d; want $%v, nil, 2", s.SpentUSD, s.LedgerErr, g.forwarded.Load(), 2*perCall)
	}
}

// TestFailClosed: a store that is slow past the timeout, read-only, or at
// a newer schema refuses reservations with ErrLedgerUnavailable, and the
// spend it holds is not reset.
func TestFailClosed(t *testing.T) {
	const timeout = 500 * time.Millisecond
	tests := []struct {
		name  string
		fault func(t *testing.T, dsn string) // applied after $0.10 was spent
		cause error                          // errors.Is the refusal, when known
	}{
		{"slow", func(t *testing.T, dsn string) {
			conn, err := pgx.Connect(ctx, dsn)
			if err != nil {
				t.Fatal(err)
			}
			tx, err := conn.Begin(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := tx.Exec(ctx, `LOCK TABLE egressd_budget IN ACCESS EXCLUSIVE MODE`); err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = tx.Rollback(ctx); _ = conn.Close(ctx) })
		}, nil}, // the client's deadline or the server's statement_timeout, whichever fires first
		{"read-only", func(t *testing.T, dsn string) {
			if err := cluster.Exec("postgres", `ALTER DATABASE `+pgx.Identifier{dbName(dsn)}.Sanitize()+` SET default_transaction_read_only = on`); err != nil {
				t.Fatal(err)
			}
		}, nil},
		{"newer schema", func(t *testing.T, dsn string) {
			if err := cluster.Exec(dbName(dsn), `INSERT INTO egressd_schema (version) VALUES (99)`); err != nil {
				t.Fatal(err)
			}
		}, pgledger.ErrSchemaNewer},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dsn := freshDB(t)
			cfg := pgBudget("hermes", 1, "", 0)
			r, err := openMeter(t, dsn, cfg, meter.Options{}).Reserve("gpt-4o-mini", 0.1)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := r.Settle(0.1, meter.Usage{}, false); err != nil {
				t.Fatal(err)
			}
			tt.fault(t, dsn)
			// A fresh instance: new connections see the fault.
			m := openMeter(t, dsn, cfg, meter.Options{StoreTimeout: timeout})
			start := time.Now()
			_, err = m.Reserve("gpt-4o-mini", 0.01)
			took := time.Since(start)
			if !errors.Is(err, meter.ErrLedgerUnavailable) || (tt.cause != nil && !errors.Is(err, tt.cause)) {
				t.Fatalf("Reserve: got %v, want ErrLedgerUnavailable (cause %v)", err, tt.cause)
			}
			if took > 2*timeout+time.Second {
				t.Errorf("refused after %v, want within about the %v timeout", took, timeout)
			}
			if tt.name == "slow" {
				return // reads wait on the lock too
			}
			if s := m.Snapshot(); s.SpentUSD != 0.1 {
				t.Errorf("spend after the fault: $%v, want $0.1 kept", s.SpentUSD)
			}
		})
	}
}

// waitSpent polls m's snapshot until ok holds of the spend or 10 s pass,
// and returns the last snapshot.
func waitSpent(m *meter.Meter, ok func(usd float64) bool) meter.Snapshot {
	s := m.Snapshot()
	for deadline := time.Now().Add(10 * time.Second); !ok(s.SpentUSD) && time.Now().Before(deadline); {
		time.Sleep(10 * time.Millisecond) // polling for the gateway's settle
		s = m.Snapshot()
	}
	return s
}
