package policy

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/egressd/egressd/internal/shared/vocab"

	"github.com/google/go-cmp/cmp"
)

const examplePath = "../policy.example.yaml"

func TestLoadExample(t *testing.T) {
	p, err := Load(examplePath)
	if err != nil {
		t.Fatalf("Load(%s): %v", examplePath, err)
	}
	cfg := p.Config()
	if got, want := len(cfg.Allow), 9; got != want {
		t.Errorf("len(allow) = %d, want %d", got, want)
	}
	checks := []struct {
		name      string
		got, want any
	}{
		{"mode", cfg.Mode, "enforce"},
		{"listen", cfg.Listen, ListenConfig{"127.0.0.1:3128", "127.0.0.1:5353", "127.0.0.1:8080", "127.0.0.1:9090"}},
		{"resolver.upstreams", cfg.Resolver.Upstreams, []string{"127.0.0.11:53"}},
		{"resolver.max_ttl", cfg.Resolver.MaxTTL, 5 * time.Minute},
		{"allow[7] host", p.Rules()[7].Host, "xn--bcher-kva.example"},
		{"allow[7] ports", p.Rules()[7].Ports, []uint16{443, 8443}},
		{"allow[0] ports (default)", p.Rules()[0].Ports, []uint16{443}},
		{"allow[3] rate", *p.Rules()[3].Rate, RateConfig{RPS: 5, Burst: 20}},
		{"allow[8] prefix", p.Rules()[8].Prefix.String(), "149.154.160.0/20"},
		{"networks.deny", cfg.Networks.Deny, []string{"198.51.100.0/24"}},
		{"limits.dns", cfg.Limits.DNS, RateConfig{RPS: 50, Burst: 100}},
		{"timeouts.shutdown", cfg.Timeouts.Shutdown, 15 * time.Second},
		{"log.file", cfg.Log.File, "/var/log/egressd/decisions.jsonl"},
		{"admin.token_env", cfg.Admin.TokenEnv, "EGRESSD_ADMIN_TOKEN"},
		{"providers.openrouter", cfg.Providers["openrouter"], ProviderConfig{
			Upstream: "https://openrouter.ai", Format: "openai", APIKeyEnv: "OPENROUTER_API_KEY",
			ClientTokenEnv: "EGRESSD_OPENROUTER_TOKEN", TokensPerMinute: 200000}},
		{"budget.cap_usd", cfg.Budget.CapUSD, 25.0},
		{"price with dots in the model name", cfg.Budget.Prices["anthropic/claude-sonnet-4.5"],
			Price{Input: 3, Output: 15, CacheRead: 0.3, CacheWrite: 3.75, CacheWrite1h: 6}},
		{"price cache defaults to input", cfg.Budget.Prices["openai/gpt-4o-mini"],
			Price{Input: 0.15, Output: 0.6, CacheRead: 0.15, CacheWrite: 0.15, CacheWrite1h: 0.3}},
	}
	for _, c := range checks {
		if diff := cmp.Diff(c.want, c.got); diff != "" {
			t.Errorf("%s: (-want +got)\n%s", c.name, diff)
		}
	}
	for _, tt := range []struct {
		host  string
		proto vocab.Proto
		want  vocab.Reason
	}{
		{"raw.githubusercontent.com", vocab.ProtoConnect, vocab.ReasonAllowlisted},
		{"openrouter.ai", vocab.ProtoConnect, vocab.ReasonUseGateway},
		{"api.anthropic.com", vocab.ProtoDNS, vocab.ReasonUseGateway},
		{"evil.example", vocab.ProtoConnect, vocab.ReasonNotAllowlisted},
	} {
		if got := p.Decide(Request{Host: tt.host, Port: 443, Proto: tt.proto}); got.Reason != tt.want {
			t.Errorf("example Decide(%q) reason = %s, want %s", tt.host, got.Reason, tt.want)
		}
	}
}

func TestDefault(t *testing.T) {
	p := Default()
	cfg := p.Config()
	want := Config{
		Version:  1,
		Mode:     "enforce",
		Listen:   ListenConfig{"127.0.0.1:3128", "127.0.0.1:5353", "127.0.0.1:8080", "127.0.0.1:9090"},
		Resolver: ResolverConfig{Upstreams: []string{"127.0.0.11:53"}, Timeout: 2 * time.Second, MinTTL: 5 * time.Second, MaxTTL: 5 * time.Minute, CacheSize: 10000},
		Limits: LimitsConfig{Client: RateConfig{20, 40}, Host: RateConfig{10, 20}, DNS: RateConfig{50, 100},
			MaxConnsPerClient: 256, MaxConns: 8192, MaxHeaderBytes: 64 << 10},
		Timeouts: TimeoutsConfig{Dial: 10 * time.Second, Header: 10 * time.Second, Idle: 5 * time.Minute, Shutdown: 15 * time.Second},
		DNS:      DNSConfig{QTypes: []string{"A", "AAAA", "CNAME", "HTTPS"}},
		Log:      LogConfig{MaxSizeMB: 50, Keep: 5},
		Budget:   BudgetConfig{Period: "month", WarnAt: 0.8, Ledger: "/var/lib/egressd/ledger.json", UnknownModel: "deny", DefaultMaxTokens: 4096, Store: "file"},
	}
	if diff := cmp.Diff(want, *cfg, cmp.Comparer(func(a, b map[string]ProviderConfig) bool { return len(a) == len(b) }),
		cmp.Comparer(func(a, b map[string]Price) bool { return len(a) == len(b) })); diff != "" {
		t.Errorf("Default().Config() (-want +got)\n%s", diff)
	}
	if len(p.Rules()) != 0 {
		t.Errorf("Default() has %d rules, want 0", len(p.Rules()))
	}
	if h := p.Hash(); len(h) != 12 || h != Default().Hash() {
		t.Errorf("Default().Hash() = %q, want 12 stable hex digits", h)
	}
}

