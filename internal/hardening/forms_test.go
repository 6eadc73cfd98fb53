//go:build hardening

package hardening

import (
	"net/http"
	"strconv"
	"testing"
	"time"

	"github.com/egressd/egressd/internal/shared/vocab"
)

// TestRequestForms: the decision is made on the request target, never on
// the Host header; origin-form, other schemes and Host/URI disagreements
// are refused, each on a keep-alive connection whose earlier request was a
// good one (so a confused parser state would show).
func TestRequestForms(t *testing.T) {
	// Many requests to one host: no token bucket may answer first.
	w := startWall(t, func(p *policyFile) { p.Unlimited = true })
	p := strconv.Itoa(w.web.port)
	h := "granted.test:" + p
	good := "GET http://" + h + "/first HTTP/1.1\r\nHost: " + h + "\r\n\r\n"
	cases := []struct {
		name, raw string
		want      vocab.Reason
	}{
		{"origin-form", "GET /admin HTTP/1.1\r\nHost: " + h + "\r\n\r\n", rBad},
		{"origin-form naming loopback", "GET /admin HTTP/1.1\r\nHost: 127.0.0.1:" + p + "\r\n\r\n", rBad},
		{"scheme-relative", "GET //127.0.0.1:" + p + "/ HTTP/1.1\r\nHost: " + h + "\r\n\r\n", rBad},
		{"authority-form on GET", "GET " + h + " HTTP/1.1\r\nHost: " + h + "\r\n\r\n", rBad},
		{"https absolute URI", "GET https://" + h + "/ HTTP/1.1\r\nHost: " + h + "\r\n\r\n", rBad},
		{"ftp absolute URI", "GET ftp://" + h + "/ HTTP/1.1\r\nHost: " + h + "\r\n\r\n", rBad},
		{"empty host", "GET http:///x HTTP/1.1\r\nHost: " + h + "\r\n\r\n", rBad},
		{"single slash", "GET http:/" + h + "/ HTTP/1.1\r\nHost: " + h + "\r\n\r\n", rBad},
		{"userinfo granted@metadata", "GET http://granted.test@169.254.169.254/ HTTP/1.1\r\nHost: 169.254.169.254\r\n\r\n", rBad},
		{"userinfo metadata@granted", "GET http://169.254.169.254:80@" + h + "/ HTTP/1.1\r\nHost: " + h + "\r\n\r\n", rBad},
		// Host/URI disagreement is checked before the target is decided,
		// so a private URI behind a granted Host is host_mismatch too.
		{"Host names loopback", "GET http://" + h + "/ HTTP/1.1\r\nHost: 127.0.0.1:" + p + "\r\n\r\n", vocab.ReasonHostMismatch},
		{"Host names metadata", "GET http://" + h + "/ HTTP/1.1\r\nHost: 169.254.169.254\r\n\r\n", vocab.ReasonHostMismatch},
		{"Host other port", "GET http://" + h + "/ HTTP/1.1\r\nHost: granted.test:1\r\n\r\n", vocab.ReasonHostMismatch},
		{"Host ungranted name", "GET http://" + h + "/ HTTP/1.1\r\nHost: ungranted.test:" + p + "\r\n\r\n", vocab.ReasonHostMismatch},
		{"URI loopback, Host granted", "GET http://127.0.0.1:" + p + "/ HTTP/1.1\r\nHost: " + h + "\r\n\r\n", vocab.ReasonHostMismatch},
		{"URI metadata, Host granted", "GET http://169.254.169.254:" + p + "/ HTTP/1.1\r\nHost: " + h + "\r\n\r\n", vocab.ReasonHostMismatch},
		{"CONNECT with a path", "CONNECT /granted.test:" + p + " HTTP/1.1\r\nHost: " + h + "\r\n\r\n", rBad},
		{"CONNECT with a scheme", "CONNECT http://" + h + "/ HTTP/1.1\r\nHost: " + h + "\r\n\r\n", rBad},
		{"CONNECT with userinfo", "CONNECT " + h + "@127.0.0.1:" + p + " HTTP/1.1\r\nHost: " + h + "\r\n\r\n", rBad},
		{"CONNECT without a port", "CONNECT granted.test HTTP/1.1\r\nHost: granted.test\r\n\r\n", rBad},
		{"CONNECT port 0", "CONNECT granted.test:0 HTTP/1.1\r\nHost: granted.test:0\r\n\r\n", rBad},
		{"CONNECT port overflow", "CONNECT granted.test:65616 HTTP/1.1\r\nHost: granted.test:65616\r\n\r\n", rBad},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			src := newClientIP()
			c := dialFrom(t, src, w.e.a().Proxy)
			if r := exchange(c, http.MethodGet, good); r.Status != 200 {
				t.Fatalf("first, good request: got %v, want 200", r)
			}
			r := exchange(c, http.MethodGet, tc.raw)
			if r.Status != statusOf(tc.want) || r.Reason != tc.want.String() {
				t.Errorf("got %v, want %d %s", r, statusOf(tc.want), tc.want)
			}
			if w.e.log.waitOrNil(2*time.Second, match{Event: "decision", Client: src, Reason: tc.want, Denied: true}) == nil {
				t.Errorf("no %s denial logged for client %s", tc.want, src)
			}
		})
	}
	t.Run("asterisk-form", func(t *testing.T) {
		// Refused and logged like any request egressd cannot forward,
		// never forwarded.
		src := newClientIP()
		c := dialFrom(t, src, w.e.a().Proxy)
		if r := exchange(c, "OPTIONS", "OPTIONS * HTTP/1.1\r\nHost: "+h+"\r\n\r\n"); r.Status != 400 || r.Reason != "bad_request" {
			t.Errorf("got %v, want 400 bad_request", r)
		}
		if w.e.log.waitOrNil(2*time.Second, match{Event: "decision", Client: src, Reason: vocab.ReasonBadRequest, Denied: true}) == nil {
			t.Errorf("no bad_request denial logged for OPTIONS * from %s", src)
		}
	})
	for _, s := range w.web.requests() {
		if s.URI != "/first" {
			t.Errorf("upstream received %s %s (Host %s), want only /first", s.Method, s.URI, s.Host)
		}
	}
	w.noTrapHits(t)
	w.e.alive(t)
}

// TestAbsoluteFormCase: scheme and host case do not matter, and the
// upstream sees the canonical host, never the client's Host header.
func TestAbsoluteFormCase(t *testing.T) {
	w := startWall(t)
	p := strconv.Itoa(w.web.port)
	src := newClientIP()
	c := dialFrom(t, src, w.e.a().Proxy)
	r := exchange(c, http.MethodGet, "GET HTTP://GRANTED.TEST:"+p+"/case HTTP/1.1\r\nHost: Granted.Test:"+p+"\r\n\r\n")
	if r.Status != 200 {
		t.Fatalf("got %v, want 200", r)
	}
	reqs := w.web.requests()
	if len(reqs) != 1 || reqs[0].Host != "granted.test:"+p {
		t.Errorf("upstream saw %+v, want one request with Host granted.test:%s", reqs, p)
	}
}
