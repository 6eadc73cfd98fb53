//go:build hardening

package hardening

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// unprivileged is the user egressd runs as: egressd needs no privilege,
// and as root the "policy made unreadable" fault could not be staged
// (root reads a mode-000 file).
const unprivileged = 65534

// addrs are the listeners egressd reported in its "egressd serving" line.
type addrs struct {
	Proxy   string `json:"proxy"`
	DNS     string `json:"dns"`
	Gateway string `json:"gateway"`
	Admin   string `json:"admin"`
}

// proc is one egressd child process and the files it works on. After a
// kill it can be started again on the same files.
type proc struct {
	t          testing.TB
	dir        string
	policyPath string
	logPath    string // decision log (log.file)
	errPath    string // operational log (stderr), one file across restarts
	env        []string

	mu         sync.Mutex
	cmd        *exec.Cmd
	done       chan struct{} // closed when the current process has exited
	waitErr    error
	addrs      addrs
	expectExit bool // the test stopped or killed it on purpose

	log *logReader
}

// startEgressd writes pol to a fresh directory and runs egressd on it
// until the test ends. env adds variables (provider keys and tokens).
func startEgressd(t testing.TB, pol policyFile, env ...string) *proc {
	t.Helper()
	dir, err := os.MkdirTemp("", "egressd-hardening-")
	if err != nil {
		t.Fatal(err)
	}
	// Writable by the unprivileged egressd (decision log, ledger).
	if err := os.Chmod(dir, 0o777); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	e := &proc{
		t: t, dir: dir,
		policyPath: filepath.Join(dir, "policy.yaml"),
		logPath:    filepath.Join(dir, "decisions.jsonl"),
		errPath:    filepath.Join(dir, "stderr.log"),
		env:        env,
	}
	e.log = &logReader{path: e.logPath}
	if pol.LogFile == "" {
		pol.LogFile = e.logPath
	}
	e.writePolicy(t, pol)
	e.start(t)
	t.Cleanup(e.cleanup)
	return e
}

// writePolicy replaces the policy file atomically (write and rename, like
// an editor), so egressd never reads half a file unless a test means it.
func (e *proc) writePolicy(t testing.TB, pol policyFile) {
	t.Helper()
	if pol.LogFile == "" {
		pol.LogFile = e.logPath
	}
	writeFileAtomic(t, e.policyPath, pol.render())
}

