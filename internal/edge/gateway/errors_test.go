package gateway

import (
	"testing"
	"time"

	"github.com/egressd/egressd/internal/shared/meter"
)

func TestBudgetMessage(t *testing.T) {
	apr := time.Date(2026, 4, 1, 0, 0, 0, 0, time.UTC)
	tests := []struct {
		name string
		be   meter.BudgetError
		want string
	}{
		{"month, dollars", meter.BudgetError{SpentUSD: 9.996, CapUSD: 10, ReservedUSD: 0.0123456, NeedUSD: 0.0154, ResetsAt: apr},
			"egressd spend cap reached: spent $10.00 of $10.00 this period (plus $0.01235 in flight); this call could cost up to $0.0154. The budget resets at 2026-04-01T00:00:00Z."},
		{"cap below a cent", meter.BudgetError{SpentUSD: 0.00081, CapUSD: 0.001, NeedUSD: 0.015360, ResetsAt: apr},
			"egressd spend cap reached: spent $0.00081 of $0.001 this period (plus $0.00 in flight); this call could cost up to $0.01536. The budget resets at 2026-04-01T00:00:00Z."},
		{"total never resets", meter.BudgetError{SpentUSD: 50, CapUSD: 50, NeedUSD: 1.5},
			"egressd spend cap reached: spent $50.00 of $50.00 in total (plus $0.00 in flight); this call could cost up to $1.50. The budget never resets (budget.period: total)."},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := budgetMessage(&tt.be); got != tt.want {
				t.Errorf("budgetMessage:\n got %q\nwant %q", got, tt.want)
			}
		})
	}
}

// TestRefusalStatusLine: gateway refusals name their reason in the status
// line, as the proxy's do.
func TestRefusalStatusLine(t *testing.T) {
	r := newRig(t, openRouterJSON(0.001, 1, 1))
	tests := []struct {
		name, path string
		hdr        []string
		want       string
	}{
		{"unknown route", "/nosuch/v1/chat/completions", nil, "404 egressd not_allowlisted: /nosuch/ is not granted"},
		{"wrong token", "/openrouter/api/v1/chat/completions", []string{"Authorization", "Bearer wrong"},
			"401 egressd unauthorized: wrong or missing agent token"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp := r.post(tt.path, sonnetCall, tt.hdr...)
			if got := resp.Status; got != tt.want {
				t.Errorf("status line: got %q, want %q", got, tt.want)
			}
		})
	}
}
