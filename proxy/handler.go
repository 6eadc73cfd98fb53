package proxy

import (
	"context"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"strings"

	"github.com/egressd/egressd/internal/shared/vocab"

	"github.com/egressd/egressd/internal/lib/hop"

	"github.com/egressd/egressd/proxy/internal/httphead"

	"github.com/egressd/egressd/internal/lib/netaddr"
)

// ServeHTTP is the proxy's front door: it runs the decision pipeline (see
// the package comment), hands allowed requests to goproxy and relays
// allowed tunnels itself (serveTunnel).
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	s.busy.add(1)
	defer s.busy.add(-1)
	cc := clientConnFrom(r.Context())
	cc.startServing()
	rq := &request{start: s.now(), method: r.Method, pol: s.policy(), proto: vocab.ProtoHTTP}
	if r.Method == http.MethodConnect {
		rq.proto = vocab.ProtoConnect
	}
	rq.client, rq.cname = clientAddr(r, cc)
	rq.cc = cc

	head, dn := s.admit(r, cc, rq)
	if dn.denied() {
		s.deny(w, rq, dn, true)
		return
	}
	if dn := s.limitClient(rq); dn.denied() {
		s.deny(w, rq, dn, false)
		return
	}
	if rq.proto == vocab.ProtoConnect {
		if dn := connectTarget(r.RequestURI, rq); dn.denied() {
			s.deny(w, rq, dn, true)
			return
		}
		s.serveConnect(connectCall{ctx: r.Context(), w: w, http10: r.ProtoMajor == 1 && r.ProtoMinor == 0}, rq, cc)
		return
	}
	s.serveHTTP(w, r, rq, cc, head)
}

// admit applies the connection cap verdict made at accept time and pairs
// the request with the head the Host-header parser read. A plain request
// without a verified head is refused: egressd could not check its Host.
func (s *Server) admit(r *http.Request, cc *clientConn, rq *request) (httphead.Record, denial) {
	var head httphead.Record
	if hp := cc.parser(); hp != nil {
		h, ok := hp.Take(r.Method, r.RequestURI)
		if ok && h.Flaw != "" {
			return head, denial{reason: vocab.ReasonBadRequest, detail: h.Flaw}
		}
		if !ok {
			return head, denial{reason: vocab.ReasonBadRequest, detail: "unparseable request head"}
		}
		head = h
	} else if rq.proto != vocab.ProtoConnect {
		return head, denial{reason: vocab.ReasonBadRequest, detail: "plain request after CONNECT"}
	}
	if cc != nil && cc.over {
		return head, denial{reason: vocab.ReasonTooManyConnections}
	}
	return head, denial{}
}

// connectCall is a CONNECT as serveConnect needs it, read by net/http
// (w is its ResponseWriter, and hijacking takes the connection) or by the
// front reader (front.go: w writes to the connection, which is the
// client's already, with early the bytes read past the head).
type connectCall struct {
	ctx    context.Context
	w      http.ResponseWriter
	http10 bool
	front  bool
	early  []byte
}

// connectTarget is step 4 for a CONNECT: host:port and nothing else.
func connectTarget(target string, rq *request) denial {
	host, port, err := net.SplitHostPort(target)
	if err != nil || strings.ContainsAny(target, "@/?#") {
		return denial{reason: vocab.ReasonBadRequest, detail: "CONNECT target must be host:port"}
	}
	return rq.setTarget(host, port)
}

// serveConnect decides a CONNECT whose target is set and relays the
// tunnel (serveTunnel).
func (s *Server) serveConnect(cr connectCall, rq *request, cc *clientConn) {
	if dn := s.decide(cr.ctx, rq); dn.denied() {
		s.deny(cr.w, rq, dn, true)
		return
	}
	s.recordDecision(rq)
	s.serveTunnel(cr, rq, cc)
}

