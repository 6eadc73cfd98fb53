package proxy

import (
	"bufio"
	"io"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/egressd/egressd/internal/shared/vocab"

	"github.com/egressd/egressd/internal/shared/declog"
)

// smuggledPath is the path of the request each framing attack pipelines
// behind its first one; the upstream must never see it.
const smuggledPath = "/smuggled"

// refusedCase is a raw request egressd must refuse as bad_request: the
// status it gets, the proto of its decision line and a body substring.
type refusedCase struct {
	name       string
	raw        string
	wantStatus int
	wantProto  vocab.Proto
	wantBody   string
}

// checkRefused sends c.raw on a fresh connection and checks egressd's
// refusal: status, X-Egressd-Reason, Connection: close, one body line, no
// second response (the connection closes), and its decision line.
// allowedFirst: the request was allowed (and logged so) before it failed.
func checkRefused(t *testing.T, f *fixture, c refusedCase, allowedFirst bool) {
	t.Helper()
	f.rec.Reset()
	conn := f.dial()
	br := bufio.NewReader(conn)
	if _, err := io.WriteString(conn, c.raw); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatalf("reading the refusal: %v", err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	body := string(b)
	if resp.StatusCode != c.wantStatus || resp.Header.Get("X-Egressd-Reason") != "bad_request" || !resp.Close {
		t.Errorf("got %d reason %q close=%v (%q), want %d bad_request and close",
			resp.StatusCode, resp.Header.Get("X-Egressd-Reason"), resp.Close, body, c.wantStatus)
	}
	if !strings.HasPrefix(body, "egressd: denied ") || strings.Count(body, "\n") != 1 || !strings.Contains(body, c.wantBody) {
		t.Errorf("body: got %q, want one egressd line containing %q", body, c.wantBody)
	}
	if got, want := resp.Status, strconv.Itoa(c.wantStatus)+" egressd bad_request: "; !strings.HasPrefix(got, want) {
		t.Errorf("status line: got %q, want it to start with %q", got, want)
	}
	expectClosed(t, conn, br)
	e := f.rec.WaitFor(t, waitLimit, "bad_request decision", func(e declog.Entry) bool {
		return e.Event == vocab.EventDecision && e.Reason == vocab.ReasonBadRequest
	})
	if e.Verdict != vocab.Deny || e.Client != "127.0.0.1" || e.Proto != c.wantProto || e.Status != c.wantStatus {
		t.Errorf("decision: got %+v, want deny from 127.0.0.1, proto %s, status %d", e, c.wantProto, c.wantStatus)
	}
	var allowed int
	for _, e := range f.rec.All() {
		if e.Event == vocab.EventDecision && e.Verdict.Allowed() {
			allowed++
		}
	}
	if want := map[bool]int{false: 0, true: 1}[allowedFirst]; allowed != want {
		t.Errorf("allow decisions logged: got %d, want %d; log %+v", allowed, want, f.rec.All())
	}
}

// noSmuggled fails the test if the upstream ever received smuggledPath.
func (u *upstream) noSmuggled(t *testing.T) {
	t.Helper()
	u.mu.Lock()
	defer u.mu.Unlock()
	for _, r := range u.reqs {
		if r.URL.Path == smuggledPath {
			t.Errorf("upstream received %s %s", r.Method, r.URL.Path)
		}
	}
}

// TestParserRejectsRefusedAndLogged: requests net/http refuses before any
// handler runs still get egressd's refusal and a decision line.
func TestParserRejectsRefusedAndLogged(t *testing.T) {
	f := newFixture(t, fixOpts{
		limits: "  client: {rps: 100000, burst: 100000}\n  host: {rps: 100000, burst: 100000}\n  max_header_bytes: 1024\n",
	})
	g := f.hp("granted.test")
	p := strconv.Itoa(f.http.port)
	get := "GET http://" + g + "/ HTTP/1.1\r\n"
	post := "POST http://" + g + "/ HTTP/1.1\r\nHost: " + g + "\r\n"
	http11, cn := vocab.ProtoHTTP, vocab.ProtoConnect
	cases := []refusedCase{
		{"two Host headers", get + "Host: " + g + "\r\nHost: 127.0.0.1\r\n\r\n", 400, http11, "Bad Request"},
		{"bare CR in a value", get + "Host: " + g + "\r\nX-A: a\rb\r\n\r\n", 400, http11, "Bad Request"},
		{"missing Host", get + "\r\n", 400, http11, "missing required Host header"},
		{"bad header name", get + "Host: " + g + "\r\nBad Header: x\r\n\r\n", 400, http11, "invalid header name"},
		{"malformed request line", "GET  http://" + g + "/ HTTP/1.1\r\nHost: " + g + "\r\n\r\n", 400, http11, "Bad Request"},
		{"unknown HTTP version", "GET http://" + g + "/ HTTP/9.9\r\nHost: " + g + "\r\n\r\n", 505, http11, "unsupported protocol version"},
		{"percent-encoded host", "GET http://%31%32%37.0.0.1:" + p + "/ HTTP/1.1\r\nHost: %31%32%37.0.0.1:" + p + "\r\n\r\n", 400, http11, "Bad Request"},
		{"bracketed IPv4 CONNECT", "CONNECT [127.0.0.1]:" + p + " HTTP/1.1\r\nHost: [127.0.0.1]:" + p + "\r\n\r\n", 400, cn, "Bad Request"},
		{"non-ASCII Host", "GET http://grаnted.test:" + p + "/ HTTP/1.1\r\nHost: grаnted.test:" + p + "\r\n\r\n", 400, http11, "malformed Host header"},
		{"two Content-Lengths", post + "Content-Length: 0\r\nContent-Length: 5\r\n\r\nhello", 400, http11, "Bad Request"},
		{"Content-Length list", post + "Content-Length: 0, 5\r\n\r\nhello", 400, http11, "Bad Request"},
		// net/http says 501 for these; RFC 9112 §6.3 asks 400 for requests.
		{"Transfer-Encoding xchunked", post + "Transfer-Encoding: xchunked\r\n\r\n0\r\n\r\n", 400, http11, "Unsupported transfer encoding"},
		{"Transfer-Encoding twice", post + "Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400, http11, "Unsupported transfer encoding"},
		{"unknown Expect", get + "Host: " + g + "\r\nExpect: teapot\r\n\r\n", 417, http11, "417 Expectation Failed"},
		{"head over max_header_bytes", get + "Host: " + g + "\r\nX-Big: " + strings.Repeat("a", 16<<10) + "\r\n\r\n", 431, http11, "431 Request Header Fields Too Large"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) { checkRefused(t, f, c, false) })
	}
	if n := f.http.count(); n != 0 {
		t.Errorf("upstream reached %d times, want 0", n)
	}
	// The connection-level bookkeeping is per connection: a sound request
	// afterwards is served.
	if resp, body := f.get("http://"+g+"/", g); resp.StatusCode != http.StatusOK {
		t.Errorf("sound request after the refusals: got %d %q, want 200", resp.StatusCode, body)
	}
}

// TestFramingFlawsRefused: heads net/http would accept but whose framing
// two parsers could read differently are refused by the shadow parser's
// raw-line checks, the connection closes, and the request pipelined behind
// never reaches the upstream.
func TestFramingFlawsRefused(t *testing.T) {
	f := newFixture(t, fixOpts{httpH: func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		_, _ = io.WriteString(w, "ok")
	}})
	g := f.hp("granted.test")
	next := "GET http://" + g + smuggledPath + " HTTP/1.1\r\nHost: " + g + "\r\n\r\n"
	post := "POST http://" + g + "/front HTTP/1.1\r\nHost: " + g + "\r\n"
	http11 := vocab.ProtoHTTP
	cases := []refusedCase{
		{"CL.TE", post + "Content-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n" + next, 400, http11, "Content-Length with Transfer-Encoding"},
		{"TE.CL", post + "Transfer-Encoding: chunked\r\nContent-Length: 40\r\n\r\n0\r\n\r\n" + next, 400, http11, "Content-Length with Transfer-Encoding"},
		{"obs-fold Transfer-Encoding", post + "Transfer-Encoding:\r\n chunked\r\n\r\n0\r\n\r\n" + next, 400, http11, "obs-fold header line"},
		{"obs-fold other header", "GET http://" + g + "/front HTTP/1.1\r\nHost: " + g + "\r\nX-Folded: a\r\n\tb\r\n\r\n" + next, 400, http11, "obs-fold header line"},
		{"bare LF header line", post + "X-A: 1\nContent-Length: 0\r\n\r\n" + next, 400, http11, "bare LF"},
		{"bare LF request", "GET http://" + g + "/front HTTP/1.1\nHost: " + g + "\n\n" + next, 400, http11, "bare LF"},
		{"bare LF ending the head", "GET http://" + g + "/front HTTP/1.1\r\nHost: " + g + "\r\n\n" + next, 400, http11, "bare LF"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) { checkRefused(t, f, c, false) })
	}
	f.http.noSmuggled(t)
}

