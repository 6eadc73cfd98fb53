package proxy

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httputil"
	"net/textproto"
	"sync"
	"time"
)

// Why this file exists: net/http deletes the Host header of every request
// before a handler sees it (r.Host is the URI's host for absolute-URI
// requests), yet egressd must refuse a request whose Host header disagrees
// with its URI. So each plain-HTTP client connection gets a shadow parser:
// every byte the server reads is copied to a goroutine that reads the same
// stream with the same standard-library pieces the server uses — textproto
// for the request line and header (keeping Host), http.ReadRequest on that
// head for the body framing, the stdlib chunked reader for chunked bodies —
// records each request's method, target and Host headers, and skips its
// body. The handler pairs each request with the next record and refuses it
// (bad_request) if method and target differ, so a desync fails closed.
//
// The shadow parser is also where egressd is stricter than net/http about
// framing, because it is the only place that sees the raw lines: a head
// with a line ending in a bare LF, a CR not followed by LF, an obs-fold
// continuation line, Content-Length together with Transfer-Encoding, or
// Transfer-Encoding twice is recorded as flawed (RFC 9112 §2.2, §5.2, §6.1,
// §6.3 allow or require refusing each) and the parser stops: admit refuses
// the request and closes the connection, so no second parser ever gets to
// read what follows such a head. net/http itself accepts all of them but
// the last (it folds obs-fold, takes LF as a line end, lets chunked win).

// headRecord is what the shadow parser saw of one request head.
type headRecord struct {
	method string
	uri    string
	hosts  []string
	flaw   string // why the head's framing is refused; "" for a sound head
}

