package apiroute

import (
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"

	"github.com/egressd/egressd/internal/lib/hop"

	"github.com/egressd/egressd/internal/shared/vocab"

	"github.com/egressd/egressd/internal/lib/statusline"

	"github.com/egressd/egressd/internal/lib/scrub"
	"github.com/egressd/egressd/internal/shared/declog"
	"github.com/egressd/egressd/policy"
)

// forward sends an allowed call upstream with the secret injected and
// streams the answer back through the scrubber.
func (c *call) forward(route *policy.APIRoute, d policy.APIDecision) {
	t, err := c.h.trust.Get(route.Config().CAFile)
	if err != nil {
		c.upstreamFailed(route, err)
		return
	}
	target := upstreamURL(route.Upstream, d.Path, d.Query)
	body := http.MaxBytesReader(c.w, c.r.Body, route.MaxBodyBytes)
	counted := &countingReader{r: body}
	req, err := http.NewRequestWithContext(c.r.Context(), c.r.Method, target.String(), counted)
	if err != nil {
		c.refuse(http.StatusBadRequest, vocab.ReasonBadRequest, "cannot build the upstream request", "")
		return
	}
	req.URL = target
	req.ContentLength = c.r.ContentLength
	if c.r.ContentLength == 0 {
		req.Body = http.NoBody
	}
	c.upstreamHeaders(req, route.Config().Secret)
	resp, err := t.RoundTrip(req)
	var readErr error
	c.bytesUp, readErr = counted.counts()
	if err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) || errors.As(readErr, &tooBig) {
			c.refuse(http.StatusRequestEntityTooLarge, vocab.ReasonBadRequest,
				"request body over the route's max_body_bytes ("+strconv.FormatInt(route.MaxBodyBytes, 10)+")", "")
			return
		}
		c.upstreamFailed(route, err)
		return
	}
	defer resp.Body.Close()
	c.copyResponseHeaders(resp, route)
	c.w.WriteHeader(resp.StatusCode)
	n, copyErr := c.pump(resp.Body)
	c.record(vocab.Allow, vocab.ReasonAllowlisted, resp.StatusCode, n, "")
	lvl := slog.LevelInfo
	note := ""
	if copyErr != nil {
		lvl, note = slog.LevelWarn, scrub.String(copyErr.Error(), c.secrets...)
	}
	c.h.log.Log(c.r.Context(), lvl, "api call", "client", c.client, "route", c.route, "method", logSafe(c.r.Method),
		"path", logPath(c.path), "rule", c.rule, "status", resp.StatusCode, "bytes_up", c.bytesUp, "bytes_down", n,
		"duration", c.h.clock().Sub(c.start), "note", note)
}

// upstreamURL joins the route's base URL and the canonical path (already
// escaped, as matched) and sets the query the decision chose.
func upstreamURL(base *url.URL, canon, query string) *url.URL {
	u := *base
	u.User = nil
	rawBase := base.EscapedPath()
	raw := rawBase + canon
	if canon == "/" && rawBase != "" {
		raw = rawBase
	}
	u.RawPath = raw
	u.Path, _ = url.PathUnescape(raw) // canonpath guarantees a valid escape
	u.RawQuery = query
	return &u
}

// upstreamHeaders copies the agent's headers minus hop-by-hop ones and its
// credentials, then injects the secret. Accept-Encoding is identity so the
// scrubber sees the bytes a secret would be spelled in. Dropped too:
// ranges, which would let an echo of the secret come back in pieces no
// scrubber can join; method overrides, which some upstreams obey, turning
// an allowed POST into a DELETE; and cookies, a credential egressd does not
// hand out.
func (c *call) upstreamHeaders(req *http.Request, s policy.SecretConfig) {
	for k, vs := range c.r.Header {
		switch k {
		case "Authorization", "Proxy-Authorization", "Accept-Encoding", "Content-Length", "Host", "Expect",
			"Range", "If-Range", "X-Http-Method-Override", "X-Http-Method", "X-Method-Override", "Cookie":
			continue
		}
		if hop.Is(k, c.r.Header) || (s.Header != "" && strings.EqualFold(k, s.Header)) {
			continue
		}
		req.Header[k] = vs
	}
	req.Header.Set("Accept-Encoding", "identity")
	if s.Basic != nil {
		req.SetBasicAuth(s.Basic.User, c.secrets[0])
		return
	}
	req.Header.Set(s.Header, s.Prefix+c.secrets[0])
}

// copyResponseHeaders passes the upstream's headers on, minus hop-by-hop
// ones, any header that carries the secret, and Set-Cookie (a session the
// upstream opens for the injected secret would be a credential of its own
// in the agent's hands); a Location on the upstream
// (the redirect is never followed) is rewritten to the same place on this
// route, so a client that follows it stays on the gateway.
func (c *call) copyResponseHeaders(resp *http.Response, route *policy.APIRoute) {
	dst := c.w.Header()
	for k, vs := range resp.Header {
		if hop.Is(k, resp.Header) || k == "Set-Cookie" || c.carriesSecret(k, vs) {
			continue
		}
		dst[k] = vs
	}
	if loc := resp.Header.Get("Location"); loc != "" && !c.carriesSecret("Location", []string{loc}) {
		dst.Set("Location", rewriteLocation(loc, resp.Request.URL, route))
	}
}