func TestExplicitZeroKept(t *testing.T) {
	p := mustLoad(t, "version: 1\nlisten: {admin: \"\"}\nlimits: {client: {rps: 0, burst: 0}}\n")
	cfg := p.Config()
	if cfg.Listen.Admin != "" || cfg.Listen.Proxy != "127.0.0.1:3128" {
		t.Errorf("listen = %+v, want admin disabled and proxy default", cfg.Listen)
	}
	if cfg.Limits.Client != (RateConfig{}) || cfg.Limits.Host != (RateConfig{10, 20}) {
		t.Errorf("limits = %+v, want client unlimited and host default", cfg.Limits)
	}
}

func TestHashChanges(t *testing.T) {
	a := mustLoad(t, "version: 1\nallow: [{host: a.example}]\n")
	b := mustLoad(t, "version: 1\nallow: [{host: b.example}]\n")
	a2 := mustLoad(t, "version: 1\nallow:\n  - host: A.example.\n")
	if a.Hash() == b.Hash() {
		t.Errorf("different policies share hash %s", a.Hash())
	}
	// The hash is of the config as written (after defaults), so spelling
	// differences show; it is for "did the policy change", not equivalence.
	if a.Hash() == "" || a2.Hash() == "" {
		t.Errorf("empty hash")
	}
}

func TestEnvOverrides(t *testing.T) {
	t.Setenv("EGRESSD_LISTEN_PROXY", "0.0.0.0:3128")
	t.Setenv("EGRESSD_LISTEN_DNS", "0.0.0.0:53")
	t.Setenv("EGRESSD_LISTEN_GATEWAY", "0.0.0.0:8080")
	t.Setenv("EGRESSD_LISTEN_ADMIN", "127.0.0.1:19090")
	t.Setenv("EGRESSD_MODE", "report")
	t.Setenv("EGRESSD_LOG_FILE", "/tmp/decisions.jsonl")
	t.Setenv("EGRESSD_BUDGET_LEDGER", "/tmp/ledger.json")
	t.Setenv("EGRESSD_RESOLVER_UPSTREAMS", "10.0.0.2, [fd00::53]:5353,1.1.1.1")
	p, err := Load(examplePath)
	if err != nil {
		t.Fatalf("Load with env: %v", err)
	}
	cfg := p.Config()
	got := []any{cfg.Listen, cfg.Mode, cfg.Log.File, cfg.Budget.Ledger, cfg.Resolver.Upstreams}
	want := []any{
		ListenConfig{"0.0.0.0:3128", "0.0.0.0:53", "0.0.0.0:8080", "127.0.0.1:19090"},
		"report", "/tmp/decisions.jsonl", "/tmp/ledger.json",
		[]string{"10.0.0.2:53", "[fd00::53]:5353", "1.1.1.1:53"},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("env overrides (-want +got)\n%s", diff)
	}
	if d := p.Decide(Request{Host: "evil.example", Port: 443, Proto: vocab.ProtoConnect}); d.Verdict != vocab.Report {
		t.Errorf("EGRESSD_MODE=report: verdict %s, want would_deny", d.Verdict)
	}
	// LoadDefault honours the environment, Default does not.
	ld, err := LoadDefault()
	if err != nil {
		t.Fatalf("LoadDefault: %v", err)
	}
	if ld.Config().Listen.Proxy != "0.0.0.0:3128" || Default().Config().Listen.Proxy != "127.0.0.1:3128" {
		t.Errorf("LoadDefault proxy = %q, Default proxy = %q", ld.Config().Listen.Proxy, Default().Config().Listen.Proxy)
	}
}

func TestEnvOverrideInvalid(t *testing.T) {
	t.Setenv("EGRESSD_MODE", "yolo")
	t.Setenv("EGRESSD_RESOLVER_UPSTREAMS", "dns.google")
	_, err := LoadBytes([]byte("version: 1\nmode: enforce\n"), "p.yaml")
	var es Errors
	if !errors.As(err, &es) || len(es) != 2 {
		t.Fatalf("err = %v, want 2 problems", err)
	}
	for _, e := range es {
		if e.Env == "" || e.Line != 0 || !strings.Contains(e.Error(), "(from $EGRESSD_") {
			t.Errorf("problem %q: want it attributed to its environment variable, not a line", e)
		}
	}
}

func TestLoadMissingFile(t *testing.T) {
	_, err := Load(filepath.Join(t.TempDir(), "nope.yaml"))
	if err == nil || errors.Is(err, ErrInvalid) || !errors.Is(err, os.ErrNotExist) {
		t.Errorf("Load(missing) = %v, want a not-exist error that is not ErrInvalid", err)
	}
}
