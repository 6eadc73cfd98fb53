// Package resolver owns egressd's one caching DNS resolver. The allow-list
// DNS server (dnsfilter) answers the agent from it and the proxy resolves
// the hosts it dials through it, so both see the same addresses for the
// same name at the same time. It forwards to configured upstream resolvers
// (UDP, retried over TCP on truncation), caches answers per name and type
// with clamped TTLs, caches negative answers per their SOA, coalesces
// concurrent identical queries into one upstream query and fails over
// between upstreams, remembering the last healthy one.
//
// The resolver makes no policy decisions: callers decide whether a name may
// be resolved before asking and classify the addresses it returns.
package resolver

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"github.com/miekg/dns"
)

// Defaults applied to zero Config fields.
const (
	DefaultTimeout   = 2 * time.Second
	DefaultMinTTL    = 5 * time.Second
	DefaultMaxTTL    = 5 * time.Minute
	DefaultCacheSize = 10000
)

// maxFlights bounds concurrent upstream queries (distinct names in flight),
// so a flood of distinct names cannot pile up goroutines and sockets.
const maxFlights = 512

// Errors callers branch on.
var (
	ErrNoUpstreams = errors.New("resolver: no usable upstreams")
	ErrUpstream    = errors.New("resolver: upstream failed")
	ErrBusy        = errors.New("resolver: too many queries in flight")
	ErrBadName     = errors.New("resolver: invalid name")
	ErrNotFound    = errors.New("resolver: no such host")
)

// Config configures a Resolver. Zero values take the Default* constants.
type Config struct {
	// Upstreams are resolvers to forward to, as "ip:port", "[ipv6]:port" or
	// a bare IP (port 53). Tried in order, starting with the last one that
	// answered.
	Upstreams []string
	// Timeout bounds one try against one upstream (default 2s). A query
	// gives up after Timeout × (len(Upstreams)+1) at most.
	Timeout time.Duration
	// MinTTL and MaxTTL clamp how long answers, positive and negative, are
	// cached (defaults 5s and 5m).
	MinTTL, MaxTTL time.Duration
	// CacheSize bounds the number of cached (name, type) answers
	// (default 10000).
	CacheSize int
	// Clock returns the current time for TTL accounting; nil means
	// time.Now. Fixed at New.
	Clock func() time.Time
	// Logger receives upstream failures at debug level and configuration
	// problems at error level; nil means slog.Default(). Fixed at New.
	Logger *slog.Logger
}

// Validate reports the first problem in the reloadable fields of c.
func (c Config) Validate() error {
	_, err := parseUpstreams(c.Upstreams)
	if err != nil {
		return err
	}
	if c.Timeout < 0 || c.MinTTL < 0 || c.MaxTTL < 0 || c.CacheSize < 0 {
		return errors.New("resolver: negative timeout, ttl or cache size")
	}
	if c.MaxTTL > 0 && c.MinTTL > c.MaxTTL {
		return fmt.Errorf("resolver: min_ttl %s above max_ttl %s", c.MinTTL, c.MaxTTL)
	}
	return nil
}

// settings is the reloadable part of the configuration, swapped atomically.
type settings struct {
	upstreams      []string // "ip:port" as miekg dials it
	timeout        time.Duration
	minTTL, maxTTL time.Duration
	cacheSize      int
}

// Resolver is a caching, coalescing DNS forwarder. Safe for concurrent use.
type Resolver struct {
	set     atomic.Pointer[settings]
	next    atomic.Uint32 // index of the upstream that answered last
	gen     atomic.Uint64 // bumped by every flush; see Generation
	cache   *cache
	flights group
	clock   func() time.Time
	log     *slog.Logger
}

// New returns a resolver for cfg. Invalid upstream entries are logged and
// skipped; with none left every query fails with ErrNoUpstreams (closed,
// not open). Use Config.Validate to reject a bad config up front.
func New(cfg Config) *Resolver {
	r := &Resolver{clock: cfg.Clock, log: cfg.Logger}
	if r.clock == nil {
		r.clock = time.Now
	}
	if r.log == nil {
		r.log = slog.Default()
	}
	s := makeSettings(cfg, r.log)
	r.cache = newCache(s.cacheSize)
	r.set.Store(s)
	r.flights.init(maxFlights)
	return r
}

// Reconfigure applies the reloadable fields of cfg (Upstreams, Timeout,
// MinTTL, MaxTTL, CacheSize); Clock and Logger are ignored. An invalid cfg
// is rejected and nothing changes. Changing the upstreams flushes the
// cache: answers from a resolver the operator stopped trusting must not
// outlive the reload.
func (r *Resolver) Reconfigure(cfg Config) error {
	if err := cfg.Validate(); err != nil {
		return err
	}
	s := makeSettings(cfg, r.log)
	old := r.set.Swap(s)
	r.cache.setMax(s.cacheSize)
	if !slices.Equal(old.upstreams, s.upstreams) {
		r.next.Store(0)
		r.flush()
	}
	return nil
}

// Flush drops every cached answer.
func (r *Resolver) Flush() { r.flush() }

// flush empties the cache, then bumps the generation: a caller that read
// the old generation before its Exchange sees the change on its next
// check, so nothing derived from a flushed answer outlives the flush.
func (r *Resolver) flush() {
	r.cache.flush()
	r.gen.Add(1)
}

// Generation counts the flushes so far (Flush, and Reconfigure with new
// upstreams). A caller keeping something derived from an answer reads it
// before the Exchange and drops what it kept once it changes.
func (r *Resolver) Generation() uint64 { return r.gen.Load() }

