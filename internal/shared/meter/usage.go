package meter

import (
	"fmt"
	"math"
	"strings"

	"github.com/egressd/egressd/policy"
)

// Format is a provider wire format.
type Format uint8

// Formats, as written in providers.<name>.format.
const (
	FormatOpenAI    Format = iota // Chat Completions and Responses (OpenAI, OpenRouter, Nous Portal)
	FormatAnthropic               // Anthropic Messages
)

// ParseFormat maps the policy spelling to a Format.
func ParseFormat(s string) (Format, error) {
	switch strings.ToLower(s) {
	case "openai", "":
		return FormatOpenAI, nil
	case "anthropic":
		return FormatAnthropic, nil
	}
	return 0, fmt.Errorf("unknown provider format %q (want openai or anthropic)", s)
}

func (f Format) String() string {
	if f == FormatAnthropic {
		return "anthropic"
	}
	return "openai"
}

// Usage is what one call consumed, normalised so that the token classes are
// disjoint and each is priced once: InputTokens excludes cached tokens in
// both formats (OpenAI counts cached tokens inside prompt_tokens, Anthropic
// outside input_tokens; the parser subtracts or not accordingly).
type Usage struct {
	InputTokens        int64   // uncached input, priced at Price.Input
	CacheReadTokens    int64   // priced at Price.CacheRead
	CacheWriteTokens   int64   // priced at Price.CacheWrite, except CacheWrite1hTokens of them
	CacheWrite1hTokens int64   // one-hour cache writes (Anthropic), priced at Price.CacheWrite1h
	OutputTokens       int64   // priced at Price.Output (reasoning tokens included)
	CostUSD            float64 // provider-reported cost (OpenRouter usage.cost); valid when HasCost
	HasCost            bool
	Tools              ToolUses // provider-run tool uses reported
	FeesUSD            float64  // per-use tool fees, priced by the caller; added unless HasCost
}

// TotalInput is every input token, cached or not, for logs.
func (u Usage) TotalInput() int64 {
	return satAdd(satAdd(u.InputTokens, u.CacheReadTokens), u.CacheWriteTokens)
}

// Cost prices u: the provider's own figure when it reported one (it
// includes tool fees), else the price table plus u.FeesUSD. Never
// negative.
func Cost(p policy.Price, u Usage) float64 {
	if u.HasCost {
		return clampUSD(u.CostUSD)
	}
	p = fillPrice(p)
	long := min(u.CacheWrite1hTokens, u.CacheWriteTokens)
	c := float64(u.InputTokens)*p.Input +
		float64(u.CacheReadTokens)*p.CacheRead +
		float64(u.CacheWriteTokens-long)*p.CacheWrite +
		float64(long)*p.CacheWrite1h +
		float64(u.OutputTokens)*p.Output
	return clampUSD(c/1e6 + clampUSD(u.FeesUSD))
}

// fillPrice applies the documented defaults: cache prices default to the
// input price, one-hour writes to twice it (the conservative choices when
// the operator gave none).
func fillPrice(p policy.Price) policy.Price {
	if p.CacheRead <= 0 {
		p.CacheRead = p.Input
	}
	if p.CacheWrite <= 0 {
		p.CacheWrite = p.Input
	}
	if p.CacheWrite1h <= 0 {
		p.CacheWrite1h = max(p.CacheWrite, 2*p.Input)
	}
	return p
}

// nanoPerUSD is the ledger's unit. Integer nano-dollars make concurrent sums
// exact and order-independent (float sums are neither), and int64 still
// holds 9.2e9 USD.
const nanoPerUSD = 1e9

// maxNano bounds every amount so that sums of a few of them cannot overflow.
const maxNano = math.MaxInt64 / 4

func clampUSD(v float64) float64 {
	if math.IsNaN(v) || v < 0 {
		return 0
	}
	return min(v, float64(maxNano)/nanoPerUSD)
}

// toNano converts USD to nano-USD; ceil rounds up (reservations), else
// to nearest (settled costs).
func toNano(usd float64, ceil bool) int64 {
	v := clampUSD(usd) * nanoPerUSD
	if ceil {
		v = math.Ceil(v)
	} else {
		v = math.Round(v)
	}
	if v >= maxNano {
		return maxNano
	}
	return int64(v)
}

func toUSD(nano int64) float64 { return float64(nano) / nanoPerUSD }

func satAdd(a, b int64) int64 {
	if s := a + b; s >= a && s <= maxNano*2 {
		return s
	}
	return maxNano * 2
}
