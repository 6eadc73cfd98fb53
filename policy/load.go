package policy

import (
	"bytes"
	"errors"
	"fmt"
	"math"
	"os"
	"reflect"
	"strconv"
	"strings"
	"time"

	"github.com/go-viper/mapstructure/v2"
	"github.com/spf13/viper"
)

// Environment overrides. Each variable, when set and non-empty, replaces
// the key from the file (or the built-in default). Empty values are
// ignored, so a listener cannot be disabled from the environment; write
// `listen.X: ""` in the file for that.
//
//	EGRESSD_MODE               mode
//	EGRESSD_LISTEN_PROXY       listen.proxy
//	EGRESSD_LISTEN_DNS         listen.dns
//	EGRESSD_LISTEN_GATEWAY     listen.gateway
//	EGRESSD_LISTEN_ADMIN       listen.admin
//	EGRESSD_RESOLVER_UPSTREAMS resolver.upstreams, comma separated
//	EGRESSD_LOG_FILE           log.file
//	EGRESSD_BUDGET_LEDGER      budget.ledger
//	EGRESSD_ADMIN_TOKEN_ENV    admin.token_env
var envOverrides = map[string]string{
	"mode":               "EGRESSD_MODE",
	"listen.proxy":       "EGRESSD_LISTEN_PROXY",
	"listen.dns":         "EGRESSD_LISTEN_DNS",
	"listen.gateway":     "EGRESSD_LISTEN_GATEWAY",
	"listen.admin":       "EGRESSD_LISTEN_ADMIN",
	"resolver.upstreams": "EGRESSD_RESOLVER_UPSTREAMS",
	"log.file":           "EGRESSD_LOG_FILE",
	"budget.ledger":      "EGRESSD_BUDGET_LEDGER",
	"admin.token_env":    "EGRESSD_ADMIN_TOKEN_ENV",
}

// defaults are the built-in values of every key that has one. They are
// viper defaults rather than zero-value fixups, so an explicit zero in the
// file (rps: 0 = unlimited, proxy: "" = disabled) is kept.
var defaults = map[string]any{
	"mode":                        "enforce",
	"listen.proxy":                "127.0.0.1:3128",
	"listen.dns":                  "127.0.0.1:5353",
	"listen.gateway":              "127.0.0.1:8080",
	"listen.admin":                "127.0.0.1:9090",
	"resolver.upstreams":          []string{"127.0.0.11:53"},
	"resolver.timeout":            2 * time.Second,
	"resolver.min_ttl":            5 * time.Second,
	"resolver.max_ttl":            5 * time.Minute,
	"resolver.cache_size":         10000,
	"limits.client.rps":           20.0,
	"limits.client.burst":         40,
	"limits.host.rps":             10.0,
	"limits.host.burst":           20,
	"limits.dns.rps":              50.0,
	"limits.dns.burst":            100,
	"limits.max_conns_per_client": 256,
	"limits.max_conns":            8192,
	"limits.max_header_bytes":     64 << 10,
	"timeouts.dial":               10 * time.Second,
	"timeouts.header":             10 * time.Second,
	"timeouts.idle":               5 * time.Minute,
	"timeouts.shutdown":           15 * time.Second,
	"dns.qtypes":                  []string{"A", "AAAA", "CNAME", "HTTPS"},
	"log.max_size_mb":             50,
	"log.keep":                    5,
	"budget.period":               "month",
	"budget.warn_at":              0.8,
	"budget.ledger":               "/var/lib/egressd/ledger.json",
	"budget.unknown_model":        "deny",
	"budget.default_max_tokens":   4096,
	"budget.store":                "file",
}

// defaultPorts is what an allow rule without ports: grants.
var defaultPorts = []int{443}

// viperKey turns a dotted key into viper's: the delimiter is "::" because
// model names in budget.prices contain dots.
func viperKey(k string) string { return strings.ReplaceAll(k, ".", "::") }

// Load reads path, strictly decodes it (unknown keys are errors), applies
// the EGRESSD_* environment overrides, fills defaults, validates and
// compiles it. Validation problems come back as Errors (which wraps
// ErrInvalid), all of them, each with its key path and line.
func Load(path string) (*Policy, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read policy: %w", err)
	}
	return LoadBytes(data, path)
}

// LoadBytes is Load for a policy already in memory; name is used in error
// messages in place of a file name.
func LoadBytes(data []byte, name string) (*Policy, error) {
	return load(data, name, true)
}

