// Package httphead owns the shadow reading of an HTTP/1 client stream: a
// byte-level parser that frames requests the way net/http does and records
// each head's Host headers and framing flaws, which net/http hides from a
// handler. It knows nothing of policy; the proxy pairs its records with the
// requests net/http serves.
package httphead

import (
	"bytes"
	"sync"
)

// Why this package exists: net/http deletes the Host header of every request
// before a handler sees it (r.Host is the URI's host for absolute-URI
// requests), yet egressd must refuse a request whose Host header disagrees
// with its URI. So each plain-HTTP client connection gets a shadow parser:
// clientConn.Read hands it every byte the server reads, in order, and it
// follows the same stream the way net/http frames it — request line, header
// lines, then the body by Content-Length or chunked coding — recording each
// request's method, target and Host headers. It runs inline in Read, so by
// the time the server calls the handler the record of that request is
// already queued. The handler pairs each request with the next record and
// refuses it (bad_request) if method and target differ, so a desync fails
// closed.
//
// The parser repeats only what it must of net/http's reading (where a line,
// a head and a body end; net/http's own rules are quoted at each step) and
// stops at anything net/http would refuse: the connection is closed after
// that refusal anyway, and a request after a stop finds no record and is
// refused. It is stricter than net/http where that is cheap and refusing is
// right; strictness only ever fails closed.
//
// It is also where egressd is stricter than net/http about a head's
// framing, because it is the only place that sees the raw lines: a head
// with a line ending in a bare LF, a CR not followed by LF, an obs-fold
// continuation line, Content-Length together with Transfer-Encoding, or
// Transfer-Encoding twice is recorded as flawed (RFC 9112 §2.2, §5.2, §6.1,
// §6.3 allow or require refusing each) and the parser stops: the proxy refuses
// the request and closes the connection, so no second parser ever gets to
// read what follows such a head. net/http itself accepts all of them but
// the last (it folds obs-fold, takes LF as a line end, lets chunked win).

// Record is what the shadow parser saw of one request head, as the
// handler gets it.
type Record struct {
	Hosts int    // Host header lines
	Host  string // the first one's value, trimmed as textproto trims it
	Flaw  string // why the head's framing is refused; "" for a sound head
}

// Where the shadow parser is in the stream.
type parseState uint8

const (
	stHead      parseState = iota // request line and header lines
	stBody                        // Content-Length body bytes
	stChunkLine                   // a chunk-size line
	stChunkData                   // chunk data bytes
	stChunkEnd                    // the CRLF after chunk data
	stTrailer                     // trailer lines after the last chunk
	stStopped                     // flawed or unreadable stream, or detached
)

const (
	// maxChunkLine is net/http's bound on a chunk-size line (its
	// maxLineLength, the size of its read buffer), CRLF included.
	maxChunkLine = 4096
	// maxTrailer bounds a trailer as net/http does (it must fit the 4 KiB
	// read buffer, seeUpcomingDoubleCRLF).
	maxTrailer = 4096
	// maxQueued bounds heads read but not yet served. The server reads at
	// most its 4 KiB buffer ahead of the request it serves, so a sound
	// client never gets near it.
	maxQueued = 1024
)

// Parser is the shadow parser of one client connection. feed runs in
// clientConn.Read (the connection's goroutine, or net/http's background
// read while a handler runs), take in the handler: mu orders them.
type Parser struct {
	maxHead int // bytes a head may take, as net/http allows (max_header_bytes + 4 KiB)

	mu   sync.Mutex
	st   parseState
	line []byte // the current line while it spans reads
	n    int    // bytes of the current head or trailer so far
	left uint64 // body or chunk bytes still to skip; CRLF bytes seen in stChunkEnd
	cur  headScan

	queue []queuedHead // heads read, not yet taken
	qnext int          // queue[qnext] is the next to take
	arena []byte       // the queued heads' methods and targets
	host  string       // the last Host value, reused while it repeats
}

// headScan is what the parser keeps of the head being read; its buffers are
// reused from head to head.
type headScan struct {
	lines   int
	target  []byte // method then request target, as the request line has them
	mlen    int    // length of the method in target
	http11  bool   // protocol at least HTTP/1.1: Transfer-Encoding counts
	hosts   int
	host    string
	cls     int
	cl      []byte // the first Content-Length value
	clDiffs bool   // a later Content-Length differs from the first
	tes     int
	chunked bool // the (last) Transfer-Encoding value is "chunked"
}

// queuedHead is a parsed head waiting for its handler; method and target
// are arena[start:mend] and arena[mend:end].
type queuedHead struct {
	start, mend, end int
	rec              Record
}

func New(maxHead int) *Parser {
	return &Parser{maxHead: maxHead}
}

