package proxy

import (
	"context"
	"errors"
	"fmt"
	"math"
	"net"
	"net/http"
	"time"

	"github.com/egressd/egressd/internal/shared/safedial"
	"github.com/elazarl/goproxy"
)

// upClient is the HTTP/1.1 client goproxy sends plain requests through
// (ProxyCtx.RoundTripper). It works in the handler's goroutine (take an
// idle connection or dial one with dialHTTP, write the request, read the
// response head), so a request costs no hand-offs between goroutines. It
// keeps net/http's Transport semantics as egressd configures them:
//
//   - pool: maxIdlePerKey idle connections per scheme+host+port,
//     maxIdleTotal in all (the oldest goes), closed after the idle timeout
//     current at New; a connection goes back only when its response body
//     was read to the end and neither side said close
//   - a pooled connection that fails before any byte of the response
//     arrived is retried once on a fresh connection when the request can
//     be replayed (see retryable)
//   - 1xx interim responses are skipped (at most max1xx); a body is sent
//     at once, without waiting for 100 Continue
//   - 101 Switching Protocols hands the connection over as the body
//     (io.ReadWriteCloser), for goproxy's WebSocket relay
//   - response heads are bounded (maxResponseHead)
//   - no compression asked for, never TLS, never a proxy
//   - the request's context ends the round trip and the response body: the
//     connection is closed
//
// A request with a body is written by a goroutine of its own while the
// handler reads the response: an upstream may answer before the body is
// complete, and stop reading it.
type upClient struct {
	s    *Server
	pool *connPool
}

const (
	maxResponseHead = 1 << 20
	max1xx          = 5
	// writeGrace is how long a response that ended before its request body
	// was sent waits for the body before its connection is closed rather
	// than reused (net/http's maxWriteWaitBeforeConnReuse).
	writeGrace = 50 * time.Millisecond
)

var (
	errHeadTooBig = fmt.Errorf("upstream response head exceeds %d bytes", maxResponseHead)
	errNotHTTP    = errors.New("egressd sends only http:// requests upstream")
	errToo1xx     = errors.New("too many 1xx informational responses")
)

func newUpClient(s *Server, idle time.Duration) *upClient {
	return &upClient{s: s, pool: newConnPool(idle)}
}

// RoundTrip implements goproxy.RoundTripper. Like any RoundTripper it
// closes the request body, also on errors.
func (c *upClient) RoundTrip(req *http.Request, _ *goproxy.ProxyCtx) (*http.Response, error) {
	if req.URL.Scheme != "http" {
		closeBody(req)
		return nil, errNotHTTP
	}
	if err := context.Cause(req.Context()); err != nil {
		// The client is gone already: no pooled connection should be
		// spent (closed by the cancellation) on it.
		closeBody(req)
		return nil, err
	}
	key := poolKeyOf(req.URL)
	hc := c.pool.take(key)
	for {
		reused := hc != nil
		if !reused {
			var err error
			if hc, err = c.dial(req, key); err != nil {
				closeBody(req)
				return nil, err
			}
		}
		resp, again, err := hc.roundTrip(req)
		if err == nil {
			return resp, nil
		}
		if !reused || !again || req.Context().Err() != nil {
			return nil, err
		}
		hc = nil // once, on a fresh connection
	}
}

// dial connects with dialHTTP, which keeps egressd's checks and its
// *dialDenied errors for answerDialDenied.
func (c *upClient) dial(req *http.Request, key poolKey) (*hconn, error) {
	conn, err := c.s.dialHTTP(req.Context(), "tcp", net.JoinHostPort(key.host, key.port))
	if err != nil {
		return nil, err
	}
	u, ok := conn.(*upConn)
	if !ok {
		_ = conn.Close()
		return nil, errors.New("dial returned an unregistered connection")
	}
	if hc := c.pool.adopt(u, key); hc != nil {
		return hc, nil
	}
	return nil, errRevoked
}

// dialHTTP is the upstream client's dialer. It dials the addresses the
// pipeline checked for the request that triggered the dial; when decide
// left them to the dial (it expected a pooled connection), it resolves and
// checks them here first. Keep-alive reuse and new connections alike only ever
// reach checked addresses.
func (s *Server) dialHTTP(ctx context.Context, _, _ string) (net.Conn, error) {
	rq := requestFrom(ctx)
	if rq == nil {
		return nil, errors.New("dial without a decision")
	}
	targets := rq.targets
	if targets == nil {
		var dn denial
		if targets, dn = s.checkedTargets(ctx, rq); dn.denied() {
			return nil, &dialDenied{reason: dn.reason}
		}
	}
	c, ap, err := safedial.DialFirst(ctx, s.cfg.Dial, "tcp", targets, safedial.DialTimeout(rq.pol))
	if err != nil {
		return nil, err
	}
	u := s.newUpConn(c, ap, rq)
	if u == nil {
		return nil, errRevoked
	}
	return u, nil
}

