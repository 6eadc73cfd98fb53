package policy

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestBrokenFixtures loads every file in testdata/ and checks that it is
// rejected with a problem naming the key path (and, where the key is in
// the file, its line).
func TestBrokenFixtures(t *testing.T) {
	tests := []struct {
		file string
		path string // key path the problem must name
		line int    // 0 = no line expected
		msg  string // substring of the message
	}{
		{"unknown_key.yaml", "allow[2].hots", 5, "unknown key"},
		{"unknown_top_key.yaml", "listen.socks", 4, "unknown key"},
		{"missing_version.yaml", "version", 0, "required"},
		{"version_2.yaml", "version", 1, "2 is not supported"},
		{"version_string.yaml", "version", 1, "want the integer 1"},
		{"glob_bare_star.yaml", "allow[0].host", 3, `"*": a bare "*"`},
		{"glob_star_dot.yaml", "allow[1].host", 4, `"*.": empty label`},
		{"glob_middle_star.yaml", "allow[0].host", 3, "only allowed as the whole first label"},
		{"glob_star_prefix.yaml", "allow[0].host", 3, "only allowed as the whole first label"},
		{"glob_double_star.yaml", "allow[0].host", 3, "only allowed as the whole first label"},
		{"host_empty_label.yaml", "allow[0].host", 3, "empty label"},
		{"host_long_label.yaml", "allow[0].host", 3, "longer than 63"},
		{"host_long_name.yaml", "allow[0].host", 3, "longer than 253"},
		{"host_bad_char.yaml", "allow[0].host", 3, "invalid character"},
		{"host_ip_literal.yaml", "allow[0].host", 3, "use cidr: 10.0.0.1/32"},
		{"host_with_port.yaml", "allow[0].host", 3, "under ports:"},
		{"host_url.yaml", "allow[0].host", 3, "not a URL"},
		{"host_numeric_tld.yaml", "allow[0].host", 3, "numeric last label"},
		{"host_bad_idn.yaml", "allow[0].host", 3, "internationalised"},
		{"bad_cidr.yaml", "allow[0].cidr", 3, "not a CIDR"},
		{"cidr_host_bits.yaml", "allow[0].cidr", 3, "did you mean 149.154.160.0/20"},
		{"port_zero.yaml", "allow[0].ports[0]", 4, "0: want 1-65535"},
		{"port_70000.yaml", "allow[0].ports[1]", 4, "70000: want 1-65535"},
		{"port_string.yaml", "allow[0].ports[0]", 4, "expected type 'int'"},
		{"host_and_cidr.yaml", "allow[0]", 3, "both host: and cidr:"},
		{"admin_exposed_without_token.yaml", "listen.admin", 3, "not a loopback address"},
		{"neither_host_nor_cidr.yaml", "allow[0]", 3, "needs host: or cidr:"},
		{"duplicate_host.yaml", "allow[1]", 4, "already granted by allow[0]"},
		{"bad_mode.yaml", "mode", 2, `"permissive": want enforce or report`},
		{"bad_duration.yaml", "timeouts.dial", 3, "duration"},
		{"bare_number_duration.yaml", "resolver.timeout", 3, "with a unit"},
		{"negative_rate.yaml", "limits.client.rps", 3, "non-negative"},
		{"rate_no_burst.yaml", "allow[0].rate.burst", 4, "admits nothing"},
		{"metadata_in_networks_allow.yaml", "networks.allow[0]", 3, "169.254.169.254"},
		{"bad_networks_deny.yaml", "networks.deny[0]", 3, "not a CIDR"},
		{"bad_listen.yaml", "listen.proxy", 3, "host:port"},
		{"resolver_name.yaml", "resolver.upstreams[0]", 3, "IP address"},
		{"bad_qtype.yaml", "dns.qtypes[1]", 3, `"AAAAA": unknown type`},
		{"negative_log_size.yaml", "log.max_size_mb", 3, "negative"},
		{"provider_no_key_env.yaml", "providers.openrouter.api_key_env", 3, "required"},
		{"provider_same_env.yaml", "providers.openrouter.client_token_env", 7, "must differ"},
		{"provider_http.yaml", "providers.openrouter.upstream", 4, "use https://"},
		{"provider_bad_format.yaml", "providers.openrouter.format", 5, `"gemini"`},
		{"provider_no_cap.yaml", "budget.cap_usd", 0, "must be positive"},
		{"bad_period.yaml", "budget.period", 3, `"fortnight"`},
		{"bad_warn_at.yaml", "budget.warn_at", 3, "(0, 1]"},
		{"unknown_model_default_no_price.yaml", "budget.prices", 4, `"default" price`},
		{"negative_price.yaml", `budget.prices["anthropic/claude-sonnet-4.5"].output`, 4, "non-negative"},
		{"price_unknown_key.yaml", `budget.prices["anthropic/claude-sonnet-4.5"].outptu`, 4, "unknown key"},
		{"yaml_syntax.yaml", "", 2, "did not find expected"},
		{"duplicate_key.yaml", "mode", 3, "duplicate key (first on line 2)"},
	}
	covered := map[string]bool{}
	for _, tt := range tests {
		covered[tt.file] = true
		t.Run(tt.file, func(t *testing.T) {
			path := filepath.Join("testdata", tt.file)
			p, err := Load(path)
			if err == nil {
				t.Fatalf("Load(%s) = %v, nil; want an error", tt.file, p)
			}
			if !errors.Is(err, ErrInvalid) {
				t.Errorf("Load(%s) error %v does not wrap ErrInvalid", tt.file, err)
			}
			var es Errors
			if !errors.As(err, &es) {
				t.Fatalf("Load(%s) error %T is not Errors", tt.file, err)
			}
			var ve *ValidationError
			if !errors.As(err, &ve) {
				t.Errorf("Load(%s): errors.As(*ValidationError) failed", tt.file)
			}
			for _, e := range es {
				if e.Path == tt.path && strings.Contains(e.Msg, tt.msg) {
					if e.Line != tt.line {
						t.Errorf("%s: problem %q on line %d, want line %d", tt.file, e, e.Line, tt.line)
					}
					wantPrefix := path + ":"
					if !strings.HasPrefix(e.Error(), wantPrefix) {
						t.Errorf("%s: problem %q does not start with %q", tt.file, e, wantPrefix)
					}
					return
				}
			}
			t.Errorf("Load(%s) problems:\n%v\nwant one at %q containing %q", tt.file, err, tt.path, tt.msg)
		})
	}
	files, err := os.ReadDir("testdata")
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range files {
		if strings.HasSuffix(f.Name(), ".yaml") && !covered[f.Name()] {
			t.Errorf("testdata/%s has no expectation in TestBrokenFixtures", f.Name())
		}
	}
}

// TestAllErrorsReported checks that one load reports every problem, each
// on its own line of the error text, in file order.
func TestAllErrorsReported(t *testing.T) {
	y := `version: 1
mode: strict
allow:
  - host: "*."
  - host: ok.example
    ports: [0, 443]
  - cidr: 10.0.0.0/33
  - hots: x
timeouts:
  dial: soon
`
	_, err := LoadBytes([]byte(y), "p.yaml")
	want := []string{
		`p.yaml:2: mode: "strict": want enforce or report`,
		`p.yaml:4: allow[0].host: "*.": empty label`,
		`p.yaml:6: allow[1].ports[0]: 0: want 1-65535`,
		`p.yaml:7: allow[2].cidr: "10.0.0.0/33" is not a CIDR such as 203.0.113.0/24`,
		`p.yaml:8: allow[3].hots: unknown key`,
		`p.yaml:8: allow[3]: needs host: or cidr:`,
		`p.yaml:10: timeouts.dial: want a duration such as "2s" or "5m", got "soon"`,
	}
	if err == nil {
		t.Fatal("LoadBytes succeeded, want errors")
	}
	got := strings.Split(err.Error(), "\n")
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("errors:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}
