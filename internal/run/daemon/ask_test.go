package daemon

import (
	"bufio"
	"bytes"
	"context"
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
	"github.com/egressd/egressd/policy"
)

// askPolicy is policyText with ask: on and the data directory in dir.
func askPolicy(dns, port, dir, hold string, grants ...string) string {
	return policyText(dns, port, grants...) + "ask:\n  hold: " + hold + "\nbudget:\n  ledger: " + filepath.Join(dir, "ledger.json") + "\n"
}

type connectResult struct {
	status string
	conn   net.Conn
	br     *bufio.Reader
	err    error
}

// connectAsync sends a CONNECT and reports its answer when it comes.
func connectAsync(proxy, target string) <-chan connectResult {
	ch := make(chan connectResult, 1)
	go func() {
		c, err := net.DialTimeout("tcp", proxy, 5*time.Second)
		if err != nil {
			ch <- connectResult{err: err}
			return
		}
		c.SetDeadline(time.Now().Add(30 * time.Second))
		fmt.Fprintf(c, "CONNECT %s HTTP/1.1\r\nHost: %s\r\n\r\n", target, target)
		br := bufio.NewReader(c)
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			c.Close()
			ch <- connectResult{err: err}
			return
		}
		ch <- connectResult{status: resp.Status, conn: c, br: br}
	}()
	return ch
}

func (r *running) pending(t *testing.T) ask.PendingList {
	t.Helper()
	resp, err := http.Get("http://" + r.addrs.Admin + ask.PathPending)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var l ask.PendingList
	if err := json.NewDecoder(resp.Body).Decode(&l); err != nil {
		t.Fatal(err)
	}
	return l
}

// waitQuestion polls /pending until a question with a held request is open.
func (r *running) waitQuestion(t *testing.T) ask.Question {
	t.Helper()
	var q ask.Question
	eventually(t, "a question with a held request", func() bool {
		l := r.pending(t)
		if len(l.Pending) == 1 && l.Pending[0].Waiting == 1 {
			q = l.Pending[0]
			return true
		}
		return false
	})
	return q
}

func (r *running) answer(t *testing.T, path string, req ask.AnswerRequest) (int, string) {
	t.Helper()
	b, _ := json.Marshal(req)
	resp, err := http.Post("http://"+r.addrs.Admin+path, "application/json", bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body)
}

func TestAskOnceThroughTheAdminAPI(t *testing.T) {
	port := echoServer(t)
	_, _, dns := upstreams(t)
	dir := t.TempDir()
	r := start(t, askPolicy(dns.Addr, port, dir, "20s", "granted.test"))
	dnsRes := &net.Resolver{PreferGo: true, Dial: func(ctx context.Context, network, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, network, r.addrs.DNS)
	}}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	for range 2 { // twice: the second answer may come from DNS's reply cache
		if addrs, err := dnsRes.LookupHost(ctx, "later.test"); err == nil {
			t.Fatalf("DNS answered an ungranted name: %v", addrs)
		}
	}
	held := connectAsync(r.addrs.Proxy, "later.test:"+port)
	q := r.waitQuestion(t)
	if q.Host != "later.test" || q.Client != "127.0.0.1" || q.Reason != "not_allowlisted" {
		t.Errorf("question: got %+v", q)
	}
	// The console at / on the admin listener shows it.
	resp, err := http.Get("http://" + r.addrs.Admin + "/")
	if err != nil {
		t.Fatal(err)
	}
	page, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || !strings.Contains(string(page), `id="q-`+q.ID+`"`) || resp.Header.Get("Content-Security-Policy") == "" {
		t.Errorf("console: %d, question shown %v", resp.StatusCode, strings.Contains(string(page), q.ID))
	}
	if code, body := r.answer(t, ask.PathApprove, ask.AnswerRequest{ID: q.ID, By: "test"}); code != 200 {
		t.Fatalf("approve: %d %s", code, body)
	}
	res := <-held
	if res.err != nil || !strings.HasPrefix(res.status, "200") {
		t.Fatalf("held CONNECT after allow once: %q %v, want 200", res.status, res.err)
	}
	defer res.conn.Close()
	io.WriteString(res.conn, "ping\n")
	if line, err := res.br.ReadString('\n'); line != "ping\n" {
		t.Errorf("tunnel after approval: %q %v", line, err)
	}
	// The state file beside the ledger holds the grant.
	if b, err := os.ReadFile(filepath.Join(dir, "ask-grants.json")); err != nil || !strings.Contains(string(b), `"host": "later.test"`) {
		t.Errorf("grants file: %s %v", b, err)
	}
	if l := r.pending(t); len(l.Pending) != 0 || len(l.Grants) != 1 || l.Grants[0].Kind != "once" {
		t.Errorf("after the answer: %+v", l)
	}
	// The decision log has the question and who answered it.
	eventually(t, "ask entries in the decision log", func() bool {
		log := r.log.String()
		return strings.Contains(log, `"event":"ask"`) && strings.Contains(log, `"rule":"question `+q.ID+` asked"`) &&
			strings.Contains(log, `"rule":"question `+q.ID+` answered once by test"`)
	})
	// DNS never held the name, but answers it while the grant stands.
	if addrs, err := dnsRes.LookupHost(ctx, "later.test"); err != nil || len(addrs) == 0 || addrs[0] != "127.0.0.2" {
		t.Errorf("DNS for a granted name: %v %v, want [127.0.0.2]", addrs, err)
	}
}