// TestSoundFramingStillPipelines: the strict checks leave sound framing
// alone: identical repeated Content-Lengths (RFC 9110 §8.6), a chunked
// body with a trailer, and keep-alive pipelining after both.
func TestSoundFramingStillPipelines(t *testing.T) {
	f := newFixture(t, fixOpts{httpH: func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		_, _ = io.WriteString(w, r.URL.Path+" "+string(b))
	}})
	g := f.hp("granted.test")
	raw := "POST http://" + g + "/a HTTP/1.1\r\nHost: " + g + "\r\nContent-Length: 4\r\nContent-Length: 4\r\n\r\nbody" +
		"POST http://" + g + "/b HTTP/1.1\r\nHost: " + g + "\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nbody\r\n0\r\nX-T: 1\r\n\r\n" +
		"GET http://" + g + "/c HTTP/1.1\r\nHost: " + g + "\r\n\r\n"
	c := f.dial()
	if _, err := io.WriteString(c, raw); err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(c)
	for _, want := range []string{"/a body", "/b body", "/c "} {
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatalf("response for %q: %v", want, err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK || string(b) != want {
			t.Errorf("got %d %q, want 200 %q", resp.StatusCode, b, want)
		}
	}
}

// TestBrokenChunkedBodyRefused: a request body whose chunked framing breaks
// is the client's fault: 400 bad_request with Connection: close (not a 502
// upstream failure), logged as a denial, and nothing after it on the
// connection is read.
func TestBrokenChunkedBodyRefused(t *testing.T) {
	f := newFixture(t, fixOpts{httpH: func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		_, _ = io.WriteString(w, "ok")
	}})
	g := f.hp("granted.test")
	next := "GET http://" + g + smuggledPath + " HTTP/1.1\r\nHost: " + g + "\r\n\r\n"
	post := "POST http://" + g + "/front HTTP/1.1\r\nHost: " + g + "\r\nTransfer-Encoding: chunked\r\n\r\n"
	for _, c := range []refusedCase{
		{"chunk size with bare LF", post + "5\nhello\r\n0\r\n\r\n" + next, 400, vocab.ProtoHTTP, "request body"},
		{"request after a broken chunk", post + strconv.FormatInt(int64(len(next)), 16) + "\n" + next + "\r\n0\r\n\r\n", 400, vocab.ProtoHTTP, "request body"},
		{"chunk size not hex", post + "zz\r\nhello\r\n0\r\n\r\n" + next, 400, vocab.ProtoHTTP, "request body"},
	} {
		t.Run(c.name, func(t *testing.T) {
			// The head was sound, so the request was allowed and logged
			// before its body broke.
			checkRefused(t, f, c, true)
			cl := f.rec.WaitFor(t, waitLimit, "close entry", func(e declog.Entry) bool { return e.Event == vocab.EventClose })
			if cl.Reason != vocab.ReasonBadRequest || cl.Status != http.StatusBadRequest {
				t.Errorf("close entry: got reason %s status %d, want bad_request 400", cl.Reason, cl.Status)
			}
		})
	}
	f.http.noSmuggled(t)
}

