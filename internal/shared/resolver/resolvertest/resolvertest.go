// Package resolvertest runs an in-process DNS upstream on 127.0.0.1 (UDP
// and TCP on the same port) that counts the queries it receives, for tests
// and benchmarks of the resolver and the DNS server. It never talks to any
// other address.
package resolvertest

import (
	"net"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/miekg/dns"
)

// Handler answers one query received over network ("udp" or "tcp").
// Returning nil sends nothing, like an upstream that is down.
type Handler func(network string, q *dns.Msg) *dns.Msg

// Upstream is a running fake upstream resolver.
type Upstream struct {
	// Addr is "127.0.0.1:port", served over both UDP and TCP.
	Addr string

	h      Handler
	mu     sync.Mutex
	counts map[string]int // "name type network", name lowercased
	total  int
}

// Start serves h on a fresh 127.0.0.1 port until the test ends.
func Start(tb testing.TB, h Handler) *Upstream {
	tb.Helper()
	pc, ln := listenPair(tb)
	u := &Upstream{Addr: pc.LocalAddr().String(), h: h, counts: make(map[string]int)}
	for _, srv := range []*dns.Server{
		{PacketConn: pc, Handler: u.handler("udp")},
		{Listener: ln, Handler: u.handler("tcp")},
	} {
		started := make(chan struct{})
		srv.NotifyStartedFunc = func() { close(started) }
		errc := make(chan error, 1)
		go func() { errc <- srv.ActivateAndServe() }()
		select {
		case <-started:
		case err := <-errc:
			tb.Fatalf("resolvertest: serve: %v", err)
		}
		tb.Cleanup(func() { _ = srv.Shutdown() })
	}
	return u
}

// listenPair binds UDP and TCP on the same loopback port, retrying when
// the TCP side of a kernel-chosen UDP port is taken.
func listenPair(tb testing.TB) (net.PacketConn, net.Listener) {
	for range 20 {
		pc, err := net.ListenPacket("udp", "127.0.0.1:0")
		if err != nil {
			tb.Fatalf("resolvertest: listen udp: %v", err)
		}
		ln, err := net.Listen("tcp", pc.LocalAddr().String())
		if err == nil {
			return pc, ln
		}
		pc.Close()
	}
	tb.Fatal("resolvertest: no free port pair on 127.0.0.1")
	return nil, nil
}

func (u *Upstream) handler(network string) dns.HandlerFunc {
	return func(w dns.ResponseWriter, q *dns.Msg) {
		if len(q.Question) == 1 {
			k := countKey(q.Question[0].Name, q.Question[0].Qtype, network)
			u.mu.Lock()
			u.counts[k]++
			u.total++
			u.mu.Unlock()
		}
		resp := u.h(network, q)
		if resp == nil {
			return
		}
		if network == "udp" && !resp.Truncated {
			// Like a real server: fit the answer into what the query
			// advertised, setting TC when records had to go.
			size := dns.MinMsgSize
			if opt := q.IsEdns0(); opt != nil {
				size = max(size, int(opt.UDPSize()))
			}
			resp.Truncate(size)
		}
		_ = w.WriteMsg(resp)
	}
}

func countKey(name string, qtype uint16, network string) string {
	return strings.ToLower(dns.Fqdn(name)) + " " + strconv.Itoa(int(qtype)) + " " + network
}

// Count is how many queries for (name, qtype) arrived, over both
// transports; the name compares case-insensitively.
func (u *Upstream) Count(name string, qtype uint16) int {
	return u.CountNet(name, qtype, "udp") + u.CountNet(name, qtype, "tcp")
}

// CountNet is Count for one transport.
func (u *Upstream) CountNet(name string, qtype uint16, network string) int {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.counts[countKey(name, qtype, network)]
}

// Total is how many queries arrived, for any name.
func (u *Upstream) Total() int {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.total
}
