//go:build hardening

package hardening

import (
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/egressd/egressd/internal/shared/resolver/resolvertest"
)

// The loopback plan. egressd listens on 127.0.0.1 (its "own" address).
// Reachable upstreams listen on upstreamIP, the only address a policy puts
// in networks.allow. trapIP and 127.0.0.1/::1 carry trap listeners on the
// same ports: they must never see a connection.
const (
	upstreamIP = "127.0.0.2"
	trapIP     = "127.0.0.3"
)

// trap is a listener that records every connection it accepts.
type trap struct {
	ln net.Listener
	n  atomic.Int64
}

// serveTrap counts and closes every connection ln accepts.
func serveTrap(t testing.TB, ln net.Listener) *trap {
	tr := &trap{ln: ln}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			tr.n.Add(1)
			c.Close()
		}
	}()
	t.Cleanup(func() { ln.Close() })
	return tr
}

// traps guards one port on every address that is not the upstream's.
type traps []*trap

// trapAddrs are the addresses that must never see a connection.
var trapAddrs = []string{"127.0.0.1", trapIP, "::1"}

// listenGuarded listens on an ephemeral port of upstreamIP and puts a trap
// on the same port of every trap address. The kernel picks the port for
// upstreamIP alone, so it may be in use on 127.0.0.1 (another test's
// client socket); such a port is given back and another one tried.
func listenGuarded(t testing.TB) (net.Listener, int, traps) {
	t.Helper()
	for attempt := 0; attempt < 20; attempt++ {
		ln, err := net.Listen("tcp", upstreamIP+":0")
		if err != nil {
			t.Fatal(err)
		}
		port := ln.Addr().(*net.TCPAddr).Port
		lns, err := listenAll(port)
		if err == nil {
			ts := make(traps, len(lns))
			for i, l := range lns {
				ts[i] = serveTrap(t, l)
			}
			return ln, port, ts
		}
		ln.Close()
		if !errors.Is(err, syscall.EADDRINUSE) {
			t.Fatalf("traps on port %d: %v", port, err)
		}
	}
	t.Fatal("no port free on the upstream and every trap address after 20 tries")
	return nil, 0, nil
}

// listenAll listens on port at every trap address, or on none.
func listenAll(port int) ([]net.Listener, error) {
	var lns []net.Listener
	for _, a := range trapAddrs {
		ln, err := net.Listen("tcp", net.JoinHostPort(a, strconv.Itoa(port)))
		if err != nil {
			for _, l := range lns {
				l.Close()
			}
			return nil, fmt.Errorf("trap on %s: %w", a, err)
		}
		lns = append(lns, ln)
	}
	return lns, nil
}

func (ts traps) hits() int64 {
	var n int64
	for _, t := range ts {
		n += t.n.Load()
	}
	return n
}

// seen is one request the web upstream received.
type seen struct {
	Method, URI, Host, Body string
	Header                  http.Header
}

// web is an HTTP upstream on upstreamIP with traps on its port elsewhere.
type web struct {
	addr  string
	port  int
	traps traps
	mu    sync.Mutex
	reqs  []seen
}

// startWeb serves: /big (64 MiB, for slow readers), /reset (cut mid-body
// with a TCP reset), /slow (answers after a second), anything else a short
// "hello" naming the path.
func startWeb(t testing.TB) *web {
	t.Helper()
	ln, port, ts := listenGuarded(t)
	w := &web{addr: ln.Addr().String(), port: port, traps: ts}
	srv := &http.Server{Handler: http.HandlerFunc(w.serve), ReadHeaderTimeout: 10 * time.Second}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return w
}

func (w *web) serve(rw http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	w.mu.Lock()
	w.reqs = append(w.reqs, seen{r.Method, r.RequestURI, r.Host, string(body), r.Header.Clone()})
	w.mu.Unlock()
	switch r.URL.Path {
	case "/slow":
		time.Sleep(time.Second)
		io.WriteString(rw, "slow but sure\n")
	case "/big":
		rw.Header().Set("Content-Length", strconv.Itoa(64<<20))
		chunk := make([]byte, 64<<10)
		for range 1024 {
			if _, err := rw.Write(chunk); err != nil {
				return
			}
		}
	case "/reset":
		rw.Header().Set("Content-Length", "1000000")
		rw.WriteHeader(200)
		rw.Write(make([]byte, 1000))
		rw.(http.Flusher).Flush()
		c, _, err := http.NewResponseController(rw).Hijack()
		if err == nil {
			c.(*net.TCPConn).SetLinger(0)
			c.Close()
		}
	default:
		io.WriteString(rw, "hello from upstream "+r.URL.Path+"\n")
	}
}

func (w *web) requests() []seen {
	w.mu.Lock()
	defer w.mu.Unlock()
	return append([]seen(nil), w.reqs...)
}

// echo is a raw TCP upstream for tunnels: it echoes what it reads and
// counts connections, with traps on its port elsewhere.
type echo struct {
	addr  string
	port  int
	traps traps
	open  atomic.Int64
	total atomic.Int64
	mu    sync.Mutex
	got   []byte // the first bytes of every connection, concatenated
	reset atomic.Bool
}

