package clientcheck

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/egressd/egressd/policy"
	"github.com/egressd/egressd/proxy"
)

// token is what a reader must see to know why egressd refused.
const token = "not_allowlisted"

// Targets of the refused requests; nothing resolves them, egressd refuses
// before it would.
const (
	httpsURL = "https://denied.test/x.git"
	httpURL  = "http://denied.test/x"
)

// noResolver fails every lookup: the policy denies before any.
type noResolver struct{}

func (noResolver) LookupNetIP(context.Context, string) ([]netip.Addr, error) {
	return nil, errors.New("no lookups in this test")
}

// startEgressd serves egressd's proxy with an empty allow-list on
// loopback and returns its address.
func startEgressd(t *testing.T) string {
	t.Helper()
	pol, err := policy.LoadBytes([]byte("version: 1\n"), "clients")
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv, err := proxy.New(proxy.Config{
		Policy:   func() *policy.Policy { return pol },
		Resolver: noResolver{},
		Self:     []netip.AddrPort{netip.MustParseAddrPort(ln.Addr().String())},
		Logger:   slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ln) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		_ = srv.Shutdown(ctx)
		<-done
	})
	return ln.Addr().String()
}

// run executes a client binary with a clean environment and returns what
// it printed (stdout and stderr).
func run(t *testing.T, timeout time.Duration, env []string, name string, args ...string) string {
	t.Helper()
	path, err := exec.LookPath(name)
	if err != nil {
		t.Fatalf("%s is needed for this test and is not installed (scripts/test installs it): %v", name, err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, path, args...)
	cmd.Dir = t.TempDir()
	cmd.Env = append([]string{"PATH=/usr/bin:/bin", "HOME=" + cmd.Dir, "LANG=C"}, env...)
	out, err := cmd.CombinedOutput()
	if ctx.Err() != nil {
		t.Fatalf("%s %v did not finish within %v; output:\n%s", name, args, timeout, out)
	}
	var ee *exec.ExitError
	if err != nil && !errors.As(err, &ee) {
		t.Fatalf("%s: %v", name, err)
	}
	return string(out)
}

// goClient is Go's net/http as a program would report the outcome: the
// error, or the response's status.
func goClient(t *testing.T, proxyAddr, target string) string {
	t.Helper()
	c := &http.Client{Timeout: 20 * time.Second, Transport: &http.Transport{
		Proxy: http.ProxyURL(&url.URL{Scheme: "http", Host: proxyAddr}),
	}}
	resp, err := c.Get(target)
	if err != nil {
		return err.Error()
	}
	resp.Body.Close()
	return resp.Status
}

const pyURLLib = `import sys, urllib.request
p = sys.argv[1]
urllib.request.build_opener(urllib.request.ProxyHandler({"http": p, "https": p})).open(sys.argv[2], timeout=20)
`

const pyRequests = `import sys, requests
p = sys.argv[1]
r = requests.get(sys.argv[2], proxies={"http": p, "https": p}, timeout=20)
r.raise_for_status()
`

// pyHTTPX is the HTTP client under the openai and anthropic Python SDKs,
// which Hermes uses for its model calls.
const pyHTTPX = `import sys, httpx
p = sys.argv[1]
r = httpx.get(sys.argv[2], proxies=p, timeout=20)
r.raise_for_status()
`

// chromiumArgs keep Chromium to the proxy: no DNS of its own, no
// background calls, no profile outside the test's directory.
func chromiumArgs(dir, proxyAddr, target string, extra ...string) []string {
	args := []string{
		"--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--no-default-browser-check",
		"--disable-background-networking", "--disable-component-update", "--disable-sync",
		"--disable-features=OptimizationHints,MediaRouter,Translate",
		"--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
		"--user-data-dir=" + filepath.Join(dir, "profile"),
		"--proxy-server=http://" + proxyAddr,
		"--proxy-bypass-list=<-loopback>",
	}
	args = append(args, extra...)
	return append(args, target)
}

// clients are the ways each client is driven to a target; each returns
// what the client printed.
func clients(t *testing.T, proxyAddr string) map[string]func(target string) string {
	proxyURL := "http://" + proxyAddr
	proxyEnv := []string{"http_proxy=" + proxyURL, "https_proxy=" + proxyURL, "HTTPS_PROXY=" + proxyURL}
	return map[string]func(string) string{
		"curl": func(u string) string {
			return run(t, 30*time.Second, nil, "curl", "-sS", "-x", proxyURL, u)
		},
		"curl -v": func(u string) string {
			return run(t, 30*time.Second, nil, "curl", "-sS", "-v", "-x", proxyURL, u)
		},
		"wget": func(u string) string {
			return run(t, 30*time.Second, proxyEnv, "wget", "--tries=1", "-O", "-", u)
		},
		"git clone": func(u string) string {
			return run(t, 30*time.Second, []string{"GIT_CONFIG_NOSYSTEM=1", "GIT_TERMINAL_PROMPT=0"},
				"git", "-c", "http.proxy="+proxyURL, "clone", u, "x")
		},
		"GIT_TRACE_CURL=1 git clone": func(u string) string {
			return run(t, 30*time.Second, []string{"GIT_CONFIG_NOSYSTEM=1", "GIT_TERMINAL_PROMPT=0", "GIT_TRACE_CURL=1"},
				"git", "-c", "http.proxy="+proxyURL, "clone", u, "x")
		},
		"Python urllib": func(u string) string {
			return run(t, 30*time.Second, nil, "/usr/bin/python3", "-c", pyURLLib, proxyURL, u)
		},
		"Python requests": func(u string) string {
			return run(t, 30*time.Second, nil, "/usr/bin/python3", "-c", pyRequests, proxyURL, u)
		},
		"Python httpx": func(u string) string {
			return run(t, 30*time.Second, nil, "/usr/bin/python3", "-c", pyHTTPX, proxyURL, u)
		},
		"Go net/http": func(u string) string { return goClient(t, proxyAddr, u) },
		"Chromium": func(u string) string {
			dir := t.TempDir()
			return run(t, 90*time.Second, nil, "chromium", chromiumArgs(dir, proxyAddr, u, "--dump-dom")...)
		},
	}
}

func TestClientsShowReason(t *testing.T) {
	addr := startEgressd(t)
	drive := clients(t, addr)
	for _, v := range views {
		t.Run(v.client, func(t *testing.T) {
			f, ok := drive[v.client]
			if !ok {
				t.Fatalf("no way to drive %q", v.client)
			}
			for _, c := range []struct {
				target string
				want   bool
			}{{httpsURL, v.https}, {httpURL, v.http}} {
				out := f(c.target)
				t.Logf("%s %s printed:\n%s", v.client, c.target, out)
				if got := strings.Contains(out, token); got != c.want {
					t.Errorf("%s %s: reason shown = %v, want %v; it printed:\n%s", v.client, c.target, got, c.want, out)
				}
			}
		})
	}
	if len(drive) != len(views) {
		t.Errorf("%d clients driven, %d in the table", len(drive), len(views))
	}
}

// TestREADMETable: the README's table is the one the test above checks.
func TestREADMETable(t *testing.T) {
	b, err := os.ReadFile("../../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	got := readmeTable(string(b))
	want := tableRows()
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("README.md %q table:\n got\n%s\nwant (from views in table.go)\n%s",
			tableHeading, strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}
