// Package statusline puts a chosen reason phrase into the status line of an
// HTTP/1.x response on its way to the connection, which net/http's server
// never lets a handler do (it always writes http.StatusText).
//
// A handler arms the connection's Rewriter with the status code and the
// phrase just before it writes the response head; the next write that
// begins with a head of that code gets its status line rewritten, and the
// rewriter disarms. net/http flushes each response before it starts the
// next, and writes a head only at the start of a flush, so the head is
// always at the start of one Write.
package statusline

import (
	"bytes"
	"context"
	"io"
	"net"
	"strconv"
	"sync/atomic"
)

// MaxPhrase bounds an armed phrase; longer ones are not used.
const MaxPhrase = 200

type armed struct {
	code   int
	phrase string
}

// Rewriter holds the phrase for the next response head. The zero value is
// disarmed. Safe for concurrent use.
type Rewriter struct {
	next atomic.Pointer[armed]
}

// Arm makes the next response head with status code carry phrase. A phrase
// that is empty, too long or not printable ASCII is refused (the status
// line stays net/http's): a CR or LF here would split the response.
func (r *Rewriter) Arm(code int, phrase string) bool {
	if code < 100 || code > 999 || !Valid(phrase) {
		r.Disarm()
		return false
	}
	r.next.Store(&armed{code: code, phrase: phrase})
	return true
}

// Disarm drops an armed phrase that was never written.
func (r *Rewriter) Disarm() {
	r.next.Store(nil)
}

// Valid reports whether phrase may stand in a status line: 1 to MaxPhrase
// bytes of printable ASCII (RFC 9112's reason-phrase, without obs-text).
func Valid(phrase string) bool {
	if phrase == "" || len(phrase) > MaxPhrase {
		return false
	}
	for i := 0; i < len(phrase); i++ {
		if c := phrase[i]; c < ' ' || c > '~' {
			return false
		}
	}
	return true
}

// Write writes p to w, with the status line replaced when the rewriter is
// armed and p begins with a response head of the armed code. It returns
// len(p) on success so that the caller (net/http's buffered writer) sees
// its own bytes written.
func (r *Rewriter) Write(w io.Writer, p []byte) (int, error) {
	a := r.next.Load()
	if a == nil {
		return w.Write(p)
	}
	out, ok := rewrite(p, a)
	if !ok {
		return w.Write(p)
	}
	r.next.CompareAndSwap(a, nil)
	if _, err := w.Write(out); err != nil {
		return 0, err
	}
	return len(p), nil
}

// rewrite replaces the reason phrase of the head at the start of p.
func rewrite(p []byte, a *armed) ([]byte, bool) {
	if len(p) < len("HTTP/1.1 403") || !bytes.HasPrefix(p, []byte("HTTP/1.")) || p[8] != ' ' {
		return nil, false
	}
	if code, err := strconv.Atoi(string(p[9:12])); err != nil || code != a.code {
		return nil, false
	}
	end := bytes.Index(p, []byte("\r\n"))
	if end < 0 {
		return nil, false
	}
	out := make([]byte, 0, len(p)-end+13+len(a.phrase))
	out = append(out, p[:12]...)
	out = append(out, ' ')
	out = append(out, a.phrase...)
	return append(out, p[end:]...), true
}

// Conn is a net.Conn whose writes go through its Rewriter.
type Conn struct {
	net.Conn
	Rewriter
}

// Write writes p, rewriting an armed status line.
func (c *Conn) Write(p []byte) (int, error) { return c.Rewriter.Write(c.Conn, p) }

// Listener wraps every accepted connection in a *Conn, for a server whose
// ConnContext is ConnContext.
func Listener(ln net.Listener) net.Listener { return listener{ln} }

type listener struct{ net.Listener }

func (l listener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return &Conn{Conn: c}, nil
}

type connKey struct{}

// ConnContext is an http.Server ConnContext hook: it lets Arm find the
// request's connection.
func ConnContext(ctx context.Context, c net.Conn) context.Context {
	if sc, ok := c.(*Conn); ok {
		return context.WithValue(ctx, connKey{}, sc)
	}
	return ctx
}

// Arm arms the connection of a request served under ConnContext; false
// when there is none (a server without the hook, a test recorder), and
// the response keeps net/http's phrase.
func Arm(ctx context.Context, code int, phrase string) bool {
	c, _ := ctx.Value(connKey{}).(*Conn)
	if c == nil {
		return false
	}
	return c.Arm(code, phrase)
}
