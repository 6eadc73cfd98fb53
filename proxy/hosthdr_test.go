package proxy

import (
	"bufio"
	"bytes"
	"context"
	"strings"
	"testing"
)

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
		{"Transfer-Encoding twice", line + "Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n", "Transfer-Encoding repeated"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			tr := newHostTracker(1 << 16)
			defer tr.close()
			tr.feed([]byte(c.raw))
			h, ok := tr.pop(context.Background(), waitLimit)
			if !ok {
				t.Fatalf("no record for %q", c.raw)
			}
			if h.flaw != c.flaw {
				t.Errorf("flaw: got %q, want %q", h.flaw, c.flaw)
			}
			if c.flaw == "" && (h.method != "POST" || h.uri != "http://a.test/") {
				t.Errorf("record: got %s %s, want POST http://a.test/", h.method, h.uri)
			}
		})
	}
}

// TestShadowStopsAfterFlaw: nothing after a flawed head is parsed, so no
// record can pair with a request another parser found in its body.
func TestShadowStopsAfterFlaw(t *testing.T) {
	tr := newHostTracker(1 << 16)
	defer tr.close()
	tr.feed([]byte("POST http://a.test/ HTTP/1.1\r\nHost: a.test\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n" +
		"0\r\n\r\nGET http://a.test/next HTTP/1.1\r\nHost: a.test\r\n\r\n"))
	if h, ok := tr.pop(context.Background(), waitLimit); !ok || h.flaw == "" {
		t.Fatalf("first record: got %+v ok=%v, want a flawed one", h, ok)
	}
	if h, ok := tr.pop(context.Background(), waitLimit); ok {
		t.Errorf("second record: got %+v, want none (the parser stopped)", h)
	}
}

// TestShadowHeadLimit: a head longer than the limit stops the parser
// instead of growing its buffer.
func TestShadowHeadLimit(t *testing.T) {
	tr := newHostTracker(256)
	defer tr.close()
	tr.feed([]byte("GET http://a.test/ HTTP/1.1\r\nX-Big: " + strings.Repeat("a", 300) + "\r\n\r\n"))
	if h, ok := tr.pop(context.Background(), waitLimit); ok {
		t.Errorf("got record %+v, want none for a head over the limit", h)
	}
	if n := cap(tr.raw); n > 512 {
		t.Errorf("raw head buffer grew to %d bytes, want at most about the 256-byte limit", n)
	}
}

// FuzzShadowHead: whatever the bytes, readHead ends (error or head), never
// exceeds its limit, and a head it calls sound has only CRLF line ends, no
// stray CR and no continuation line.
func FuzzShadowHead(f *testing.F) {
	f.Add([]byte("GET http://a/ HTTP/1.1\r\nHost: a\r\n\r\n"))
	f.Add([]byte("GET http://a/ HTTP/1.1\nHost: a\n\n"))
	f.Add([]byte("POST / HTTP/1.1\r\nX: a\r\n b\r\n\r\n"))
	f.Add([]byte("\r\n"))
	f.Add([]byte("GET / HTTP/1.1\r\nX: a\rb\r\n\r\n"))
	f.Fuzz(func(t *testing.T, in []byte) {
		const limit = 512
		tr := &hostTracker{maxHead: limit}
		flaw, err := tr.readHead(bufio.NewReaderSize(bytes.NewReader(in), 16))
		if len(tr.raw) > limit {
			t.Fatalf("raw head %d bytes, over the %d limit", len(tr.raw), limit)
		}
		if err != nil || flaw != "" {
			return
		}
		lines := bytes.SplitAfter(tr.raw, []byte("\n"))
		lines = lines[:len(lines)-1] // SplitAfter's empty tail after the last LF
		for i, l := range lines {
			body, ok := bytes.CutSuffix(l, []byte("\r\n"))
			if !ok || bytes.IndexByte(body, '\r') >= 0 || (i > 0 && len(body) > 0 && (body[0] == ' ' || body[0] == '\t')) {
				t.Fatalf("sound head has line %q", l)
			}
			if len(body) == 0 && i != len(lines)-1 {
				t.Fatalf("head continues past its empty line: %q", tr.raw)
			}
		}
	})
}
