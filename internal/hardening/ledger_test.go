//go:build hardening

package hardening

import (
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/egressd/egressd/internal/shared/vocab"

	"github.com/egressd/egressd/internal/shared/meter"
)

const (
	agentToken = "hardening-agent-token"
	realKey    = "sk-hardening-real-key"
	// callNano is what one call costs: 1,000 prompt and 1,000 completion
	// tokens at $1 per million each, in nano-USD.
	callNano = 2_000_000
)

// provider is a fake OpenAI-format provider on upstreamIP.
type provider struct {
	url   string
	calls atomic.Int64
}

func startProvider(t *testing.T) *provider {
	t.Helper()
	ln, err := net.Listen("tcp", upstreamIP+":0")
	if err != nil {
		t.Fatal(err)
	}
	p := &provider{url: "http://" + ln.Addr().String()}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		if r.Header.Get("Authorization") != "Bearer "+realKey {
			http.Error(w, "wrong key", http.StatusUnauthorized)
			return
		}
		p.calls.Add(1)
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, `{"id":"c1","object":"chat.completion","model":"test-model","choices":[{"index":0,"message":{"role":"assistant","content":"ok"},"finish_reason":"stop"}],"usage":{"prompt_tokens":1000,"completion_tokens":1000,"total_tokens":2000}}`)
	})}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return p
}

// gatewayPolicy is a policy with the gateway on, one fake provider and the
// ledger at ledger.
func gatewayPolicy(p *provider, ledger string) policyFile {
	return policyFile{
		DNS:       []string{"127.0.0.1:1"},
		Gateway:   true,
		NetAllow:  []string{upstreamIP + "/32"}, // the gateway checks provider addresses too
		Unlimited: true,
		Providers: fmt.Sprintf(`  fake:
    upstream: %s
    format: openai
    api_key_env: FAKE_KEY
    client_token_env: FAKE_TOKEN
`, p.url),
		Budget: fmt.Sprintf(`  cap_usd: 1000
  period: total
  ledger: %s
  prices:
    test-model: {input: 1, output: 1}
`, ledger),
	}
}

var gatewayEnv = []string{"FAKE_KEY=" + realKey, "FAKE_TOKEN=" + agentToken}

// gwCall makes one metered call through the gateway.
func gwCall(e *proc) reply {
	body := `{"model":"test-model","max_tokens":10,"messages":[{"role":"user","content":"hi"}]}`
	req, _ := http.NewRequest("POST", "http://"+e.a().Gateway+"/fake/v1/chat/completions", strings.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+agentToken)
	req.Header.Set("Content-Type", "application/json")
	c := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{Proxy: nil, DisableKeepAlives: true}}
	resp, err := c.Do(req)
	if err != nil {
		return reply{Err: err}
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return reply{Status: resp.StatusCode, Reason: resp.Header.Get("X-Egressd-Reason"), Body: string(b), Err: err}
}

// ledgerNano reads the period's spend (nano-USD) from the ledger (its
// snapshot with the journal replayed, as a restart would see it); it fails
// the test if the ledger does not read.
func ledgerNano(t *testing.T, path string) int64 {
	t.Helper()
	l, err := meter.ReadLedger(path)
	if err != nil {
		t.Fatalf("read ledger: %v", err)
	}
	return l.SpentNano
}

// waitLedger waits for the ledger file to hold want nano-USD.
func waitLedger(t *testing.T, path string, want int64, when string) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		got := ledgerNano(t, path)
		if got == want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("ledger %s: got %d nano-USD, want %d", when, got, want)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// mountTmpfs mounts a small tmpfs on a fresh directory and unmounts it when
// the test ends (after anything registered later, such as egressd itself).
func mountTmpfs(t *testing.T, size string) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "egressd-ledger-")
	if err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size="+size+",mode=0777", "tmpfs", dir).CombinedOutput(); err != nil {
		os.Remove(dir)
		t.Fatalf("mount tmpfs: %v: %s", err, out)
	}
	t.Cleanup(func() {
		if out, err := exec.Command("umount", dir).CombinedOutput(); err != nil {
			t.Errorf("umount %s: %v: %s", dir, err, out)
			exec.Command("umount", "-l", dir).Run()
		}
		os.Remove(dir)
	})
	return dir
}

func remount(t *testing.T, dir, mode string) {
	t.Helper()
	if out, err := exec.Command("mount", "-o", "remount,"+mode, dir).CombinedOutput(); err != nil {
		t.Fatalf("remount %s %s: %v: %s", dir, mode, err, out)
	}
}

