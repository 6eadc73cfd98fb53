// Package sockio owns the kernel side of egressd's tunnel relay: whether
// this system can splice between TCP sockets and report their traffic
// (TCP_INFO), the reading of that report, and a socket reader that holds
// no buffer while it waits for bytes. It also probes pooled plain-HTTP
// connections before reuse (Probe).
package sockio

import (
	"io"
	"net"
	"syscall"
	"time"

	"github.com/egressd/egressd/internal/lib/bufpool"
)

// State is what the kernel reports about one TCP socket's traffic.
type State struct {
	Quiet   time.Duration // since data was last sent or received
	Pending bool          // bytes are queued that the peer has not acknowledged
	Acked   uint64        // bytes the peer has acknowledged so far
}

// Reader reads a tunnel's socket into a pooled buffer that it
// takes only once data has arrived (kernel mode: a non-blocking read inside
// RawConn.Read, which waits for readability without one). A tunnel waiting
// for bytes, most of a tunnel's life, holds no buffer.
type Reader struct {
	src net.Conn
	rc  syscall.RawConn // nil: plain Read into a buffer held while it blocks
	buf *[]byte
	n   int
	err error
	try func(fd uintptr) bool
}

// Init reads src through rc, or plainly when rc is nil.
func (r *Reader) Init(src net.Conn, rc syscall.RawConn) {
	r.src, r.rc = src, rc
	if rc != nil {
		r.try = r.tryRead
	}
}

// Read returns the next bytes, valid until release, or io.EOF.
func (r *Reader) Read() ([]byte, error) {
	if r.rc == nil {
		r.buf = bufpool.Get()
		n, err := r.src.Read(*r.buf)
		return (*r.buf)[:n], err
	}
	r.n, r.err = 0, nil
	if err := r.rc.Read(r.try); err != nil {
		return nil, err
	}
	if r.err != nil {
		return nil, r.err
	}
	if r.n == 0 {
		return nil, io.EOF
	}
	return (*r.buf)[:r.n], nil
}

// tryRead is the RawConn.Read callback: false (wait for readability) when
// the socket has nothing, with the buffer given back.
func (r *Reader) tryRead(fd uintptr) bool {
	b := bufpool.Get()
	n, err := readNow(fd, *b)
	if err == syscall.EAGAIN {
		bufpool.Put(b)
		return false
	}
	r.buf, r.n, r.err = b, max(n, 0), err
	return true
}

// Release gives the buffer of the last read back.
func (r *Reader) Release() {
	if r.buf != nil {
		bufpool.Put(r.buf)
		r.buf = nil
	}
}
