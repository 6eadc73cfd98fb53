package gateway

import "testing"

// TestAsksLongCache: a one-hour cache write is found however the body
// spells it, and a body without one is not taken for one.
func TestAsksLongCache(t *testing.T) {
	tests := []struct {
		name, body string
		want       bool
	}{
		{"plain", `{"system":[{"type":"text","text":"x","cache_control":{"type":"ephemeral","ttl":"1h"}}]}`, true},
		{"escaped value", `{"system":[{"cache_control":{"type":"ephemeral","ttl":"\u0031h"}}]}`, true},
		{"escaped key", `{"cache_control":{"\u0074tl":"1h"}}`, true},
		{"five minutes", `{"cache_control":{"type":"ephemeral","ttl":"5m"}}`, false},
		{"1h elsewhere", `{"messages":[{"role":"user","content":"wait \"1h\" please"}]}`, false},
		{"no cache", `{"model":"m","messages":[]}`, false},
	}
	for _, tt := range tests {
		if got := asksLongCache([]byte(tt.body)); got != tt.want {
			t.Errorf("%s: asksLongCache = %v, want %v", tt.name, got, tt.want)
		}
	}
}