// fill takes every free byte of the filesystem holding dir.
func fill(t *testing.T, dir string) string {
	t.Helper()
	path := filepath.Join(dir, "filler")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	buf := make([]byte, 4096)
	for {
		if _, err := f.Write(buf); err != nil {
			if !errors.Is(err, syscall.ENOSPC) {
				t.Fatalf("fill: %v", err)
			}
			return path
		}
	}
}

// ledgerFault runs the script of the ledger-full test (any filesystem
// fault under a running egressd): spend, break the filesystem, see calls
// refused (fail closed, logged, the provider not called), repair it, and
// check that every call that was answered is in the ledger, also after a
// restart.
func ledgerFault(t *testing.T, breakFS, repair func()) {
	dir := mountTmpfs(t, "64k")
	prov := startProvider(t)
	ledger := filepath.Join(dir, "ledger.json")
	e := startEgressd(t, gatewayPolicy(prov, ledger), gatewayEnv...)
	ok := 0
	for range 3 {
		if r := gwCall(e); r.Status != 200 {
			t.Fatalf("metered call before the fault: got %v, want 200", r)
		}
		ok++
	}
	// A call is settled just after its answer is sent: wait for the write.
	waitLedger(t, ledger, int64(ok)*callNano, "before the fault")

	breakFS()
	ok += failClosed(t, e, prov)
	e.log.wait(t, logWait, match{Event: "decision", Proto: "gateway", Reason: vocab.ReasonLedgerUnavailable, Denied: true})
	e.alive(t)

	repair()
	// Refused calls retry the write at most once a second.
	eventually(t, 10*time.Second, "a metered call succeeds once the ledger is writable", func() bool {
		if gwCall(e).Status == 200 {
			ok++
			return true
		}
		return false
	})
	waitLedger(t, ledger, int64(ok)*callNano, "after the repair (every answered call)")
	if n := prov.calls.Load(); n != int64(ok) {
		t.Errorf("the provider answered %d calls, the agent got %d", n, ok)
	}
	// And across a restart.
	e.signal(t, syscall.SIGTERM)
	if _, exited := e.waitExit(10 * time.Second); !exited {
		t.Fatal("egressd did not stop on SIGTERM")
	}
	e.start(t)
	if got := ledgerNano(t, ledger); got != int64(ok)*callNano {
		t.Errorf("ledger after a restart: got %d nano-USD, want %d", got, ok*callNano)
	}
	if r := gwCall(e); r.Status != 200 {
		t.Errorf("metered call after the restart: got %v, want 200", r)
	}
}

// failClosed checks metered calls once the ledger cannot be written. A
// reservation or settle is one small journal append, which can still land
// in the slack of the journal's last allocated page on a full filesystem,
// so calls may be answered (and recorded) for a while; once an append
// fails, every call is refused without reaching the provider until a new
// snapshot can be written. It returns how many calls were answered.
func failClosed(t *testing.T, e *proc, prov *provider) int {
	t.Helper()
	answered := 0
	for i := 0; ; i++ {
		if i == 64 {
			t.Fatalf("64 metered calls answered with the ledger's filesystem full; want refusals once the journal's slack is used up")
		}
		before := prov.calls.Load()
		r := gwCall(e)
		if r.Status == 200 {
			answered++
			continue
		}
		if r.Status != http.StatusServiceUnavailable || r.Reason != vocab.ReasonLedgerUnavailable.String() {
			t.Fatalf("call %d with the ledger's filesystem full: got %v, want 200 or 503 ledger_unavailable", i, r)
		}
		if prov.calls.Load() != before {
			t.Errorf("call %d was refused but reached the provider", i)
		}
		break
	}
	expectRefused(t, e, prov, 4, "after the first refusal")
	return answered
}

// expectRefused makes n metered calls and checks each is refused with
// 503 ledger_unavailable without reaching the provider.
func expectRefused(t *testing.T, e *proc, prov *provider, n int, when string) {
	t.Helper()
	for i := range n {
		before := prov.calls.Load()
		if r := gwCall(e); r.Status != http.StatusServiceUnavailable || r.Reason != vocab.ReasonLedgerUnavailable.String() {
			t.Errorf("call %d %s: got %v, want 503 ledger_unavailable", i, when, r)
		}
		if prov.calls.Load() != before {
			t.Errorf("call %d %s reached the provider", i, when)
		}
	}
}

