package daemon

import (
	"context"
	"errors"
	"fmt"
	"github.com/egressd/egressd/internal/lib/testutil"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/egressd/egressd/internal/shared/resolver/resolvertest"
)

type running struct {
	addrs  Addrs
	path   string
	log    *testutil.Buffer
	reload chan struct{}
	client *http.Client
}

func policyText(upstream, port string, grants ...string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "version: 1\nlisten:\n  proxy: 127.0.0.1:0\n  dns: 127.0.0.1:0\n  gateway: \"\"\n  admin: 127.0.0.1:0\n")
	fmt.Fprintf(&b, "resolver:\n  upstreams: [%s]\n", upstream)
	b.WriteString("networks:\n  allow: [127.0.0.0/8]\nallow:\n")
	for _, g := range grants {
		fmt.Fprintf(&b, "  - host: %s\n    ports: [%s]\n", g, port)
	}
	if len(grants) == 0 {
		b.WriteString("  []\n")
	}
	return b.String()
}

// start runs the daemon on a policy file until the test ends.
func start(t *testing.T, body string) *running {
	t.Helper()
	return startWith(t, body, nil)
}

// startWith is start with mod applied to the Options.
func startWith(t *testing.T, body string, mod func(*Options)) *running {
	t.Helper()
	dir := t.TempDir()
	r := &running{path: filepath.Join(dir, "policy.yaml"), log: &testutil.Buffer{}, reload: make(chan struct{})}
	if err := os.WriteFile(r.path, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
	ready := make(chan Addrs, 1)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	opts := Options{
		ConfigPath: r.path, Stdout: r.log, Reload: r.reload,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
		Ready:  func(a Addrs) { ready <- a },
	}
	if mod != nil {
		mod(&opts)
	}
	go func() { done <- Run(ctx, opts) }()
	select {
	case r.addrs = <-ready:
	case err := <-done:
		t.Fatalf("Run returned before ready: %v", err)
	case <-time.After(10 * time.Second):
		t.Fatal("daemon not ready within 10s")
	}
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	proxyURL := &url.URL{Scheme: "http", Host: r.addrs.Proxy}
	r.client = &http.Client{Transport: &http.Transport{Proxy: http.ProxyURL(proxyURL), DisableKeepAlives: true}, Timeout: 10 * time.Second}
	return r
}

// get fetches url through the proxy: status and X-Egressd-Reason.
func (r *running) get(t *testing.T, u string) (int, string) {
	t.Helper()
	resp, err := r.client.Get(u)
	if err != nil {
		t.Fatalf("GET %s: %v", u, err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode, resp.Header.Get("X-Egressd-Reason")
}

// eventually polls cond until it holds or the deadline passes.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within 5s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func upstreams(t *testing.T) (*httptest.Server, string, *resolvertest.Upstream) {
	t.Helper()
	// The web server is on 127.0.0.2: 127.0.0.1 is egressd's own address,
	// which DNS answers never contain.
	web := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, "hello") }))
	ln, err := net.Listen("tcp", "127.0.0.2:0")
	if err != nil {
		t.Fatal(err)
	}
	web.Listener = ln
	web.Start()
	t.Cleanup(web.Close)
	_, port, _ := net.SplitHostPort(web.Listener.Addr().String())
	dns := resolvertest.Start(t, resolvertest.Zone(
		"granted.test. 60 IN A 127.0.0.2",
		"later.test. 60 IN A 127.0.0.2",
		"self.test. 60 IN A 127.0.0.1",
	))
	return web, port, dns
}

func TestServeGrantsDeniesAndReloads(t *testing.T) {
	_, port, dns := upstreams(t)
	r := start(t, policyText(dns.Addr, port, "granted.test"))

	if code, reason := r.get(t, "http://granted.test:"+port+"/"); code != 200 {
		t.Fatalf("granted: status %d reason %q, want 200", code, reason)
	}
	if code, reason := r.get(t, "http://later.test:"+port+"/"); code != 403 || reason != "not_allowlisted" {
		t.Fatalf("ungranted: status %d reason %q, want 403 not_allowlisted", code, reason)
	}
	if n := dns.Count("later.test.", 1); n != 0 {
		t.Errorf("upstream saw %d queries for an ungranted name, want 0", n)
	}

	// A valid edit applies without a restart.
	if err := os.WriteFile(r.path, []byte(policyText(dns.Addr, port, "granted.test", "later.test")), 0o644); err != nil {
		t.Fatal(err)
	}
	eventually(t, "new grant applied", func() bool {
		code, _ := r.get(t, "http://later.test:"+port+"/")
		return code == 200
	})

	// A broken edit is ignored: the last good policy stays in force.
	if err := os.WriteFile(r.path, []byte("version: 1\nallow:\n  - hots: typo.test\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	r.reload <- struct{}{} // SIGHUP: the reload has happened once this send is taken and the next one is
	r.reload <- struct{}{}
	if code, reason := r.get(t, "http://later.test:"+port+"/"); code != 200 {
		t.Errorf("after a broken edit: status %d reason %q, want 200 (last good policy)", code, reason)
	}
}

func TestServeNeverDialsItself(t *testing.T) {
	_, port, dns := upstreams(t)
	r := start(t, policyText(dns.Addr, port, "granted.test"))
	_, adminPort, _ := net.SplitHostPort(r.addrs.Admin)
	body := policyText(dns.Addr, adminPort, "self.test")
	if err := os.WriteFile(r.path, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
	r.reload <- struct{}{}
	r.reload <- struct{}{}
	// self.test resolves to 127.0.0.1, which networks.allow permits, and
	// the port is granted: only the self check stands between the agent and
	// the admin listener.
	if code, reason := r.get(t, "http://self.test:"+adminPort+"/healthz"); code != 403 || reason != "self_address" {
		t.Errorf("proxying to egressd's own admin port: status %d reason %q, want 403 self_address", code, reason)
	}
}

func TestServeDNS(t *testing.T) {
	_, port, dns := upstreams(t)
	r := start(t, policyText(dns.Addr, port, "granted.test"))
	res := &net.Resolver{PreferGo: true, Dial: func(ctx context.Context, network, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, network, r.addrs.DNS)
	}}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	addrs, err := res.LookupHost(ctx, "granted.test")
	if err != nil || len(addrs) == 0 || addrs[0] != "127.0.0.2" {
		t.Errorf("granted name: %v %v, want [127.0.0.2]", addrs, err)
	}
	_, err = res.LookupHost(ctx, "later.test")
	var dnsErr *net.DNSError
	if !errors.As(err, &dnsErr) || !dnsErr.IsNotFound {
		t.Errorf("ungranted name: error %v, want not found (NXDOMAIN)", err)
	}
	if n := dns.Count("later.test.", 1); n != 0 {
		t.Errorf("upstream saw %d queries for an ungranted name, want 0", n)
	}
	eventually(t, "DNS decision logged", func() bool {
		return strings.Contains(r.log.String(), `"proto":"dns","host":"later.test"`)
	})
}
