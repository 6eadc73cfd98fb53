package proxy

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/egressd/egressd/internal/shared/declog/declogtest"

	"github.com/egressd/egressd/internal/shared/vocab"

	"github.com/egressd/egressd/internal/lib/tcplisten"
	"github.com/egressd/egressd/internal/shared/declog"
	"github.com/egressd/egressd/policy"
)

// waitLimit bounds every wait on a real condition in these tests.
const waitLimit = 5 * time.Second

// fakeResolver answers from a map. A name with several answers gives them
// in turn (the last one repeats), which is how rebinding is simulated.
type fakeResolver struct {
	mu      sync.Mutex
	answers map[string][][]netip.Addr
	calls   map[string]int
}

func newFakeResolver() *fakeResolver {
	return &fakeResolver{answers: map[string][][]netip.Addr{}, calls: map[string]int{}}
}

// set gives name its successive answers; each answer is a comma-separated
// address list, "" meaning a failed lookup.
func (f *fakeResolver) set(name string, answers ...string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	var seq [][]netip.Addr
	for _, a := range answers {
		var addrs []netip.Addr
		for _, s := range strings.Split(a, ",") {
			if s != "" {
				addrs = append(addrs, netip.MustParseAddr(s))
			}
		}
		seq = append(seq, addrs)
	}
	f.answers[name] = seq
}

func (f *fakeResolver) LookupNetIP(_ context.Context, host string) ([]netip.Addr, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	n := f.calls[host]
	f.calls[host]++
	seq := f.answers[host]
	if len(seq) == 0 {
		return nil, fmt.Errorf("lookup %s: no such host", host)
	}
	ans := seq[min(n, len(seq)-1)]
	if len(ans) == 0 {
		return nil, fmt.Errorf("lookup %s: server failure", host)
	}
	return append([]netip.Addr(nil), ans...), nil
}

func (f *fakeResolver) callCount(host string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.calls[host]
}

// decisionFor waits for the decision entry about host.
func decisionFor(t *testing.T, rec *declogtest.Recorder, host string, reason vocab.Reason) declog.Entry {
	t.Helper()
	return rec.WaitFor(t, waitLimit, fmt.Sprintf("decision %s %s", host, reason), func(e declog.Entry) bool {
		return e.Event == vocab.EventDecision && e.Host == host && e.Reason == reason
	})
}

// env is a running proxy on loopback with its fakes.
type env struct {
	t    testing.TB
	srv  *Server
	addr string
	port int
	pol  atomic.Pointer[policy.Policy]
	res  *fakeResolver
	rec  *declogtest.Recorder
	done chan error
}

// startProxy listens on 127.0.0.1:0, builds the policy with the proxy's own
// port known (policyYAML gets it), and serves until the test ends.
func startProxy(t testing.TB, policyYAML func(proxyPort int) string, mod func(*Config)) *env {
	t.Helper()
	return startProxyWith(t, policyYAML, mod, nil)
}

// startProxyWith is startProxy with smod run on the Server before it
// serves.
func startProxyWith(t testing.TB, policyYAML func(proxyPort int) string, mod func(*Config), smod func(*Server)) *env {
	t.Helper()
	ln, err := tcplisten.Listen("127.0.0.1:0") // as the daemon listens
	if err != nil {
		t.Fatal(err)
	}
	e := &env{t: t, addr: ln.Addr().String(), res: newFakeResolver(), rec: &declogtest.Recorder{}, done: make(chan error, 1)}
	e.port = ln.Addr().(*net.TCPAddr).Port
	e.pol.Store(mustPolicy(t, policyYAML(e.port)))
	cfg := Config{
		Policy:   e.pol.Load,
		Resolver: e.res,
		Recorder: e.rec,
		Self:     []netip.AddrPort{netip.MustParseAddrPort(e.addr)},
		Logger:   slog.New(slog.NewTextHandler(io.Discard, nil)),
	}
	if mod != nil {
		mod(&cfg)
	}
	e.srv, err = New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if smod != nil {
		smod(e.srv)
	}
	go func() { e.done <- e.srv.Serve(ln) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
		defer cancel()
		_ = e.srv.Shutdown(ctx)
		if err := <-e.done; !errors.Is(err, http.ErrServerClosed) {
			t.Errorf("Serve returned %v, want http.ErrServerClosed", err)
		}
	})
	return e
}

// dropPooled closes the proxy's idle upstream connections and waits until
// none is open, so that the next plain request resolves and checks its
// target before its decision instead of reusing one. The transport pools a
// connection a moment after its response ends, hence the bounded retry.
func (e *env) dropPooled() {
	e.t.Helper()
	deadline := time.Now().Add(waitLimit)
	for {
		e.srv.up.pool.closeIdle()
		n := e.srv.Len()
		if n == 0 {
			return
		}
		if time.Now().After(deadline) {
			e.t.Fatalf("%d upstream connections still open after %v", n, waitLimit)
		}
		time.Sleep(time.Millisecond)
	}
}

