package httphead

import (
	"bufio"
	"bytes"
	"io"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"testing"
)

// feedIn feeds raw to hp in pieces of size n (all at once for n <= 0), the
// way reads of different sizes would deliver it.
func feedIn(hp *Parser, raw string, n int) {
	b := []byte(raw)
	if n <= 0 {
		n = len(b) + 1
	}
	for len(b) > 0 {
		k := min(n, len(b))
		hp.Feed(b[:k])
		b = b[k:]
	}
}

// TestShadowHeadFlaws feeds heads to the shadow parser and checks the flaw
// it records: raw-line flaws textproto would smooth over, and the header
// combinations RFC 9112 calls smuggling.
func TestShadowHeadFlaws(t *testing.T) {
	const line = "POST http://a.test/ HTTP/1.1\r\nHost: a.test\r\n"
	cases := []struct{ name, raw, flaw string }{
		{"sound", line + "\r\n", ""},
		{"sound with a body", line + "Content-Length: 2\r\n\r\nhi", ""},
		{"identical Content-Lengths", line + "Content-Length: 2\r\nContent-Length: 2\r\n\r\nhi", ""},
		{"sound chunked", line + "Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n", ""},
		{"bare LF request line", "POST http://a.test/ HTTP/1.1\nHost: a.test\r\n\r\n", "line ends with a bare LF"},
		{"bare LF header line", line + "X-A: 1\n\r\n", "line ends with a bare LF"},
		{"bare LF ending the head", line + "\n", "line ends with a bare LF"},
		{"bare CR", line + "X-A: a\rb\r\n\r\n", "bare CR in the request head"},
		{"CR before CRLF", line + "X-A: a\r\r\n\r\n", "bare CR in the request head"},
		{"obs-fold with SP", line + "X-A: a\r\n b\r\n\r\n", "obs-fold header line"},
		{"obs-fold with HT", line + "X-A: a\r\n\tb\r\n\r\n", "obs-fold header line"},
		{"the first flaw wins", line + "X-A: a\r\n b\r\nX-B: 1\n\r\n", "obs-fold header line"},
		{"CL.TE", line + "Content-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n", "Content-Length with Transfer-Encoding"},
		{"TE.CL, lower case", line + "transfer-encoding: chunked\r\ncontent-length: 5\r\n\r\n", "Content-Length with Transfer-Encoding"},
		{"CL.TE on HTTP/1.0", "POST http://a.test/ HTTP/1.0\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n", "Content-Length with Transfer-Encoding"},
		{"Transfer-Encoding twice", line + "Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n", "Transfer-Encoding repeated"},
	}
	for _, c := range cases {
		for _, n := range []int{0, 1, 7} {
			hp := New(1 << 16)
			feedIn(hp, c.raw, n)
			h, ok := hp.Take("POST", "http://a.test/")
			if !ok {
				t.Fatalf("%s, fed %d at a time: no record for %q", c.name, n, c.raw)
			}
			if h.Flaw != c.flaw {
				t.Errorf("%s, fed %d at a time: flaw: got %q, want %q", c.name, n, h.Flaw, c.flaw)
			}
			if c.flaw == "" && (h.Hosts != 1 || h.Host != "a.test") {
				t.Errorf("%s, fed %d at a time: hosts: got %d %q, want 1 a.test", c.name, n, h.Hosts, h.Host)
			}
		}
	}
}

// TestShadowStopsAfterFlaw: nothing after a flawed head is parsed, so no
// record can pair with a request another parser found in its body.
func TestShadowStopsAfterFlaw(t *testing.T) {
	hp := New(1 << 16)
	hp.Feed([]byte("POST http://a.test/ HTTP/1.1\r\nHost: a.test\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n" +
		"0\r\n\r\nGET http://a.test/next HTTP/1.1\r\nHost: a.test\r\n\r\n"))
	if h, ok := hp.Take("POST", "http://a.test/"); !ok || h.Flaw == "" {
		t.Fatalf("first record: got %+v ok=%v, want a flawed one", h, ok)
	}
	if h, ok := hp.Take("GET", "http://a.test/next"); ok {
		t.Errorf("second record: got %+v, want none (the parser stopped)", h)
	}
}

