package proxy

import (
	"bufio"
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/egressd/egressd/internal/shared/vocab"
	"github.com/egressd/egressd/policy"
)

// countNetHTTP makes the fixture count the connections net/http serves.
func countNetHTTP(n *atomic.Int32) func(*Server) {
	return func(s *Server) {
		inner := s.srv.ConnState
		s.srv.ConnState = func(c net.Conn, st http.ConnState) {
			if st == http.StateNew {
				n.Add(1)
			}
			inner(c, st)
		}
	}
}

// TestFrontRouting: a plain CONNECT is served without net/http; a plain
// request and a CONNECT whose head is not plain are net/http's, with every
// byte read before the hand-over intact.
func TestFrontRouting(t *testing.T) {
	var served atomic.Int32
	f := newFixture(t, fixOpts{smod: countNetHTTP(&served)})
	target := f.ep("granted.test")

	c, br := f.connect(target)
	echo(t, c, br, "plain")
	_ = c.Close()
	if n := served.Load(); n != 0 {
		t.Errorf("plain CONNECT: net/http served %d connections, want 0", n)
	}

	if resp, _ := f.get("http://"+f.hp("granted.test")+"/", f.hp("granted.test")); resp.StatusCode != http.StatusOK {
		t.Errorf("GET: got %d, want 200", resp.StatusCode)
	}
	if n := served.Load(); n != 1 {
		t.Errorf("after a GET: net/http served %d connections, want 1", n)
	}

	// Not plain (a byte over 0x7e in a value), with a tail longer than
	// the front reader's buffer sent along with the head.
	tail := strings.Repeat("0123456789abcdef", 1024)
	c = f.dial()
	head := "CONNECT " + target + " HTTP/1.1\r\nX-Odd: caf\xe9\r\n\r\n"
	if _, err := io.WriteString(c, head+tail); err != nil {
		t.Fatal(err)
	}
	br = bufio.NewReader(c)
	resp, err := http.ReadResponse(br, &http.Request{Method: http.MethodConnect})
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("CONNECT with an odd header: got %v %v, want 200", resp, err)
	}
	got := make([]byte, len(tail))
	if _, err := io.ReadFull(br, got); err != nil || string(got) != tail {
		t.Fatalf("echo of the early tail: %d bytes, %v; want the %d sent", len(got), err, len(tail))
	}
	if n := served.Load(); n != 2 {
		t.Errorf("after a CONNECT that is not plain: net/http served %d connections, want 2", n)
	}

	// Plain but longer than the front reader's buffer: net/http reads
	// the rest of the head.
	c = f.dial()
	if _, err := io.WriteString(c, "CONNECT "+target+" HTTP/1.1\r\nX-Long: "+strings.Repeat("a", frontBufSize)+"\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	br = bufio.NewReader(c)
	if resp, err := http.ReadResponse(br, &http.Request{Method: http.MethodConnect}); err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("CONNECT with a long head: got %v %v, want 200", resp, err)
	}
	echo(t, c, br, "long head")
	if n := served.Load(); n != 3 {
		t.Errorf("after a head longer than the front buffer: net/http served %d connections, want 3", n)
	}
}

// TestFrontRateLimited: a client over its rate gets the same refusal
// from the front reader as from net/http's path.
func TestFrontRateLimited(t *testing.T) {
	f := newFixture(t, fixOpts{limits: "  client: {rps: 0.001, burst: 1}\n  host: {rps: 100000, burst: 100000}\n"})
	target := f.ep("granted.test")
	c, br := f.connect(target)
	echo(t, c, br, "the one token")
	front, frontBody := f.roundTrip(connectReq(target))
	viaHTTP, httpBody := f.roundTrip("CONNECT " + target + " HTTP/1.1\r\nX-Odd: caf\xe9\r\n\r\n")
	if front.StatusCode != http.StatusTooManyRequests || front.Status != viaHTTP.Status || frontBody != httpBody {
		t.Errorf("front: %q %q; net/http: %q %q; want the same 429", front.Status, frontBody, viaHTTP.Status, httpBody)
	}
	if a, b := front.Header.Get("Retry-After"), viaHTTP.Header.Get("Retry-After"); a == "" || a != b {
		t.Errorf("Retry-After: front %q, net/http %q", a, b)
	}
}

// blockingResolver holds lookups of hang.test until release is closed,
// whatever their context says.
type blockingResolver struct {
	*fakeResolver
	entered chan struct{}
	release chan struct{}
}