func TestAskTimeoutThenDeny(t *testing.T) {
	port := echoServer(t)
	_, _, dns := upstreams(t)
	r := start(t, askPolicy(dns.Addr, port, t.TempDir(), "200ms"))
	res := <-connectAsync(r.addrs.Proxy, "later.test:"+port)
	if res.err != nil || res.status != "403 egressd approval_pending: a person was asked; retry in 30s" {
		t.Fatalf("unanswered: got %q %v", res.status, res.err)
	}
	res.conn.Close()
	l := r.pending(t)
	if len(l.Pending) != 1 {
		t.Fatalf("the question must stay open after the hold: %+v", l)
	}
	if code, body := r.answer(t, ask.PathDeny, ask.AnswerRequest{ID: l.Pending[0].ID, By: "test"}); code != 200 {
		t.Fatalf("deny: %d %s", code, body)
	}
	start := time.Now()
	res = <-connectAsync(r.addrs.Proxy, "later.test:"+port)
	if res.err != nil || res.status != "403 egressd operator_denied: a person refused this destination" {
		t.Errorf("after deny: got %q %v", res.status, res.err)
	}
	if time.Since(start) > 150*time.Millisecond {
		t.Errorf("a remembered deny was held %v; want an answer at once", time.Since(start))
	}
	if code, _ := r.answer(t, ask.PathDeny, ask.AnswerRequest{ID: l.Pending[0].ID}); code != 404 {
		t.Errorf("answering a closed question: got %d, want 404", code)
	}
}

func TestAskAlwaysEditsThePolicy(t *testing.T) {
	port := echoServer(t)
	_, _, dns := upstreams(t)
	r := start(t, askPolicy(dns.Addr, port, t.TempDir(), "20s", "granted.test"))
	before, _ := os.ReadFile(r.path)
	held := connectAsync(r.addrs.Proxy, "later.test:"+port)
	q := r.waitQuestion(t)
	code, body := r.answer(t, ask.PathApprove, ask.AnswerRequest{ID: q.ID, Always: true, By: "test"})
	if code != 200 || !strings.Contains(body, "added to policy.yaml") {
		t.Fatalf("approve always: %d %s", code, body)
	}
	if res := <-held; res.err != nil || !strings.HasPrefix(res.status, "200") {
		t.Fatalf("held CONNECT after always: %q %v", res.status, res.err)
	} else {
		res.conn.Close()
	}
	after, _ := os.ReadFile(r.path)
	want := "  - {host: later.test, ports: [" + port + "]}\n"
	lines := strings.SplitAfter(string(after), "\n")
	var kept []string
	inserted := 0
	for _, l := range lines {
		if l == want || strings.HasPrefix(l, "  # approved by test at ") && strings.HasSuffix(l, " (egressd ask)\n") {
			inserted++
			continue
		}
		kept = append(kept, l)
	}
	if inserted != 2 || strings.Join(kept, "") != string(before) {
		t.Errorf("policy after always:\n%s\nwant the old file byte for byte plus a comment and %q", after, want)
	}
	if _, err := policy.Load(r.path); err != nil { // what egressd check runs
		t.Errorf("edited policy does not load: %v", err)
	}
	// A fresh CONNECT is allowed by policy.yaml itself, not a grant.
	c := connect(t, r.addrs.Proxy, "later.test:"+port)
	c.Close()
	eventually(t, "allow logged with the new rule", func() bool {
		return strings.Contains(r.log.String(), `"rule":"allow[1] host: \"later.test\"`)
	})
}
