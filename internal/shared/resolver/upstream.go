package resolver

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/miekg/dns"
)

// ednsSize is the UDP payload size advertised upstream: the DNS flag day
// 2020 value, which avoids IP fragmentation on any sane path.
const ednsSize = 1232

var errMismatch = errors.New("reply does not match the question")

// query asks each upstream in turn, starting with the one that answered
// last, until one gives a usable answer.
func (r *Resolver) query(ctx context.Context, s *settings, k key) (*dns.Msg, error) {
	n := len(s.upstreams)
	if n == 0 {
		return nil, ErrNoUpstreams
	}
	start := int(r.next.Load() % uint32(n))
	var errs []error
	for i := range n {
		idx := (start + i) % n
		addr := s.upstreams[idx]
		m, err := ask(ctx, s, addr, k)
		if err == nil {
			r.next.Store(uint32(idx))
			return m, nil
		}
		r.log.Debug("resolver upstream failed", "upstream", addr, "name", k.name,
			"qtype", dns.Type(k.qtype).String(), "err", err)
		errs = append(errs, fmt.Errorf("%s: %w", addr, err))
		if ctx.Err() != nil {
			break
		}
	}
	return nil, fmt.Errorf("%w: %s %s: %w", ErrUpstream, k.name, dns.Type(k.qtype).String(), errors.Join(errs...))
}

// ask sends one query to one upstream over UDP, and again over TCP when the
// UDP answer is truncated. Each transport gets its own Timeout.
func ask(ctx context.Context, s *settings, addr string, k key) (*dns.Msg, error) {
	q := new(dns.Msg)
	q.SetQuestion(k.name, k.qtype)
	q.SetEdns0(ednsSize, false)
	resp, err := exchange(ctx, s, "udp", q, addr)
	if err == nil && resp.Truncated {
		resp, err = exchange(ctx, s, "tcp", q, addr)
	}
	if err != nil {
		return nil, err
	}
	if err := checkReply(q, resp); err != nil {
		return nil, err
	}
	// Cache a normalised message: our question spelling, no transaction
	// state, no additional section.
	resp.Id = 0
	resp.Question = q.Question
	resp.Extra = nil
	resp.Truncated = false
	return resp, nil
}

func exchange(ctx context.Context, s *settings, network string, q *dns.Msg, addr string) (*dns.Msg, error) {
	ctx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()
	c := dns.Client{Net: network, Timeout: s.timeout, UDPSize: ednsSize}
	resp, _, err := c.ExchangeContext(ctx, q, addr)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", network, err)
	}
	return resp, nil
}

// checkReply accepts NOERROR and NXDOMAIN answers to exactly the question
// asked. miekg's client already matches the ID on a connected socket; the
// question is compared case-insensitively so upstreams that randomise or
// fold case (0x20) still match.
func checkReply(q, resp *dns.Msg) error {
	if !resp.Response || resp.Opcode != dns.OpcodeQuery {
		return fmt.Errorf("%w: not a query response", errMismatch)
	}
	if len(resp.Question) != 1 {
		return fmt.Errorf("%w: %d questions", errMismatch, len(resp.Question))
	}
	got, want := resp.Question[0], q.Question[0]
	if got.Qtype != want.Qtype || got.Qclass != want.Qclass || !strings.EqualFold(got.Name, want.Name) {
		return fmt.Errorf("%w: got %s", errMismatch, got.String())
	}
	switch resp.Rcode {
	case dns.RcodeSuccess, dns.RcodeNameError:
		return nil
	}
	return fmt.Errorf("rcode %s", dns.RcodeToString[resp.Rcode])
}
