package httphead

import "bytes"

// The shadow parser's reading of lines and bodies (see hosthdr.go): each
// step repeats where net/http's reader ends a head, a body or a chunk, and
// stops where net/http would refuse.

// headLine reads one line of a head. Lines end at LF, as textproto (and so
// net/http) ends them, so the head ends where the server's does.
func (hp *Parser) headLine(line []byte) {
	hp.n += len(line)
	c := &hp.cur
	first := c.lines == 0
	c.lines++
	text, cr := bytes.CutSuffix(line[:len(line)-1], []byte{'\r'})
	switch {
	case !cr:
		hp.refuse("line ends with a bare LF")
	case bytes.IndexByte(text, '\r') >= 0:
		hp.refuse("bare CR in the request head")
	case !first && len(text) > 0 && (text[0] == ' ' || text[0] == '\t'):
		hp.refuse("obs-fold header line")
	case first:
		if !c.requestLine(text) {
			hp.stop() // net/http answers 400 and closes
		}
	case len(text) == 0:
		hp.endHead()
	default:
		if !hp.headerLine(text) {
			hp.stop()
		}
	}
}

// requestLine splits the request line as net/http's parseRequestLine does
// (method, target and version between the first two spaces) and reads the
// version as ParseHTTPVersion does.
func (c *headScan) requestLine(text []byte) bool {
	method, rest, ok1 := bytes.Cut(text, []byte{' '})
	target, proto, ok2 := bytes.Cut(rest, []byte{' '})
	if !ok1 || !ok2 {
		return false
	}
	major, minor, ok := httpVersion(proto)
	if !ok {
		return false
	}
	// readTransfer takes version 0.0 for 1.1; net/http refuses 0.x anyway.
	c.http11 = major > 1 || major == 1 && minor >= 1 || major == 0 && minor == 0
	c.target = append(append(c.target[:0], method...), target...)
	c.mlen = len(method)
	return true
}

// httpVersion is net/http's ParseHTTPVersion on bytes: "HTTP/" and one
// digit each for major and minor.
func httpVersion(v []byte) (major, minor int, ok bool) {
	if len(v) != len("HTTP/1.1") || string(v[:5]) != "HTTP/" || v[6] != '.' ||
		!isDigit(v[5]) || !isDigit(v[7]) {
		return 0, 0, false
	}
	return int(v[5] - '0'), int(v[7] - '0'), true
}

func isDigit(b byte) bool { return '0' <= b && b <= '9' }

// headerLine notes the headers framing and the Host check depend on. Field
// names compare as textproto canonicalises them (ASCII case-insensitively);
// values are trimmed of spaces and tabs as textproto trims them.
func (hp *Parser) headerLine(text []byte) bool {
	name, value, ok := bytes.Cut(text, []byte{':'})
	if !ok {
		return false // textproto: "missing colon"
	}
	value = trimOWS(value)
	c := &hp.cur
	switch {
	case asciiEqualFold(name, "host"):
		if c.hosts++; c.hosts == 1 {
			c.host = hp.hostString(value)
		}
	case asciiEqualFold(name, "content-length"):
		if c.cls++; c.cls == 1 {
			c.cl = append(c.cl[:0], value...)
		} else if !bytes.Equal(value, c.cl) {
			c.clDiffs = true
		}
	case asciiEqualFold(name, "transfer-encoding"):
		c.tes++
		c.chunked = asciiEqualFold(value, "chunked")
	}
	return true
}

// hostString returns value as a string, reusing the previous Host value's
// string when it repeats, as it does on a keep-alive connection.
func (hp *Parser) hostString(value []byte) string {
	if string(value) != hp.host {
		hp.host = string(value)
	}
	return hp.host
}

