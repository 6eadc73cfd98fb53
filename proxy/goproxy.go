package proxy

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"

	"github.com/egressd/egressd/internal/lib/hop"
	"github.com/egressd/egressd/internal/shared/vocab"
	"github.com/egressd/egressd/policy"
	"github.com/elazarl/goproxy"
)

// Everything goproxy calls back into lives in this file, next to the
// answers egressd makes up inside goproxy's flow: the plain-HTTP engine's
// configuration, its response hooks, and the request state (request,
// carried in the context) they read.

// newGoproxy configures goproxy as the request engine: it relays bodies
// and upgrades (tunnels are relayed by serveTunnel); every decision
// happened before it runs. Requests go upstream through s.up, set on each
// one (goproxy's per-request RoundTripper); gp.Tr is never used for a
// request and refuses to dial, so no fallback of goproxy's reaches the
// network unchecked.
func (s *Server) newGoproxy() *goproxy.ProxyHttpServer {
	gp := goproxy.NewProxyHttpServer()
	gp.Tr = &http.Transport{Proxy: nil, DialContext: refuseDial, DialTLSContext: refuseDial}
	gp.Logger = printfLogger{s.log}
	gp.KeepAcceptEncoding = true
	gp.ConnectDial = nil // the default reads HTTPS_PROXY from the environment
	gp.ConnectDialWithReq = noConnectDial
	gp.NonproxyHandler = http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		http.Error(w, "egressd: not a proxy request", http.StatusBadRequest)
	})
	gp.OnRequest().DoFunc(func(r *http.Request, ctx *goproxy.ProxyCtx) (*http.Request, *http.Response) {
		ctx.RoundTripper = s.up
		return r, nil
	})
	gp.OnResponse().DoFunc(s.answerDialDenied)
	gp.OnResponse().DoFunc(s.filterResponse)
	return gp
}

func refuseDial(context.Context, string, string) (net.Conn, error) {
	return nil, errors.New("egressd dials only through its checked upstream client")
}

// printfLogger sends goproxy's chatter (mostly copy errors on closed
// connections) to slog at debug level.
type printfLogger struct{ l *slog.Logger }

func (p printfLogger) Printf(format string, v ...any) {
	if p.l.Enabled(context.Background(), slog.LevelDebug) {
		p.l.Debug("goproxy", "msg", fmt.Sprintf(format, v...))
	}
}

// filterResponse turns upstream errors into a 502 that names no URL, and
// strips hop-by-hop response headers (keeping a 101's upgrade headers).
func (s *Server) filterResponse(resp *http.Response, ctx *goproxy.ProxyCtx) *http.Response {
	if resp != nil {
		hop.Remove(resp.Header, resp.StatusCode == http.StatusSwitchingProtocols && isWebSocket(resp.Header))
		return resp
	}
	rq := requestFrom(ctx.Req.Context())
	if rq != nil && rq.body.failure() != nil {
		return s.badBodyResponse(ctx.Req, rq)
	}
	target := "upstream"
	if rq != nil {
		target = rq.targetString()
		s.log.Warn("proxy upstream failed", "proto", "http", "host", rq.host, "port", rq.port, "err", errCause(ctx.Error))
	}
	body := "egressd: upstream " + target + " failed: " + errCause(ctx.Error) + "\n"
	return &http.Response{
		StatusCode:    http.StatusBadGateway,
		Status:        "502 Bad Gateway",
		Proto:         "HTTP/1.1",
		ProtoMajor:    1,
		ProtoMinor:    1,
		Header:        http.Header{"Content-Type": {"text/plain; charset=utf-8"}},
		Body:          io.NopCloser(strings.NewReader(body)),
		ContentLength: int64(len(body)),
		Request:       ctx.Req,
	}
}

// badBodyResponse answers a request whose body failed to read (a broken
// chunked encoding, a body cut short): the client's fault, so 400
// bad_request rather than 502, and Connection: close, because net/http
// would go on reading requests from wherever the broken body left off.
func (s *Server) badBodyResponse(req *http.Request, rq *request) *http.Response {
	rq.badBody = true
	dn := denial{reason: vocab.ReasonBadRequest, detail: "request body: " + errCause(rq.body.failure())}
	body := s.denyBody(rq, dn)
	armRefusal(rq, http.StatusBadRequest, dn)
	return denialResponse(req, http.StatusBadRequest, vocab.ReasonBadRequest, body, true)
}

// denialResponse is the answer egressd makes up itself for a request it
// refuses once goproxy has it: status, the X-Egressd-Reason header and
// body, and Connection: close when closing.
func denialResponse(req *http.Request, status int, reason vocab.Reason, body string, closing bool) *http.Response {
	h := http.Header{
		"Content-Type":           {"text/plain; charset=utf-8"},
		"X-Content-Type-Options": {"nosniff"},
		"X-Egressd-Reason":       {reason.String()},
	}
	if closing {
		h["Connection"] = []string{"close"}
	}
	return &http.Response{
		StatusCode:    status,
		Status:        strconv.Itoa(status) + " " + http.StatusText(status),
		Proto:         "HTTP/1.1",
		ProtoMajor:    1,
		ProtoMinor:    1,
		Header:        h,
		Body:          io.NopCloser(strings.NewReader(body)),
		ContentLength: int64(len(body)),
		Close:         closing,
		Request:       req,
	}
}

// errCause drops the url.Error wrapper, whose text carries the full URL
// (query strings included), which egressd never logs.
func errCause(err error) string {
	if err == nil {
		return "no response"
	}
	var ue *url.Error
	if errors.As(err, &ue) {
		err = ue.Err
	}
	return err.Error()
}

// answerDialDenied is the first response filter: a request whose dial
// dialHTTP refused gets the answer an early denial gets (status,
// X-Egressd-Reason, one line with the hint), logged as a denial after its
// allow line. Logging here rather than in dialHTTP logs the refusal once,
// with the status it was answered with.
func (s *Server) answerDialDenied(resp *http.Response, ctx *goproxy.ProxyCtx) *http.Response {
	if resp != nil {
		return resp // before dd, which escapes: no allocation per response
	}
	rq := requestFrom(ctx.Req.Context())
	var dd *dialDenied
	if rq == nil || !errors.As(ctx.Error, &dd) {
		return resp
	}
	status := statusFor(dd.reason)
	s.recordLateDenial(rq, dd.reason, status)
	denied := *rq
	denied.d = policy.Decision{Verdict: vocab.Deny, Reason: dd.reason, Rule: rq.d.Rule}
	body := s.denyBody(&denied, denial{reason: dd.reason})
	armRefusal(rq, status, denial{reason: dd.reason})
	return denialResponse(ctx.Req, status, dd.reason, body, false)
}
