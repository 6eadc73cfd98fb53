//go:build hardening

package hardening

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/egressd/egressd/internal/shared/vocab"

	"github.com/egressd/egressd/internal/shared/declog"
)

// logReader reads egressd's decision log file incrementally. The log is
// written asynchronously, so tests wait for the entry they expect.
type logReader struct {
	path string

	mu      sync.Mutex
	off     int64
	partial []byte
	entries []declog.Entry
}

// refresh parses whatever was appended since the last call.
func (r *logReader) refresh() []declog.Entry {
	r.mu.Lock()
	defer r.mu.Unlock()
	f, err := os.Open(r.path)
	if err != nil {
		return r.entries
	}
	defer f.Close()
	if _, err := f.Seek(r.off, io.SeekStart); err != nil {
		return r.entries
	}
	b, _ := io.ReadAll(f)
	r.off += int64(len(b))
	b = append(r.partial, b...)
	for {
		i := bytes.IndexByte(b, '\n')
		if i < 0 {
			break
		}
		if e, err := declog.Unmarshal(b[:i]); err == nil {
			r.entries = append(r.entries, e)
		}
		b = b[i+1:]
	}
	r.partial = append([]byte(nil), b...)
	return r.entries
}

// find returns the entries matching m.
func (r *logReader) find(m match) []declog.Entry {
	var out []declog.Entry
	for _, e := range r.refresh() {
		if m.ok(e) {
			out = append(out, e)
		}
	}
	return out
}

// wait returns the first entry matching m, failing the test after d.
func (r *logReader) wait(t testing.TB, d time.Duration, m match) declog.Entry {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		if es := r.find(m); len(es) > 0 {
			return es[0]
		}
		if time.Now().After(deadline) {
			t.Fatalf("decision log: no entry %s within %s (last entries:\n%s)", m, d, r.lastLines(8))
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (r *logReader) lastLines(n int) string {
	es := r.refresh()
	if len(es) > n {
		es = es[len(es)-n:]
	}
	var b strings.Builder
	for _, e := range es {
		b.Write(declog.Marshal(e))
	}
	return b.String()
}

// match selects decision-log entries; zero fields match anything.
type match struct {
	Event   string
	Client  string
	Host    string
	Port    uint16
	Proto   string
	Reason  vocab.Reason
	Verdict string // "deny", "allow", "would_deny"
	Denied  bool   // any verdict but allow
}

func (m match) ok(e declog.Entry) bool {
	switch {
	case m.Event != "" && e.Event.String() != m.Event:
	case m.Client != "" && e.Client != m.Client:
	case m.Host != "" && e.Host != m.Host:
	case m.Port != 0 && e.Port != m.Port:
	case m.Proto != "" && e.Proto.String() != m.Proto:
	case m.Reason != vocab.ReasonNone && e.Reason != m.Reason:
	case m.Verdict != "" && e.Verdict.String() != m.Verdict:
	case m.Denied && e.Verdict == vocab.Allow:
	default:
		return true
	}
	return false
}

func (m match) String() string {
	var parts []string
	add := func(k, v string) {
		if v != "" {
			parts = append(parts, k+"="+v)
		}
	}
	add("event", m.Event)
	add("client", m.Client)
	add("host", m.Host)
	if m.Port != 0 {
		add("port", fmt.Sprint(m.Port))
	}
	add("proto", m.Proto)
	if m.Reason != vocab.ReasonNone {
		add("reason", m.Reason.String())
	}
	add("verdict", m.Verdict)
	if m.Denied {
		add("denied", "true")
	}
	return "{" + strings.Join(parts, " ") + "}"
}

// waitOrNil is wait without failing: nil when nothing matched within d.
func (r *logReader) waitOrNil(d time.Duration, m match) []declog.Entry {
	deadline := time.Now().Add(d)
	for {
		if es := r.find(m); len(es) > 0 {
			return es
		}
		if time.Now().After(deadline) {
			return nil
		}
		time.Sleep(20 * time.Millisecond)
	}
}
