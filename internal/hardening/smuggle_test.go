//go:build hardening

package hardening

import (
	"bufio"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/egressd/egressd/internal/shared/vocab"
)

// smuggledMarker is the path of every request a smuggling attempt tries to
// slip past the proxy's framing; the upstream must never see it.
const smuggledMarker = "/smuggled"

// TestSmuggling sends messages whose framing two parsers could read
// differently. egressd must refuse each with 400 bad_request, log it, not
// keep reading the connection (RFC 9112 §6.3: a server that sees both
// Content-Length and Transfer-Encoding must close after responding), and
// the upstream must never receive the smuggled request.
func TestSmuggling(t *testing.T) {
	w := startWall(t)
	h := "granted.test:" + strconv.Itoa(w.web.port)
	next := "GET http://" + h + smuggledMarker + " HTTP/1.1\r\nHost: " + h + "\r\n\r\n"
	post := "POST http://" + h + "/front HTTP/1.1\r\nHost: " + h + "\r\n"
	cases := []struct{ name, raw string }{
		{"CL.TE", post + "Content-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n" + next},
		{"TE.CL", post + "Transfer-Encoding: chunked\r\nContent-Length: 40\r\n\r\n0\r\n\r\n" + next},
		{"two different Content-Lengths", post + "Content-Length: 0\r\nContent-Length: " + strconv.Itoa(len(next)) + "\r\n\r\n" + next},
		{"Content-Length list", post + "Content-Length: 0, " + strconv.Itoa(len(next)) + "\r\n\r\n" + next},
		{"obs-fold Transfer-Encoding", post + "Transfer-Encoding:\r\n chunked\r\nContent-Length: 5\r\n\r\n0\r\n\r\n" + next},
		{"obs-fold header line", "GET http://" + h + "/front HTTP/1.1\r\nHost: " + h + "\r\nX-Folded: a\r\n b\r\n\r\n" + next},
		{"bare LF header line", post + "X-A: 1\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n0\r\n\r\n" + next},
		{"bare LF request", "GET http://" + h + "/front HTTP/1.1\nHost: " + h + "\n\n" + next},
		{"Transfer-Encoding with space before colon", post + "Transfer-Encoding : chunked\r\nContent-Length: 5\r\n\r\n0\r\n\r\n" + next},
		{"Transfer-Encoding xchunked", post + "Transfer-Encoding: xchunked\r\nContent-Length: 5\r\n\r\n0\r\n\r\n" + next},
		{"Transfer-Encoding chunked twice", post + "Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n" + next},
		{"chunk size with bare LF", post + "Transfer-Encoding: chunked\r\n\r\n5\nhello\r\n0\r\n\r\n" + next},
		{"request after a broken chunk", post + "Transfer-Encoding: chunked\r\n\r\n" + strconv.FormatInt(int64(len(next)), 16) + "\n" + next + "\r\n0\r\n\r\n"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			src := newClientIP()
			c := dialFrom(t, src, w.e.a().Proxy)
			r := exchange(c, http.MethodPost, tc.raw)
			if r.Status != http.StatusBadRequest || r.Reason != vocab.ReasonBadRequest.String() {
				t.Errorf("got %v, want 400 with X-Egressd-Reason bad_request", r)
			}
			if r.Status != 0 {
				// Whatever the first answer, nothing more may be read from
				// this connection: a second response means egressd went on
				// parsing bytes another parser would call a body.
				if r2 := readReply(c, r.bufReader(c), http.MethodGet); r2.Status != 0 {
					t.Errorf("a second response came on the same connection: %v; the connection must close", r2)
				}
			}
			if w.e.log.waitOrNil(2*time.Second, match{Event: "decision", Client: src, Reason: vocab.ReasonBadRequest, Denied: true}) == nil {
				t.Errorf("no bad_request denial logged for client %s", src)
			}
		})
	}
	for _, s := range w.web.requests() {
		if strings.Contains(s.URI, smuggledMarker) {
			t.Errorf("the upstream received the smuggled request %s %s", s.Method, s.URI)
		}
	}
	w.noTrapHits(t)
	w.e.alive(t)
}

