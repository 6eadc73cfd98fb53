// Package testutil holds the small helpers several packages' tests share.
// Only tests import it.
package testutil

import (
	"bytes"
	"sync"
)

// Buffer is a bytes.Buffer that a writer goroutine (a logger, a daemon)
// and the test reading it can share.
type Buffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

// Write appends p.
func (s *Buffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

// String returns everything written so far.
func (s *Buffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
