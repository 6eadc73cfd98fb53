package policy

import (
	"errors"
	"strings"
	"testing"
)

const provider = `providers:
  p:
    upstream: %s
    format: openai
    api_key_env: KEY
    client_token_env: TOKEN
budget: {cap_usd: 1}
`

func withUpstream(u string) string { return strings.Replace(provider, "%s", u, 1) }

// TestValidateInline covers validation rules not worth a fixture file each.
func TestValidateInline(t *testing.T) {
	tests := []struct {
		name, yaml, path, msg string
	}{
		{"listen bad port", "listen: {dns: \"127.0.0.1:99999\"}", "listen.dns", "want 1-65535"},
		{"listen name", "listen: {gateway: \"example.com:80\"}", "listen.gateway", "IP address, localhost or empty"},
		{"listen duplicate", "listen: {admin: \"127.0.0.1:3128\"}", "listen.admin", "is also listen.proxy"},
		{"resolver port 0", "resolver: {upstreams: [\"10.0.0.1:0\"]}", "resolver.upstreams[0]", "port 0"},
		{"resolver empty", "resolver: {upstreams: []}", "resolver.upstreams", "at least one"},
		{"resolver ttl order", "resolver: {min_ttl: 10m, max_ttl: 1m}", "resolver.max_ttl", "below min_ttl"},
		{"resolver negative ttl", "resolver: {min_ttl: -1s}", "resolver.min_ttl", "negative"},
		{"resolver timeout 0", "resolver: {timeout: 0s}", "resolver.timeout", "positive"},
		{"resolver cache 0", "resolver: {cache_size: 0}", "resolver.cache_size", "positive"},
		{"rate negative burst", "limits: {host: {rps: 1, burst: -1}}", "limits.host.burst", "negative"},
		{"rate burst without rps", "limits: {dns: {rps: 0, burst: 5}}", "limits.dns.rps", "never refills"},
		{"rate nan", "limits: {dns: {rps: .nan, burst: 5}}", "limits.dns.rps", "non-negative number"},
		{"max conns 0", "limits: {max_conns: 0}", "limits.max_conns", "positive"},
		{"timeout 0", "timeouts: {idle: 0s}", "timeouts.idle", "positive"},
		{"qtypes empty", "dns: {qtypes: []}", "dns.qtypes", "at least one"},
		{"qtype TYPE0", "dns: {qtypes: [TYPE0]}", "dns.qtypes[0]", "unknown type"},
		{"log keep", "log: {keep: -2}", "log.keep", "negative"},
		{"admin token env", "admin: {token_env: \"MY-TOKEN\"}", "admin.token_env", "not an environment variable name"},
		{"upstream scheme", withUpstream("ftp://example.com"), "providers.p.upstream", "https"},
		{"upstream query", withUpstream("https://example.com/?key=x"), "providers.p.upstream", "no credentials, query"},
		{"upstream userinfo", withUpstream("https://u:p@example.com"), "providers.p.upstream", "no credentials"},
		{"upstream metadata", withUpstream("https://169.254.169.254"), "providers.p.upstream", "metadata"},
		{"upstream no host", withUpstream("https:///v1"), "providers.p.upstream", "want a URL"},
		{"upstream bad port", withUpstream("https://example.com:0"), "providers.p.upstream", "want 1-65535"},
		{"upstream bad host", withUpstream("https://exa_mple..com"), "providers.p.upstream", "empty label"},
		{"upstream http to private", withUpstream("http://10.0.0.5:4000"), "providers.p.upstream", "loopback"},
		{"provider env name", strings.Replace(withUpstream("https://a.example"), "KEY", "1KEY", 1), "providers.p.api_key_env", "not an environment"},
		{"provider tpm", strings.Replace(withUpstream("https://a.example"), "format: openai", "format: openai\n    tokens_per_minute: -5", 1), "providers.p.tokens_per_minute", "negative"},
		{"provider name", strings.Replace(withUpstream("https://a.example"), "  p:", "  \"a.b\":", 1), `providers["a.b"]`, "served as"},
		{"cap negative", "budget: {cap_usd: -1}", "budget.cap_usd", "non-negative"},
		{"warn_at 0", "budget: {warn_at: 0}", "budget.warn_at", "(0, 1]"},
		{"unknown_model", "budget: {unknown_model: guess}", "budget.unknown_model", "deny or default"},
		{"max tokens", "budget: {default_max_tokens: 0}", "budget.default_max_tokens", "positive"},
		{"ledger", strings.Replace(withUpstream("https://a.example"), "cap_usd: 1", "cap_usd: 1, ledger: \"\"", 1), "budget.ledger", "required"},
		{"store unknown", "budget: {store: redis}", "budget.store", "file or postgres"},
		{"store pg no dsn_env", "budget: {store: postgres, name: a}", "budget.dsn_env", "required"},
		{"store pg dsn in dsn_env", "budget: {store: postgres, name: a, dsn_env: \"postgres://u:p@h/db\"}", "budget.dsn_env", "not an environment variable name"},
		{"store pg no name", "budget: {store: postgres, dsn_env: DSN}", "budget.name", "required"},
		{"shared on file", "budget: {shared: {name: team, cap_usd: 5}}", "budget.shared", "store: postgres"},
		{"shared same name", "budget: {store: postgres, dsn_env: DSN, name: a, shared: {name: a, cap_usd: 5}}", "budget.shared.name", "differ"},
		{"shared no cap", "budget: {store: postgres, dsn_env: DSN, name: a, shared: {name: team}}", "budget.shared.cap_usd", "positive"},
		{"shared cap no name", "budget: {store: postgres, dsn_env: DSN, name: a, shared: {cap_usd: 3}}", "budget.shared.name", "required"},
		{"cidr without length", "allow: [{cidr: 203.0.113.7}]", "allow[0].cidr", "203.0.113.7/32"},
		{"cidr mapped", "allow: [{cidr: \"::ffff:10.0.0.0/104\"}]", "allow[0].cidr", "IPv4 form"},
		{"duplicate cidr", "allow: [{cidr: 149.154.160.0/20}, {cidr: 149.154.160.0/20, ports: [80]}]", "allow[1]", "already granted"},
		{"duplicate wildcard", "allow: [{host: \"*.a.example\"}, {host: \"*.A.example.\"}]", "allow[1]", "already granted"},
		{"wildcard ip", "allow: [{host: \"*.0.0.1\"}]", "allow[0].host", "cannot be an IP"},
		{"wildcard bad", "allow: [{host: \"*.a..b\"}]", "allow[0].host", "empty label"},
		{"host space", "allow: [{host: \" a.example\"}]", "allow[0].host", "space"},
		{"host v6", "allow: [{host: \"::1\"}]", "allow[0].host", "use cidr: ::1/128"},
		{"host octal", "allow: [{host: \"0177.1\"}]", "allow[0].host", "use cidr: 127.0.0.1/32"},
		{"host empty", "allow: [{host: \"\", ports: [443]}]", "allow[0]", "needs host: or cidr:"},
		{"float port", "allow: [{host: a.example, ports: [44.3]}]", "allow[0].ports[0]", "whole number"},
		{"huge burst", "limits: {dns: {rps: 1, burst: 1e30}}", "limits.dns.burst", "whole number"},
		{"bare null qtype", "dns: {qtypes: [A, null]}", "dns.qtypes[1]", "quotes"},
		{"mode not a string", "mode: 5", "mode", "expected type 'string'"},
	}
	for _, tt := range tests {
		wantProblem(t, tt.name, tt.yaml, tt.path, tt.msg)
	}
}

