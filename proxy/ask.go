package proxy

import (
	"bufio"
	"context"
	"io"
	"math"
	"net/http"
	"strconv"
	"strings"

	"github.com/egressd/egressd/policy"
)

// ask is the hold of step 6: an askable denial waits while a person is
// asked (Config.Ask). When they allow it the request is decided again on
// the policy now in force, and goes on through the normal steps (rate
// limit, resolve, address check, dial); otherwise the denial to answer.
func (s *Server) ask(ctx context.Context, rq *request) denial {
	if s.cfg.Ask == nil || rq.d.Verdict != policy.Deny || !rq.pol.Askable(rq.d.Reason) {
		return denial{reason: rq.d.Reason}
	}
	reason, retry, detail := s.cfg.Ask.Hold(ctx, rq.policyRequest(), rq.d)
	if reason != policy.ReasonNone {
		return denial{reason: reason, retry: retry, detail: detail}
	}
	rq.pol = s.policy()
	rq.d = rq.pol.Decide(rq.policyRequest())
	if !rq.d.Verdict.Allowed() {
		return denial{reason: rq.d.Reason}
	}
	return denial{}
}

func askReason(r policy.Reason) bool {
	return r == policy.ReasonApprovalPending || r == policy.ReasonOperatorDenied
}

// askPhrase is the status line's reason phrase for the refusals of ask:.
// Clients print the status line of a failed CONNECT and not its body
// (Python's http.client: "Tunnel connection failed: 403 <phrase>"), so
// the phrase itself says that a person was asked and when to retry.
func askPhrase(dn denial) string {
	if dn.reason == policy.ReasonOperatorDenied {
		return "egressd operator_denied: a person refused this destination"
	}
	return "egressd approval_pending: a person was asked; retry in " + strconv.Itoa(retrySeconds(dn)) + "s"
}

func retrySeconds(dn denial) int { return int(math.Ceil(dn.retry.Seconds())) }

// denyAsked answers an ask: refusal with its own status line, which
// net/http's ResponseWriter cannot write: it takes the connection over,
// writes the whole answer and closes it. false when the connection cannot
// be taken over; deny then answers the usual way.
func (s *Server) denyAsked(w http.ResponseWriter, rq *request, dn denial) bool {
	hj, ok := w.(http.Hijacker)
	if !ok {
		return false
	}
	conn, buf, err := hj.Hijack()
	if err != nil {
		return false
	}
	defer conn.Close()
	_ = conn.SetWriteDeadline(s.now().Add(idleTimeout(rq.pol)))
	rq.d.Verdict, rq.d.Reason = policy.Deny, dn.reason
	rq.status = http.StatusForbidden
	body := s.denyBody(rq, dn)
	writeAsked(buf.Writer, askPhrase(dn), dn, body)
	_ = buf.Flush()
	s.recordDecision(rq)
	return true
}

func writeAsked(w *bufio.Writer, phrase string, dn denial, body string) {
	var b strings.Builder
	b.WriteString("HTTP/1.1 403 " + phrase + "\r\n")
	b.WriteString("Content-Type: text/plain; charset=utf-8\r\nX-Content-Type-Options: nosniff\r\n")
	b.WriteString("X-Egressd-Reason: " + dn.reason.String() + "\r\n")
	if dn.retry > 0 {
		b.WriteString("Retry-After: " + strconv.Itoa(retrySeconds(dn)) + "\r\n")
	}
	b.WriteString("Connection: close\r\nContent-Length: " + strconv.Itoa(len(body)) + "\r\n\r\n")
	_, _ = io.WriteString(w, b.String())
	_, _ = io.WriteString(w, body)
}
