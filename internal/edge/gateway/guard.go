package gateway

import (
	"bytes"
	"fmt"
	"io"
	"math"
	"net/http"

	"github.com/egressd/egressd/internal/lib/bufpool"
	"github.com/egressd/egressd/internal/lib/scrub"

	"github.com/egressd/egressd/internal/shared/meter"
)

// The stream guard. The output limit sent upstream (limit.go) is what
// normally stops a model at its reservation; the guard is for a provider
// that does not honour it. While a metered event stream passes through,
// the meter keeps a running estimate of the output it carried
// (meter.ContentBytesPerToken); once that passes GuardFactor times the
// reserved output tokens plus GuardSlackTokens, the gateway cuts the
// upstream (closing the connection is what makes a provider stop
// generating), ends the agent's stream after the last whole event with an
// SSE error event in the provider's shape (type budget_exceeded), and
// charges the estimate: usage cannot arrive on a connection egressd has
// closed, unless it came before the cut, in which case it is charged. The
// margin absorbs the estimate's error so that a model that stops at its
// limit is not cut. The request's decision entry says deny/budget_exceeded
// and its usage entry budget_exceeded.
//
// JSON (non-streaming) bodies are not cut: they arrive after the provider
// has finished and billed, so cutting would only throw away a paid answer
// and its usage figure. Their usage is charged as reported; without one,
// a body past the guard is charged its size estimate in full.
const (
	// GuardFactor scales the reserved output tokens to the guard's cut.
	GuardFactor = 1.25
	// GuardSlackTokens is added to the cut, so that small reservations
	// are not cut by the estimate's rounding.
	GuardSlackTokens = 64
)

// guardLimit is the estimated output at which a stream is cut.
func guardLimit(reservedOut int64) int64 {
	return int64(math.Ceil(float64(reservedOut)*GuardFactor)) + GuardSlackTokens
}

// sink is the agent's side of a response: the key scrubber, a flush per
// write, and the last bytes sent, so that a cut stream can be ended on an
// event boundary.
type sink struct {
	d    *drainer
	sc   *scrub.Writer
	rc   *http.ResponseController
	tail [4]byte // the last nt bytes written
	nt   int
}

func newSink(c *call, d *drainer) *sink {
	return &sink{d: d, sc: scrub.NewWriter(c.w, c.key), rc: http.NewResponseController(c.w)}
}

// write forwards p unless the agent has left; a failed write or flush
// means it has.
func (s *sink) write(p []byte) {
	if len(p) == 0 || s.d.gone() {
		return
	}
	keep := min(s.nt, len(s.tail)-min(len(p), len(s.tail)))
	copy(s.tail[:], s.tail[s.nt-keep:s.nt])
	s.nt = keep + copy(s.tail[keep:], p[len(p)-min(len(p), len(s.tail)-keep):])
	if _, err := s.sc.Write(p); err != nil || s.rc.Flush() != nil {
		s.d.start()
	}
}

// close writes what the scrubber held back: the stream is over.
func (s *sink) close() {
	if !s.d.gone() {
		s.sc.Close()
		s.rc.Flush()
	}
}

// endWithError finishes the event in progress (the meter stops on an
// event boundary, so normally there is none) and sends an SSE error event
// the provider's SDK raises as an API error, then ends the stream.
func (s *sink) endWithError(f meter.Format, msg string) {
	s.write(eventEnd(s.tail[:s.nt]))
	var b bytes.Buffer
	b.WriteString("event: error\ndata: ")
	b.Write(errorBody(f, "budget_exceeded", msg)) // one line, ends in \n
	b.WriteByte('\n')
	s.write(b.Bytes())
	s.close()
}

// eventEnd is what to send after tail so that the event in progress ends
// (a blank line), whichever line endings the stream used.
func eventEnd(tail []byte) []byte {
	switch {
	case len(tail) == 0, bytes.HasSuffix(tail, []byte("\n\n")), bytes.HasSuffix(tail, []byte("\r\r")),
		bytes.HasSuffix(tail, []byte("\n\r\n")):
		return nil
	case bytes.HasSuffix(tail, []byte("\n\r")), tail[len(tail)-1] == '\n':
		return []byte("\n")
	case tail[len(tail)-1] == '\r':
		return []byte("\n\r\n")
	}
	return []byte("\n\n")
}

// pump copies the upstream body to the agent as it arrives (one flush per
// read, so nothing is held back), feeding every byte to the usage
// extractor first. A metered event stream is cut by the guard; cut says
// so. Once the agent is gone it keeps reading for the usage until EOF,
// the drain deadline, Close or the guard. ms and ex are nil for unmetered
// calls. total is the bytes read from upstream.
func (c *call) pump(body io.Reader, ms *meterState, ex *meter.Extractor, d *drainer) (total int64, cut bool, err error) {
	bp := bufpool.Get()
	defer bufpool.Put(bp)
	buf := *bp
	out := newSink(c, d)
	for {
		n, err := body.Read(buf)
		total += int64(n)
		if n > 0 && ex != nil {
			if k, over := ex.Feed(buf[:n], ms.limit); over {
				d.cancel() // stop the provider generating before anything else
				out.write(buf[:k])
				out.endWithError(c.format, fmt.Sprintf(
					"egressd ended this response: its output passed the %d tokens reserved for it against the spend cap (about %d seen). Set max_tokens to what the call needs.",
					ms.q.OutputTokens, ex.OutputTokensSeen()))
				return total, true, nil
			}
		}
		out.write(buf[:n])
		if err == io.EOF {
			out.close()
			return total, false, nil
		}
		if err != nil {
			return total, false, err
		}
	}
}
