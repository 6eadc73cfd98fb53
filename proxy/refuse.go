package proxy

import (
	"bytes"
	"io"
	"math"
	"net"
	"net/http"
	"strconv"
	"strings"

	"github.com/egressd/egressd/internal/shared/vocab"

	"github.com/egressd/egressd/internal/lib/netaddr"
	"github.com/egressd/egressd/internal/shared/declog"
	"github.com/egressd/egressd/policy"
)

// Why this file exists: net/http answers some requests itself, before any
// handler runs: heads it cannot parse (request line, header names, HTTP
// version), Host headers it refuses (none, two, malformed), framing it
// refuses (two Content-Lengths, a Transfer-Encoding other than chunked),
// heads over max_header_bytes, and Expect values it does not know. It
// writes those answers straight to the connection, which is egressd's
// clientConn, and closes it. So the connection is where egressd sees them:
// a response written while no handler runs on the connection (serving is
// false: see Server.connState) is net/http's own. One that refuses (4xx or
// 5xx) is replaced by egressd's refusal, with X-Egressd-Reason: bad_request
// and a one-line body, and logged as a bad_request decision.
//
// Judging each head in the shadow parser before net/http does was the other
// way; it would have to repeat every check net/http makes and would miss
// any it did not repeat (or that a later Go adds). Watching the writes
// catches whatever net/http refuses, with nothing to keep in step.
//
// The status stays net/http's (431 for a head too large, 505 for an
// unknown version, ...) except 501, which net/http sends for a
// Transfer-Encoding it does not know: for a request, RFC 9112 §6.3 asks 400
// and a closed connection.

// Write sends p to the client; see refuse.go for writes outside a handler.
func (c *clientConn) Write(p []byte) (int, error) {
	if c.serving.Load() {
		return c.line.Write(c.Conn, p)
	}
	return c.writeUnserved(p)
}

// writeUnserved handles bytes net/http writes on its own. After a refusal
// the rest of net/http's answer, if any, is dropped: the client already has
// egressd's, and the connection is about to close.
func (c *clientConn) writeUnserved(p []byte) (int, error) {
	if c.refused.Load() {
		return len(p), nil
	}
	code, ok := statusOf(p)
	if !ok || code < 400 {
		// net/http's 200 to OPTIONS * (the request after it fails closed in
		// admit), or not a response head at all.
		return c.Conn.Write(p)
	}
	c.refused.Store(true)
	if code == http.StatusNotImplemented {
		code = http.StatusBadRequest
	}
	if _, err := c.Conn.Write(refusal(code, refusalDetail(p))); err != nil {
		return 0, err
	}
	proto := vocab.ProtoHTTP
	if c.connect.Load() {
		proto = vocab.ProtoConnect
	}
	c.s.rec.Record(declog.Entry{
		Time: c.s.now(), Event: vocab.EventDecision, Client: netaddr.String(c.ip), Proto: proto,
		Verdict: vocab.Deny, Reason: vocab.ReasonBadRequest, Status: code,
	})
	return len(p), nil
}

// statusOf reads the status code of a response head ("HTTP/1.x NNN ...").
func statusOf(p []byte) (int, bool) {
	if len(p) < 12 || !bytes.HasPrefix(p, []byte("HTTP/1.")) || p[8] != ' ' {
		return 0, false
	}
	code := 0
	for _, b := range p[9:12] {
		if b < '0' || b > '9' {
			return 0, false
		}
		code = code*10 + int(b-'0')
	}
	return code, true
}

// maxRefusalDetail bounds the words taken from net/http's answer.
const maxRefusalDetail = 120

// refusalDetail is what net/http said: its body (constant words such as
// "400 Bad Request: invalid header name", never the client's bytes), else
// its status line.
func refusalDetail(p []byte) string {
	var detail []byte
	if i := bytes.Index(p, []byte("\r\n\r\n")); i >= 0 {
		detail = p[i+4:]
	}
	if len(bytes.TrimSpace(detail)) == 0 {
		detail = p[len("HTTP/1.1 "):]
		if i := bytes.IndexByte(detail, '\r'); i >= 0 {
			detail = detail[:i]
		}
	}
	detail = bytes.TrimSpace(detail)
	if len(detail) > maxRefusalDetail {
		detail = detail[:maxRefusalDetail]
	}
	return declog.Sanitize(string(detail))
}

