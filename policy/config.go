package policy

import "time"

// Config is policy.yaml as written by the user. Key names are the interface
// users, docs and tests rely on: add keys, never rename them. Zero values are
// replaced by the defaults documented on each field when the policy is
// compiled.
type Config struct {
	Version   int                       `mapstructure:"version"`  // required: 1
	Mode      string                    `mapstructure:"mode"`     // enforce (default) | report
	Listen    ListenConfig              `mapstructure:"listen"`   //
	Resolver  ResolverConfig            `mapstructure:"resolver"` //
	Allow     []AllowRule               `mapstructure:"allow"`    // empty = deny all
	Networks  NetworksConfig            `mapstructure:"networks"`
	Limits    LimitsConfig              `mapstructure:"limits"`
	Timeouts  TimeoutsConfig            `mapstructure:"timeouts"`
	DNS       DNSConfig                 `mapstructure:"dns"`
	Log       LogConfig                 `mapstructure:"log"`
	Admin     AdminConfig               `mapstructure:"admin"`
	Providers map[string]ProviderConfig `mapstructure:"providers"`
	Budget    BudgetConfig              `mapstructure:"budget"`
	APIs      map[string]APIConfig      `mapstructure:"apis"` // secret-bearing API routes on the gateway
	Ask       *AskConfig                `mapstructure:"ask"`  // nil = off
}

// ListenConfig holds the listener addresses; "" disables a listener.
// Listener changes need a restart (a reload logs that they were not applied).
type ListenConfig struct {
	Proxy   string `mapstructure:"proxy"`   // default 127.0.0.1:3128
	DNS     string `mapstructure:"dns"`     // default 127.0.0.1:5353
	Gateway string `mapstructure:"gateway"` // default 127.0.0.1:8080
	Admin   string `mapstructure:"admin"`   // default 127.0.0.1:9090
}

// ResolverConfig configures the one resolver shared by the proxy and DNS.
type ResolverConfig struct {
	Upstreams []string      `mapstructure:"upstreams"`  // host:port; default [127.0.0.11:53]
	Timeout   time.Duration `mapstructure:"timeout"`    // per upstream try; default 2s
	MinTTL    time.Duration `mapstructure:"min_ttl"`    // default 5s
	MaxTTL    time.Duration `mapstructure:"max_ttl"`    // default 5m
	CacheSize int           `mapstructure:"cache_size"` // entries; default 10000
}

// AllowRule is one grant: exactly one of Host or CIDR.
type AllowRule struct {
	Host  string      `mapstructure:"host"`  // exact name or "*.suffix" (subdomains only)
	CIDR  string      `mapstructure:"cidr"`  // IP-literal destinations
	Ports []int       `mapstructure:"ports"` // default [443]
	Rate  *RateConfig `mapstructure:"rate"`  // per-destination override of limits.host
}

// NetworksConfig adjusts the built-in private/special address list.
type NetworksConfig struct {
	Allow []string `mapstructure:"allow"` // CIDRs that may be dialed even though private (never metadata)
	Deny  []string `mapstructure:"deny"`  // extra CIDRs to deny
}

// RateConfig is a token bucket. RPS 0 with Burst 0 means unlimited.
type RateConfig struct {
	RPS   float64 `mapstructure:"rps"`
	Burst int     `mapstructure:"burst"`
}

// LimitsConfig bounds what one client (or all clients) can make egressd do.
type LimitsConfig struct {
	Client            RateConfig `mapstructure:"client"`               // default {20, 40}
	Host              RateConfig `mapstructure:"host"`                 // default {10, 20}
	DNS               RateConfig `mapstructure:"dns"`                  // default {50, 100}
	MaxConnsPerClient int        `mapstructure:"max_conns_per_client"` // default 256
	MaxConns          int        `mapstructure:"max_conns"`            // default 8192
	MaxHeaderBytes    int        `mapstructure:"max_header_bytes"`     // default 64 KiB
}

// TimeoutsConfig bounds every wait.
type TimeoutsConfig struct {
	Dial     time.Duration `mapstructure:"dial"`     // default 10s
	Header   time.Duration `mapstructure:"header"`   // request headers / TLS ClientHello; default 10s
	Idle     time.Duration `mapstructure:"idle"`     // idle tunnel or keep-alive; default 5m
	Shutdown time.Duration `mapstructure:"shutdown"` // SIGTERM drain deadline; default 15s
}

