package ask

import (
	"encoding/json"
	"errors"
	"mime"
	"net/http"
	"net/url"
	"time"

	"github.com/egressd/egressd/policy"
)

// Admin API paths, mounted on the admin listener behind its token.
const (
	PathPending = "/pending"
	PathApprove = "/approve"
	PathDeny    = "/deny"
)

// PendingList is what GET /pending serves.
type PendingList struct {
	Now     time.Time      `json:"now"`
	Pending []Question     `json:"pending"`
	Grants  []policy.Grant `json:"grants"`
}

// AnswerRequest is the body of POST /approve and POST /deny. For is a Go
// duration ("1h"); neither For nor Always means once.
type AnswerRequest struct {
	ID     string `json:"id"`
	For    string `json:"for,omitempty"`
	Always bool   `json:"always,omitempty"`
	By     string `json:"by,omitempty"`
}

// AnswerResult is what a successful answer returns.
type AnswerResult struct {
	Outcome string `json:"outcome"`
}

// maxAnswerBody bounds an answer request.
const maxAnswerBody = 4 << 10

// Handlers returns the admin endpoints by path.
func (b *Broker) Handlers() map[string]http.Handler {
	return map[string]http.Handler{
		PathPending: http.HandlerFunc(b.servePending),
		PathApprove: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { b.serveAnswer(w, r, false) }),
		PathDeny:    http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { b.serveAnswer(w, r, true) }),
	}
}

func (b *Broker) servePending(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		writeJSONError(w, http.StatusMethodNotAllowed, "GET only")
		return
	}
	writeJSON(w, http.StatusOK, PendingList{Now: b.now(), Pending: b.Pending(), Grants: b.Grants()})
}

// serveAnswer takes JSON only: a page on another origin cannot send it
// without a CORS preflight, which egressd never grants, so a browser
// holding no token cannot be made to answer (the console has its own
// form with a CSRF token).
func (b *Broker) serveAnswer(w http.ResponseWriter, r *http.Request, deny bool) {
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", "POST")
		writeJSONError(w, http.StatusMethodNotAllowed, "POST only")
		return
	}
	if mt, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type")); mt != "application/json" {
		writeJSONError(w, http.StatusUnsupportedMediaType, "send Content-Type: application/json")
		return
	}
	if o := r.Header.Get("Origin"); o != "" && !sameOrigin(o, r.Host) {
		writeJSONError(w, http.StatusForbidden, "cross-origin answer refused")
		return
	}
	var req AnswerRequest
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, maxAnswerBody))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil {
		writeJSONError(w, http.StatusBadRequest, "bad answer body: "+err.Error())
		return
	}
	a, err := req.answer(deny)
	if err != nil {
		writeJSONError(w, http.StatusBadRequest, err.Error())
		return
	}
	out, err := b.Answer(req.ID, a)
	switch {
	case errors.Is(err, ErrNoQuestion):
		writeJSONError(w, http.StatusNotFound, err.Error())
	case err != nil:
		writeJSONError(w, http.StatusBadRequest, err.Error())
	default:
		writeJSON(w, http.StatusOK, AnswerResult{Outcome: out})
	}
}

func (req AnswerRequest) answer(deny bool) (Answer, error) {
	a := Answer{Kind: Once, By: req.By}
	if a.By == "" {
		a.By = "admin api"
	}
	switch {
	case deny:
		if req.For != "" || req.Always {
			return a, errors.New("deny takes no for or always")
		}
		a.Kind = Deny
	case req.For != "" && req.Always:
		return a, errors.New("give for or always, not both")
	case req.Always:
		a.Kind = Always
	case req.For != "":
		d, err := time.ParseDuration(req.For)
		if err != nil {
			return a, errors.New("for: want a duration such as 1h or 30m")
		}
		a.Kind, a.For = For, d
	}
	return a, nil
}

func sameOrigin(origin, host string) bool {
	u, err := url.Parse(origin)
	return err == nil && u.Host == host
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
}

func writeJSONError(w http.ResponseWriter, code int, msg string) {
	writeJSON(w, code, map[string]string{"error": msg})
}