func (r blockingResolver) LookupNetIP(ctx context.Context, host string) ([]netip.Addr, error) {
	if host == "hang.test" {
		r.entered <- struct{}{}
		<-r.release
		return []netip.Addr{netip.MustParseAddr("127.0.0.1")}, nil
	}
	return r.fakeResolver.LookupNetIP(ctx, host)
}

// TestFrontShutdownGivesUp: a CONNECT still being decided when Shutdown
// runs out of time never becomes a tunnel afterwards.
func TestFrontShutdownGivesUp(t *testing.T) {
	res := blockingResolver{entered: make(chan struct{}, 1), release: make(chan struct{})}
	f := newFixture(t, fixOpts{
		extraAllow: func(f *fixture) string { return "  - {host: hang.test, ports: [" + strconv.Itoa(f.echo) + "]}\n" },
		mod: func(c *Config) {
			res.fakeResolver = c.Resolver.(*fakeResolver)
			c.Resolver = res
		},
	})
	c := f.dial()
	if _, err := io.WriteString(c, connectReq(f.ep("hang.test"))); err != nil {
		t.Fatal(err)
	}
	wait(t, res.entered, "the lookup never started")
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	if err := f.srv.Shutdown(ctx); err == nil {
		t.Fatal("Shutdown returned nil while a CONNECT was held; want its context's error")
	}
	close(res.release)
	resp, err := http.ReadResponse(bufio.NewReader(c), &http.Request{Method: http.MethodConnect})
	if err == nil && resp.StatusCode == http.StatusOK {
		t.Fatal("CONNECT became a tunnel after Shutdown gave up")
	}
	waitFor(t, "no open upstream connection", func() bool { return f.srv.Len() == 0 })
}

// TestFrontDrippedHead: a plain CONNECT head that arrives a byte at a
// time is served like one that arrives whole.
func TestFrontDrippedHead(t *testing.T) {
	f := newFixture(t, fixOpts{})
	c := f.dial()
	for _, b := range []byte(connectReq(f.ep("granted.test"))) {
		if _, err := c.Write([]byte{b}); err != nil {
			t.Fatal(err)
		}
	}
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, &http.Request{Method: http.MethodConnect})
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("dripped CONNECT: got %v %v, want 200", resp, err)
	}
	echo(t, c, br, "dripped")
}

// TestFrontDenial: a refusal of a CONNECT the front reader read is
// framed like net/http's (the request's HTTP version, the reason header,
// phrase and body, Connection: close), reaches a client that sent bytes
// after its head, and ends the connection.
func TestFrontDenial(t *testing.T) {
	f := newFixture(t, fixOpts{})
	for _, version := range []string{"HTTP/1.1", "HTTP/1.0"} {
		t.Run(version, func(t *testing.T) {
			c := f.dial()
			head := "CONNECT evil.test:443 " + version + "\r\nHost: evil.test:443\r\n\r\n"
			if _, err := io.WriteString(c, head+strings.Repeat("x", 2000)); err != nil {
				t.Fatal(err)
			}
			br := bufio.NewReader(c)
			resp, err := http.ReadResponse(br, &http.Request{Method: http.MethodConnect})
			if err != nil {
				t.Fatalf("reading the refusal: %v", err)
			}
			body, _ := io.ReadAll(resp.Body)
			if resp.StatusCode != http.StatusForbidden || resp.Proto != version {
				t.Errorf("got %s %d, want %s 403", resp.Proto, resp.StatusCode, version)
			}
			if got := resp.Header.Get("X-Egressd-Reason"); got != vocab.ReasonNotAllowlisted.String() {
				t.Errorf("X-Egressd-Reason: got %q, want %q", got, vocab.ReasonNotAllowlisted)
			}
			if !resp.Close || !strings.Contains(resp.Status, "evil.test") {
				t.Errorf("got status %q, close %v; want a phrase naming the target and Connection: close", resp.Status, resp.Close)
			}
			if want := "egressd: denied CONNECT evil.test:443: not_allowlisted"; !strings.HasPrefix(string(body), want) {
				t.Errorf("body: got %q, want it to start %q", body, want)
			}
			if resp.ContentLength != int64(len(body)) || resp.Header.Get("Date") == "" {
				t.Errorf("Content-Length %d for a %d-byte body, Date %q", resp.ContentLength, len(body), resp.Header.Get("Date"))
			}
			expectClosed(t, c, br)
		})
	}
	decisionFor(t, f.rec, "evil.test", vocab.ReasonNotAllowlisted)
}