// endHead ends a head at its empty line: refuse ambiguous framing, queue
// the record, and go on to the body as net/http's readTransfer frames it.
func (hp *Parser) endHead() {
	c := &hp.cur
	// RFC 9112 §6.1 and §6.3: Content-Length with Transfer-Encoding is an
	// error or smuggling (net/http lets chunked win and keeps the
	// connection); Transfer-Encoding twice is refused.
	switch {
	case c.tes > 0 && c.cls > 0:
		hp.refuse("Content-Length with Transfer-Encoding")
		return
	case c.tes > 1:
		hp.refuse("Transfer-Encoding repeated")
		return
	}
	next, left := stHead, uint64(0)
	switch {
	case c.tes == 1 && c.http11:
		// Transfer-Encoding is ignored before HTTP/1.1; from 1.1 on only
		// "chunked" is accepted (anything else: 501, closed).
		if !c.chunked {
			hp.stop()
			return
		}
		next = stChunkLine
	case c.cls > 0:
		// Every Content-Length must equal the first; it must be decimal
		// digits within int64 (strconv.ParseUint(cl, 10, 63)).
		n, ok := parseContentLength(c.cl)
		if c.clDiffs || !ok {
			hp.stop()
			return
		}
		if n > 0 {
			next, left = stBody, n
		}
	}
	if !hp.push(Record{Hosts: c.hosts, Host: c.host}) {
		return
	}
	hp.st, hp.left = next, left
	hp.resetHead()
}

// parseContentLength is strconv.ParseUint(v, 10, 63) without the error
// value: digits only, no sign, at most 2^63-1.
func parseContentLength(v []byte) (uint64, bool) {
	if len(v) == 0 || len(v) > 19 {
		return 0, false
	}
	var n uint64
	for _, b := range v {
		if !isDigit(b) {
			return 0, false
		}
		n = n*10 + uint64(b-'0')
	}
	return n, n < 1<<63
}

// chunkLine reads a chunk-size line as net/http's chunked reader does:
// CRLF-terminated with no other CR, trailing spaces and tabs dropped, an
// extension cut at ';', then at most 16 hex digits.
func (hp *Parser) chunkLine(line []byte) {
	text, ok := bytes.CutSuffix(line, []byte("\r\n"))
	if !ok || bytes.IndexByte(text, '\r') >= 0 {
		hp.stop()
		return
	}
	text, _, _ = bytes.Cut(trimTrailingOWS(text), []byte{';'})
	if len(text) == 0 || len(text) > 16 {
		hp.stop()
		return
	}
	var n uint64
	for _, b := range text {
		d, ok := hexDigit(b)
		if !ok {
			hp.stop()
			return
		}
		n = n<<4 | uint64(d)
	}
	if n == 0 {
		hp.st, hp.n = stTrailer, 0
		return
	}
	hp.st, hp.left = stChunkData, n
}

func hexDigit(b byte) (byte, bool) {
	switch {
	case '0' <= b && b <= '9':
		return b - '0', true
	case 'a' <= b && b <= 'f':
		return b - 'a' + 10, true
	case 'A' <= b && b <= 'F':
		return b - 'A' + 10, true
	}
	return 0, false
}

// trailerLine reads what follows the last chunk: a bare CRLF, or trailer
// fields ending with an empty line. The parser takes only plain field lines
// (CRLF, no stray CR, no folding, a colon); net/http is more lenient
// there, and what it takes beyond that stops this parser, which fails the
// next request closed.
func (hp *Parser) trailerLine(line []byte) {
	hp.n += len(line)
	text, ok := bytes.CutSuffix(line, []byte("\r\n"))
	switch {
	case !ok || bytes.IndexByte(text, '\r') >= 0:
		hp.stop()
	case len(text) == 0:
		hp.st = stHead
		hp.resetHead()
	case text[0] == ' ' || text[0] == '\t' || bytes.IndexByte(text, ':') < 0:
		hp.stop()
	}
}

func trimOWS(b []byte) []byte {
	for len(b) > 0 && (b[0] == ' ' || b[0] == '\t') {
		b = b[1:]
	}
	return trimTrailingOWS(b)
}

func trimTrailingOWS(b []byte) []byte {
	for len(b) > 0 && (b[len(b)-1] == ' ' || b[len(b)-1] == '\t') {
		b = b[:len(b)-1]
	}
	return b
}

// asciiEqualFold compares b with a lower-case ASCII name, ignoring case.
func asciiEqualFold(b []byte, lower string) bool {
	if len(b) != len(lower) {
		return false
	}
	for i, c := range b {
		if 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		}
		if c != lower[i] {
			return false
		}
	}
	return true
}
