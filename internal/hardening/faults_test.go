//go:build hardening

package hardening

import (
	"crypto/rand"
	"io"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/miekg/dns"
)

// TestUpstreamResets: an upstream that resets mid-response or mid-tunnel
// ends that one exchange; egressd logs its close and serves the next.
func TestUpstreamResets(t *testing.T) {
	w := startWall(t)
	p := strconv.Itoa(w.web.port)
	t.Run("HTTP response cut by RST", func(t *testing.T) {
		src := newClientIP()
		r := getRaw(t, w.e, src, "http://granted.test:"+p+"/reset")
		if r.Status == 200 && r.Err == nil && len(r.Body) == 1000000 {
			t.Fatalf("got the whole body from an upstream that reset after 1000 bytes")
		}
		w.e.log.wait(t, logWait, match{Event: "close", Client: src, Proto: "http"})
	})
	t.Run("tunnel cut by RST", func(t *testing.T) {
		w.echo.reset.Store(true)
		defer w.echo.reset.Store(false)
		src := newClientIP()
		c, r := connectRaw(t, w.e, src, "granted.test:"+strconv.Itoa(w.echo.port))
		if r.Status != 200 {
			t.Fatalf("CONNECT: %v", r)
		}
		io.WriteString(c, "ping")
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		if _, err := io.ReadAll(c); err != nil {
			var ne net.Error
			if ok := asNetErr(err, &ne); ok && ne.Timeout() {
				t.Fatal("tunnel not closed after the upstream reset")
			}
		}
		w.e.log.wait(t, logWait, match{Event: "close", Client: src, Proto: "connect"})
	})
	w.e.alive(t)
	if r := getRaw(t, w.e, newClientIP(), "http://granted.test:"+p+"/after"); r.Status != 200 {
		t.Errorf("request after the resets: got %v, want 200", r)
	}
}

func asNetErr(err error, ne *net.Error) bool {
	e, ok := err.(net.Error)
	if ok {
		*ne = e
	}
	return ok
}

// junkDNS answers every UDP and TCP query with random bytes.
func junkDNS(t *testing.T) string {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", pc.LocalAddr().String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pc.Close(); ln.Close() })
	junk := func(n int) []byte { b := make([]byte, n); rand.Read(b); return b }
	go func() {
		buf := make([]byte, 2048)
		for {
			n, from, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			reply := junk(40)
			if n >= 2 && len(reply) >= 2 {
				copy(reply, buf[:2]) // right ID, garbage after it
			}
			pc.WriteTo(reply, from)
		}
	}()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Write(append([]byte{0, 40}, junk(40)...))
			c.Close()
		}
	}()
	return pc.LocalAddr().String()
}

// closedPort is a loopback UDP/TCP address with nothing listening.
func closedPort(t *testing.T) string {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := pc.LocalAddr().String()
	pc.Close()
	return addr
}

// TestResolverFaults: with the upstream resolver down, slow, failing or
// answering garbage, the DNS listener answers SERVFAIL quickly and the
// proxy answers 502 resolve_failed quickly — never a hang, never an
// address the garbage named; and all is well once the resolver is back.
func TestResolverFaults(t *testing.T) {
	w := startWall(t)
	// The resolver gives up after timeout × (upstreams + 1) = 1s here.
	const bound = 3 * time.Second
	check := func(t *testing.T) {
		t.Helper()
		src := newClientIP()
		start := time.Now()
		m := dnsQuery(t, w.e, src, "granted.test.", dns.TypeA)
		if took := time.Since(start); m == nil || m.Rcode != dns.RcodeServerFailure || took > bound {
			t.Errorf("DNS A granted.test: got %s after %s, want SERVFAIL within %s", rcodeOf(m), took.Round(time.Millisecond), bound)
		}
		for _, form := range []string{"connect", "http"} {
			src := newClientIP()
			start := time.Now()
			var r reply
			if form == "connect" {
				_, r = connectRaw(t, w.e, src, "granted.test:"+strconv.Itoa(w.echo.port))
			} else {
				r = getRaw(t, w.e, src, "http://granted.test:"+strconv.Itoa(w.web.port)+"/")
			}
			took := time.Since(start)
			if r.Status != http.StatusBadGateway || r.Reason != rResolve.String() || took > bound {
				t.Errorf("%s granted.test: got %v after %s, want 502 resolve_failed within %s", form, r, took.Round(time.Millisecond), bound)
				continue
			}
			if !strings.Contains(r.Body, "resolve") {
				t.Errorf("%s: body %q does not say the name did not resolve", form, r.Body)
			}
			w.e.log.wait(t, logWait, match{Event: "decision", Client: src, Reason: rResolve, Denied: true})
		}
	}
	for _, tc := range []struct {
		name string
		mode int32
	}{{"down", dnsDown}, {"slow", dnsSlow}, {"SERVFAIL", dnsFail}, {"answers another question", dnsGarbage}} {
		t.Run(tc.name, func(t *testing.T) {
			w.dns.mode.Store(tc.mode)
			defer w.dns.mode.Store(dnsNormal)
			check(t)
		})
	}
	for _, tc := range []struct{ name, addr string }{{"nothing listening", closedPort(t)}, {"random bytes", junkDNS(t)}} {
		t.Run(tc.name, func(t *testing.T) {
			pol := w.policyWith(func(p *policyFile) { p.DNS = []string{tc.addr} })
			reloads := w.e.countStderr("policy reloaded")
			w.e.writePolicy(t, pol)
			eventually(t, 5*time.Second, "reload to the broken resolver", func() bool { return w.e.countStderr("policy reloaded") > reloads })
			check(t)
		})
	}
	reloads := w.e.countStderr("policy reloaded")
	w.e.writePolicy(t, w.pol)
	eventually(t, 5*time.Second, "reload back to the good resolver", func() bool { return w.e.countStderr("policy reloaded") > reloads })
	w.noTrapHits(t)
	w.e.alive(t)
	if r := getRaw(t, w.e, newClientIP(), "http://granted.test:"+strconv.Itoa(w.web.port)+"/back"); r.Status != 200 {
		t.Errorf("with the resolver back: got %v, want 200", r)
	}
}