// TestFrontShutdown: Shutdown does not wait out timeouts.header for
// connections whose first head is still being read; it closes them.
func TestFrontShutdown(t *testing.T) {
	f := newFixture(t, fixOpts{timeouts: "  header: 1m\n"})
	silent := f.dial()
	half := f.dial()
	if _, err := io.WriteString(half, "CONNECT granted.test:"); err != nil {
		t.Fatal(err)
	}
	// One tunnel through, so both connections above were accepted.
	c, br := f.connect(f.ep("granted.test"))
	echo(t, c, br, "before")
	_ = c.Close()

	ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
	defer cancel()
	start := time.Now()
	if err := f.srv.Shutdown(ctx); err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
	if took := time.Since(start); took > waitLimit/2 {
		t.Errorf("Shutdown took %s", took)
	}
	expectClosed(t, silent, silent)
	expectClosed(t, half, half)
}

// TestFrontHeaderTimeoutCarriesOver: a client whose first byte comes
// late gets what is left of timeouts.header for the head net/http reads,
// not a fresh one.
func TestFrontHeaderTimeoutCarriesOver(t *testing.T) {
	const header = time.Second
	f := newFixture(t, fixOpts{timeouts: "  header: " + header.String() + "\n"})
	c := f.dial()
	start := time.Now()
	time.Sleep(header * 7 / 10) // the scenario: a late first byte
	go func() {
		for _, b := range []byte("GET http://" + f.hp("granted.test") + "/ HTTP/1.1\r\nX-Slow: ") {
			if _, err := c.Write([]byte{b}); err != nil {
				return
			}
			time.Sleep(20 * time.Millisecond)
		}
	}()
	expectClosed(t, c, c)
	if took := time.Since(start); took > header*3/2 {
		t.Errorf("cut after %s; want within timeouts.header (%s) of connecting, not a fresh one after the first byte", took, header)
	}
}

// TestFrontAcceptBackoff: temporary accept errors (out of descriptors)
// are waited out, as net/http does, not the end of Serve.
func TestFrontAcceptBackoff(t *testing.T) {
	inner, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ln := &flakyListener{Listener: inner}
	ln.fail.Store(3)
	srv, err := New(Config{
		Policy:   func() *policy.Policy { return mustPolicy(t, "version: 1\nallow: []\n") },
		Resolver: newFakeResolver(),
		Logger:   slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ln) }()
	c, err := net.DialTimeout("tcp", inner.Addr().String(), waitLimit)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(waitLimit))
	resp, _ := sendRaw(t, c, bufio.NewReader(c), connectReq("evil.test:443"))
	if resp.StatusCode != http.StatusForbidden {
		t.Errorf("after temporary accept errors: got %d, want 403", resp.StatusCode)
	}
	if n := ln.fail.Load(); n != 0 {
		t.Errorf("%d temporary errors left unreturned", n)
	}
	ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
	defer cancel()
	_ = srv.Shutdown(ctx)
	if err := <-done; !errors.Is(err, http.ErrServerClosed) {
		t.Errorf("Serve returned %v, want http.ErrServerClosed", err)
	}
}

// flakyListener fails its first fail Accepts with a temporary error.
type flakyListener struct {
	net.Listener
	fail atomic.Int32
}

func (l *flakyListener) Accept() (net.Conn, error) {
	if l.fail.Add(-1) >= 0 {
		return nil, tempErr{}
	}
	l.fail.Store(0)
	return l.Listener.Accept()
}

type tempErr struct{}

func (tempErr) Error() string   { return "accept: too many open files" }
func (tempErr) Timeout() bool   { return false }
func (tempErr) Temporary() bool { return true }

// panicResolver panics for one name, as a bug in the pipeline would.
type panicResolver struct{ *fakeResolver }

func (r panicResolver) LookupNetIP(ctx context.Context, host string) ([]netip.Addr, error) {
	if host == "boom.test" {
		panic("resolver bug")
	}
	return r.fakeResolver.LookupNetIP(ctx, host)
}

// TestFrontPanic: a panic while serving one connection closes that
// connection, as net/http does for a handler, and the proxy serves on.
func TestFrontPanic(t *testing.T) {
	f := newFixture(t, fixOpts{
		extraAllow: func(f *fixture) string { return "  - {host: boom.test, ports: [" + strconv.Itoa(f.echo) + "]}\n" },
		mod:        func(c *Config) { c.Resolver = panicResolver{c.Resolver.(*fakeResolver)} },
	})
	c := f.dial()
	if _, err := io.WriteString(c, connectReq(f.ep("boom.test"))); err != nil {
		t.Fatal(err)
	}
	expectClosed(t, c, c)
	ok, br := f.connect(f.ep("granted.test"))
	echo(t, ok, br, "still serving")
}