// LoadDefault is the built-in policy with the EGRESSD_* environment
// overrides applied: what `egressd serve` runs without --config.
func LoadDefault() (*Policy, error) {
	return load([]byte("version: 1\n"), "built-in policy", true)
}

// Default is the built-in policy used without --config: loopback listeners,
// empty allow-list (deny all), every default filled. It ignores the
// environment (see LoadDefault).
func Default() *Policy {
	p, err := load([]byte("version: 1\n"), "built-in policy", false)
	if err != nil {
		panic("policy: built-in default does not validate: " + err.Error())
	}
	return p
}

func load(data []byte, name string, useEnv bool) (*Policy, error) {
	idx, unknown, err := indexKeys(data)
	if err != nil {
		return nil, Errors{syntaxError(name, err)}
	}
	v := viper.NewWithOptions(viper.KeyDelimiter("::"))
	v.SetConfigType("yaml")
	for k, d := range defaults {
		v.SetDefault(viperKey(k), d)
	}
	env := map[string]string{} // key path → variable actually used
	if useEnv {
		for k, e := range envOverrides {
			if err := v.BindEnv(viperKey(k), e); err != nil {
				return nil, fmt.Errorf("bind %s: %w", e, err)
			}
			if os.Getenv(e) != "" {
				env[k] = e
			}
		}
	}
	if err := v.ReadConfig(bytes.NewReader(data)); err != nil {
		if len(unknown) > 0 { // duplicate keys, found with their lines
			return nil, finish(unknown, name, idx, env)
		}
		return nil, Errors{{File: name, Msg: err.Error()}}
	}
	var cfg Config
	var errs Errors
	errs = append(errs, unknown...)
	if vs := versionProblem(v); vs != nil {
		errs = append(errs, vs)
		if v.IsSet("version") {
			// Another version's schema is unknown: its other keys would
			// only produce noise.
			return nil, finish(errs[len(errs)-1:], name, idx, env)
		}
	}
	derr := v.UnmarshalExact(&cfg, func(c *mapstructure.DecoderConfig) {
		c.DecodeHook = mapstructure.ComposeDecodeHookFunc(durationHook, commaListHook, wholeNumberHook)
		c.WeaklyTypedInput = false
	})
	errs = append(errs, decodeErrors(derr, len(unknown) > 0)...)
	if _, present := idx["ask"]; present && cfg.Ask == nil {
		cfg.Ask = &AskConfig{} // "ask: {}" or a bare "ask:" turns it on with defaults
	}
	// Validate even after decode errors so that one run reports every
	// problem; a field that failed to decode is not reported twice.
	fillDefaults(&cfg, v)
	p, verrs := compile(cfg)
	for _, e := range verrs {
		if !coveredBy(e.Path, errs) {
			errs = append(errs, e)
		}
	}
	if len(errs) > 0 {
		return nil, finish(errs, name, idx, env)
	}
	return p, nil
}

// coveredBy reports whether path, or a parent of it, already has a problem.
func coveredBy(path string, errs Errors) bool {
	for _, e := range errs {
		if e.Path != "" && (path == e.Path || strings.HasPrefix(path, e.Path+".") || strings.HasPrefix(path, e.Path+"[")) {
			return true
		}
	}
	return false
}

// syntaxError moves the line out of a yaml.v3 message ("yaml: line 4:
// ...") into the ValidationError so it prints like every other problem.
func syntaxError(name string, err error) *ValidationError {
	msg := err.Error()
	rest, ok := strings.CutPrefix(msg, "yaml: line ")
	if !ok {
		return &ValidationError{File: name, Msg: msg}
	}
	num, text, ok := strings.Cut(rest, ": ")
	line, convErr := strconv.Atoi(num)
	if !ok || convErr != nil {
		return &ValidationError{File: name, Msg: msg}
	}
	return &ValidationError{File: name, Line: line, Msg: "yaml: " + text}
}

func versionProblem(v *viper.Viper) *ValidationError {
	if !v.IsSet("version") {
		return &ValidationError{Path: "version", Msg: "required: start the file with \"version: 1\""}
	}
	switch ver, ok := v.Get("version").(int); {
	case !ok:
		return &ValidationError{Path: "version", Msg: fmt.Sprintf("%v: want the integer 1", v.Get("version"))}
	case ver != 1:
		return &ValidationError{Path: "version", Msg: fmt.Sprintf("%d is not supported (want 1)", ver)}
	}
	return nil
}

