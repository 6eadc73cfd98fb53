// Package declogtest holds the decision-log recorder that the edges' tests
// share: it keeps every entry and lets a test wait for one.
package declogtest

import (
	"sync"
	"testing"
	"time"

	"github.com/egressd/egressd/internal/shared/declog"
	"github.com/egressd/egressd/internal/shared/vocab"
)

// Recorder keeps every entry recorded; safe for concurrent use. The zero
// Recorder is ready.
type Recorder struct {
	mu      sync.Mutex
	entries []declog.Entry
	changed chan struct{} // one token after any Record, for WaitFor
}

// Record implements declog.Recorder.
func (r *Recorder) Record(e declog.Entry) {
	r.mu.Lock()
	r.entries = append(r.entries, e)
	ch := r.signal()
	r.mu.Unlock()
	select {
	case ch <- struct{}{}:
	default:
	}
}

// signal returns the change channel, made on first use. Called with mu held.
func (r *Recorder) signal() chan struct{} {
	if r.changed == nil {
		r.changed = make(chan struct{}, 1)
	}
	return r.changed
}

// All returns a copy of the entries so far.
func (r *Recorder) All() []declog.Entry {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]declog.Entry(nil), r.entries...)
}

// Reset forgets the entries so far.
func (r *Recorder) Reset() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.entries = nil
}

// Last returns the latest entry, failing tb when there is none.
func (r *Recorder) Last(tb testing.TB) declog.Entry {
	tb.Helper()
	all := r.All()
	if len(all) == 0 {
		tb.Fatal("no decision logged")
	}
	return all[len(all)-1]
}

// ByEvent returns the entries of one kind.
func (r *Recorder) ByEvent(ev vocab.Event) []declog.Entry {
	var out []declog.Entry
	for _, e := range r.All() {
		if e.Event == ev {
			out = append(out, e)
		}
	}
	return out
}

// WaitFor returns the first entry matching pred, waiting up to limit for
// it to be recorded; it fails tb, naming what, when none comes.
func (r *Recorder) WaitFor(tb testing.TB, limit time.Duration, what string, pred func(declog.Entry) bool) declog.Entry {
	tb.Helper()
	r.mu.Lock()
	ch := r.signal()
	r.mu.Unlock()
	deadline := time.NewTimer(limit)
	defer deadline.Stop()
	for {
		for _, e := range r.All() {
			if pred(e) {
				return e
			}
		}
		select {
		case <-ch:
		case <-deadline.C:
			tb.Fatalf("no log entry %s; got %+v", what, r.All())
			return declog.Entry{}
		}
	}
}
