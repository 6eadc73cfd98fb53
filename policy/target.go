package policy

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"net/url"
	"strconv"
	"strings"

	"github.com/egressd/egressd/internal/shared/vocab"

	"github.com/egressd/egressd/internal/lib/money"
)

// ErrBadTarget is returned by ParseTarget for text that is neither
// host[:port] nor an http(s) URL.
var ErrBadTarget = errors.New("bad target")

// ParseTarget turns what an operator types into a Request, the way the
// proxy would see it: "host[:port]" is a CONNECT (default port 443),
// "http://host/..." a plain-HTTP request (default 80) and "https://..." a
// CONNECT (default 443). The host is left as written; Decide normalises it.
func ParseTarget(s string) (Request, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return Request{}, fmt.Errorf("%w: empty", ErrBadTarget)
	}
	if strings.Contains(s, "://") {
		return parseURLTarget(s)
	}
	host, port, err := splitHostPortDefault(s, 443)
	if err != nil {
		return Request{}, err
	}
	return Request{Host: host, Port: port, Proto: vocab.ProtoConnect}, nil
}

func parseURLTarget(s string) (Request, error) {
	u, err := url.Parse(s)
	if err != nil {
		return Request{}, fmt.Errorf("%w: %w", ErrBadTarget, err)
	}
	var req Request
	var def uint16
	switch strings.ToLower(u.Scheme) {
	case "http":
		req.Proto, def = vocab.ProtoHTTP, 80
	case "https":
		req.Proto, def = vocab.ProtoConnect, 443
	default:
		return Request{}, fmt.Errorf("%w: scheme %q: want http or https", ErrBadTarget, u.Scheme)
	}
	if u.User != nil {
		return Request{}, fmt.Errorf("%w: userinfo in URL (the proxy denies these)", ErrBadTarget)
	}
	host, port, err := splitHostPortDefault(u.Host, def)
	if err != nil {
		return Request{}, err
	}
	req.Host, req.Port = host, port
	return req, nil
}

// splitHostPortDefault accepts "host", "host:port", "[v6]" and "[v6]:port".
func splitHostPortDefault(s string, def uint16) (string, uint16, error) {
	if s == "" {
		return "", 0, fmt.Errorf("%w: no host", ErrBadTarget)
	}
	if h, p, err := net.SplitHostPort(s); err == nil {
		n, err := strconv.ParseUint(p, 10, 16)
		if err != nil || n == 0 {
			return "", 0, fmt.Errorf("%w: port %q: want 1-65535", ErrBadTarget, p)
		}
		if h == "" {
			return "", 0, fmt.Errorf("%w: no host", ErrBadTarget)
		}
		return h, uint16(n), nil
	}
	if strings.HasPrefix(s, "[") && strings.HasSuffix(s, "]") {
		return s[1 : len(s)-1], def, nil
	}
	if strings.Count(s, ":") > 1 {
		if _, err := netip.ParseAddr(s); err != nil {
			return "", 0, fmt.Errorf("%w: %q: want host[:port] or an IPv6 address", ErrBadTarget, s)
		}
		return s, def, nil
	}
	if strings.Contains(s, ":") {
		return "", 0, fmt.Errorf("%w: %q: want host[:port]", ErrBadTarget, s)
	}
	return s, def, nil
}

// Summary is the one-line description `egressd check` prints for a valid
// policy.
func (p *Policy) Summary() string {
	var hosts, wild, cidrs int
	for _, r := range p.rules {
		switch {
		case r.Host == "":
			cidrs++
		case strings.HasPrefix(r.Host, "*."):
			wild++
		default:
			hosts++
		}
	}
	mode := p.cfg.Mode
	if mode == "" {
		mode = "enforce"
	}
	s := fmt.Sprintf("version %d, mode %s, %d allow rules (%d hosts, %d wildcards, %d cidrs)",
		p.cfg.Version, mode, len(p.rules), hosts, wild, cidrs)
	if n := len(p.cfg.Providers); n > 0 {
		per := "per " + p.cfg.Budget.Period
		if p.cfg.Budget.Period == "total" {
			per = "in total, never reset"
		}
		s += fmt.Sprintf(", %d providers, cap %s %s", n, money.Format(p.cfg.Budget.CapUSD), per)
	}
	if n := len(p.apis); n > 0 {
		s += fmt.Sprintf(", %d api routes (%s)", n, strings.Join(p.apiRouteNames(), ", "))
	}
	if len(p.rules) == 0 {
		s += " — everything is denied"
	}
	return s
}
