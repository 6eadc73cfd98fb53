package proxy

import (
	"bufio"
	"errors"
	"io"
	"time"

	"github.com/egressd/egressd/internal/lib/bufpool"
)

var errBodyClosed = errors.New("read on closed response body")

// upBody is a response body read from a pooled connection. Read to its
// end, it gives the connection back to the pool (when keep allows and the
// request was sent whole); closed before that, or failing, it closes the
// connection, since the rest of the response would still be on it. It is
// read and closed by one goroutine (goproxy's handler).
type upBody struct {
	hc    *hconn        // nil once settled
	rc    io.ReadCloser // http.ReadResponse's body
	stop  func() bool   // unhooks the request's cancellation; false: it already ran
	wrote chan error    // the body writer's result; nil when the request had none
	keep  bool          // neither side asked to close
	err   error         // what Read returns once settled
}

func (b *upBody) Read(p []byte) (int, error) {
	if b.hc == nil {
		return 0, b.err
	}
	n, err := b.rc.Read(p)
	if err != nil {
		b.settle(err == io.EOF)
		if err != io.EOF {
			b.err = err
		}
	}
	return n, err
}

// Close closes the connection unless the body was read to its end.
func (b *upBody) Close() error {
	if b.hc != nil {
		b.settle(false)
	}
	return nil
}

// settle ends the body's hold on its connection: back to the pool after a
// clean end, else closed.
func (b *upBody) settle(clean bool) {
	hc := b.hc
	b.hc, b.err = nil, io.EOF
	if !clean {
		b.err = errBodyClosed
	}
	// stop first: once it returns true a cancellation can no longer close
	// the connection under its next request.
	if b.stop() && clean && b.keep && b.sent() && hc.br.Buffered() == 0 {
		hc.pool.put(hc)
		return
	}
	_ = hc.u.Close()
}

// sent reports whether the request went out whole. A response can end
// before its request body was sent; the connection is reused only if the
// body follows within writeGrace.
func (b *upBody) sent() bool {
	if b.wrote == nil {
		return true
	}
	select {
	case err := <-b.wrote:
		return err == nil
	default:
	}
	t := time.NewTimer(writeGrace)
	defer t.Stop()
	select {
	case err := <-b.wrote:
		return err == nil
	case <-t.C:
		return false
	}
}

// upgradeBody is a 101 response's body: the connection itself, starting
// with whatever the response head's read already buffered. It never goes
// back to the pool.
type upgradeBody struct {
	br *bufio.Reader // drained first; nil once empty
	u  *upConn
}

func newUpgradeBody(hc *hconn) *upgradeBody {
	b := &upgradeBody{u: hc.u}
	if hc.br.Buffered() > 0 {
		b.br = hc.br
	}
	return b
}

func (b *upgradeBody) Read(p []byte) (int, error) {
	if b.br == nil {
		return b.u.Read(p)
	}
	if n := b.br.Buffered(); len(p) > n {
		p = p[:n]
	}
	n, err := b.br.Read(p)
	if b.br.Buffered() == 0 {
		b.br = nil
	}
	return n, err
}

func (b *upgradeBody) Write(p []byte) (int, error) { return b.u.Write(p) }

func (b *upgradeBody) Close() error { return b.u.Close() }

// WriteTo lets goproxy's relay toward the client use a pooled buffer.
func (b *upgradeBody) WriteTo(w io.Writer) (int64, error) { return bufpool.Copy(w, b) }