// TestShadowHeadLimit: a head longer than the limit stops the parser
// instead of growing its buffer, whole or in pieces.
func TestShadowHeadLimit(t *testing.T) {
	raw := "GET http://a.test/ HTTP/1.1\r\nX-Big: " + strings.Repeat("a", 300) + "\r\n\r\n"
	for _, n := range []int{0, 1, 50} {
		hp := New(256)
		feedIn(hp, raw, n)
		if h, ok := hp.Take("GET", "http://a.test/"); ok {
			t.Errorf("fed %d at a time: got record %+v, want none for a head over the limit", n, h)
		}
		if c := cap(hp.line); c > 512 {
			t.Errorf("fed %d at a time: line buffer grew to %d bytes, want at most about the 256-byte limit", n, c)
		}
	}
}

// TestShadowFraming: pipelined requests with every body framing net/http
// knows, fed whole, byte by byte and in odd pieces: the parser finds each
// head where the server does, so each request pairs with its own record.
func TestShadowFraming(t *testing.T) {
	type want struct{ method, target, host string }
	stream := "GET http://a.test/1 HTTP/1.1\r\nHost: a.test\r\n\r\n" +
		"POST http://a.test/2 HTTP/1.1\r\nHost: a.test\r\nContent-Length: 41\r\n\r\n" +
		"GET http://evil.test/ HTTP/1.1\r\nHost: x\r\n" + // the body, not a request
		"PUT http://b.test:8080/3 HTTP/1.1\r\nHOST:  b.test:8080 \r\ntransfer-encoding: Chunked\r\n\r\n" +
		"1a;ext=\"v\"\r\nGET http://evil.test/ HTTP\r\n" + "0\r\nX-Trailer: GET http://evil.test/\r\n\r\n" +
		"POST http://a.test/4 HTTP/1.0\r\nHost: a.test\r\nTransfer-Encoding: chunked\r\n\r\n" + // 1.0: TE ignored, no body
		"DELETE http://c.test/5 HTTP/1.1\r\nHost: c.test\r\nTransfer-Encoding: chunked\r\n\r\n" +
		"3 \t\r\nabc\r\n0\r\n\r\n" +
		"GET http://a.test/6 HTTP/1.1\r\nHost: a.test\r\nContent-Length: 0\r\nContent-Length: 0\r\n\r\n"
	wants := []want{
		{"GET", "http://a.test/1", "a.test"},
		{"POST", "http://a.test/2", "a.test"},
		{"PUT", "http://b.test:8080/3", "b.test:8080"},
		{"POST", "http://a.test/4", "a.test"},
		{"DELETE", "http://c.test/5", "c.test"},
		{"GET", "http://a.test/6", "a.test"},
	}
	// The stream is what net/http reads, too.
	br := bufio.NewReader(strings.NewReader(stream))
	for i, w := range wants {
		req, err := http.ReadRequest(br)
		if err != nil {
			t.Fatalf("net/http, request %d: %v", i, err)
		}
		if _, err := io.Copy(io.Discard, req.Body); err != nil {
			t.Fatalf("net/http, body %d: %v", i, err)
		}
		if req.Method != w.method || req.RequestURI != w.target {
			t.Fatalf("net/http, request %d: got %s %s, want %s %s", i, req.Method, req.RequestURI, w.method, w.target)
		}
	}
	for _, n := range []int{0, 1, 2, 3, 5, 64} {
		hp := New(1 << 16)
		feedIn(hp, stream, n)
		for i, w := range wants {
			h, ok := hp.Take(w.method, w.target)
			if !ok || h.Flaw != "" || h.Hosts != 1 || h.Host != w.host {
				t.Errorf("fed %d at a time, request %d: got %+v ok=%v, want host %q", n, i, h, ok, w.host)
			}
		}
		if h, ok := hp.Take("GET", "http://evil.test/"); ok {
			t.Errorf("fed %d at a time: got an extra record %+v", n, h)
		}
		if hp.st != stHead || hp.n != 0 || len(hp.line) != 0 {
			t.Errorf("fed %d at a time: parser left in state %d (n=%d, line %q), want between heads", n, hp.st, hp.n, hp.line)
		}
	}
}