// DNSConfig configures the allow-list DNS server.
type DNSConfig struct {
	QTypes []string `mapstructure:"qtypes"` // answered types; default [A, AAAA, CNAME, HTTPS]
}

// LogConfig configures the JSON-lines decision log.
type LogConfig struct {
	File      string `mapstructure:"file"`        // "" = stdout only
	MaxSizeMB int    `mapstructure:"max_size_mb"` // rotate at; default 50
	Keep      int    `mapstructure:"keep"`        // rotated files kept; default 5
}

// AdminConfig protects the admin listener.
type AdminConfig struct {
	TokenEnv string `mapstructure:"token_env"` // env var holding a bearer token; "" = no token
}

// ProviderConfig is one LLM provider route on the gateway, served under
// /<name>/ on listen.gateway.
type ProviderConfig struct {
	Upstream        string `mapstructure:"upstream"`          // https://openrouter.ai
	Format          string `mapstructure:"format"`            // openai | anthropic
	APIKeyEnv       string `mapstructure:"api_key_env"`       // env var with the real key (egressd only)
	ClientTokenEnv  string `mapstructure:"client_token_env"`  // env var with the token the agent sends
	TokensPerMinute int    `mapstructure:"tokens_per_minute"` // 0 = unlimited
	CAFile          string `mapstructure:"ca_file"`           // PEM bundle trusted for this upstream instead of the system roots; "" = system roots
	// Endpoints adds calls beyond the gateway's built-in endpoint table:
	// an unmetered GET, or a POST at a declared price per call.
	Endpoints []EndpointConfig `mapstructure:"endpoints"`
	// AllowFields lets named top-level request fields through that the
	// gateway does not know or does not price (their cost is unmetered).
	AllowFields []string `mapstructure:"allow_fields"`
	// AllowTools grants provider-run tool types (web_search_20250305,
	// code_interpreter, plugin:web, ...); function and client tools need
	// no grant.
	AllowTools []string `mapstructure:"allow_tools"`
}

// EndpointConfig is one endpoint a policy adds to a provider route.
type EndpointConfig struct {
	Method     string  `mapstructure:"method"`       // GET (unmetered) or POST (needs per_call_usd)
	Path       string  `mapstructure:"path"`         // canonical path on the upstream host; * one segment, ** any
	PerCallUSD float64 `mapstructure:"per_call_usd"` // POST only: reserved and charged per call
}

// BudgetConfig is the hard spend cap.
type BudgetConfig struct {
	CapUSD           float64          `mapstructure:"cap_usd"`            // 0 = no gateway traffic allowed when providers exist
	Period           string           `mapstructure:"period"`             // day | week | month (default) | total, UTC
	WarnAt           float64          `mapstructure:"warn_at"`            // fraction of cap; default 0.8
	Ledger           string           `mapstructure:"ledger"`             // default /var/lib/egressd/ledger.json
	UnknownModel     string           `mapstructure:"unknown_model"`      // deny (default) | default
	DefaultMaxTokens int              `mapstructure:"default_max_tokens"` // output limit sent upstream (and reserved) when the request names none; default 4096
	Prices           map[string]Price `mapstructure:"prices"`             // USD per million tokens; key "default" for unknown_model: default
	Store            string           `mapstructure:"store"`              // file (default) | postgres
	DSNEnv           string           `mapstructure:"dsn_env"`            // env var with the PostgreSQL connection string (postgres only)
	Name             string           `mapstructure:"name"`               // this budget's name in the store (postgres only, required there)
	Shared           SharedBudget     `mapstructure:"shared"`             // optional parent cap every budget naming it reserves against too
	// ToolFees overrides the built-in per-use fees (USD) of provider-run
	// tool families: web_search, web_fetch, file_search, code_execution,
	// image_generation, plugin:web, web_search_options.
	ToolFees map[string]float64 `mapstructure:"tool_fees"`
}

// SharedBudget is a cap shared by several named budgets in one store; an
// empty Name means none.
type SharedBudget struct {
	Name   string  `mapstructure:"name"`
	CapUSD float64 `mapstructure:"cap_usd"`
}

// Budget stores, as written in budget.store.
const (
	StoreFile     = "file"
	StorePostgres = "postgres"
)

