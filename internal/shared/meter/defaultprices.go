package meter

import (
	"maps"
	"regexp"
	"slices"
	"strings"

	"github.com/egressd/egressd/policy"
)

// DefaultPricesDate is when the shipped price table was last checked.
const DefaultPricesDate = "2026-12-07"

// DefaultPrices is the price table egressd ships, USD per million tokens,
// for models an agent commonly uses; a budget.prices entry of the same
// name replaces a row whole. `egressd prices` prints what is in force.
//
// Sources: Anthropic rows from the model pricing table of
// platform.claude.com/docs/en/about-claude/pricing (base input, 5-minute
// and 1-hour cache writes, cache hits, output), as indexed on
// DefaultPricesDate. Where a model has a long-prompt band, the dearer band
// is listed so that a reservation covers it. OpenAI rows from
// openai.com/api/pricing (input, cached input, output; standard tier) as
// of 2025-08, the last version egressd's authors checked: verify them
// before relying on them. OpenRouter rows are the same models under
// OpenRouter's names; OpenRouter's own usage.cost still wins at
// settlement. Priority is left unset (service_tier priority refused)
// because its multiplier varies by model and contract.
var DefaultPrices = map[string]policy.Price{
	// Anthropic.
	"claude-opus-4-5":   anth(5, 25),
	"claude-opus-4-6":   anth(5, 25),
	"claude-opus-4-1":   anth(15, 75),
	"claude-opus-4-0":   anth(15, 75),
	"claude-sonnet-5-5": {Input: 2, Output: 10, CacheRead: 0.10, CacheWrite: 2.5, CacheWrite1h: 4},
	"claude-sonnet-5":   {Input: 2, Output: 10, CacheRead: 0.20, CacheWrite: 2.5, CacheWrite1h: 4},
	"claude-sonnet-4-5": anth(3, 15),
	"claude-sonnet-4-0": anth(3, 15),
	"claude-haiku-5-5":  {Input: 0.5, Output: 2.5, CacheRead: 0.05, CacheWrite: 0.625, CacheWrite1h: 1}, // the over-100k-prompt band
	"claude-haiku-4-5":  anth(1, 5),
	"claude-3-5-haiku":  {Input: 0.8, Output: 4, CacheRead: 0.08, CacheWrite: 1, CacheWrite1h: 1.6},
	// OpenAI (no cache writes: cached input only).
	"gpt-5":                  oai(1.25, 0.125, 10),
	"gpt-5-mini":             oai(0.25, 0.025, 2),
	"gpt-5-nano":             oai(0.05, 0.005, 0.4),
	"gpt-4.1":                oai(2, 0.5, 8),
	"gpt-4.1-mini":           oai(0.4, 0.1, 1.6),
	"gpt-4.1-nano":           oai(0.1, 0.025, 0.4),
	"gpt-4o":                 oai(2.5, 1.25, 10),
	"gpt-4o-2024-05-13":      oai(5, 5, 15), // the first snapshot, dearer than "gpt-4o"
	"gpt-4o-mini":            oai(0.15, 0.075, 0.6),
	"o3":                     oai(2, 0.5, 8),
	"o4-mini":                oai(1.1, 0.275, 4.4),
	"text-embedding-3-small": oai(0.02, 0.02, 0),
	"text-embedding-3-large": oai(0.13, 0.13, 0),
	// OpenRouter names.
	"anthropic/claude-opus-4.5":   anth(5, 25),
	"anthropic/claude-opus-4.1":   anth(15, 75),
	"anthropic/claude-sonnet-4.5": anth(3, 15),
	"anthropic/claude-haiku-4.5":  anth(1, 5),
	"openai/gpt-5":                oai(1.25, 0.125, 10),
	"openai/gpt-5-mini":           oai(0.25, 0.025, 2),
	"openai/gpt-4.1":              oai(2, 0.5, 8),
	"openai/gpt-4o":               oai(2.5, 1.25, 10),
	"openai/gpt-4o-mini":          oai(0.15, 0.075, 0.6),
}

// anth is an Anthropic row: cache hits 0.1×, 5-minute writes 1.25×,
// 1-hour writes 2× the input price.
func anth(in, out float64) policy.Price {
	return policy.Price{Input: in, Output: out, CacheRead: in / 10, CacheWrite: in * 1.25, CacheWrite1h: in * 2}
}

// oai is an OpenAI row: cached input at its own price, no cache writes.
func oai(in, cached, out float64) policy.Price {
	return policy.Price{Input: in, Output: out, CacheRead: cached, CacheWrite: in, CacheWrite1h: in}
}

// dated matches a model id's release-date suffix (claude-sonnet-4-5-20250929,
// gpt-4o-2024-08-06), which names the same prices as the bare id.
var dated = regexp.MustCompile(`-(\d{8}|\d{4}-\d{2}-\d{2})$`)

// lookupPrice finds a model's price: the policy's entry, else the shipped
// table, trying the id without its date suffix second.
func lookupPrice(prices map[string]policy.Price, key string) (policy.Price, bool) {
	for _, k := range []string{key, dated.ReplaceAllString(key, "")} {
		if p, ok := prices[k]; ok {
			return p, true
		}
		if p, ok := DefaultPrices[k]; ok {
			return fillPrice(p), true
		}
	}
	return policy.Price{}, false
}

// PriceRow is one model's price in force, for `egressd prices`.
type PriceRow struct {
	Model  string
	Price  policy.Price
	Source string // "policy" or "default"
}

// PricesInForce lists every priced model under cfg, sorted: the policy's
// entries (defaults filled) and the shipped rows they do not replace.
func PricesInForce(cfg policy.BudgetConfig) []PriceRow {
	rows := map[string]PriceRow{}
	for k, p := range DefaultPrices {
		rows[k] = PriceRow{k, fillPrice(p), "default"}
	}
	for k, p := range cfg.Prices {
		rows[strings.ToLower(k)] = PriceRow{strings.ToLower(k), fillPrice(p), "policy"}
	}
	out := make([]PriceRow, 0, len(rows))
	for _, k := range slices.Sorted(maps.Keys(rows)) {
		out = append(out, rows[k])
	}
	return out
}