func (c *call) carriesSecret(k string, vs []string) bool {
	for _, s := range c.secrets {
		if strings.Contains(strings.ToLower(k), strings.ToLower(s)) {
			return true
		}
		for _, v := range vs {
			if strings.Contains(v, s) {
				return true
			}
		}
	}
	return false
}

// rewriteLocation maps a redirect target on the route's upstream (same
// scheme, host and base path) to /<route>/<rest>; any other target is
// left as it is: the agent reaches it, if at all, through the proxy and
// its allow-list, and without the secret.
func rewriteLocation(loc string, reqURL *url.URL, route *policy.APIRoute) string {
	u, err := reqURL.Parse(loc)
	if err != nil {
		return loc
	}
	base := route.Upstream
	if u.Scheme != base.Scheme || !strings.EqualFold(u.Host, base.Host) {
		return loc
	}
	rest, ok := strings.CutPrefix(u.EscapedPath(), base.EscapedPath())
	if !ok || (rest != "" && rest[0] != '/') {
		return loc
	}
	out := "/" + route.Name + rest
	if u.RawQuery != "" {
		out += "?" + u.RawQuery
	}
	return out
}

// pump copies the body through the scrubber, flushing each chunk so that
// streams (git's sideband progress, event streams) are not delayed.
func (c *call) pump(body io.Reader) (int64, error) {
	fw := &flushWriter{w: c.w, rc: http.NewResponseController(c.w)}
	sw := scrub.NewWriter(fw, c.secrets...)
	buf := make([]byte, 32<<10)
	var err error
	for {
		n, rerr := body.Read(buf)
		if n > 0 {
			if _, werr := sw.Write(buf[:n]); werr != nil {
				err = werr
				break
			}
		}
		if rerr != nil {
			if rerr != io.EOF {
				err = rerr
			}
			break
		}
	}
	if cerr := sw.Close(); err == nil {
		err = cerr
	}
	return fw.n, err
}

type flushWriter struct {
	w  io.Writer
	rc *http.ResponseController
	n  int64
}

func (f *flushWriter) Write(p []byte) (int, error) {
	n, err := f.w.Write(p)
	f.n += int64(n)
	if err == nil {
		f.rc.Flush()
	}
	return n, err
}

// countingReader counts the request body on its way upstream. The
// Transport may still be reading it after RoundTrip returns (an upstream
// that answers before reading the whole body), so the counts are guarded.
type countingReader struct {
	r   io.Reader
	mu  sync.Mutex
	n   int64
	err error
}

func (r *countingReader) Read(p []byte) (int, error) {
	n, err := r.r.Read(p)
	r.mu.Lock()
	r.n += int64(n)
	if err != nil && err != io.EOF {
		r.err = err
	}
	r.mu.Unlock()
	return n, err
}

// counts returns the bytes read so far and the read error, if any.
func (r *countingReader) counts() (int64, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.n, r.err
}

func (r *countingReader) Close() error { return nil }

func (c *call) upstreamFailed(route *policy.APIRoute, err error) {
	c.h.log.Warn("api route: upstream failed", "route", route.Name, "err", scrub.String(err.Error(), c.secrets...))
	msg := "egressd: the upstream of route " + route.Name + " could not be reached\n"
	c.w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	c.w.WriteHeader(http.StatusBadGateway)
	io.WriteString(c.w, msg)
	c.record(vocab.Allow, vocab.ReasonAllowlisted, http.StatusBadGateway, int64(len(msg)), "")
}

// refuse answers a refusal as the proxy does (X-Egressd-Reason and one
// line a person can act on) and logs the request's one entry.
func (c *call) refuse(status int, reason vocab.Reason, msg, hint string) {
	line := "egressd: denied " + logSafe(c.r.Method) + " /" + c.route + logPath(c.path) + ": " + reason.String() + " — " + msg
	if hint != "" {
		line += "; " + hint + " in policy.yaml"
	}
	line += "\n"
	hd := c.w.Header()
	hd.Set("Content-Type", "text/plain; charset=utf-8")
	hd.Set("X-Egressd-Reason", reason.String())
	hd.Set("Content-Length", strconv.Itoa(len(line)))
	statusline.Arm(c.r.Context(), status, policy.StatusPhrase(reason, "/"+c.route+logPath(c.path), ""))
	c.w.WriteHeader(status)
	io.WriteString(c.w, line)
	c.record(vocab.Deny, reason, status, int64(len(line)), hint)
	c.h.log.Warn("api call refused", "client", c.client, "route", c.route, "method", logSafe(c.r.Method),
		"path", logPath(c.path), "status", status, "reason", reason.String(), "detail", msg)
}

// record writes the request's decision entry.
func (c *call) record(v vocab.Verdict, reason vocab.Reason, status int, bytesDn int64, hint string) {
	c.h.rec.Record(declog.Entry{
		Time: c.start, Event: vocab.EventDecision, Client: c.client, Proto: vocab.ProtoGateway,
		Host: c.route, Method: logSafe(c.r.Method), Path: logPath(c.path), Verdict: v, Reason: reason,
		Rule: c.rule, Hint: hint, Status: status, BytesUp: c.bytesUp, BytesDn: bytesDn,
		Duration: c.h.clock().Sub(c.start),
	})
}

// logPath bounds a canonical path for a log field.
func logPath(p string) string {
	if len(p) > 512 {
		return p[:512]
	}
	return p
}