// Price is USD per million tokens.
type Price struct {
	Input      float64 `mapstructure:"input"`
	Output     float64 `mapstructure:"output"`
	CacheRead  float64 `mapstructure:"cache_read"`  // default: Input
	CacheWrite float64 `mapstructure:"cache_write"` // default: Input
	// CacheWrite1h prices Anthropic's one-hour cache writes; default: the
	// larger of cache_write and twice input (Anthropic's ratio).
	CacheWrite1h float64 `mapstructure:"cache_write_1h"`
	// Priority multiplies every token price for calls that ask for
	// service_tier: priority; 0 = such calls are refused.
	Priority float64 `mapstructure:"priority"`
}

// APIConfig is one route for a token-bearing HTTPS API on the gateway,
// served under /<name>/ on listen.gateway: egressd checks the agent token
// and the method/path rules, injects the secret and forwards over TLS.
type APIConfig struct {
	Upstream       string       `mapstructure:"upstream"`         // https://api.github.com (https only)
	CAFile         string       `mapstructure:"ca_file"`          // PEM bundle trusted for this upstream instead of the system roots; "" = system roots
	ClientTokenEnv string       `mapstructure:"client_token_env"` // env var with the token the agent sends (Bearer or basic-auth password)
	Secret         SecretConfig `mapstructure:"secret"`           // what egressd injects
	Allow          []APIRule    `mapstructure:"allow"`            // default deny: calls no rule names are refused
	Rate           *RateConfig  `mapstructure:"rate"`             // whole-route token bucket; default {rps: 10, burst: 20}
	MaxBodyBytes   int64        `mapstructure:"max_body_bytes"`   // request body bound; default 10 MiB
}

// SecretConfig is either a header (Header, optional Prefix, value from Env)
// or HTTP basic auth (Basic), never both.
type SecretConfig struct {
	Header string       `mapstructure:"header"` // e.g. Authorization
	Prefix string       `mapstructure:"prefix"` // e.g. "Bearer "
	Env    string       `mapstructure:"env"`    // env var holding the secret
	Basic  *BasicSecret `mapstructure:"basic"`  // HTTP basic auth, as git over HTTPS uses
}

// BasicSecret is HTTP basic auth with the password from the environment.
type BasicSecret struct {
	User        string `mapstructure:"user"`
	PasswordEnv string `mapstructure:"password_env"`
}

// APIRule grants the listed methods on the listed path patterns. A pattern
// is a canonical path with * (one segment) and ** (any depth); a pattern
// with ?k=v&... requires exactly those query parameters, one without ?
// accepts any query.
type APIRule struct {
	Methods []string `mapstructure:"methods"`
	Paths   []string `mapstructure:"paths"`
}

// AskConfig turns on asking a person when an allow-list miss could be
// granted (ask:). Absent means off: denials are answered at once, as
// without it. Zero durations are replaced by the defaults noted here.
type AskConfig struct {
	Reasons      []string        `mapstructure:"reasons"`       // askable reasons; default and most: [not_allowlisted, port_not_allowed]
	Hold         time.Duration   `mapstructure:"hold"`          // how long a request waits for an answer; default 20s
	OpenFor      time.Duration   `mapstructure:"open_for"`      // how long a question can be answered; default 1h
	RememberDeny time.Duration   `mapstructure:"remember_deny"` // how long a deny answer stands; default 1h
	Telegram     *TelegramConfig `mapstructure:"telegram"`      // nil = no Telegram bot
	Webhook      *WebhookConfig  `mapstructure:"webhook"`       // nil = no webhook
}

// TelegramConfig is egressd's own operator bot; it long-polls the Bot API.
type TelegramConfig struct {
	TokenEnv  string  `mapstructure:"token_env"` // env var holding the bot token (required)
	Operators []int64 `mapstructure:"operators"` // Telegram user IDs whose answers count, each also asked in its private chat (required)
	API       string  `mapstructure:"api"`       // default https://api.telegram.org
	CAFile    string  `mapstructure:"ca_file"`   // extra CA for api (a test server); "" = system roots
}

// WebhookConfig posts every question and event as signed JSON.
type WebhookConfig struct {
	URL       string `mapstructure:"url"`        // https:// (or http:// on loopback)
	SecretEnv string `mapstructure:"secret_env"` // env var with the HMAC-SHA256 key (required)
}
