package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/egressd/egressd/internal/lib/testutil"

	"github.com/egressd/egressd/internal/run/daemon"
)

// serveDaemon runs egressd in-process on the policy at pol (env, when not
// nil, is its environment) until the test ends, and returns its listeners.
func serveDaemon(t *testing.T, pol string, env func(string) string) daemon.Addrs {
	t.Helper()
	ready := make(chan daemon.Addrs, 1)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- daemon.Run(ctx, daemon.Options{ConfigPath: pol, Stdout: io.Discard, Env: env,
			Logger: slog.New(slog.DiscardHandler), Ready: func(a daemon.Addrs) { ready <- a }})
	}()
	var a daemon.Addrs
	select {
	case a = <-ready:
	case err := <-done:
		t.Fatalf("serve: %v", err)
	case <-time.After(10 * time.Second):
		t.Fatal("serve not ready")
	}
	t.Cleanup(func() { cancel(); <-done })
	return a
}

// serveForTest runs egressd in-process on loopback ports with a decision
// log file, until the test ends.
func serveForTest(t *testing.T) (daemon.Addrs, string) {
	t.Helper()
	dir := t.TempDir()
	logPath := filepath.Join(dir, "decisions.log")
	pol := filepath.Join(dir, "policy.yaml")
	body := fmt.Sprintf("version: 1\nlisten: {proxy: 127.0.0.1:0, dns: \"\", gateway: \"\", admin: 127.0.0.1:0}\nresolver: {upstreams: [127.0.0.1:1]}\nlog: {file: %s}\nallow:\n  - host: api.github.com\n", logPath)
	if err := os.WriteFile(pol, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
	a := serveDaemon(t, pol, nil)
	return a, logPath
}

// deny makes the proxy deny one CONNECT to host (never resolved: it is not
// granted).
func deny(t *testing.T, proxy, host string) {
	t.Helper()
	c := &http.Client{Transport: &http.Transport{Proxy: http.ProxyURL(&url.URL{Scheme: "http", Host: proxy})}, Timeout: 5 * time.Second}
	resp, err := c.Get("http://" + host + "/")
	if err != nil {
		t.Fatalf("GET via proxy: %v", err)
	}
	resp.Body.Close()
	if resp.StatusCode != 403 {
		t.Fatalf("GET %s via proxy: status %d, want 403", host, resp.StatusCode)
	}
}

func TestStatusTailSuggestAgainstRunningEgressd(t *testing.T) {
	a, logPath := serveForTest(t)
	adminURL := "http://" + a.Admin

	// tail -f --admin follows the live stream.
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var tailOut testutil.Buffer
	tailDone := make(chan error, 1)
	go func() {
		root := newRootCmd()
		root.SetOut(&tailOut)
		root.SetErr(io.Discard)
		root.SetArgs([]string{"tail", "-f", "--denied", "--admin", adminURL, "--no-color"})
		tailDone <- root.ExecuteContext(ctx)
	}()
	// The stream only carries what happens after it connects, so keep
	// denying until one arrives (each try is a distinct real denial).
	deadline := time.Now().Add(10 * time.Second)
	for i := 0; !strings.Contains(tailOut.String(), "not_allowlisted"); i++ {
		if time.Now().After(deadline) {
			t.Fatalf("tail -f --admin printed no denial within 10s: %q", tailOut.String())
		}
		deny(t, a.Proxy, fmt.Sprintf("x%d.cdn.example", i))
		time.Sleep(50 * time.Millisecond)
	}
	cancel()
	if err := <-tailDone; err != nil {
		t.Errorf("tail -f ended with %v, want a clean end on interrupt", err)
	}

	for _, h := range []string{"a.cdn.example", "b.cdn.example", "pypi.org"} {
		deny(t, a.Proxy, h)
	}
	out, errOut, code := run(t, "status", "--admin", adminURL, "--json")
	if code != 0 {
		t.Fatalf("status: exit %d: %s", code, errOut)
	}
	var st struct {
		Ready  bool `json:"ready"`
		Policy struct {
			Rules int `json:"rules"`
		} `json:"policy"`
		RecentDenials []struct {
			Host string `json:"host"`
		} `json:"recent_denials"`
	}
	if err := json.Unmarshal([]byte(out), &st); err != nil {
		t.Fatalf("status --json: %v\n%s", err, out)
	}
	if !st.Ready || st.Policy.Rules != 1 || !strings.Contains(out, "pypi.org") {
		t.Errorf("status = %s; want ready, 1 rule, pypi.org among recent denials", out)
	}
	out, _, code = run(t, "status", "--admin", adminURL, "--no-color")
	if code != 0 || !strings.Contains(out, "pypi.org") {
		t.Errorf("status (for a person): exit %d\n%s", code, out)
	}

	// The decision log file is written behind a queue: wait for the last
	// denial to land, then suggest from it.
	deadline = time.Now().Add(10 * time.Second)
	for {
		b, _ := os.ReadFile(logPath)
		if bytes.Contains(b, []byte(`"host":"pypi.org"`)) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("pypi.org denial not in %s within 10s", logPath)
		}
		time.Sleep(20 * time.Millisecond)
	}
	out, errOut, code = run(t, "suggest", "--file", logPath)
	if code != 0 {
		t.Fatalf("suggest: exit %d: %s", code, errOut)
	}
	for _, want := range []string{`"*.cdn.example"`, `"pypi.org"`} {
		if !strings.Contains(out, want) {
			t.Errorf("suggest lacks %s:\n%s", want, out)
		}
	}
}
