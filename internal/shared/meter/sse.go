package meter

import "bytes"

// DefaultMaxEventBytes bounds one SSE line and one event's data. A
// Responses response.completed event repeats the whole output, so this is
// generous; an event over the bound is dropped (its usage is then
// estimated), never buffered without limit.
const DefaultMaxEventBytes = 8 << 20

// maxEventName bounds an event: field; real names are a few dozen bytes.
const maxEventName = 1 << 10

// SSEParser is an incremental text/event-stream parser: Write accepts the
// stream cut anywhere (mid-line, mid-event, between \r and \n) and calls
// OnEvent once per complete event. Lines end in \n, \r\n or \r as the SSE
// spec says. It copies only lines that straddle Write calls; complete lines
// are parsed in place.
type SSEParser struct {
	// OnEvent receives each event; both slices are only valid during the
	// call. event is "" when the event had no event: field.
	OnEvent func(event, data []byte)
	// MaxEventBytes bounds a line and an event's data; 0 = DefaultMaxEventBytes.
	MaxEventBytes int

	line    []byte // partial line carried between writes
	event   []byte
	data    []byte
	hasData bool
	tooLong bool // the line being carried is over the bound: skip to its end
	broken  bool // the current event lost a line: drop it at dispatch
	sawCR   bool // the last write ended in \r: a leading \n belongs to it
	stop    bool // set by an OnEvent of this package: feed returns after the line
}

// Write implements io.Writer; it never fails.
func (p *SSEParser) Write(b []byte) (int, error) {
	p.feed(b)
	return len(b), nil
}

// feed parses b and returns how much of it was consumed: all of it, unless
// an event handler set stop, in which case it returns just past the line
// that dispatched the event (the blank line ending it), so that the caller
// can forward exactly the events that were seen.
func (p *SSEParser) feed(b []byte) int {
	n := len(b)
	if p.sawCR && len(b) > 0 && b[0] == '\n' {
		b = b[1:]
	}
	p.sawCR = false
	for len(b) > 0 {
		i := indexEOL(b)
		if i < 0 {
			p.carry(b)
			break
		}
		if len(p.line) == 0 && !p.tooLong {
			// The same bound as for carried lines, so that where the
			// chunks were cut never changes the outcome.
			if i > p.max() {
				p.broken = true
			} else {
				p.processLine(b[:i])
			}
		} else {
			p.carry(b[:i])
			if p.tooLong {
				p.broken = true
			} else {
				p.processLine(p.line)
			}
			p.line, p.tooLong = p.line[:0], false
		}
		if b[i] == '\r' {
			if i+1 == len(b) {
				p.sawCR = true
			} else if b[i+1] == '\n' {
				i++
			}
		}
		b = b[i+1:]
		if p.stop {
			return n - len(b)
		}
	}
	return n
}

// indexEOL is bytes.IndexAny(b, "\r\n"), in two vectorised IndexByte
// passes instead of IndexAny's byte-by-byte set test: it runs over every
// byte of a stream.
func indexEOL(b []byte) int {
	i := bytes.IndexByte(b, '\n')
	upTo := b
	if i >= 0 {
		upTo = b[:i]
	}
	if j := bytes.IndexByte(upTo, '\r'); j >= 0 {
		return j
	}
	return i
}

// Close dispatches an event left unterminated at the end of the stream.
// The spec discards it; metering is more useful if it does not, because
// some servers omit the final blank line.
func (p *SSEParser) Close() {
	if len(p.line) > 0 && !p.tooLong {
		p.processLine(p.line)
	}
	p.line, p.tooLong = p.line[:0], false
	p.dispatch()
}

func (p *SSEParser) max() int {
	if p.MaxEventBytes > 0 {
		return p.MaxEventBytes
	}
	return DefaultMaxEventBytes
}

func (p *SSEParser) carry(b []byte) {
	if p.tooLong {
		return
	}
	if len(p.line)+len(b) > p.max() {
		p.tooLong = true
		p.line = p.line[:0]
		return
	}
	p.line = append(p.line, b...)
}

func (p *SSEParser) processLine(line []byte) {
	if len(line) == 0 {
		p.dispatch()
		return
	}
	if line[0] == ':' {
		return // comment, e.g. OpenRouter's ": OPENROUTER PROCESSING"
	}
	field, value := line, []byte(nil)
	if i := bytes.IndexByte(line, ':'); i >= 0 {
		field, value = line[:i], line[i+1:]
		if len(value) > 0 && value[0] == ' ' {
			value = value[1:]
		}
	}
	switch string(field) {
	case "data":
		if len(p.data)+len(value)+1 > p.max() {
			p.broken = true
			return
		}
		if p.hasData {
			p.data = append(p.data, '\n')
		}
		p.data = append(p.data, value...)
		p.hasData = true
	case "event":
		if len(value) > maxEventName {
			p.broken = true
			return
		}
		p.event = append(p.event[:0], value...)
	}
}

func (p *SSEParser) dispatch() {
	if p.hasData && !p.broken && p.OnEvent != nil {
		p.OnEvent(p.event, p.data)
	}
	p.event, p.data = p.event[:0], p.data[:0]
	p.hasData, p.broken = false, false
}