// hostMatches reports whether the recorded Host header (if any) names the
// same host and port as the request target. No Host header (HTTP/1.0) is
// accepted: there is nothing to disagree with.
func (h headRecord) hostMatches(rq *request) bool {
	switch len(h.hosts) {
	case 0:
		return true
	case 1:
	default:
		return false
	}
	hdr := h.hosts[0]
	host, port := hdr, "80"
	if hh, pp, err := net.SplitHostPort(hdr); err == nil {
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

// hostTracker runs the shadow parser for one connection.
type hostTracker struct {
	pw      *io.PipeWriter
	maxHead int // bytes a head may take, as net/http allows (max_header_bytes + 4 KiB)

	// Parser goroutine only: the raw head being read and a reader over it.
	raw []byte
	rd  bytes.Reader

	mu     sync.Mutex
	queue  []headRecord
	dead   bool
	signal chan struct{} // capacity 1: something was queued or the parser died
}

// newHostTracker starts the shadow parser. maxHead bounds one raw head, so
// a stream the parser misreads cannot make it buffer without bound.
func newHostTracker(maxHead int) *hostTracker {
	pr, pw := io.Pipe()
	t := &hostTracker{pw: pw, maxHead: maxHead, signal: make(chan struct{}, 1)}
	go t.run(pr)
	return t
}

var (
	// errFlawed stops the shadow parser after a flawed head: the connection
	// is closed after its refusal, and nothing after it is framed reliably.
	errFlawed = errors.New("flawed request head")
	// errHeadTooLarge stops it on a head net/http would refuse anyway.
	errHeadTooLarge = errors.New("request head too large")
)

// run parses request heads until the stream ends (connection closed or
// detached) or does not parse. Its goroutine ends with the connection.
func (t *hostTracker) run(pr *io.PipeReader) {
	br := bufio.NewReader(pr)
	var head bytes.Buffer
	hbr := bufio.NewReaderSize(nil, 4096)
	var err error
	for err == nil {
		err = t.next(br, &head, hbr)
	}
	_ = pr.CloseWithError(err)
	t.mu.Lock()
	t.dead = true
	t.mu.Unlock()
	t.wake()
}

// next reads one request: head, record, body. head and hbr are reused
// buffers for the framing parse.
func (t *hostTracker) next(br *bufio.Reader, head *bytes.Buffer, hbr *bufio.Reader) error {
	flaw, err := t.readHead(br)
	if err != nil {
		return err
	}
	if flaw != "" {
		t.push(headRecord{flaw: flaw})
		return errFlawed
	}
	// Parse the raw head with the pieces net/http uses, so method, target
	// and headers are what the server sees.
	t.rd.Reset(t.raw)
	hbr.Reset(&t.rd)
	tp := textproto.NewReader(hbr)
	line, err := tp.ReadLine()
	if err != nil {
		return err
	}
	hdr, err := tp.ReadMIMEHeader()
	if err != nil {
		return err
	}
	if flaw := framingFlaw(hdr); flaw != "" {
		t.push(headRecord{flaw: flaw})
		return errFlawed
	}
	// Let net/http decide method, target and framing from the same request
	// line and the headers framing depends on.
	head.Reset()
	head.WriteString(line)
	head.WriteString("\r\n")
	for _, k := range [...]string{"Content-Length", "Transfer-Encoding"} {
		for _, v := range hdr[k] {
			head.WriteString(k + ": " + v + "\r\n")
		}
	}
	head.WriteString("\r\n")
	hbr.Reset(head)
	req, err := http.ReadRequest(hbr)
	if err != nil {
		return err
	}
	t.push(headRecord{method: req.Method, uri: req.RequestURI, hosts: hdr["Host"]})
	switch {
	case len(req.TransferEncoding) > 0 && req.TransferEncoding[0] == "chunked":
		if _, err := io.Copy(io.Discard, httputil.NewChunkedReader(br)); err != nil {
			return err
		}
		return skipTrailer(br)
	case req.ContentLength > 0:
		_, err = io.CopyN(io.Discard, br, req.ContentLength)
	}
	return err
}

// readHead reads one raw head, request line through the empty line, into
// t.raw. Lines end at LF, as textproto (and so net/http) ends them, so the
// head ends where the server's does. It returns the first flaw of the raw
// lines that textproto would have smoothed over.
func (t *hostTracker) readHead(br *bufio.Reader) (flaw string, err error) {
	t.raw = t.raw[:0]
	for n := 0; ; n++ {
		start := len(t.raw)
		if err := t.readLine(br); err != nil {
			return "", err
		}
		line := t.raw[start : len(t.raw)-1] // without its LF
		cr := len(line) > 0 && line[len(line)-1] == '\r'
		if cr {
			line = line[:len(line)-1]
		}
		switch {
		case flaw != "":
		case !cr:
			flaw = "line ends with a bare LF"
		case bytes.IndexByte(line, '\r') >= 0:
			flaw = "bare CR in the request head"
		case n > 0 && len(line) > 0 && (line[0] == ' ' || line[0] == '\t'):
			flaw = "obs-fold header line"
		}
		if len(line) == 0 {
			return flaw, nil
		}
	}
}

// readLine appends one line, through its LF, to t.raw.
func (t *hostTracker) readLine(br *bufio.Reader) error {
	for {
		frag, err := br.ReadSlice('\n')
		if len(t.raw)+len(frag) > t.maxHead {
			return errHeadTooLarge
		}
		t.raw = append(t.raw, frag...)
		if err != bufio.ErrBufferFull {
			return err
		}
	}
}

// framingFlaw refuses the header combinations RFC 9112 §6.1 and §6.3 call
// errors or smuggling: Content-Length with Transfer-Encoding (net/http lets
// chunked win and keeps the connection), and Transfer-Encoding twice.
func framingFlaw(hdr textproto.MIMEHeader) string {
	te, cl := hdr["Transfer-Encoding"], hdr["Content-Length"]
	switch {
	case len(te) > 0 && len(cl) > 0:
		return "Content-Length with Transfer-Encoding"
	case len(te) > 1:
		return "Transfer-Encoding repeated"
	}
	return ""
}

// skipTrailer consumes what follows a chunked body's last chunk, as the
// server's body reader does: a bare CRLF or a trailer header block.
func skipTrailer(br *bufio.Reader) error {
	b, err := br.Peek(2)
	if err != nil {
		return err
	}
	if string(b) == "\r\n" {
		_, err = br.Discard(2)
		return err
	}
	_, err = textproto.NewReader(br).ReadMIMEHeader()
	return err
}

func (t *hostTracker) push(h headRecord) {
	t.mu.Lock()
	t.queue = append(t.queue, h)
	t.mu.Unlock()
	t.wake()
}

func (t *hostTracker) wake() {
	select {
	case t.signal <- struct{}{}:
	default:
	}
}

// feed copies bytes the server read. It returns once the shadow parser has
// taken them; after the parser stopped it returns at once.
func (t *hostTracker) feed(p []byte) { _, _ = t.pw.Write(p) }

// close ends the shadow parser.
func (t *hostTracker) close() { _ = t.pw.Close() }

// pop returns the record of the next request. The server has read the
// whole head before calling the handler, so the record is at most a parse
// away; the wait is bounded anyway.
func (t *hostTracker) pop(ctx context.Context, wait time.Duration) (headRecord, bool) {
	var timer *time.Timer
	for {
		t.mu.Lock()
		if len(t.queue) > 0 {
			h := t.queue[0]
			t.queue[0] = headRecord{}
			t.queue = t.queue[1:]
			t.mu.Unlock()
			if timer != nil {
				timer.Stop()
			}
			return h, true
		}
		dead := t.dead
		t.mu.Unlock()
		if dead {
			return headRecord{}, false
		}
		if timer == nil {
			timer = time.NewTimer(wait)
			defer timer.Stop()
		}
		select {
		case <-t.signal:
		case <-ctx.Done():
			return headRecord{}, false
		case <-timer.C:
			return headRecord{}, false
		}
	}
}
