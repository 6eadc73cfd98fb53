package sockio

import "syscall"

// Probe checks a pooled HTTP connection before it carries another
// request. No goroutine reads a connection while it waits in the pool, so
// an upstream that closed it, or sent bytes nobody asked for, is only seen
// by looking: one non-blocking MSG_PEEK receive, which consumes nothing.
type Probe struct {
	rc    syscall.RawConn // nil: nothing to look at, every check passes
	try   func(fd uintptr) bool
	quiet bool
	b     [1]byte
}

// Init probes through rc. A nil rc, or a system without MSG_PEEK here,
// makes Quiet always true.
func (p *Probe) Init(rc syscall.RawConn) {
	if rc != nil && canPeek {
		p.rc, p.try = rc, p.peek
	}
}

// Quiet reports whether the socket is open with nothing waiting to be read:
// false when the peer closed or reset it, or sent bytes unasked.
func (p *Probe) Quiet() bool {
	if p.rc == nil {
		return true
	}
	p.quiet = false
	if err := p.rc.Read(p.try); err != nil {
		return false
	}
	return p.quiet
}

// peek is the RawConn.Read callback; it never waits for readability.
func (p *Probe) peek(fd uintptr) bool {
	p.quiet = peekNow(fd, p.b[:]) == syscall.EAGAIN
	return true
}