func startEcho(t testing.TB) *echo {
	t.Helper()
	ln, port, ts := listenGuarded(t)
	e := &echo{addr: ln.Addr().String(), port: port, traps: ts}
	var wg sync.WaitGroup
	var mu sync.Mutex
	conns := map[net.Conn]bool{}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			e.total.Add(1)
			e.open.Add(1)
			mu.Lock()
			conns[c] = true
			mu.Unlock()
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer e.open.Add(-1)
				defer func() { mu.Lock(); delete(conns, c); mu.Unlock(); c.Close() }()
				e.serve(c)
			}()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		for c := range conns {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	return e
}

func (e *echo) serve(c net.Conn) {
	buf := make([]byte, 4096)
	first := true
	for {
		n, err := c.Read(buf)
		if n > 0 {
			if first {
				e.mu.Lock()
				e.got = append(e.got, buf[:n]...)
				e.mu.Unlock()
				first = false
			}
			if e.reset.Load() {
				c.(*net.TCPConn).SetLinger(0)
				return
			}
			if _, werr := c.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			if errors.Is(err, io.EOF) {
				// Half-close from the far side: answer it, then close.
				c.Write([]byte("bye\n"))
			}
			return
		}
	}
}

func (e *echo) received() string {
	e.mu.Lock()
	defer e.mu.Unlock()
	return string(e.got)
}

// DNS upstream modes.
const (
	dnsNormal  int32 = iota
	dnsDown          // never answers
	dnsSlow          // answers after 3s, well past resolver.timeout
	dnsFail          // SERVFAIL
	dnsGarbage       // a reply that answers another question
)

// fakeDNS is the upstream resolver egressd is pointed at: records set by
// the test, a switchable failure mode, and rebinding names whose A answer
// alternates on every query with TTL 0.
type fakeDNS struct {
	up   *resolvertest.Upstream
	mode atomic.Int32

	mu      sync.Mutex
	records map[string][]dns.RR // lowercased FQDN
	rebind  map[string][2]string
	queries map[string]int // rebinding names: A queries answered
}

func startDNS(t testing.TB) *fakeDNS {
	t.Helper()
	f := &fakeDNS{records: map[string][]dns.RR{}, rebind: map[string][2]string{}, queries: map[string]int{}}
	f.up = resolvertest.Start(t, f.handle)
	return f
}

// add adds records in zone-file syntax; TTL 60 unless written.
func (f *fakeDNS) add(t testing.TB, rrs ...string) {
	t.Helper()
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, s := range rrs {
		rr, err := dns.NewRR(s)
		if err != nil {
			t.Fatalf("bad record %q: %v", s, err)
		}
		k := strings.ToLower(rr.Header().Name)
		f.records[k] = append(f.records[k], rr)
	}
}

// addRebind makes name answer first, then second, then first... (TTL 0).
func (f *fakeDNS) addRebind(name, first, second string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.rebind[dns.Fqdn(strings.ToLower(name))] = [2]string{first, second}
}

func (f *fakeDNS) handle(_ string, q *dns.Msg) *dns.Msg {
	if m, handled := f.fault(q); handled {
		return m
	}
	m := new(dns.Msg)
	m.SetReply(q)
	m.RecursionAvailable = true
	if len(q.Question) != 1 {
		m.Rcode = dns.RcodeFormatError
		return m
	}
	qq := q.Question[0]
	name := strings.ToLower(qq.Name)
	f.mu.Lock()
	defer f.mu.Unlock()
	if pair, ok := f.rebind[name]; ok {
		if qq.Qtype == dns.TypeA {
			ip := pair[f.queries[name]%2]
			f.queries[name]++
			m.Answer = []dns.RR{&dns.A{Hdr: dns.RR_Header{Name: qq.Name, Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: 0}, A: net.ParseIP(ip)}}
		}
		return m
	}
	if _, ok := f.records[name]; !ok {
		m.Rcode = dns.RcodeNameError
		return m
	}
	// Like a recursive resolver: the CNAME chain, then the asked type at
	// its end. The question's own name keeps the client's case.
	owner := qq.Name
	for range 8 {
		var next string
		for _, rr := range f.records[name] {
			if rr.Header().Rrtype != qq.Qtype && rr.Header().Rrtype != dns.TypeCNAME {
				continue
			}
			c := dns.Copy(rr)
			c.Header().Name = owner
			m.Answer = append(m.Answer, c)
			if cn, ok := rr.(*dns.CNAME); ok && qq.Qtype != dns.TypeCNAME {
				next = cn.Target
			}
		}
		if next == "" {
			break
		}
		owner, name = next, strings.ToLower(next)
	}
	return m
}

// fault answers q the way the current failure mode says; handled is false
// in normal mode (and after a slow mode's delay).
func (f *fakeDNS) fault(q *dns.Msg) (m *dns.Msg, handled bool) {
	switch f.mode.Load() {
	case dnsDown:
		return nil, true
	case dnsSlow:
		time.Sleep(3 * time.Second) // the fault being simulated is a slow upstream
	case dnsFail:
		m = new(dns.Msg)
		m.SetRcode(q, dns.RcodeServerFailure)
		return m, true
	case dnsGarbage:
		// An answer to another question, naming the trap address.
		m = new(dns.Msg)
		m.SetReply(q)
		m.Question[0].Name = "garbage.invalid."
		m.Answer = []dns.RR{&dns.A{Hdr: dns.RR_Header{Name: "garbage.invalid.", Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: 60}, A: net.IPv4(127, 0, 0, 3)}}
		return m, true
	}
	return nil, false
}

// rebindQueries is how many A queries a rebinding name was answered.
func (f *fakeDNS) rebindQueries(name string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.queries[dns.Fqdn(strings.ToLower(name))]
}