func makeSettings(cfg Config, log *slog.Logger) *settings {
	s := &settings{
		timeout:   orDefault(cfg.Timeout, DefaultTimeout),
		minTTL:    orDefault(cfg.MinTTL, DefaultMinTTL),
		maxTTL:    orDefault(cfg.MaxTTL, DefaultMaxTTL),
		cacheSize: cfg.CacheSize,
	}
	if s.cacheSize <= 0 {
		s.cacheSize = DefaultCacheSize
	}
	if s.minTTL > s.maxTTL {
		s.minTTL = s.maxTTL
	}
	for _, u := range cfg.Upstreams {
		ap, err := parseUpstream(u)
		if err != nil {
			log.Error("resolver upstream skipped", "upstream", u, "err", err)
			continue
		}
		s.upstreams = append(s.upstreams, ap.String())
	}
	return s
}

// Exchange answers (name, qtype) of class IN from the cache or from an
// upstream. The returned message belongs to the caller: its TTLs are the
// time left in the cache, its Id is zero, its question is the lowercased
// name and its Extra section is empty (additional records are unverified
// hints none of egressd's consumers need). Rcode is NOERROR or NXDOMAIN;
// SERVFAIL, REFUSED and timeouts from every upstream come back as an error
// wrapping ErrUpstream and are not cached.
func (r *Resolver) Exchange(ctx context.Context, name string, qtype uint16) (*dns.Msg, error) {
	m, _, err := r.ExchangeUntil(ctx, name, qtype)
	return m, err
}

// ExchangeUntil is Exchange that also returns when the answer leaves the
// cache: the message's TTLs are the whole seconds left until then. A
// caller may keep what it derives from the answer until that time (and
// while Generation is unchanged), and count its TTLs down the same way.
func (r *Resolver) ExchangeUntil(ctx context.Context, name string, qtype uint16) (*dns.Msg, time.Time, error) {
	k, err := makeKey(name, qtype)
	if err != nil {
		return nil, time.Time{}, err
	}
	now := r.clock()
	if e := r.cache.get(k, now); e != nil {
		return e.answer(now), e.expires, nil
	}
	c, err := r.flights.join(k, r.resolve)
	if err != nil {
		return nil, time.Time{}, err
	}
	select {
	case <-c.done:
	case <-ctx.Done():
		return nil, time.Time{}, fmt.Errorf("resolver: %s: %w", k.name, ctx.Err())
	}
	if c.err != nil {
		return nil, time.Time{}, c.err
	}
	return c.entry.answer(r.clock()), c.entry.expires, nil
}

// resolve is one flight: ask the upstreams, cache what they say. It runs
// on its own goroutine, bounded by the settings' timeouts rather than by
// any one caller's context, because other callers may be waiting on it.
func (r *Resolver) resolve(k key) (*entry, error) {
	s := r.set.Load()
	budget := s.timeout * time.Duration(len(s.upstreams)+1)
	ctx, cancel := context.WithTimeout(context.Background(), budget)
	defer cancel()
	m, err := r.query(ctx, s, k)
	if err != nil {
		return nil, err
	}
	now := r.clock()
	e := &entry{msg: m, stored: now, expires: now.Add(cacheTTL(m, s.minTTL, s.maxTTL))}
	r.cache.put(k, e, now)
	return e, nil
}

// key identifies a cached answer: lowercased FQDN and type (class is
// always IN).
type key struct {
	name  string
	qtype uint16
}

func makeKey(name string, qtype uint16) (key, error) {
	if name == "" || name == "." {
		return key{}, fmt.Errorf("%w: %q", ErrBadName, name)
	}
	if _, ok := dns.IsDomainName(name); !ok {
		return key{}, fmt.Errorf("%w: %q", ErrBadName, name)
	}
	// strings.ToLower returns its argument without allocating when there
	// is nothing to lower, which is the common case.
	name = strings.ToLower(name)
	if !dns.IsFqdn(name) {
		name += "."
	}
	return key{name: name, qtype: qtype}, nil
}

// parseUpstreams validates every entry of list.
func parseUpstreams(list []string) ([]netip.AddrPort, error) {
	out := make([]netip.AddrPort, 0, len(list))
	for i, u := range list {
		ap, err := parseUpstream(u)
		if err != nil {
			return nil, fmt.Errorf("resolver: upstreams[%d]: %w", i, err)
		}
		out = append(out, ap)
	}
	return out, nil
}

// parseUpstream accepts an IP literal with or without a port. Names are
// refused: resolving the resolver would need a resolver.
func parseUpstream(s string) (netip.AddrPort, error) {
	ap, err := netip.ParseAddrPort(s)
	if err != nil {
		a, aerr := netip.ParseAddr(strings.TrimSuffix(strings.TrimPrefix(s, "["), "]"))
		if aerr != nil {
			return netip.AddrPort{}, fmt.Errorf("%q: want ip:port: %w", s, err)
		}
		ap = netip.AddrPortFrom(a, 53)
	}
	switch {
	case ap.Port() == 0:
		return netip.AddrPort{}, fmt.Errorf("%q: port 0", s)
	case ap.Addr().Zone() != "":
		return netip.AddrPort{}, fmt.Errorf("%q: zones not supported", s)
	}
	return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port()), nil
}

func orDefault(d, def time.Duration) time.Duration {
	if d <= 0 {
		return def
	}
	return d
}