// TestValidateAccepts pins what must keep loading.
func TestValidateAccepts(t *testing.T) {
	for _, y := range []string{
		"listen: {proxy: \":3128\", dns: \"localhost:5353\", gateway: \"[::1]:0\", admin: \"127.0.0.1:0\"}",
		"listen: {proxy: \"\", dns: \"\", gateway: \"\", admin: \"\"}",
		"resolver: {upstreams: [\"::1\", \"[fd00::53]:5300\", 10.0.0.2]}",
		"allow: [{host: \"_dmarc.example.com\"}, {host: \"*.co\"}, {cidr: \"2001:db8::/32\"}, {host: \"x.example\", ports: []}]",
		withUpstream("http://127.0.0.1:8081"),
		withUpstream("http://localhost:8081/v1"),
		withUpstream("http://[::1]:8081"),
		withUpstream("https://10.0.0.5:4000"),
		"limits: {client: {rps: 0, burst: 0}, host: {rps: 0.5, burst: 1}}",
		"budget: {unknown_model: default, prices: {default: {input: 1, output: 2}}}",
		"dns: {qtypes: [any, \"NULL\", TYPE65535]}",
		"admin: {token_env: EGRESSD_ADMIN_TOKEN}",
		"listen: {admin: \"0.0.0.0:9090\"}\nadmin: {token_env: EGRESSD_ADMIN_TOKEN}",
		"listen: {admin: \"[::1]:9090\"}",
		"networks: {allow: [169.254.1.0/24, 192.168.0.0/16], deny: [\"2001:db8::/48\"]}",
	} {
		if _, err := LoadBytes([]byte("version: 1\n"+y+"\n"), "p.yaml"); err != nil {
			t.Errorf("rejected %s:\n%v", y, err)
		}
	}
}

func TestStringers(t *testing.T) {
	for _, tt := range []struct{ got, want string }{
		{ClassLinkLocal.String(), "link_local"}, {Class(99).String(), "unknown"},
	} {
		if tt.got != tt.want {
			t.Errorf("String() = %q, want %q", tt.got, tt.want)
		}
	}
	if ClassPublic.Special() || !ClassPrivate.Special() {
		t.Errorf("Special(): public %v, private %v", ClassPublic.Special(), ClassPrivate.Special())
	}
}

func TestWholeFileProblems(t *testing.T) {
	for _, tt := range []struct{ yaml, want string }{
		{"[]", "p.yaml:1: yaml: the file must be a mapping"},
		{"- a\n- b", "p.yaml:1: yaml: the file must be a mapping"},
		{"", `p.yaml: version: required`},
		{"version: 1.0", `p.yaml:1: version: 1: want the integer 1`},
		{"version: 1\nallow: 5", "p.yaml:2: allow: "},
	} {
		_, err := LoadBytes([]byte(tt.yaml), "p.yaml")
		if err == nil || !strings.HasPrefix(err.Error(), tt.want) {
			t.Errorf("LoadBytes(%q) = %v, want an error starting %q", tt.yaml, err, tt.want)
		}
	}
}

// wantProblem loads yaml (after "version: 1") and fails t unless loading
// reports a problem at path whose message contains msg.
func wantProblem(t *testing.T, name, yaml, path, msg string) {
	t.Helper()
	_, err := LoadBytes([]byte("version: 1\n"+yaml+"\n"), "p.yaml")
	var es Errors
	if !errors.As(err, &es) {
		t.Errorf("%s: err = %v, want Errors", name, err)
		return
	}
	for _, e := range es {
		if e.Path == path && strings.Contains(e.Msg, msg) {
			return
		}
	}
	t.Errorf("%s: got\n%v\nwant a problem at %q containing %q", name, err, path, msg)
}
