package meter

import (
	"errors"
	"math"
	"testing"

	"github.com/egressd/egressd/internal/lib/testutil"

	"github.com/egressd/egressd/policy"
)

func TestDefaultPricesAndOverrides(t *testing.T) {
	cfg := budget(t, 10)
	cfg.Prices["gpt-4o"] = policy.Price{Input: 100, Output: 100, Priority: 2}
	m := open(t, cfg, testutil.NewClock(t0))
	tests := []struct {
		model   string
		call    Call
		wantKey string
		want    float64
	}{
		{"shipped row", Call{Model: "claude-haiku-4-5", InputTokens: 1e6, OutputTokens: 1e6}, "claude-haiku-4-5", 1.25 + 5},
		{"dated id", Call{Model: "claude-haiku-4-5-20251001", InputTokens: 1e6, OutputTokens: 1e6}, "claude-haiku-4-5-20251001", 1.25 + 5},
		{"one-hour writes reserved at their rate", Call{Model: "claude-haiku-4-5", InputTokens: 1e6, OutputTokens: 1e6, CacheWrite1h: true}, "claude-haiku-4-5", 2 + 5},
		{"policy replaces the row", Call{Model: "GPT-4o", InputTokens: 1e6, OutputTokens: 1e6}, "gpt-4o", 200},
		{"priority multiplier", Call{Model: "gpt-4o", InputTokens: 1e6, OutputTokens: 1e6, Priority: true}, "gpt-4o", 400},
		{"embeddings no output", Call{Model: "text-embedding-3-small", InputTokens: 1e6, OutputTokens: NoOutput}, "text-embedding-3-small", 0.02},
	}
	for _, tt := range tests {
		q, err := m.QuoteCall(tt.call)
		if err != nil || q.PriceKey != tt.wantKey || math.Abs(q.MaxCostUSD-tt.want) > 1e-9 {
			t.Errorf("%s: got %+v, %v, want key %q cost %v", tt.model, q, err, tt.wantKey, tt.want)
		}
	}
	var te *TierError
	if _, err := m.QuoteCall(Call{Model: "gpt-4.1", InputTokens: 1, Priority: true}); !errors.As(err, &te) {
		t.Errorf("priority without a multiplier: got %v, want a TierError", err)
	}
	rows := PricesInForce(cfg)
	found := map[string]string{}
	for _, r := range rows {
		found[r.Model] = r.Source
	}
	if found["gpt-4o"] != "policy" || found["claude-haiku-4-5"] != "default" {
		t.Errorf("PricesInForce sources %v, want gpt-4o from the policy and claude-haiku-4-5 shipped", found)
	}
}

func TestOneHourCacheWritesSettled(t *testing.T) {
	e := NewExtractor(FormatAnthropic, false)
	e.Write([]byte(`{"type":"message","usage":{"input_tokens":10,"output_tokens":5,"cache_creation_input_tokens":3000,"cache_read_input_tokens":0,"cache_creation":{"ephemeral_5m_input_tokens":1000,"ephemeral_1h_input_tokens":2000}}}`))
	u, _ := e.Result()
	if u.CacheWriteTokens != 3000 || u.CacheWrite1hTokens != 2000 {
		t.Fatalf("got %+v, want 3000 cache writes of which 2000 one-hour", u)
	}
	p := policy.Price{Input: 1, Output: 5, CacheWrite: 1.25, CacheWrite1h: 2}
	if got, want := Cost(p, u), (10*1+5*5+1000*1.25+2000*2)/1e6; math.Abs(got-want) > 1e-12 {
		t.Errorf("got $%v, want $%v", got, want)
	}
}