// TestLedgerFull: the ledger's filesystem fills up.
func TestLedgerFull(t *testing.T) {
	var filler string
	var dir string
	ledgerFault(t,
		func() {
			dir = mountedLedgerDir(t)
			filler = fill(t, dir)
		},
		func() { os.Remove(filler) })
}

// TestLedgerReadOnly: egressd starts on a ledger whose filesystem is
// read-only. (A read-only remount under a running egressd is refused by
// the kernel while the journal is open for appending; the kernel's own
// emergency remount fails appends like a full disk, which TestLedgerFull
// covers.) Every metered call is refused without reaching the provider,
// the rest of egressd keeps working, and a restart on the repaired
// filesystem finds every answered call.
func TestLedgerReadOnly(t *testing.T) {
	dir := mountTmpfs(t, "64k")
	prov := startProvider(t)
	ledger := filepath.Join(dir, "ledger.json")
	e := startEgressd(t, gatewayPolicy(prov, ledger), gatewayEnv...)
	for range 3 {
		if r := gwCall(e); r.Status != 200 {
			t.Fatalf("metered call before the fault: got %v, want 200", r)
		}
	}
	waitLedger(t, ledger, 3*callNano, "before the fault")
	stop := func() {
		e.signal(t, syscall.SIGTERM)
		if _, exited := e.waitExit(10 * time.Second); !exited {
			t.Fatal("egressd did not stop on SIGTERM")
		}
	}
	stop()
	remount(t, mountedLedgerDir(t), "ro")
	e.start(t)
	expectRefused(t, e, prov, 3, "on a read-only ledger")
	e.log.wait(t, logWait, match{Event: "decision", Proto: "gateway", Reason: vocab.ReasonLedgerUnavailable, Denied: true})
	e.alive(t)
	stop()
	remount(t, mountedLedgerDir(t), "rw")
	e.start(t)
	if got := ledgerNano(t, ledger); got != 3*callNano {
		t.Errorf("ledger after the read-only start: got %d nano-USD, want %d", got, 3*callNano)
	}
	if r := gwCall(e); r.Status != 200 {
		t.Errorf("metered call after the repair: got %v, want 200", r)
	}
}

// mountedLedgerDir finds the tmpfs ledgerFault mounted for this test.
func mountedLedgerDir(t *testing.T) string {
	t.Helper()
	b, err := os.ReadFile("/proc/self/mounts")
	if err != nil {
		t.Fatal(err)
	}
	var found string
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) > 2 && f[2] == "tmpfs" && strings.Contains(f[1], "egressd-ledger-") {
			found = f[1]
		}
	}
	if found == "" {
		t.Fatal("ledger tmpfs not mounted")
	}
	return found
}

