package daemon

import (
	"testing"
	"time"

	"github.com/egressd/egressd/policy"
)

// TestResolverConfigMinTTL: the policy's min_ttl reaches the resolver as
// written, and an explicit 0 means no floor rather than the resolver's
// own default.
func TestResolverConfigMinTTL(t *testing.T) {
	for _, tc := range []struct {
		name string
		in   time.Duration
		want time.Duration
	}{
		{"zero is no floor", 0, time.Nanosecond},
		{"set", 30 * time.Second, 30 * time.Second},
		{"sub-second", time.Millisecond, time.Millisecond},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := &policy.Config{Resolver: policy.ResolverConfig{MinTTL: tc.in, MaxTTL: time.Minute}}
			if got := resolverConfig(cfg, nil).MinTTL; got != tc.want {
				t.Errorf("MinTTL: got %v, want %v", got, tc.want)
			}
		})
	}
}