// feed parses bytes the server read. It never blocks and never allocates
// once its buffers have grown to the connection's heads.
func (hp *Parser) Feed(p []byte) {
	hp.mu.Lock()
	defer hp.mu.Unlock()
	for len(p) > 0 && hp.st != stStopped {
		switch hp.st {
		case stBody, stChunkData:
			k := min(hp.left, uint64(len(p)))
			p = p[k:]
			if hp.left -= k; hp.left > 0 {
				break
			}
			if hp.st == stBody {
				hp.st = stHead
			} else {
				hp.st = stChunkEnd
			}
		case stChunkEnd:
			// net/http reads exactly "\r\n" after chunk data.
			if p[0] != "\r\n"[hp.left] {
				hp.stop()
				return
			}
			p = p[1:]
			if hp.left++; hp.left == 2 {
				hp.st, hp.left = stChunkLine, 0
			}
		default:
			p = hp.nextLine(p)
		}
	}
}

// nextLine takes one line (through its LF) from p, or buffers p when the
// line goes on in the next read, and returns what follows the line.
func (hp *Parser) nextLine(p []byte) []byte {
	limit := maxChunkLine
	switch hp.st {
	case stHead:
		limit = hp.maxHead - hp.n
	case stTrailer:
		limit = maxTrailer - hp.n
	}
	i := bytes.IndexByte(p, '\n')
	frag := p
	if i >= 0 {
		frag = p[:i+1]
	}
	if len(hp.line)+len(frag) > limit {
		hp.stop() // net/http refuses it too (431, or a body error)
		return nil
	}
	if i < 0 {
		hp.line = append(hp.line, p...)
		return nil
	}
	line := frag
	if len(hp.line) > 0 {
		hp.line = append(hp.line, frag...)
		line = hp.line
	}
	switch hp.st {
	case stHead:
		hp.headLine(line)
	case stChunkLine:
		hp.chunkLine(line)
	case stTrailer:
		hp.trailerLine(line)
	}
	hp.line = hp.line[:0]
	return p[i+1:]
}

// refuse queues a flawed record and stops: admit refuses the request and
// closes the connection.
func (hp *Parser) refuse(flaw string) {
	hp.push(Record{Flaw: flaw})
	hp.stop()
}

// push queues a record; the method and target of the head being read go
// to the arena with it.
func (hp *Parser) push(rec Record) bool {
	if len(hp.queue)-hp.qnext >= maxQueued {
		hp.stop()
		return false
	}
	at := len(hp.arena)
	q := queuedHead{start: at, mend: at, end: at, rec: rec}
	if rec.Flaw == "" {
		hp.arena = append(hp.arena, hp.cur.target...)
		q.mend, q.end = at+hp.cur.mlen, len(hp.arena)
	}
	hp.queue = append(hp.queue, q)
	return true
}

func (hp *Parser) resetHead() {
	hp.n = 0
	c := &hp.cur
	*c = headScan{target: c.target[:0], cl: c.cl[:0]}
}

// stop ends parsing: nothing after this point is framed reliably.
func (hp *Parser) stop() {
	hp.st = stStopped
	hp.line = nil
}

// take returns the record of the next request if it is the one net/http
// parsed (same method and target), or its flaw. ok is false when there is
// no record or it belongs to another request: egressd cannot vouch for
// that request's Host header.
func (hp *Parser) Take(method, target string) (Record, bool) {
	hp.mu.Lock()
	defer hp.mu.Unlock()
	if hp.qnext == len(hp.queue) {
		return Record{}, false
	}
	q := hp.queue[hp.qnext]
	hp.queue[hp.qnext] = queuedHead{}
	hp.qnext++
	ok := q.rec.Flaw != "" ||
		string(hp.arena[q.start:q.mend]) == method && string(hp.arena[q.mend:q.end]) == target
	switch {
	case hp.qnext == len(hp.queue):
		hp.queue, hp.qnext, hp.arena = hp.queue[:0], 0, hp.arena[:0]
	case hp.qnext >= compactAfter && 2*hp.qnext >= len(hp.queue):
		hp.compact()
	}
	return q.rec, ok
}

// compactAfter is how many taken records a queue that never empties (a
// client always pipelining one more request) may keep in front of it.
const compactAfter = 32

// compact moves the records not yet taken, and their bytes, to the front,
// so a queue that never runs empty does not grow with every request.
func (hp *Parser) compact() {
	base := hp.queue[hp.qnext].start
	hp.arena = hp.arena[:copy(hp.arena, hp.arena[base:])]
	n := copy(hp.queue, hp.queue[hp.qnext:])
	clear(hp.queue[n:])
	hp.queue, hp.qnext = hp.queue[:n], 0
	for i := range hp.queue {
		q := &hp.queue[i]
		q.start, q.mend, q.end = q.start-base, q.mend-base, q.end-base
	}
}

// close stops the parser for good (the connection became a tunnel or
// closed) and drops its buffers.
func (hp *Parser) Close() {
	hp.mu.Lock()
	defer hp.mu.Unlock()
	hp.stop()
	hp.queue, hp.arena, hp.qnext = nil, nil, 0
}