// serveHTTP decides an absolute-URI request and lets goproxy relay it
// through the upstream client (upstream.go), whose only dialer is dialHTTP.
func (s *Server) serveHTTP(w http.ResponseWriter, r *http.Request, rq *request, cc *clientConn, head httphead.Record) {
	if dn := parseAbsolute(r, rq); dn.denied() {
		s.deny(w, rq, dn, false)
		return
	}
	if !hostMatches(head, rq) {
		s.deny(w, rq, denial{reason: vocab.ReasonHostMismatch}, false)
		return
	}
	if dn := s.decide(r.Context(), rq); dn.denied() {
		s.deny(w, rq, dn, false)
		return
	}
	s.recordDecision(rq)
	prepareOutbound(r, rq)
	if r.Body != nil && r.Body != http.NoBody {
		rq.body = &countingBody{ReadCloser: r.Body, idle: idleTimeout(rq.pol)}
		if cc != nil {
			rq.body.conn = cc
		}
		r.Body = rq.body
	}
	rw := newRespWriter(w, cc, rq)
	s.gp.ServeHTTP(rw, r.WithContext(withRequest(r.Context(), rq)))
	reason := vocab.ReasonNone
	if rq.body.failure() != nil {
		// The client's body did not parse or was cut short: a bad request,
		// logged as a denial after the allow above. filterResponse answered
		// it with 400 and Connection: close unless the upstream had already
		// answered. In that case net/http would keep the connection: the
		// upstream client closed the body after the failure, and since
		// r.Body is our wrapper net/http takes a closed body for a consumed
		// one and would read the next request from wherever the body broke.
		reason = vocab.ReasonBadRequest
		s.recordLateDenial(rq, reason, rw.status)
		if !rq.badBody {
			rw.abort()
		}
	}
	rw.arm() // net/http finishes the response after the handler returns
	up, down := rw.finish()
	if rq.body != nil {
		up += rq.body.n.Load()
	}
	s.recordClose(rq, reason, rw.status, up, down)
}

// parseAbsolute is step 4 for plain HTTP: only absolute http:// URIs
// without userinfo. The decision never looks at the Host header.
func parseAbsolute(r *http.Request, rq *request) denial {
	u := r.URL
	switch {
	case !u.IsAbs():
		return denial{reason: vocab.ReasonBadRequest,
			detail: "origin-form request: egressd is a forward proxy, not a web server; send absolute URIs via HTTP_PROXY"}
	case u.Scheme != "http":
		return denial{reason: vocab.ReasonBadRequest, detail: "only http:// URLs; use CONNECT for " + u.Scheme}
	case u.User != nil:
		// http://granted@evil/ reads as "granted" to a person and as "evil"
		// to a parser: refuse instead of guessing which one was meant.
		return denial{reason: vocab.ReasonBadRequest, detail: "userinfo in URL"}
	case u.Host == "":
		return denial{reason: vocab.ReasonBadRequest, detail: "no host in URL"}
	}
	port := u.Port()
	if port == "" {
		port = "80"
	}
	return rq.setTarget(u.Hostname(), port)
}

// prepareOutbound rewrites the request for the upstream: canonical host in
// the URL (which the upstream client also sends as Host), no hop-by-hop or proxy
// headers.
func prepareOutbound(r *http.Request, rq *request) {
	if rq.port == 80 {
		host := rq.host
		if rq.ip.Is6() {
			host = "[" + host + "]"
		}
		r.URL.Host = host
	} else {
		r.URL.Host = net.JoinHostPort(rq.host, strconv.Itoa(int(rq.port)))
	}
	r.Host = ""
	r.RequestURI = ""
	hop.Remove(r.Header, isWebSocket(r.Header))
}

// isWebSocket reports a WebSocket handshake: Connection lists upgrade and
// Upgrade names websocket.
func isWebSocket(h http.Header) bool {
	return headerHasToken(h, "Connection", "upgrade") && headerHasToken(h, "Upgrade", "websocket")
}

func headerHasToken(h http.Header, name, token string) bool {
	for _, v := range h[name] {
		for _, t := range strings.Split(v, ",") {
			if strings.EqualFold(strings.TrimSpace(t), token) {
				return true
			}
		}
	}
	return false
}

// clientAddr is the client's address and its log spelling (made once per
// connection when there is one).
func clientAddr(r *http.Request, cc *clientConn) (netip.Addr, string) {
	if cc != nil {
		return cc.ip, cc.name
	}
	ip := netaddr.Parse(r.RemoteAddr)
	return ip, netaddr.String(ip)
}

// hostMatches reports whether the recorded Host header (if any) names the
// same host and port as the request target. No Host header (HTTP/1.0) is
// accepted: there is nothing to disagree with.
func hostMatches(h httphead.Record, rq *request) bool {
	switch h.Hosts {
	case 0:
		return true
	case 1:
	default:
		return false
	}
	host, port := h.Host, "80"
	if hh, pp, err := net.SplitHostPort(h.Host); err == nil {
		host, port = hh, pp
		if port == "" {
			port = "80"
		}
	}
	var probe request
	if probe.setTarget(host, port).denied() {
		return false
	}
	return probe.host == rq.host && probe.port == rq.port
}