// finish locates each problem in the file (or the environment) and sorts
// them by line.
func finish(errs Errors, name string, idx keyIndex, env map[string]string) Errors {
	for _, e := range errs {
		e.File = name
		if v := envFor(e.Path, env); v != "" {
			e.Env, e.Line = v, 0
			continue
		}
		if e.Line == 0 && e.Path != "" {
			e.Line = idx.line(e.Path)
		}
	}
	errs.sortByLine()
	return errs
}

// envFor names the environment variable that set path (or its list
// parent: resolver.upstreams[1] came from EGRESSD_RESOLVER_UPSTREAMS).
func envFor(path string, env map[string]string) string {
	base, _, _ := strings.Cut(path, "[")
	return env[base]
}

// decodeErrors turns mapstructure's joined errors into ValidationErrors.
// Its "invalid keys" errors are dropped when the key walk already reported
// those keys with their lines.
func decodeErrors(err error, haveUnknown bool) Errors {
	if err == nil {
		return nil
	}
	var out Errors
	var visit func(error)
	visit = func(err error) {
		if j, ok := err.(interface{ Unwrap() []error }); ok {
			for _, e := range j.Unwrap() {
				visit(e)
			}
			return
		}
		if de, ok := err.(*mapstructure.DecodeError); ok {
			inner := de.Unwrap()
			if _, joined := inner.(interface{ Unwrap() []error }); joined {
				visit(inner) // a struct or list whose members failed
				return
			}
			if haveUnknown && strings.Contains(inner.Error(), "invalid keys") {
				return
			}
			out = append(out, &ValidationError{Path: fromDecodeName(de.Name()), Msg: inner.Error()})
			return
		}
		if inner := errors.Unwrap(err); inner != nil {
			visit(inner)
			return
		}
		out = append(out, &ValidationError{Msg: err.Error()})
	}
	visit(err)
	return out
}

var durationType = reflect.TypeFor[time.Duration]()

// durationHook accepts durations only as strings ("2s", "5m"): a bare
// number would silently mean nanoseconds.
func durationHook(from, to reflect.Type, data any) (any, error) {
	if to != durationType || from == durationType {
		return data, nil
	}
	s, ok := data.(string)
	if !ok {
		return nil, fmt.Errorf("want a duration with a unit such as \"2s\" or \"5m\", got %v", data)
	}
	d, err := time.ParseDuration(strings.TrimSpace(s))
	if err != nil {
		return nil, fmt.Errorf("want a duration such as \"2s\" or \"5m\", got %q", s)
	}
	return d, nil
}

// wholeNumberHook refuses to truncate: mapstructure would silently turn
// ports: [443.9] into 443 and burst: 1e30 into garbage.
func wholeNumberHook(from, to reflect.Type, data any) (any, error) {
	if from.Kind() != reflect.Float32 && from.Kind() != reflect.Float64 {
		return data, nil
	}
	switch to.Kind() {
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
	default:
		return data, nil
	}
	f := reflect.ValueOf(data).Float()
	if f != math.Trunc(f) || math.Abs(f) > 1<<53 {
		return nil, fmt.Errorf("want a whole number, got %v", data)
	}
	return data, nil
}

// commaListHook lets a string stand for a list (EGRESSD_RESOLVER_UPSTREAMS
// is "a,b"); elements are trimmed.
func commaListHook(from, to reflect.Type, data any) (any, error) {
	if from.Kind() != reflect.String || to.Kind() != reflect.Slice {
		return data, nil
	}
	s := data.(string)
	if strings.TrimSpace(s) == "" {
		return []string{}, nil
	}
	parts := strings.Split(s, ",")
	for i := range parts {
		parts[i] = strings.TrimSpace(parts[i])
	}
	return parts, nil
}

// fillDefaults covers what viper defaults cannot express: per-entry
// defaults inside lists and maps.
func fillDefaults(cfg *Config, v *viper.Viper) {
	fillAskDefaults(cfg.Ask)
	for i := range cfg.Allow {
		if len(cfg.Allow[i].Ports) == 0 {
			cfg.Allow[i].Ports = append([]int(nil), defaultPorts...)
		}
	}
	for model, pr := range cfg.Budget.Prices {
		key := viperKey("budget.prices") + "::" + model + "::"
		if !v.IsSet(key + "cache_read") {
			pr.CacheRead = pr.Input
		}
		if !v.IsSet(key + "cache_write") {
			pr.CacheWrite = pr.Input
		}
		if !v.IsSet(key + "cache_write_1h") {
			pr.CacheWrite1h = max(pr.CacheWrite, 2*pr.Input)
		}
		cfg.Budget.Prices[model] = pr
	}
}