// TestDuplicateContentLength: identical repeated Content-Length values may
// be folded into one (RFC 9110 §8.6), so egressd may accept it; but then
// the upstream gets exactly the declared body and nothing else.
func TestDuplicateContentLength(t *testing.T) {
	w := startWall(t)
	h := "granted.test:" + strconv.Itoa(w.web.port)
	src := newClientIP()
	c := dialFrom(t, src, w.e.a().Proxy)
	r := exchange(c, http.MethodPost, "POST http://"+h+"/dup HTTP/1.1\r\nHost: "+h+
		"\r\nContent-Length: 4\r\nContent-Length: 4\r\n\r\nbodyGET http://"+h+"/next HTTP/1.1\r\nHost: "+h+"\r\n\r\n")
	switch r.Status {
	case http.StatusBadRequest:
		if w.e.log.waitOrNil(2*time.Second, match{Client: src, Denied: true}) == nil {
			t.Errorf("refused with 400 but not logged")
		}
	case http.StatusOK:
		var got []seen
		for _, s := range w.web.requests() {
			if s.URI == "/dup" {
				got = append(got, s)
			}
		}
		if len(got) != 1 || got[0].Body != "body" {
			t.Errorf("upstream got %+v, want one POST /dup with body \"body\"", got)
		}
	default:
		t.Errorf("got %v, want 200 (folded) or 400 (refused)", r)
	}
	w.e.alive(t)
}

// TestParserRejectsAreLogged: requests net/http's parser refuses before
// egressd's pipeline runs are still denials an operator must see in the
// decision log (`egressd tail --denied`), with egressd's reason header.
func TestParserRejectsAreLogged(t *testing.T) {
	w := startWall(t)
	p := strconv.Itoa(w.web.port)
	h := "granted.test:" + p
	cases := []struct{ name, raw string }{
		{"two Host headers", "GET http://" + h + "/ HTTP/1.1\r\nHost: " + h + "\r\nHost: 127.0.0.1\r\n\r\n"},
		{"missing Host", "GET http://" + h + "/ HTTP/1.1\r\n\r\n"},
		{"bad header name", "GET http://" + h + "/ HTTP/1.1\r\nHost: " + h + "\r\nBad Header: x\r\n\r\n"},
		{"malformed request line", "GET  http://" + h + "/ HTTP/1.1\r\nHost: " + h + "\r\n\r\n"},
		{"unknown HTTP version", "GET http://" + h + "/ HTTP/9.9\r\nHost: " + h + "\r\n\r\n"},
		{"percent-encoded host", "GET http://%31%32%37.0.0.1:" + p + "/ HTTP/1.1\r\nHost: %31%32%37.0.0.1:" + p + "\r\n\r\n"},
		{"bracketed IPv4", "CONNECT [127.0.0.1]:" + p + " HTTP/1.1\r\nHost: [127.0.0.1]:" + p + "\r\n\r\n"},
		{"non-ASCII Host header", "GET http://grаnted.test:" + p + "/ HTTP/1.1\r\nHost: grаnted.test:" + p + "\r\n\r\n"},
		{"headers over max_header_bytes", "GET http://" + h + "/ HTTP/1.1\r\nHost: " + h + "\r\nX-Big: " + strings.Repeat("a", 64<<10) + "\r\n\r\n"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			src := newClientIP()
			c := dialFrom(t, src, w.e.a().Proxy)
			r := exchange(c, http.MethodGet, tc.raw)
			if r.Status/100 != 4 && r.Status/100 != 5 {
				t.Fatalf("got %v, want a 4xx/5xx refusal", r)
			}
			if r.Reason == "" {
				t.Errorf("got %v without X-Egressd-Reason", r)
			}
			if w.e.log.waitOrNil(2*time.Second, match{Event: "decision", Client: src, Denied: true}) == nil {
				t.Errorf("refusal %v not in the decision log (client %s)", r, src)
			}
		})
	}
	if n := len(w.web.requests()); n != 0 {
		t.Errorf("upstream received %d requests, want 0", n)
	}
	w.e.alive(t)
}

// bufReader returns the reader the reply was read with, so a second
// response on the same connection is read from where the first ended.
func (r reply) bufReader(c interface{ Read([]byte) (int, error) }) *bufio.Reader {
	if r.br != nil {
		return r.br
	}
	return bufio.NewReader(c)
}
