package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/egressd/egressd/internal/operator/ask"
	"github.com/egressd/egressd/internal/run/daemon"
	"github.com/egressd/egressd/internal/shared/resolver/resolvertest"
)

// askServe runs egressd with ask: on, a name later.test resolving to an
// echo server on 127.0.0.2, and returns its addresses, the policy path and
// the echo port.
func askServe(t *testing.T) (daemon.Addrs, string, string) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.2:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() { defer c.Close(); io.Copy(c, c) }()
		}
	}()
	_, port, _ := net.SplitHostPort(ln.Addr().String())
	dns := resolvertest.Start(t, resolvertest.Zone("later.test. 60 IN A 127.0.0.2", "other.test. 60 IN A 127.0.0.2"))
	dir := t.TempDir()
	pol := filepath.Join(dir, "policy.yaml")
	body := fmt.Sprintf(`version: 1
# the test's listeners
listen: {proxy: 127.0.0.1:0, dns: "", gateway: "", admin: 127.0.0.1:0}
resolver: {upstreams: [%s]}
networks: {allow: [127.0.0.0/8]}
allow:
  - host: api.github.com   # kept as written
ask:
  hold: 20s
budget: {ledger: %s}
`, dns.Addr, filepath.Join(dir, "ledger.json"))
	if err := os.WriteFile(pol, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
	a := serveDaemon(t, pol, nil)
	return a, pol, port
}

// heldConnect sends a CONNECT and delivers its status line when answered.
func heldConnect(proxy, target string) <-chan string {
	ch := make(chan string, 1)
	go func() {
		c, err := net.DialTimeout("tcp", proxy, 5*time.Second)
		if err != nil {
			ch <- err.Error()
			return
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(30 * time.Second))
		fmt.Fprintf(c, "CONNECT %s HTTP/1.1\r\nHost: %s\r\n\r\n", target, target)
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			ch <- err.Error()
			return
		}
		ch <- resp.Status
	}()
	return ch
}

// pendingID polls `egressd pending --json` until one question is open.
func pendingID(t *testing.T, adminURL string) ask.Question {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		out, errOut, code := run(t, "pending", "--json", "--admin", adminURL)
		if code != 0 {
			t.Fatalf("pending: exit %d %s", code, errOut)
		}
		var l ask.PendingList
		if err := json.Unmarshal([]byte(out), &l); err != nil {
			t.Fatalf("pending --json: %v\n%s", err, out)
		}
		if len(l.Pending) == 1 && l.Pending[0].Waiting == 1 {
			return l.Pending[0]
		}
		if time.Now().After(deadline) {
			t.Fatalf("no held question within 5s: %s", out)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestPendingApproveAlwaysCheck(t *testing.T) {
	a, pol, port := askServe(t)
	adminURL := "http://" + a.Admin
	before, _ := os.ReadFile(pol)
	held := heldConnect(a.Proxy, "later.test:"+port)
	q := pendingID(t, adminURL)
	out, _, _ := run(t, "pending", "--admin", adminURL)
	if !strings.Contains(out, q.ID) || !strings.Contains(out, "later.test:"+port) || !strings.Contains(out, "1 waiting") {
		t.Errorf("pending: got %q", out)
	}
	out, errOut, code := run(t, "approve", q.ID, "--always", "--admin", adminURL)
	if code != 0 || !strings.Contains(out, "added to policy.yaml") {
		t.Fatalf("approve --always: exit %d out %q err %q", code, out, errOut)
	}
	if got := <-held; !strings.HasPrefix(got, "200") {
		t.Errorf("held CONNECT: got %q, want 200", got)
	}
	after, _ := os.ReadFile(pol)
	// Every byte of the file before is still there, in order; the only
	// new lines are the comment and the entry, right after the last one.
	var kept, added []string
	for _, l := range strings.SplitAfter(string(after), "\n") {
		if strings.HasPrefix(l, "  # approved by cli") || strings.HasPrefix(l, "  - {host: later.test") {
			added = append(added, l)
			continue
		}
		kept = append(kept, l)
	}
	if strings.Join(kept, "") != string(before) {
		t.Errorf("other bytes changed:\n%s", after)
	}
	if len(added) != 2 || !strings.HasSuffix(added[0], " (egressd ask)\n") || added[1] != "  - {host: later.test, ports: ["+port+"]}\n" ||
		!strings.Contains(string(after), "# kept as written\n"+added[0]+added[1]) {
		t.Errorf("added lines: %q", added)
	}
	if out, errOut, code := run(t, "check", pol); code != 0 {
		t.Errorf("check on the edited policy: exit %d %s %s", code, out, errOut)
	}
	if out, _, code := run(t, "explain", "--config", pol, "later.test:"+port); code != 0 || !strings.Contains(out, `allow[1] host: "later.test"`) {
		t.Errorf("explain after always: exit %d %q", code, out)
	}
}

func TestApproveForAndDeny(t *testing.T) {
	a, pol, port := askServe(t)
	adminURL := "http://" + a.Admin
	held := heldConnect(a.Proxy, "later.test:"+port)
	q := pendingID(t, adminURL)
	if out, errOut, code := run(t, "approve", q.ID, "--for", "2h", "--admin", adminURL); code != 0 || !strings.Contains(out, "allowed later.test:"+port+" until") {
		t.Fatalf("approve --for: exit %d %q %q", code, out, errOut)
	}
	if got := <-held; !strings.HasPrefix(got, "200") {
		t.Errorf("held CONNECT: got %q, want 200", got)
	}
	out, _, code := run(t, "explain", "--config", pol, "later.test:"+port)
	if code != 0 || !strings.Contains(out, "ask grant later.test:"+port+" (for, by cli") || !strings.Contains(out, "until ") {
		t.Errorf("explain shows the grant and its expiry: exit %d %q", code, out)
	}
	out, _, _ = run(t, "status", "--admin", adminURL, "--no-color")
	if !strings.Contains(out, "allow later.test:"+port) || !strings.Contains(out, "until") {
		t.Errorf("status lists the grant: %q", out)
	}

	held = heldConnect(a.Proxy, "other.test:"+port)
	q = pendingID(t, adminURL)
	if out, errOut, code := run(t, "deny", q.ID, "--admin", adminURL); code != 0 || !strings.Contains(out, "denied other.test") {
		t.Fatalf("deny: exit %d %q %q", code, out, errOut)
	}
	if got := <-held; got != "403 egressd operator_denied: a person refused this destination" {
		t.Errorf("held CONNECT after deny: got %q", got)
	}
	if _, errOut, code := run(t, "approve", q.ID, "--admin", adminURL); code != 1 || !strings.Contains(errOut, "no such open question") {
		t.Errorf("approve of an answered question: exit %d %q", code, errOut)
	}
	if _, errOut, code := run(t, "approve", "x", "--for", "1h", "--always", "--admin", adminURL); code != 1 || !strings.Contains(errOut, "not both") {
		t.Errorf("--for with --always: exit %d %q", code, errOut)
	}
}