// TestBodyBreaksAfterUpstreamAnswered: the upstream answers before the
// client's body is complete, then the body breaks. The answer already
// started, so the client gets it, but the connection then closes instead
// of a request being read out of the broken body, and the denial is
// logged after the allow.
func TestBodyBreaksAfterUpstreamAnswered(t *testing.T) {
	arrived := make(chan struct{}, 1)
	f := newFixture(t, fixOpts{httpH: func(w http.ResponseWriter, r *http.Request) {
		arrived <- struct{}{}
		// Without full duplex net/http would read the body before sending
		// this answer, which is the case TestBrokenChunkedBodyRefused tests.
		_ = http.NewResponseController(w).EnableFullDuplex()
		_, _ = io.WriteString(w, "early")
		w.(http.Flusher).Flush()
		_, _ = io.Copy(io.Discard, r.Body)
	}})
	g := f.hp("granted.test")
	c := f.dial()
	br := bufio.NewReader(c)
	if _, err := io.WriteString(c, "POST http://"+g+"/front HTTP/1.1\r\nHost: "+g+"\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n"); err != nil {
		t.Fatal(err)
	}
	select {
	case <-arrived:
	case <-time.After(waitLimit):
		t.Fatal("the request never reached the upstream")
	}
	smuggled := "GET http://" + g + smuggledPath + " HTTP/1.1\r\nHost: " + g + "\r\n\r\n"
	if _, err := io.WriteString(c, strconv.FormatInt(int64(len(smuggled)), 16)+"\n"+smuggled+"\r\n0\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatalf("answer: %v", err)
	}
	_, _ = io.Copy(io.Discard, resp.Body) // may end early: the upstream was cut
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK && resp.StatusCode != http.StatusBadRequest {
		t.Errorf("answer: got %d, want the upstream's 200 or egressd's 400", resp.StatusCode)
	}
	if r2, err := http.ReadResponse(br, nil); err == nil {
		t.Errorf("a second response (%d) on the connection; want it closed after the broken body", r2.StatusCode)
	}
	expectClosed(t, c, br)
	e := decisionFor(t, f.rec, "granted.test", vocab.ReasonBadRequest)
	if e.Verdict != vocab.Deny || e.Status != resp.StatusCode {
		t.Errorf("decision: got %+v, want a bad_request denial with the status sent (%d)", e, resp.StatusCode)
	}
	f.http.noSmuggled(t)
}