// refusal is egressd's answer to a request net/http refused, shaped like
// every other denial (see Server.deny).
func refusal(code int, detail string) []byte {
	body := "egressd: denied request: " + vocab.ReasonBadRequest.String() + " (" + detail + ")\n"
	// net/http's words start with its own status ("400 Bad Request: ..."),
	// which the status line already has.
	words := strings.TrimPrefix(detail, strconv.Itoa(code)+" "+http.StatusText(code)+": ")
	return []byte("HTTP/1.1 " + strconv.Itoa(code) + " " + policy.StatusPhrase(vocab.ReasonBadRequest, "", words) + "\r\n" +
		"Content-Type: text/plain; charset=utf-8\r\n" +
		"X-Content-Type-Options: nosniff\r\n" +
		"X-Egressd-Reason: " + vocab.ReasonBadRequest.String() + "\r\n" +
		"Connection: close\r\n" +
		"Content-Length: " + strconv.Itoa(len(body)) + "\r\n\r\n" + body)
}

// armRefusal makes the status line of the refusal about to be written to
// rq's client say why, in policy.StatusPhrase's words: clients that never
// show a refusal's body (every client refused a CONNECT) still print its
// status line. Every refusal egressd writes inside a handler goes through
// here; refusal above writes its own.
func armRefusal(rq *request, status int, dn denial) {
	if rq == nil || rq.cc == nil {
		return
	}
	target := ""
	if rq.host != "" {
		target = rq.targetString()
	}
	detail := dn.detail
	if askReason(dn.reason) {
		detail = askHint(dn)
	}
	rq.cc.line.Arm(status, policy.StatusPhrase(dn.reason, target, detail))
}

// connState is the http.Server's ConnState hook. Once a request's response
// is finished (StateIdle) or the next request's bytes are read
// (StateActive), no handler runs on the connection until ServeHTTP sets
// serving again; net/http calls it on the connection's own goroutine, in
// order with its writes.
func (s *Server) connState(c net.Conn, st http.ConnState) {
	cc, ok := c.(*clientConn)
	if !ok {
		return
	}
	if st == http.StateIdle || st == http.StateActive {
		cc.serving.Store(false)
	}
	if st != http.StateNew {
		cc.headBy.Store(0) // the first head is read (see clientConn.SetReadDeadline)
	}
}

// statusFor maps a denial reason to its HTTP status.
func statusFor(r vocab.Reason) int {
	switch r {
	case vocab.ReasonRateLimited:
		return http.StatusTooManyRequests
	case vocab.ReasonTooManyConnections:
		return http.StatusServiceUnavailable
	case vocab.ReasonBadRequest:
		return http.StatusBadRequest
	case vocab.ReasonResolveFailed:
		return http.StatusBadGateway
	}
	return http.StatusForbidden
}

// deny answers a denied request and logs its decision. closeConn ends the
// client connection after the answer (always for CONNECT, so a connection
// that began with CONNECT never carries a plain request; see internal/httphead).
func (s *Server) deny(w http.ResponseWriter, rq *request, dn denial, closeConn bool) {
	armWrite(w, idleTimeout(rq.pol))
	rq.d.Verdict, rq.d.Reason = vocab.Deny, dn.reason
	rq.status = statusFor(dn.reason)
	h := w.Header()
	h.Set("Content-Type", "text/plain; charset=utf-8")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("X-Egressd-Reason", dn.reason.String())
	switch {
	case dn.retry > 0:
		h.Set("Retry-After", strconv.Itoa(int(math.Ceil(dn.retry.Seconds()))))
	case dn.reason == vocab.ReasonTooManyConnections:
		h.Set("Retry-After", "1")
	}
	if closeConn || rq.proto == vocab.ProtoConnect {
		h.Set("Connection", "close")
	}
	armRefusal(rq, rq.status, dn)
	w.WriteHeader(rq.status)
	_, _ = io.WriteString(w, s.denyBody(rq, dn))
	s.recordDecision(rq)
}

// denyBody is the one line a person reads: what, why, and the grant that
// would allow it.
func (s *Server) denyBody(rq *request, dn denial) string {
	line := "egressd: denied " + rq.method + " " + rq.targetString() + ": " + dn.reason.String()
	if dn.detail != "" {
		line += " (" + dn.detail + ")"
	}
	if hint := rq.hint(); hint != "" {
		line += " — " + hint
		if strings.HasPrefix(hint, "add ") {
			line += " in policy.yaml"
		}
	}
	return line + "\n"
}

// hint is policy.Hint for a denied request with a parsed target.
func (rq *request) hint() string {
	if rq.d.Verdict == vocab.Allow || rq.host == "" || rq.port == 0 {
		return ""
	}
	return policy.Hint(rq.policyRequest(), rq.d)
}