// TestShadowStops: framing net/http refuses (and answers by closing the
// connection) stops the parser, so no later request finds a record.
func TestShadowStops(t *testing.T) {
	const head = "POST http://a.test/ HTTP/1.1\r\nHost: a.test\r\n"
	cases := []struct{ name, raw string }{
		{"empty request line", "\r\n"},
		{"request line without version", "GET http://a.test/\r\n\r\n"},
		{"malformed version", "GET http://a.test/ HTTP/1.10\r\n\r\n"},
		{"header without colon", head + "X-A\r\n\r\n"},
		{"unknown Transfer-Encoding", head + "Transfer-Encoding: gzip\r\n\r\n"},
		{"Content-Lengths differ", head + "Content-Length: 1\r\nContent-Length: 2\r\n\r\n"},
		{"signed Content-Length", head + "Content-Length: +1\r\n\r\n"},
		{"empty Content-Length", head + "Content-Length:\r\n\r\n"},
		{"Content-Length over int64", head + "Content-Length: 9223372036854775808\r\n\r\n"},
		{"chunk size not hex", head + "Transfer-Encoding: chunked\r\n\r\nx\r\n"},
		{"chunk size too long", head + "Transfer-Encoding: chunked\r\n\r\n" + strings.Repeat("0", 17) + "1\r\n"},
		{"chunk line with bare LF", head + "Transfer-Encoding: chunked\r\n\r\n1\na\r\n0\r\n\r\n"},
		{"chunk data without CRLF", head + "Transfer-Encoding: chunked\r\n\r\n1\r\nab\r\n0\r\n\r\n"},
		{"folded trailer", head + "Transfer-Encoding: chunked\r\n\r\n0\r\nX: a\r\n b\r\n\r\n"},
		{"trailer with bare LF", head + "Transfer-Encoding: chunked\r\n\r\n0\r\n\n"},
	}
	const next = "GET http://a.test/next HTTP/1.1\r\nHost: a.test\r\n\r\n"
	for _, c := range cases {
		hp := New(1 << 16)
		hp.Feed([]byte(c.raw + next))
		_, _ = hp.Take("POST", "http://a.test/")
		if h, ok := hp.Take("GET", "http://a.test/next"); ok {
			t.Errorf("%s: the request after it got record %+v, want none", c.name, h)
		}
	}
}

// TestShadowMismatch: a record pairs only with the request it was read
// from; any other method or target is refused.
func TestShadowMismatch(t *testing.T) {
	for _, c := range []struct{ method, target string }{
		{"POST", "http://a.test/"}, {"GET", "http://a.test/x"}, {"GET", "http://a.test"},
	} {
		hp := New(1 << 16)
		hp.Feed([]byte("GET http://a.test/ HTTP/1.1\r\nHost: a.test\r\n\r\n"))
		if h, ok := hp.Take(c.method, c.target); ok {
			t.Errorf("%s %s: got %+v, want no match for GET http://a.test/", c.method, c.target, h)
		}
	}
}

// TestShadowPipelinedQueue: a client that always has one more request in
// flight never lets the queue run empty; it must not grow with every
// request all the same.
func TestShadowPipelinedQueue(t *testing.T) {
	head := func(i int) string {
		return "GET http://a.test/" + strconv.Itoa(i) + " HTTP/1.1\r\nHost: a.test\r\n\r\n"
	}
	hp := New(1 << 16)
	hp.Feed([]byte(head(0)))
	for i := 1; i <= 5000; i++ {
		hp.Feed([]byte(head(i)))
		if h, ok := hp.Take("GET", "http://a.test/"+strconv.Itoa(i-1)); !ok || h.Host != "a.test" {
			t.Fatalf("request %d: got %+v ok=%v, want its record", i-1, h, ok)
		}
	}
	if _, ok := hp.Take("GET", "http://a.test/5000"); !ok {
		t.Fatal("last request: no record")
	}
	if q, a := cap(hp.queue), cap(hp.arena); q > 256 || a > 16<<10 {
		t.Errorf("after 5000 pipelined requests the queue holds %d records and %d bytes, want bounded", q, a)
	}
}

// TestShadowNoAllocs: on a keep-alive connection the parser allocates
// nothing per request once its buffers have grown.
func TestShadowNoAllocs(t *testing.T) {
	raw := []byte("GET http://bench.example:8080/path?q=1 HTTP/1.1\r\nHost: bench.example:8080\r\n" +
		"User-Agent: wrk\r\nAccept: */*\r\n\r\n" +
		"POST http://bench.example:8080/up HTTP/1.1\r\nHost: bench.example:8080\r\nContent-Length: 3\r\n\r\nabc")
	hp := New(1 << 16)
	run := func() {
		hp.Feed(raw[:40])
		hp.Feed(raw[40:])
		if _, ok := hp.Take("GET", "http://bench.example:8080/path?q=1"); !ok {
			t.Fatal("no record for the GET")
		}
		if _, ok := hp.Take("POST", "http://bench.example:8080/up"); !ok {
			t.Fatal("no record for the POST")
		}
	}
	run()
	if n := testing.AllocsPerRun(100, run); n != 0 {
		t.Errorf("allocations per two requests: got %v, want 0", n)
	}
}

