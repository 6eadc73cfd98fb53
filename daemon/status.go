package daemon

import (
	"net/http"
	"sync/atomic"

	"github.com/egressd/egressd/declog"
)

// statusSource is what the admin listener reads: readiness and the
// running state. It is also a Recorder so it sees every decision.
type statusSource struct {
	d     *daemon
	ready atomic.Bool
	addrs Addrs
}

func newStatusSource(d *daemon) *statusSource { return &statusSource{d: d} }

func (s *statusSource) setReady(v bool) { s.ready.Store(v) }

// Record implements declog.Recorder.
func (s *statusSource) Record(declog.Entry) {}

func (d *daemon) adminHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) { w.Write([]byte("ok\n")) })
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) {
		if !d.status.ready.Load() {
			http.Error(w, "not ready", http.StatusServiceUnavailable)
			return
		}
		w.Write([]byte("ready\n"))
	})
	return mux
}