func mustPolicy(t testing.TB, yaml string) *policy.Policy {
	t.Helper()
	p, err := policy.LoadBytes([]byte(yaml), t.Name())
	if err != nil {
		t.Fatalf("policy: %v\n%s", err, yaml)
	}
	return p
}

// client is an http.Client that uses the proxy for http and https.
func (e *env) client() *http.Client {
	tr := &http.Transport{
		Proxy:           http.ProxyURL(&url.URL{Scheme: "http", Host: e.addr}),
		TLSClientConfig: &tls.Config{InsecureSkipVerify: true},
	}
	e.t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr, Timeout: waitLimit}
}

// dial opens a raw connection to the proxy.
func (e *env) dial() net.Conn {
	e.t.Helper()
	c, err := net.DialTimeout("tcp", e.addr, waitLimit)
	if err != nil {
		e.t.Fatal(err)
	}
	_ = c.SetDeadline(time.Now().Add(waitLimit))
	e.t.Cleanup(func() { _ = c.Close() })
	return c
}

// roundTrip writes a raw request on a fresh connection and reads one
// response with its body.
func (e *env) roundTrip(raw string) (*http.Response, string) {
	e.t.Helper()
	c := e.dial()
	defer c.Close()
	return sendRaw(e.t, c, bufio.NewReader(c), raw)
}

func sendRaw(t testing.TB, c net.Conn, br *bufio.Reader, raw string) (*http.Response, string) {
	t.Helper()
	if _, err := io.WriteString(c, raw); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatalf("reading response to %q: %v", firstLine(raw), err)
	}
	var body []byte
	if resp.StatusCode != http.StatusOK || !strings.HasPrefix(raw, "CONNECT") {
		body, _ = io.ReadAll(resp.Body)
	}
	return resp, string(body)
}

func firstLine(s string) string {
	if i := strings.Index(s, "\r\n"); i >= 0 {
		return s[:i]
	}
	return s
}

// connect opens a tunnel and fails the test unless it is established.
func (e *env) connect(target string) (net.Conn, *bufio.Reader) {
	e.t.Helper()
	c := e.dial()
	br := bufio.NewReader(c)
	resp, body := sendRaw(e.t, c, br, "CONNECT "+target+" HTTP/1.1\r\nHost: "+target+"\r\n\r\n")
	if resp.StatusCode != http.StatusOK {
		e.t.Fatalf("CONNECT %s: got %d %q, want 200", target, resp.StatusCode, body)
	}
	return c, br
}

// upstream is an in-process HTTP server that reports what it received.
type upstream struct {
	*httptest.Server
	port int
	mu   sync.Mutex
	reqs []*http.Request
}

func newUpstream(t testing.TB, tlsOn bool, h http.HandlerFunc) *upstream {
	t.Helper()
	u := &upstream{}
	handler := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		u.mu.Lock()
		u.reqs = append(u.reqs, r.Clone(context.Background()))
		u.mu.Unlock()
		if h != nil {
			h(w, r)
			return
		}
		fmt.Fprintf(w, "hello from %s %s", r.Host, r.URL.Path)
	})
	u.Server = httptest.NewUnstartedServer(handler)
	u.Config.ErrorLog = log.New(io.Discard, "", 0) // refused handshakes are the point of some tests
	if tlsOn {
		u.StartTLS()
	} else {
		u.Start()
	}
	t.Cleanup(u.Close)
	u.port = u.Listener.Addr().(*net.TCPAddr).Port
	return u
}

func (u *upstream) last() *http.Request {
	u.mu.Lock()
	defer u.mu.Unlock()
	if len(u.reqs) == 0 {
		return nil
	}
	return u.reqs[len(u.reqs)-1]
}

func (u *upstream) count() int {
	u.mu.Lock()
	defer u.mu.Unlock()
	return len(u.reqs)
}

// echoServer is a TCP upstream that echoes every byte: a stand-in for any
// non-HTTP protocol in a tunnel.
func echoServer(t testing.TB) int {
	return tcpServer(t, func(c net.Conn) { _, _ = io.Copy(c, c) })
}

// tcpServer serves each accepted connection with serve (which returns when
// it is done with it) until the test ends, then closes every connection
// and waits for the handlers. It returns the port on 127.0.0.1.
func tcpServer(t testing.TB, serve func(net.Conn)) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	var conns []net.Conn
	t.Cleanup(func() {
		_ = ln.Close()
		mu.Lock()
		for _, c := range conns {
			_ = c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
			wg.Add(1)
			go func() {
				defer wg.Done()
				serve(c)
				_ = c.Close()
			}()
		}
	}()
	return ln.Addr().(*net.TCPAddr).Port
}

// ports renders a YAML port list.
func ports(ps ...int) string {
	s := make([]string, len(ps))
	for i, p := range ps {
		s[i] = strconv.Itoa(p)
	}
	return "[" + strings.Join(s, ", ") + "]"
}

// expectClosed waits until the peer closes c (EOF or reset), failing after
// waitLimit.
func expectClosed(t *testing.T, c net.Conn, r io.Reader) {
	t.Helper()
	_ = c.SetReadDeadline(time.Now().Add(waitLimit))
	buf := make([]byte, 512)
	for {
		_, err := r.Read(buf)
		if err == nil {
			continue
		}
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			t.Fatalf("connection still open after %v", waitLimit)
		}
		return
	}
}