// TestLedgerSIGKILL hammers the gateway from 16 clients, SIGKILLs egressd
// mid-stream, and restarts it, three times: the ledger always parses, and
// it holds at least every call the decision log had recorded as settled
// (usage lines are written after the ledger write) and never more than the
// provider answered.
func TestLedgerSIGKILL(t *testing.T) {
	prov := startProvider(t)
	dir, err := os.MkdirTemp("", "egressd-ledger-kill-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	os.Chmod(dir, 0o777) // egressd runs unprivileged
	ledger := filepath.Join(dir, "ledger.json")
	e := startEgressd(t, gatewayPolicy(prov, ledger), gatewayEnv...)
	for cycle := range 3 {
		answered, stop := hammer(t, e, 16, 50)
		e.kill(t)
		stop()
		var settled int64
		for _, en := range e.log.refresh() {
			if en.Event == vocab.EventUsage {
				settled += int64(en.CostUSD*1e9 + 0.5)
			}
		}
		spent := ledgerNano(t, ledger)
		paid := prov.calls.Load() * callNano
		onDisk, inFlight, reserved := ledgerCalls(t, ledger)
		t.Logf("RESULT kill %d: answered=%d provider=%d logged-settled=%d nano ledger=%d nano; calls on disk=%d (in flight %d, reserved %d nano)", cycle,
			answered(), prov.calls.Load(), settled, spent, onDisk, inFlight, reserved)
		if onDisk < prov.calls.Load() {
			t.Errorf("kill %d: the provider saw %d calls, the ledger holds %d (settled or in flight)", cycle, prov.calls.Load(), onDisk)
		}
		// Settled spend never exceeds what the provider answered; the
		// reservations of calls in flight may (a call killed after its
		// reservation was durable but before it reached the provider is
		// charged: a crash overcharges, never forgets).
		if spent > paid {
			t.Errorf("kill %d: ledger holds %d nano-USD settled, more than the provider answered (%d)", cycle, spent, paid)
		}
		spent += reserved // what the restart charges
		if spent < settled {
			t.Errorf("kill %d: ledger holds %d nano-USD, less than the %d the log recorded as settled", cycle, spent, settled)
		}
		e.start(t)
		if got := ledgerNano(t, ledger); got != spent {
			t.Errorf("kill %d: restart changed the ledger from %d to %d", cycle, spent, got)
		}
		if r := gwCall(e); r.Status != 200 {
			t.Fatalf("kill %d: metered call after the restart: got %v, want 200 (the ledger was not accepted)", cycle, r)
		}
	}
	tmp, _ := filepath.Glob(filepath.Join(dir, ".ledger.json.*"))
	t.Logf("RESULT temp files left by 3 SIGKILLs: %d", len(tmp))
	e.alive(t)
}

// TestGatewayWall: the gateway refuses calls without the agent token (the
// provider never sees them), never returns the real key, and the proxy
// refuses to reach the provider's address directly (use_gateway), so the
// meter cannot be bypassed.
func TestGatewayWall(t *testing.T) {
	prov := startProvider(t)
	dir, err := os.MkdirTemp("", "egressd-ledger-wall-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	os.Chmod(dir, 0o777)
	e := startEgressd(t, gatewayPolicy(prov, filepath.Join(dir, "ledger.json")), gatewayEnv...)
	for _, auth := range []string{"", "Bearer wrong", "Bearer " + agentToken + "x", "Basic " + agentToken, "Bearer " + realKey} {
		req, _ := http.NewRequest("POST", "http://"+e.a().Gateway+"/fake/v1/chat/completions",
			strings.NewReader(`{"model":"test-model","max_tokens":10,"messages":[]}`))
		if auth != "" {
			req.Header.Set("Authorization", auth)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusUnauthorized || resp.Header.Get("X-Egressd-Reason") != vocab.ReasonUnauthorized.String() {
			t.Errorf("Authorization %q: got %d %s, want 401 unauthorized", auth, resp.StatusCode, resp.Header.Get("X-Egressd-Reason"))
		}
		if strings.Contains(string(b), realKey) {
			t.Errorf("Authorization %q: the answer contains the real key", auth)
		}
	}
	if n := prov.calls.Load(); n != 0 {
		t.Errorf("the provider received %d unauthorised calls, want 0", n)
	}
	e.log.wait(t, logWait, match{Proto: "gateway", Reason: vocab.ReasonUnauthorized, Denied: true})
	host := strings.TrimPrefix(prov.url, "http://")
	src := newClientIP()
	if _, r := connectRaw(t, e, src, host); r.Status != 403 || r.Reason != vocab.ReasonUseGateway.String() {
		t.Errorf("CONNECT to the provider's address: got %v, want 403 use_gateway", r)
	}
	if r := getRaw(t, e, newClientIP(), prov.url+"/v1/chat/completions"); r.Status != 403 || r.Reason != vocab.ReasonUseGateway.String() {
		t.Errorf("GET the provider through the proxy: got %v, want 403 use_gateway", r)
	}
	if n := prov.calls.Load(); n != 0 {
		t.Errorf("the provider received %d calls around the gateway, want 0", n)
	}
	e.alive(t)
}

// hammer runs metered calls from n clients until stop is called, and
// returns once at least warm calls were answered. answered counts the 200s.
func hammer(t *testing.T, e *proc, n int, warm int64) (answered func() int64, stop func()) {
	t.Helper()
	var ok atomic.Int64
	var lastErr atomic.Value
	done := make(chan struct{})
	var wg sync.WaitGroup
	for range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-done:
					return
				default:
				}
				if r := gwCall(e); r.Status == 200 {
					ok.Add(1)
				} else {
					lastErr.Store(r.String())
				}
			}
		}()
	}
	stop = func() { close(done); wg.Wait() }
	deadline := time.Now().Add(10 * time.Second)
	for ok.Load() < warm {
		if time.Now().After(deadline) {
			stop()
			t.Fatalf("only %d calls answered in 10s; a failure: %v", ok.Load(), lastErr.Load())
		}
		time.Sleep(20 * time.Millisecond)
	}
	return ok.Load, stop
}

func ledgerCalls(t *testing.T, path string) (calls, inFlight, reserved int64) {
	l, err := meter.ReadLedger(path)
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range l.Models {
		calls += m.Requests
	}
	for _, p := range l.InFlight {
		calls += p.Calls
		inFlight += p.Calls
		reserved += p.ReservedNano
	}
	return calls, inFlight, reserved
}