func writeFileAtomic(t testing.TB, path, body string) {
	t.Helper()
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

// start runs egressd and waits for its "egressd serving" line.
func (e *proc) start(t testing.TB) {
	t.Helper()
	errf, err := os.OpenFile(e.errPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	skip := fileSize(e.errPath)
	cmd := exec.Command(egressdBin, "serve", "--config", e.policyPath)
	cmd.Env = append([]string{"PATH=/usr/bin:/bin"}, e.env...)
	cmd.Stdout = nil // the decision log also goes to log.file, which tests read
	cmd.Stderr = errf
	cmd.SysProcAttr = &syscall.SysProcAttr{
		Credential: &syscall.Credential{Uid: unprivileged, Gid: unprivileged},
		Pdeathsig:  syscall.SIGKILL,
	}
	if err := cmd.Start(); err != nil {
		errf.Close()
		t.Fatalf("start egressd: %v", err)
	}
	done := make(chan struct{})
	e.mu.Lock()
	e.cmd, e.done, e.expectExit, e.addrs = cmd, done, false, addrs{}
	e.mu.Unlock()
	go func() {
		err := cmd.Wait()
		errf.Close()
		e.mu.Lock()
		e.waitErr = err
		e.mu.Unlock()
		close(done)
	}()
	deadline := time.Now().Add(15 * time.Second)
	for {
		if a, ok := e.servingLine(skip); ok {
			e.mu.Lock()
			e.addrs = a
			e.mu.Unlock()
			return
		}
		select {
		case <-done:
			t.Fatalf("egressd exited before serving: %v\n%s", e.waitErr, e.stderrTail())
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("egressd not serving within 15s\n%s", e.stderrTail())
		}
	}
}

// servingLine finds the listener addresses in the stderr written after skip.
func (e *proc) servingLine(skip int64) (addrs, bool) {
	for _, l := range e.stderrLines(skip) {
		if l["msg"] == "egressd serving" {
			b, _ := json.Marshal(l)
			var a addrs
			if json.Unmarshal(b, &a) == nil {
				return a, true
			}
		}
	}
	return addrs{}, false
}

// stderrLines parses egressd's operational log (JSON lines) after skip bytes.
func (e *proc) stderrLines(skip int64) []map[string]any {
	b, err := os.ReadFile(e.errPath)
	if err != nil || int64(len(b)) < skip {
		return nil
	}
	var out []map[string]any
	sc := bufio.NewScanner(bytes.NewReader(b[skip:]))
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	for sc.Scan() {
		var m map[string]any
		if json.Unmarshal(sc.Bytes(), &m) == nil {
			out = append(out, m)
		}
	}
	return out
}

// countStderr counts operational log lines whose msg contains substr.
func (e *proc) countStderr(substr string) int {
	n := 0
	for _, l := range e.stderrLines(0) {
		if msg, _ := l["msg"].(string); strings.Contains(msg, substr) {
			n++
		}
	}
	return n
}

func (e *proc) stderrTail() string {
	b, _ := os.ReadFile(e.errPath)
	if len(b) > 4000 {
		b = b[len(b)-4000:]
	}
	return "--- egressd stderr (tail) ---\n" + string(b)
}

func fileSize(path string) int64 {
	fi, err := os.Stat(path)
	if err != nil {
		return 0
	}
	return fi.Size()
}

// a returns the current listener addresses.
func (e *proc) a() addrs {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.addrs
}

func (e *proc) pid() int {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.cmd.Process.Pid
}

func (e *proc) exited() bool {
	e.mu.Lock()
	done := e.done
	e.mu.Unlock()
	select {
	case <-done:
		return true
	default:
		return false
	}
}

// alive fails the test unless the process is running and /healthz on the
// admin listener answers 200 "ok".
func (e *proc) alive(t testing.TB) {
	t.Helper()
	if e.exited() {
		t.Fatalf("egressd is not running: %v\n%s", e.waitErr, e.stderrTail())
	}
	c := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{Proxy: nil, DisableKeepAlives: true}}
	resp, err := c.Get("http://" + e.a().Admin + "/healthz")
	if err != nil {
		t.Fatalf("egressd /healthz: %v\n%s", err, e.stderrTail())
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || strings.TrimSpace(string(body)) != "ok" {
		t.Fatalf("egressd /healthz: got %d %q, want 200 \"ok\"", resp.StatusCode, body)
	}
}

// rssKiB is egressd's resident set size (VmRSS in /proc/PID/status).
func (e *proc) rssKiB(t testing.TB) int {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", e.pid()))
	if err != nil {
		t.Fatalf("read egressd status: %v", err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			f := strings.Fields(rest)
			if n, err := strconv.Atoi(f[0]); err == nil {
				return n
			}
		}
	}
	t.Fatal("no VmRSS in /proc/PID/status")
	return 0
}

// signal sends sig to the current process. SIGTERM and SIGKILL mark the
// exit as expected.
func (e *proc) signal(t testing.TB, sig syscall.Signal) {
	t.Helper()
	e.mu.Lock()
	if sig == syscall.SIGTERM || sig == syscall.SIGKILL {
		e.expectExit = true
	}
	p := e.cmd.Process
	e.mu.Unlock()
	if err := p.Signal(sig); err != nil {
		t.Fatalf("signal egressd: %v", err)
	}
}

// waitExit waits up to d for the process to exit and says how long it took.
func (e *proc) waitExit(d time.Duration) (time.Duration, bool) {
	start := time.Now()
	e.mu.Lock()
	done := e.done
	e.mu.Unlock()
	select {
	case <-done:
		return time.Since(start), true
	case <-time.After(d):
		return time.Since(start), false
	}
}

// kill SIGKILLs the process and waits for it.
func (e *proc) kill(t testing.TB) {
	t.Helper()
	e.signal(t, syscall.SIGKILL)
	if _, ok := e.waitExit(10 * time.Second); !ok {
		t.Fatal("egressd did not die on SIGKILL")
	}
}

// cleanup stops egressd (SIGTERM, then SIGKILL) and fails the test if it
// had died on its own or left a panic on stderr.
func (e *proc) cleanup() {
	e.mu.Lock()
	expected := e.expectExit
	e.mu.Unlock()
	if e.exited() && !expected {
		e.t.Errorf("egressd exited unexpectedly: %v\n%s", e.waitErr, e.stderrTail())
	}
	if !e.exited() {
		_ = e.cmd.Process.Signal(syscall.SIGTERM)
		if _, ok := e.waitExit(30 * time.Second); !ok {
			_ = e.cmd.Process.Kill()
			e.waitExit(10 * time.Second)
		}
	}
	if b, _ := os.ReadFile(e.errPath); bytes.Contains(b, []byte("panic:")) || bytes.Contains(b, []byte("fatal error:")) {
		e.t.Errorf("egressd panicked:\n%s", e.stderrTail())
	}
}

// eventually polls cond every 20ms until it holds or d passes.
func eventually(t testing.TB, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %s", what, d)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// exitErr is the error Wait returned for the last process (nil: exit 0).
func (e *proc) exitErr() error {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.waitErr
}