// echo writes msg into a tunnel and expects it back.
func echo(t testing.TB, c net.Conn, br *bufio.Reader, msg string) {
	t.Helper()
	if _, err := io.WriteString(c, msg); err != nil {
		t.Fatalf("write %q: %v", msg, err)
	}
	got := make([]byte, len(msg))
	if _, err := io.ReadFull(br, got); err != nil {
		t.Fatalf("read echo of %q: %v", msg, err)
	}
	if string(got) != msg {
		t.Fatalf("echo: got %q, want %q", got, msg)
	}
}

// fixture is a proxy with an HTTP, a TLS and an echo upstream, and a
// policy granting the test names on their ports.
type fixture struct {
	*env
	http *upstream
	tls  *upstream
	echo int
}

// fixOpts varies the fixture policy; empty fields keep the defaults.
type fixOpts struct {
	mode       string                  // enforce | report
	limits     string                  // YAML body of limits:
	timeouts   string                  // YAML body of timeouts:
	extraAllow func(f *fixture) string // more allow: entries, knowing the upstream ports
	extraTop   string                  // more top-level sections
	httpH      http.HandlerFunc
	mod        func(*Config)
	smod       func(*Server) // runs before the Server serves
}

func newFixture(t testing.TB, o fixOpts) *fixture {
	t.Helper()
	f := &fixture{http: newUpstream(t, false, o.httpH), tls: newUpstream(t, true, nil), echo: echoServer(t)}
	if o.mode == "" {
		o.mode = "enforce"
	}
	if o.limits == "" {
		o.limits = "  client: {rps: 100000, burst: 100000}\n  host: {rps: 100000, burst: 100000}\n"
	}
	if o.timeouts == "" {
		o.timeouts = "  header: 2s\n"
	}
	up := ports(f.http.port, f.tls.port, f.echo)
	extra := ""
	if o.extraAllow != nil {
		extra = o.extraAllow(f)
	}
	f.env = startProxyWith(t, func(proxyPort int) string {
		return "version: 1\nmode: " + o.mode + "\nallow:\n" +
			"  - {host: granted.test, ports: " + up + "}\n" +
			"  - {host: other.test, ports: " + up + "}\n" +
			"  - {host: \"*.wild.test\", ports: " + up + "}\n" +
			"  - {host: \"*.b.test\", ports: " + up + "}\n" +
			"  - {host: slow.test, ports: " + up + ", rate: {rps: 1, burst: 1}}\n" +
			"  - {host: self.test, ports: " + ports(proxyPort) + "}\n" +
			extra +
			"networks:\n  allow: [127.0.0.0/8]\n  deny: [127.0.0.3/32]\n" +
			"limits:\n" + o.limits + "timeouts:\n" + o.timeouts + o.extraTop
	}, o.mod, o.smod)
	for _, n := range []string{"granted.test", "other.test", "a.wild.test", "a.b.wild.test", "wild.test",
		"evilwild.test", "evil.test", "slow.test", "self.test"} {
		f.res.set(n, "127.0.0.1")
	}
	f.res.set("private.b.test", "10.1.2.3")
	f.res.set("meta.b.test", "169.254.169.254")
	f.res.set("loop6.b.test", "::1")
	f.res.set("mapped.b.test", "::ffff:10.0.0.1")
	f.res.set("mappedloop.b.test", "::ffff:127.0.0.1")
	f.res.set("mixed.b.test", "127.0.0.1,10.0.0.1")
	f.res.set("rebind.b.test", "127.0.0.1", "10.0.0.1")
	f.res.set("denynet.b.test", "127.0.0.3")
	f.res.set("fail.b.test", "")
	return f
}

// get sends a plain proxy request for rawURL with extra header lines.
func (f *fixture) get(rawURL, hostHeader string, extra ...string) (*http.Response, string) {
	f.t.Helper()
	req := "GET " + rawURL + " HTTP/1.1\r\nHost: " + hostHeader + "\r\n"
	for _, h := range extra {
		req += h + "\r\n"
	}
	return f.roundTrip(req + "\r\n")
}

func (f *fixture) hp(host string) string { return host + ":" + strconv.Itoa(f.http.port) }
func (f *fixture) tp(host string) string { return host + ":" + strconv.Itoa(f.tls.port) }
func (f *fixture) ep(host string) string { return host + ":" + strconv.Itoa(f.echo) }

// keepWriting sends a byte up c every 50 ms, so the tunnel is never idle
// from the client's side, until the returned stop is called or a write
// fails (egressd cut the connection).
func keepWriting(c net.Conn) (stop func()) {
	quit := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		tick := time.NewTicker(50 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-quit:
				return
			case <-tick.C:
			}
			_ = c.SetWriteDeadline(time.Now().Add(waitLimit))
			if _, err := c.Write([]byte("x")); err != nil {
				return
			}
		}
	}()
	return func() { close(quit); <-done }
}
