// Package safedial owns the one rule for every connection egressd opens
// towards a destination: resolve once, check every address against the
// policy (private, metadata and denied networks, egressd's own listeners),
// and dial exactly a checked address. Check and DialFirst are the two
// halves; the proxy calls them from its pipeline (it resolves, rate limits
// and logs in between), and Dialer strings them together for the gateway's
// calls to providers. SelfSet is egressd's own addresses, shared by both
// and by the DNS filter.
package safedial

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"time"

	"github.com/egressd/egressd/internal/shared/vocab"

	"github.com/egressd/egressd/policy"
)

// DefaultDialTimeout bounds a dial when the policy leaves timeouts.dial
// zero; a compiled policy fills its own default, this only keeps a zero
// from meaning "forever".
const DefaultDialTimeout = 10 * time.Second

// Resolver looks names up; egressd passes its shared resolver.
type Resolver interface {
	LookupNetIP(ctx context.Context, host string) ([]netip.Addr, error)
}

// DialFunc connects to a checked "ip:port". It is never given a name.
type DialFunc func(ctx context.Context, network, addr string) (net.Conn, error)

// ErrDenied wraps every refusal to dial; errors.As to *DeniedError gives
// the address and the decision.
var ErrDenied = errors.New("address denied")

// DeniedError says which address was refused and why.
type DeniedError struct {
	Addr   netip.AddrPort
	Reason vocab.Reason
}

func (e *DeniedError) Error() string {
	return fmt.Sprintf("dial %s: %s", e.Addr, e.Reason)
}

// Unwrap makes every DeniedError an ErrDenied.
func (e *DeniedError) Unwrap() error { return ErrDenied }

// DialTimeout is how long p lets one dial take, all addresses included:
// timeouts.dial, or DefaultDialTimeout when that is zero.
func DialTimeout(p *policy.Policy) time.Duration {
	if t := p.Config().Timeouts.Dial; t > 0 {
		return t
	}
	return DefaultDialTimeout
}

// Check classifies the addresses a name resolved to (or an IP literal),
// for a connection to port. A name with any denied address is denied as a
// whole: picking the allowed half of a mixed answer would still let the
// agent learn about, and race for, the other half, and a legitimate public
// service never publishes private addresses. Addresses are unmapped and
// lose their zone, so what is checked is what is dialed.
//
// It returns the dial targets, in the order given, or nil and a
// *DeniedError (always that type, so callers may type-assert) for the first
// refused address; an empty ips is refused as resolve_failed. The only
// allocation is the returned slice.
func Check(p *policy.Policy, self *SelfSet, ips []netip.Addr, port uint16) ([]netip.AddrPort, error) {
	if len(ips) == 0 {
		return nil, &DeniedError{Reason: vocab.ReasonResolveFailed}
	}
	out := make([]netip.AddrPort, 0, len(ips))
	for _, ip := range ips {
		ap := netip.AddrPortFrom(ip.Unmap().WithZone(""), port)
		if d := p.CheckAddr(ap.Addr()); !d.Verdict.Allowed() {
			return nil, &DeniedError{Addr: ap, Reason: d.Reason}
		}
		if self.Contains(ap) {
			return nil, &DeniedError{Addr: ap, Reason: vocab.ReasonSelfAddress}
		}
		out = append(out, ap)
	}
	return out, nil
}

// DialFirst connects to targets (from Check) in order until one answers,
// all of them within timeout, and returns the connection and the address
// it reached. A nil dial means a plain net.Dialer. Nothing here resolves a
// name. The error joins every attempt's failure.
func DialFirst(ctx context.Context, dial DialFunc, network string, targets []netip.AddrPort, timeout time.Duration) (net.Conn, netip.AddrPort, error) {
	if len(targets) == 0 {
		return nil, netip.AddrPort{}, errors.New("no checked address to dial")
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var errs []error
	for _, ap := range targets {
		var c net.Conn
		var err error
		if dial != nil {
			c, err = dial(ctx, network, ap.String())
		} else {
			var d net.Dialer
			c, err = d.DialContext(ctx, network, ap.String())
		}
		if err == nil {
			return c, ap, nil
		}
		errs = append(errs, err)
		if ctx.Err() != nil {
			break
		}
	}
	return nil, netip.AddrPort{}, errors.Join(errs...)
}

// Dialer resolves, checks and dials: the whole rule for connections
// egressd makes on its own behalf. Policy and Resolver are required.
type Dialer struct {
	Policy   func() *policy.Policy
	Resolver Resolver
	// Self is egressd's own listeners; nil means none.
	Self *SelfSet
	// Dial connects to a checked "ip:port"; nil means a net.Dialer. Either
	// way all addresses of one call share the policy's timeouts.dial.
	Dial DialFunc
}

// DialContext resolves addr's host (an IP literal is used as is), checks
// its addresses (Check: any denied address denies the name, with a
// *DeniedError), then dials them in order until one answers (DialFirst).
func (d *Dialer) DialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	host, portStr, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, fmt.Errorf("dial %s: %w", addr, err)
	}
	port, err := strconv.ParseUint(portStr, 10, 16)
	if err != nil {
		return nil, fmt.Errorf("dial %s: bad port: %w", addr, err)
	}
	var ips []netip.Addr
	if ip, err := netip.ParseAddr(host); err == nil {
		ips = []netip.Addr{ip}
	} else if ips, err = d.Resolver.LookupNetIP(ctx, host); err != nil {
		return nil, fmt.Errorf("resolve %s: %w", host, err)
	}
	if len(ips) == 0 {
		return nil, fmt.Errorf("resolve %s: no addresses", host)
	}
	p := d.Policy()
	targets, err := Check(p, d.Self, ips, uint16(port))
	if err != nil {
		return nil, err
	}
	c, _, err := DialFirst(ctx, d.Dial, network, targets, DialTimeout(p))
	if err != nil {
		return nil, fmt.Errorf("dial %s: %w", addr, err)
	}
	return c, nil
}
