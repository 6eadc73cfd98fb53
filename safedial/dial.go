// Package safedial owns the rule for connections egressd opens on its own
// behalf (the gateway's calls to providers): resolve once through egressd's
// resolver, check every address against the policy (private, metadata and
// denied networks, egressd's own listeners), and dial exactly a checked
// address. The proxy applies the same rule inside its own pipeline; both
// share SelfSet.
package safedial

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"time"

	"github.com/egressd/egressd/policy"
)

// Resolver looks names up; egressd passes its shared resolver.
type Resolver interface {
	LookupNetIP(ctx context.Context, host string) ([]netip.Addr, error)
}

// ErrDenied wraps every refusal to dial; errors.As to *DeniedError gives
// the address and the decision.
var ErrDenied = errors.New("address denied")

// DeniedError says which address was refused and why.
type DeniedError struct {
	Addr   netip.AddrPort
	Reason policy.Reason
}

func (e *DeniedError) Error() string {
	return fmt.Sprintf("dial %s: %s", e.Addr, e.Reason)
}

// Unwrap makes every DeniedError an ErrDenied.
func (e *DeniedError) Unwrap() error { return ErrDenied }

// Dialer dials after checking. Policy and Resolver are required.
type Dialer struct {
	Policy   func() *policy.Policy
	Resolver Resolver
	// Self is egressd's own listeners; nil means none.
	Self *SelfSet
	// Dial connects to a checked "ip:port"; nil means a net.Dialer bounded
	// by the policy's timeouts.dial.
	Dial func(ctx context.Context, network, addr string) (net.Conn, error)
}

// DialContext resolves addr's host (an IP literal is used as is), denies
// the whole name if any of its addresses is denied (the same rule as the
// proxy), then dials the checked addresses in order until one answers.
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
		ips = []netip.Addr{ip.Unmap()}
	} else if ips, err = d.Resolver.LookupNetIP(ctx, host); err != nil {
		return nil, fmt.Errorf("resolve %s: %w", host, err)
	}
	if len(ips) == 0 {
		return nil, fmt.Errorf("resolve %s: no addresses", host)
	}
	p := d.Policy()
	targets := make([]netip.AddrPort, 0, len(ips))
	for _, ip := range ips {
		ap := netip.AddrPortFrom(ip.Unmap(), uint16(port))
		if dec := p.CheckAddr(ap.Addr()); !dec.Verdict.Allowed() {
			return nil, &DeniedError{Addr: ap, Reason: dec.Reason}
		}
		if d.Self.Contains(ap) {
			return nil, &DeniedError{Addr: ap, Reason: policy.ReasonSelfAddress}
		}
		targets = append(targets, ap)
	}
	dial := d.Dial
	if dial == nil {
		dial = (&net.Dialer{Timeout: dialTimeout(p)}).DialContext
	}
	var errs []error
	for _, ap := range targets {
		c, err := dial(ctx, network, ap.String())
		if err == nil {
			return c, nil
		}
		errs = append(errs, err)
		if ctx.Err() != nil {
			break
		}
	}
	return nil, fmt.Errorf("dial %s: %w", addr, errors.Join(errs...))
}

func dialTimeout(p *policy.Policy) time.Duration {
	if t := p.Config().Timeouts.Dial; t > 0 {
		return t
	}
	return 10 * time.Second
}