// roundTrip sends req on hc and reads the response head. On an error hc
// is closed, and again reports whether a request that failed this way on
// a reused connection may be sent again (net/http's rules: nothing of it
// was written and it has no body, or nothing of the response arrived and
// it is replayable).
func (hc *hconn) roundTrip(req *http.Request) (resp *http.Response, again bool, err error) {
	ctx := req.Context()
	stop := noStop
	if ctx.Done() != nil {
		stop = context.AfterFunc(ctx, hc.abort)
	}
	var wrote chan error
	if hasBody(req) {
		wrote = make(chan error, 1)
		go hc.writeAsync(req, wrote)
	} else {
		sent := hc.u.up.Load()
		if err := hc.write(req); err != nil {
			stop()
			_ = hc.u.Close()
			return nil, hc.u.up.Load() == sent, failure(ctx, err)
		}
	}
	resp, arrived, err := hc.readResponse(req)
	if err != nil {
		stop()
		_ = hc.u.Close()
		if wrote != nil {
			// The request's failure comes first (a body that broke), and the
			// writer must be done with req before the caller reuses it.
			if werr := <-wrote; werr != nil {
				err = werr
			}
		}
		return nil, !arrived && replayable(req), failure(ctx, err)
	}
	return hc.deliver(req, resp, stop, wrote), false, nil
}

// noStop stands in for context.AfterFunc's stop when the request cannot
// be cancelled.
func noStop() bool { return true }

// failure is the error a round trip reports: the context's cause when the
// request was cancelled (its connection was closed under it), else err.
func failure(ctx context.Context, err error) error {
	if cerr := context.Cause(ctx); cerr != nil {
		return cerr
	}
	return err
}

// write sends req with one buffered write. req.Write closes the body.
func (hc *hconn) write(req *http.Request) error {
	if err := req.Write(hc.bw); err != nil {
		hc.bw.Reset(connWriter{hc.u})
		return err
	}
	return hc.bw.Flush()
}

// writeAsync writes a request with a body. A failure closes the connection,
// which ends a response read still waiting for the upstream.
func (hc *hconn) writeAsync(req *http.Request, done chan<- error) {
	err := hc.write(req)
	if err != nil {
		_ = hc.u.Close()
	}
	done <- err
}

// readResponse reads the final response head, skipping 1xx interim ones
// (101 is final). arrived reports whether any byte of a response came.
func (hc *hconn) readResponse(req *http.Request) (resp *http.Response, arrived bool, err error) {
	for n := 0; ; n++ {
		hc.head.left = maxResponseHead
		if _, err := hc.br.Peek(1); err != nil {
			return nil, n > 0, err
		}
		resp, err = http.ReadResponse(hc.br, req)
		if err != nil {
			if hc.head.left <= 0 {
				err = errHeadTooBig
			}
			return nil, true, err
		}
		if resp.StatusCode >= 200 || resp.StatusCode == http.StatusSwitchingProtocols {
			hc.head.left = math.MaxInt64
			return resp, true, nil
		}
		if n == max1xx {
			return nil, true, errToo1xx
		}
	}
}

// deliver sets up resp's body: the upgraded connection for a 101, else a
// body that returns hc to the pool when read to its end. A response
// without a body settles hc at once.
func (hc *hconn) deliver(req *http.Request, resp *http.Response, stop func() bool, wrote chan error) *http.Response {
	if resp.StatusCode == http.StatusSwitchingProtocols {
		if isProtocolSwitch(resp.Header) {
			stop() // the connection is the caller's now, cancellation included
			resp.Body = newUpgradeBody(hc)
			return resp
		}
		resp.Close = true // a 101 without Upgrade: nothing can follow it
	}
	b := &upBody{hc: hc, rc: resp.Body, stop: stop, wrote: wrote, keep: !resp.Close && !req.Close}
	if resp.Body == http.NoBody {
		b.settle(true)
		return resp
	}
	resp.Body = b
	return resp
}

// isProtocolSwitch is net/http's test for a 101 that hands the connection
// over: an Upgrade header and Connection listing upgrade.
func isProtocolSwitch(h http.Header) bool {
	return h.Get("Upgrade") != "" && headerHasToken(h, "Connection", "upgrade")
}

func hasBody(req *http.Request) bool { return req.Body != nil && req.Body != http.NoBody }

// replayable is net/http's Request.isReplayable for a request without
// GetBody (a server request never has one): no body, and an idempotent
// method or an idempotency key.
func replayable(req *http.Request) bool {
	if hasBody(req) {
		return false
	}
	switch req.Method {
	case "", http.MethodGet, http.MethodHead, http.MethodOptions, http.MethodTrace:
		return true
	}
	_, k1 := req.Header["Idempotency-Key"]
	_, k2 := req.Header["X-Idempotency-Key"]
	return k1 || k2
}

func closeBody(req *http.Request) {
	if req.Body != nil {
		_ = req.Body.Close()
	}
}
