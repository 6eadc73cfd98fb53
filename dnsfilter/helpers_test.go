package dnsfilter

import (
	"context"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/egressd/egressd/internal/lib/testutil"
	"github.com/egressd/egressd/internal/shared/declog/declogtest"
	"github.com/egressd/egressd/internal/shared/resolver"
	"github.com/egressd/egressd/internal/shared/resolver/resolvertest"
	"github.com/egressd/egressd/policy"
)

// basePolicy grants one name and one wildcard; tests append to it.
const basePolicy = `version: 1
allow:
  - host: granted.example
  - host: "*.wild.example"
limits:
  dns: {rps: 1000, burst: 1000}
`

func loadPolicy(tb testing.TB, yaml string) *policy.Policy {
	tb.Helper()
	path := filepath.Join(tb.TempDir(), "policy.yaml")
	if err := os.WriteFile(path, []byte(yaml), 0o600); err != nil {
		tb.Fatal(err)
	}
	p, err := policy.Load(path)
	if err != nil {
		tb.Fatalf("policy.Load: %v", err)
	}
	return p
}

// testEnv is a server wired to a real resolver and an in-process upstream.
type testEnv struct {
	up    *resolvertest.Upstream
	res   *resolver.Resolver
	srv   *Server
	rec   *declogtest.Recorder
	clock *testutil.Clock
}

func newEnv(tb testing.TB, policyYAML string, h resolvertest.Handler) *testEnv {
	tb.Helper()
	p := loadPolicy(tb, policyYAML)
	e := &testEnv{
		up:    resolvertest.Start(tb, h),
		rec:   &declogtest.Recorder{},
		clock: testutil.NewClock(time.Date(2026, 3, 4, 5, 6, 7, 0, time.UTC)),
	}
	e.res = resolver.New(resolver.Config{Upstreams: []string{e.up.Addr}, Timeout: 300 * time.Millisecond, Clock: e.clock.Now})
	e.srv = New(Config{
		Policy:   func() *policy.Policy { return p },
		Resolver: e.res,
		Recorder: e.rec,
		Clock:    e.clock.Now,
	})
	return e
}

// testWriter is a dns.ResponseWriter that keeps the reply after a round
// trip through the wire format, as the client would see it.
type testWriter struct {
	remote net.Addr
	reply  *dns.Msg
	raw    []byte // the last reply's bytes
	size   int
	writes int
}

func newWriter() *testWriter {
	return &testWriter{remote: &net.UDPAddr{IP: net.IPv4(172, 30, 0, 2), Port: 40000}}
}

func (w *testWriter) LocalAddr() net.Addr  { return &net.UDPAddr{IP: net.IPv4(172, 30, 0, 1), Port: 53} }
func (w *testWriter) RemoteAddr() net.Addr { return w.remote }
func (w *testWriter) WriteMsg(m *dns.Msg) error {
	b, err := m.Pack()
	if err != nil {
		return err
	}
	_, err = w.Write(b)
	return err
}
func (w *testWriter) Write(b []byte) (int, error) {
	w.writes++
	w.size = len(b)
	w.raw = append([]byte(nil), b...)
	w.reply = new(dns.Msg)
	return len(b), w.reply.Unpack(b)
}
func (w *testWriter) Close() error        { return nil }
func (w *testWriter) TsigStatus() error   { return nil }
func (w *testWriter) TsigTimersOnly(bool) {}
func (w *testWriter) Hijack()             {}

func mkQuery(name string, qtype uint16) *dns.Msg {
	m := new(dns.Msg)
	m.SetQuestion(name, qtype)
	return m
}

// ask sends q through the handler and returns the reply.
func (e *testEnv) ask(tb testing.TB, q *dns.Msg) *dns.Msg {
	tb.Helper()
	w := newWriter()
	e.srv.ServeDNS(w, q)
	if w.writes != 1 {
		tb.Fatalf("%s: got %d replies, want 1", q.Question[0].Name, w.writes)
	}
	return w.reply
}

func answerAddrs(m *dns.Msg) []string {
	var out []string
	for _, rr := range m.Answer {
		if a, ok := resolver.RRAddr(rr); ok {
			out = append(out, a.String())
		}
	}
	return out
}

// serveSockets runs e's server on fresh loopback UDP and TCP sockets and
// returns their addresses. stop cancels Serve and returns what it
// returned; a Serve that does not return within 10s fails the test.
func serveSockets(t *testing.T, e *testEnv) (udp, tcp string, stop func() error) {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- e.srv.Serve(ctx, pc, ln) }()
	return pc.LocalAddr().String(), ln.Addr().String(), func() error {
		cancel()
		select {
		case err := <-done:
			return err
		case <-time.After(10 * time.Second):
			t.Fatal("Serve did not return within 10s of cancel")
			return nil
		}
	}
}
