// Package daemon owns egressd's running life: it loads the policy, holds the
// current one behind an atomic pointer that every edge reads, reloads it on
// file change or SIGHUP (a bad edit keeps the last good policy), wires the
// edges together in one declared order, and stops them gracefully.
package daemon

import (
	"fmt"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/egressd/egressd/policy"
)

// Holder keeps the current policy and the outcome of the last reload.
// Edges read Current on every decision; a reload swaps the pointer, so a
// decision sees either the old policy or the new one, never a mixture.
type Holder struct {
	cur atomic.Pointer[policy.Policy]

	// Path is the policy file.
	Path string
	// Clock is nil for time.Now.
	Clock func() time.Time

	mu        sync.Mutex
	base      *policy.Policy  // the file's policy, without overlay
	overlay   *policy.Overlay // the operator's answers (ask:); nil = none
	loadedAt  time.Time
	lastErr   error
	lastErrAt time.Time
	attempted time.Time
	reloads   uint64
	failures  uint64
}

// Current returns the policy in force. Never nil once Init succeeded.
func (h *Holder) Current() *policy.Policy { return h.cur.Load() }

// Init loads the first policy; without it egressd must not start.
func (h *Holder) Init() error {
	p, err := h.read()
	if err != nil {
		return err
	}
	h.mu.Lock()
	h.storeLocked(p)
	h.loadedAt = h.now()
	h.mu.Unlock()
	return nil
}

// storeLocked makes p (with the overlay) the policy in force and returns
// the one it replaced.
func (h *Holder) storeLocked(p *policy.Policy) *policy.Policy {
	h.base = p
	if h.overlay != nil {
		p = p.WithOverlay(h.overlay)
	}
	return h.cur.Swap(p)
}

// SetOverlay installs the operator's standing answers on top of the file's
// policy; a later reload keeps them.
func (h *Holder) SetOverlay(o *policy.Overlay) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.overlay = o
	if h.base != nil {
		h.storeLocked(h.base)
	}
}

// Apply compiles data, the policy file's content as read (or readErr if
// it could not be read). On success the new policy replaces the old and
// both are returned; on failure the old one stays in force and the error
// (naming the key path) is returned and remembered for status.
func (h *Holder) Apply(data []byte, readErr error) (old, cur *policy.Policy, err error) {
	p, err := h.parse(data, readErr)
	h.mu.Lock()
	defer h.mu.Unlock()
	h.attempted = h.now()
	if err != nil {
		h.failures++
		h.lastErr, h.lastErrAt = err, h.now()
		return nil, nil, err
	}
	h.reloads++
	h.lastErr = nil
	h.loadedAt = h.now()
	old = h.storeLocked(p)
	return old, h.cur.Load(), nil
}

// ReloadState describes the holder for status and metrics.
type ReloadState struct {
	Path      string
	LoadedAt  time.Time
	LastError string
	LastErrAt time.Time
	// LastAttemptAt is the last reload, good or bad; zero before any.
	LastAttemptAt time.Time
	Reloads       uint64
	Failures      uint64
}

// State returns a snapshot of the reload history.
func (h *Holder) State() ReloadState {
	h.mu.Lock()
	defer h.mu.Unlock()
	s := ReloadState{Path: h.Path, LoadedAt: h.loadedAt, LastErrAt: h.lastErrAt, LastAttemptAt: h.attempted, Reloads: h.reloads, Failures: h.failures}
	if h.lastErr != nil {
		s.LastError = h.lastErr.Error()
	}
	return s
}

func (h *Holder) read() (*policy.Policy, error) {
	data, err := os.ReadFile(h.Path)
	return h.parse(data, err)
}

func (h *Holder) parse(data []byte, readErr error) (*policy.Policy, error) {
	if readErr != nil {
		return nil, fmt.Errorf("read policy: %w", readErr)
	}
	p, err := policy.LoadBytes(data, h.Path)
	if err != nil {
		return nil, fmt.Errorf("load policy %s: %w", h.Path, err)
	}
	return p, nil
}

func (h *Holder) now() time.Time {
	if h.Clock != nil {
		return h.Clock()
	}
	return time.Now()
}