func BenchmarkShadowParse(b *testing.B) {
	raw := []byte("GET http://bench.example:8080/ HTTP/1.1\r\nHost: bench.example:8080\r\n" +
		"User-Agent: wrk\r\nAccept: */*\r\n\r\n")
	hp := New(1 << 16)
	b.ReportAllocs()
	b.SetBytes(int64(len(raw)))
	for b.Loop() {
		hp.Feed(raw)
		if _, ok := hp.Take("GET", "http://bench.example:8080/"); !ok {
			b.Fatal("no record")
		}
	}
}

// FuzzShadowHead runs the shadow parser and net/http's request reader over
// the same bytes, the parser fed in pieces of a fuzzed size. Whatever the
// bytes, the parser never grows past its limits, ends where it ends when
// fed the bytes at once, and as long as net/http
// reads sound requests (bodies included) and the parser has not refused or
// stopped, its next record is net/http's request: same method, target and
// Host headers. A record for another head would be a desync; a head net/http
// refuses never reaches a handler.
func FuzzShadowHead(f *testing.F) {
	f.Add([]byte("GET http://a/ HTTP/1.1\r\nHost: a\r\n\r\n"), uint8(0))
	f.Add([]byte("GET http://a/ HTTP/1.1\nHost: a\n\n"), uint8(1))
	f.Add([]byte("POST / HTTP/1.1\r\nX: a\r\n b\r\n\r\n"), uint8(3))
	f.Add([]byte("\r\n"), uint8(0))
	f.Add([]byte("GET / HTTP/1.1\r\nX: a\rb\r\n\r\n"), uint8(2))
	f.Add([]byte("GET /x HTTP/1.1\r\nhost:  b:1 \r\n\r\n"), uint8(9))
	f.Add([]byte("POST http://a/ HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nabcGET http://b/ HTTP/1.1\r\nHost: b\r\n\r\n"), uint8(4))
	f.Add([]byte("POST http://a/ HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"+
		"2;x\r\nab\r\n0\r\nT: 1\r\n\r\nGET http://b/ HTTP/1.0\r\nHost: b\r\n\r\n"), uint8(5))
	f.Fuzz(func(t *testing.T, in []byte, piece uint8) {
		const limit = 512
		hp, whole := New(limit), New(limit)
		whole.Feed(in)
		n := int(piece%32) + 1
		for b := in; len(b) > 0; {
			k := min(n, len(b))
			hp.Feed(b[:k])
			b = b[k:]
			if len(hp.line) > limit || hp.n > max(limit, maxTrailer) {
				t.Fatalf("parser holds %d line bytes, %d head bytes, over its limits", len(hp.line), hp.n)
			}
		}
		// How the bytes were cut into reads changes nothing.
		if hp.st != whole.st || hp.left != whole.left || hp.n != whole.n ||
			!slices.Equal(hp.queue, whole.queue) || !bytes.Equal(hp.arena, whole.arena) {
			t.Fatalf("fed in %d-byte pieces: state %d left %d n %d, %d records; fed whole: state %d left %d n %d, %d records",
				n, hp.st, hp.left, hp.n, len(hp.queue), whole.st, whole.left, whole.n, len(whole.queue))
		}
		br := bufio.NewReaderSize(bytes.NewReader(in), 4096)
		for {
			req, err := http.ReadRequest(br)
			if err != nil {
				return
			}
			queued := hp.qnext < len(hp.queue)
			h, ok := hp.Take(req.Method, req.RequestURI)
			if queued && !ok {
				t.Fatalf("desync: net/http read %s %s, the parser's next record is another request", req.Method, req.RequestURI)
			}
			if ok && h.Flaw != "" {
				return // refused; the parser read nothing after it
			}
			// ReadRequest drops the Host header; for an origin-form target
			// req.Host is its value (it refuses two).
			if ok && req.URL.Host == "" && (req.Host != "" || h.Hosts > 0) && (h.Hosts != 1 || h.Host != req.Host) {
				t.Fatalf("record for %s %s has Host %d %q, net/http read %q", req.Method, req.RequestURI, h.Hosts, h.Host, req.Host)
			}
			if _, err := io.Copy(io.Discard, req.Body); err != nil || !ok || req.Close {
				return
			}
		}
	})
}