// TestPolicyFileFaults breaks the policy file while egressd runs: deleted,
// truncated, not YAML, invalid, replaced by a directory, unreadable. Each
// time the last good policy stays in force (the granted name still works,
// an ungranted one is still denied) and the failed reload is logged; a
// good edit afterwards is applied.
func TestPolicyFileFaults(t *testing.T) {
	w := startWall(t)
	for _, f := range policyFaults(w) {
		t.Run(f.name, func(t *testing.T) {
			failures := w.e.countStderr("policy reload failed")
			f.apply(t)
			eventually(t, 5*time.Second, "egressd logs the failed reload", func() bool {
				return w.e.countStderr("policy reload failed") > failures
			})
			w.lastGoodPolicyStays(t)
			w.restorePolicy(t)
		})
	}
	// A good edit after all that is applied.
	reloads := w.e.countStderr("policy reloaded")
	w.dns.add(t, "late.test. 60 IN A "+upstreamIP)
	w.e.writePolicy(t, w.policyWith(func(pf *policyFile) {
		pf.Allow = append(pf.Allow, rule{Host: "late.test", Ports: []int{w.web.port}})
	}))
	eventually(t, 5*time.Second, "a good edit is applied", func() bool { return w.e.countStderr("policy reloaded") > reloads })
	if r := getRaw(t, w.e, newClientIP(), "http://late.test:"+strconv.Itoa(w.web.port)+"/"); r.Status != 200 {
		t.Errorf("grant added after the faults: got %v, want 200", r)
	}
}

// lastGoodPolicyStays checks the wall's start policy is in force: the
// granted name works, an ungranted one is denied.
func (w *wall) lastGoodPolicyStays(t *testing.T) {
	t.Helper()
	if r := getRaw(t, w.e, newClientIP(), "http://"+w.webHost()+"/still"); r.Status != 200 {
		t.Errorf("granted name: got %v, want 200 (the last good policy)", r)
	}
	if r := getRaw(t, w.e, newClientIP(), "http://ungranted.test:"+strconv.Itoa(w.web.port)+"/"); r.Status != 403 || r.Reason != rNotAllow.String() {
		t.Errorf("ungranted name: got %v, want 403 not_allowlisted", r)
	}
	w.e.alive(t)
}

// restorePolicy writes the start policy back and waits until egressd has
// read it, so the next fault starts from a good state.
func (w *wall) restorePolicy(t *testing.T) {
	t.Helper()
	reloads := w.e.countStderr("policy reloaded")
	os.RemoveAll(w.e.policyPath)
	writeFileAtomic(t, w.e.policyPath, w.pol.render())
	eventually(t, 5*time.Second, "the restored policy is read", func() bool {
		return w.e.countStderr("policy reloaded") > reloads
	})
}

// policyFault is one way to break the policy file of a running egressd.
type policyFault struct {
	name  string
	apply func(t *testing.T)
}

func policyFaults(w *wall) []policyFault {
	path, good := w.e.policyPath, w.pol.render()
	return []policyFault{
		{"truncated", func(t *testing.T) {
			if err := os.WriteFile(path, []byte(good[:len(good)/3]), 0o644); err != nil {
				t.Fatal(err)
			}
		}},
		{"not YAML", func(t *testing.T) { writeFileAtomic(t, path, "version: 1\nallow: [\n  - {host: x\n") }},
		{"invalid value", func(t *testing.T) {
			writeFileAtomic(t, path, strings.Replace(good, "version: 1", "version: 1\nmode: permissive", 1))
		}},
		{"empty", func(t *testing.T) { writeFileAtomic(t, path, "") }},
		{"binary garbage", func(t *testing.T) {
			b := make([]byte, 4096)
			rand.Read(b)
			writeFileAtomic(t, path, string(b))
		}},
		{"unreadable", func(t *testing.T) {
			// egressd runs unprivileged, so mode 000 really is unreadable.
			writeFileAtomic(t, path, good+"# touched\n")
			if err := os.Chmod(path, 0o000); err != nil {
				t.Fatal(err)
			}
			syscall.Kill(w.e.pid(), syscall.SIGHUP) // a chmod changes no bytes: force the read
		}},
		{"replaced by a directory", func(t *testing.T) {
			os.Remove(path)
			if err := os.Mkdir(path, 0o755); err != nil {
				t.Fatal(err)
			}
		}},
		{"deleted", func(t *testing.T) { os.Remove(path) }},
	}
}
