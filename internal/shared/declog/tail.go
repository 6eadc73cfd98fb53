package declog

import (
	"context"
	"errors"
	"io"
	"os"
	"time"
)

// DefaultFollowLines is how many past entries `tail -f` shows first.
const DefaultFollowLines = 10

// TailOptions is `egressd tail`: cmd/egressd only parses flags into it.
type TailOptions struct {
	File       string // decision log file (rotated files are read too)
	Follow     bool   // keep printing new entries until ctx ends
	DeniedOnly bool   // only deny and would_deny (and their summaries)
	JSON       bool   // show the JSON lines instead of columns
	Color      bool   // colour the verdict column
	Out        io.Writer
	// Lines is how many past entries to show first: 0 = all of them
	// without Follow, DefaultFollowLines with it; < 0 = none.
	Lines int
	// Stream, when set, replaces File: entries come from it live (the
	// admin SSE stream: admin.Stream bound to a URL and token). There is no
	// history then, and it follows until ctx ends.
	Stream func(ctx context.Context, fn func(Entry) error) error
	// Poll is the file polling interval with Follow; 0 = DefaultPoll.
	Poll time.Duration
}

// Tail prints the decision log for a person (or as JSON lines). It returns
// nil when ctx ends while following.
func Tail(ctx context.Context, o TailOptions) error {
	out := o.Out
	if out == nil {
		out = os.Stdout
	}
	show := func(e Entry) error {
		if o.DeniedOnly && !Denied(e) {
			return nil
		}
		if o.JSON {
			return Encode(out, e)
		}
		return Format(out, e, o.Color)
	}
	if o.Stream != nil {
		return o.Stream(ctx, show)
	}
	if o.File == "" {
		return errors.New("tail: no decision log file (set log.file, pass --file, or use --admin)")
	}
	lines := o.Lines
	if lines == 0 && o.Follow {
		lines = DefaultFollowLines
	}
	keep := show
	var last *ring
	if lines > 0 {
		last = newRing(lines)
		keep = func(e Entry) error {
			if !o.DeniedOnly || Denied(e) {
				last.add(e)
			}
			return nil
		}
	} else if lines < 0 {
		keep = func(Entry) error { return nil }
	}
	if !o.Follow {
		if err := ReadFiles(o.File, keep); err != nil {
			return err
		}
		return last.each(show)
	}
	return tailFollow(ctx, o, keep, show, last)
}

// tailFollow reads the rotated files, then the current file through the
// follower (so no line falls between history and following), then follows.
func tailFollow(ctx context.Context, o TailOptions, keep, show func(Entry) error, last *ring) error {
	files, err := Files(o.File)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	for _, name := range files {
		if name != o.File {
			if err := readFile(name, keep); err != nil {
				return err
			}
		}
	}
	fl := &follower{path: o.File, interval: o.Poll}
	if fl.interval <= 0 {
		fl.interval = DefaultPoll
	}
	defer fl.close()
	if err := fl.open(); err != nil {
		return err
	}
	if fl.f != nil {
		if err := fl.drain(entryFunc(keep)); err != nil {
			return err
		}
	}
	if err := last.each(show); err != nil {
		return err
	}
	return fl.run(ctx, entryFunc(show))
}

// ring keeps the last n entries.
type ring struct {
	buf  []Entry
	next int
	full bool
}

func newRing(n int) *ring { return &ring{buf: make([]Entry, n)} }

func (r *ring) add(e Entry) {
	r.buf[r.next] = e
	r.next++
	if r.next == len(r.buf) {
		r.next, r.full = 0, true
	}
}

// each calls fn oldest first; a nil ring has nothing.
func (r *ring) each(fn func(Entry) error) error {
	if r == nil {
		return nil
	}
	start, n := 0, r.next
	if r.full {
		start, n = r.next, len(r.buf)
	}
	for i := range n {
		if err := fn(r.buf[(start+i)%len(r.buf)]); err != nil {
			return err
		}
	}
	return nil
}
