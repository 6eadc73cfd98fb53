package proxy

import (
	"context"
	"math"
	"strconv"

	"github.com/egressd/egressd/internal/shared/vocab"
)

// ask is the hold of step 6: an askable denial waits while a person is
// asked (Config.Ask). When they allow it the request is decided again on
// the policy now in force, and goes on through the normal steps (rate
// limit, resolve, address check, dial); otherwise the denial to answer.
func (s *Server) ask(ctx context.Context, rq *request) denial {
	if s.cfg.Ask == nil || rq.d.Verdict != vocab.Deny || !rq.pol.Askable(rq.d.Reason) {
		return denial{reason: rq.d.Reason}
	}
	reason, retry, detail := s.cfg.Ask.Hold(ctx, rq.policyRequest(), rq.d)
	if reason != vocab.ReasonNone {
		return denial{reason: reason, retry: retry, detail: detail}
	}
	rq.pol = s.policy()
	rq.d = rq.pol.Decide(rq.policyRequest())
	if !rq.d.Verdict.Allowed() {
		return denial{reason: rq.d.Reason}
	}
	return denial{}
}

func askReason(r vocab.Reason) bool {
	return r == vocab.ReasonApprovalPending || r == vocab.ReasonOperatorDenied
}

// askHint is the short words of an ask: refusal's status line. Clients
// print the status line of a failed CONNECT and not its body (Python's
// http.client: "Tunnel connection failed: 403 <phrase>"), so the phrase
// itself says that a person was asked and when to retry; the body keeps
// the long account (dn.detail).
func askHint(dn denial) string {
	if dn.reason == vocab.ReasonOperatorDenied {
		return "a person refused this destination"
	}
	return "a person was asked; retry in " + strconv.Itoa(int(math.Ceil(dn.retry.Seconds()))) + "s"
}
