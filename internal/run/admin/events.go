package admin

import (
	"bytes"
	"net/http"
	"time"

	"github.com/egressd/egressd/internal/shared/declog"
)

// eventBuffer is how many entries a stream may fall behind before it
// misses some (the Logger drops for slow subscribers, never blocks).
const eventBuffer = 1024

// serveEvents streams decision entries as server-sent events: one
// "event: decision" with the entry's JSON line as data. ?denied=1 keeps only
// denials and would-denies. It ends when the client goes away, the Logger
// closes, or the Server is closed.
func (s *Server) serveEvents(w http.ResponseWriter, r *http.Request) {
	if s.cfg.Subscribe == nil {
		writeText(w, http.StatusServiceUnavailable, "no event stream: decision log not wired")
		return
	}
	rc := http.NewResponseController(w)
	// A WriteTimeout on the admin http.Server would cut every stream; the
	// heartbeat is what detects dead clients here.
	_ = rc.SetWriteDeadline(time.Time{})
	deniedOnly := r.URL.Query().Get("denied") == "1" || r.URL.Query().Get("denied") == "true"
	h := w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("X-Accel-Buffering", "no")
	w.WriteHeader(http.StatusOK)
	if r.Method == http.MethodHead {
		return
	}
	ch, cancel := s.cfg.Subscribe(eventBuffer)
	defer cancel()
	if !s.send(w, rc, []byte(": egressd decisions\n\n")) {
		return
	}
	tick := time.NewTicker(s.cfg.Heartbeat)
	defer tick.Stop()
	var buf bytes.Buffer
	for {
		select {
		case <-r.Context().Done():
			return
		case <-s.closing:
			return
		case <-tick.C:
			if !s.send(w, rc, []byte(": ping\n\n")) {
				return
			}
		case e, ok := <-ch:
			if !ok {
				return
			}
			if deniedOnly && !declog.Denied(e) {
				continue
			}
			buf.Reset()
			buf.WriteString("event: decision\ndata: ")
			_ = declog.Encode(&buf, e) // ends with the newline that ends the data line
			buf.WriteByte('\n')
			if !s.send(w, rc, buf.Bytes()) {
				return
			}
		}
	}
}

func (s *Server) send(w http.ResponseWriter, rc *http.ResponseController, p []byte) bool {
	if _, err := w.Write(p); err != nil {
		return false
	}
	return rc.Flush() == nil
}
