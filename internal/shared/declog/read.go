package declog

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"time"
)

// maxLine bounds one line in memory. Real entries are well under 4 KiB;
// anything longer is not ours (or was cut by a crash) and is skipped.
const maxLine = 256 << 10

// DefaultPoll is how often Follow looks for new lines and rotations.
const DefaultPoll = 250 * time.Millisecond

// lineBuf splits a byte stream into lines across reads, keeping an
// unterminated tail for the next read. Lines longer than maxLine are
// dropped up to their newline.
type lineBuf struct {
	buf      []byte
	skipping bool
}

// feed appends p and calls fn for each complete line (without "\n").
func (lb *lineBuf) feed(p []byte, fn func([]byte) error) error {
	for len(p) > 0 {
		i := bytes.IndexByte(p, '\n')
		if i < 0 {
			if !lb.skipping {
				lb.buf = append(lb.buf, p...)
				if len(lb.buf) > maxLine {
					lb.buf, lb.skipping = lb.buf[:0], true
				}
			}
			return nil
		}
		line := p[:i]
		p = p[i+1:]
		if lb.skipping {
			lb.skipping = false
			continue
		}
		if len(lb.buf) > 0 {
			lb.buf = append(lb.buf, line...)
			line = lb.buf
		}
		if len(line) <= maxLine {
			if err := fn(line); err != nil {
				lb.buf = lb.buf[:0]
				return err
			}
		}
		lb.buf = lb.buf[:0]
	}
	return nil
}

// flush gives fn the unterminated tail, if any: the last line of a file
// that does not end in a newline.
func (lb *lineBuf) flush(fn func([]byte) error) error {
	defer func() { lb.buf, lb.skipping = lb.buf[:0], false }()
	if len(lb.buf) == 0 || lb.skipping {
		return nil
	}
	return fn(lb.buf)
}

// reset forgets any partial line.
func (lb *lineBuf) reset() { lb.buf, lb.skipping = lb.buf[:0], false }

// entryFunc adapts fn to raw lines, skipping lines that are not entries.
func entryFunc(fn func(Entry) error) func([]byte) error {
	return func(line []byte) error {
		e, err := Unmarshal(line)
		if err != nil {
			return nil // not ours: an ordinary slog line, a torn line
		}
		return fn(e)
	}
}

// Read calls fn for every entry in r, in order, skipping lines that are not
// entries. It stops at the first error from fn or r and returns it.
func Read(r io.Reader, fn func(Entry) error) error {
	return splitLines(r, entryFunc(fn))
}

func splitLines(r io.Reader, fn func([]byte) error) error {
	var lb lineBuf
	buf := make([]byte, 32<<10)
	for {
		n, err := r.Read(buf)
		if ferr := lb.feed(buf[:n], fn); ferr != nil {
			return ferr
		}
		if errors.Is(err, io.EOF) {
			return lb.flush(fn)
		}
		if err != nil {
			return fmt.Errorf("read decision log: %w", err)
		}
	}
}

// ReadFiles reads the decision log at path and its rotated files, oldest
// first (see Files), as one stream.
func ReadFiles(path string, fn func(Entry) error) error {
	files, err := Files(path)
	if err != nil {
		return err
	}
	for _, name := range files {
		if err := readFile(name, fn); err != nil {
			return err
		}
	}
	return nil
}

func readFile(name string, fn func(Entry) error) error {
	return readLines(name, entryFunc(fn))
}

// readLines calls fn for every line of the named file.
func readLines(name string, fn func([]byte) error) error {
	f, err := os.Open(name)
	if errors.Is(err, fs.ErrNotExist) {
		return nil // rotated away between listing and opening
	}
	if err != nil {
		return fmt.Errorf("open decision log: %w", err)
	}
	defer f.Close()
	return splitLines(f, fn)
}

// Follow calls fn for every entry appended to the log at path from now on,
// until ctx ends (then it returns nil) or fn fails. It keeps following when
// the log is rotated (a new file appears at path; files rotated in between
// two polls are read too) or truncated, and waits for the file if it does
// not exist yet. It polls every DefaultPoll.
func Follow(ctx context.Context, path string, fn func(Entry) error) error {
	fl := &follower{path: path, interval: DefaultPoll}
	if err := fl.openAtEnd(); err != nil {
		return err
	}
	defer fl.close()
	return fl.run(ctx, entryFunc(fn))
}

// follower tails one path across rotations.
type follower struct {
	path     string
	interval time.Duration
	f        *os.File
	lb       lineBuf
	buf      []byte
	lost     int // polls our rotated file was not found (see advance)
}

// openAtEnd opens path (if it exists) positioned at its end.
func (fl *follower) openAtEnd() error {
	if err := fl.open(); err != nil || fl.f == nil {
		return err
	}
	if _, err := fl.f.Seek(0, io.SeekEnd); err != nil {
		return fmt.Errorf("follow decision log: %w", err)
	}
	return nil
}

// open opens path at its start; a missing file is not an error (fl.f
// stays nil and the next poll tries again).
func (fl *follower) open() error {
	f, err := os.Open(fl.path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("follow decision log: %w", err)
	}
	fl.f = f
	fl.lb.reset()
	return nil
}

func (fl *follower) close() {
	if fl.f != nil {
		fl.f.Close()
		fl.f = nil
	}
}

func (fl *follower) run(ctx context.Context, fn func([]byte) error) error {
	tick := time.NewTicker(fl.interval)
	defer tick.Stop()
	for {
		if err := fl.poll(fn); err != nil {
			return err
		}
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
		}
	}
}

// poll reads what was appended, then checks whether path now names another
// file (rotated) or a shorter one (truncated).
func (fl *follower) poll(fn func([]byte) error) error {
	if fl.f == nil {
		if err := fl.open(); err != nil || fl.f == nil {
			return err
		}
	}
	if err := fl.drain(fn); err != nil {
		return err
	}
	cur, err := os.Stat(fl.path)
	if err != nil {
		return nil // mid-rotation: path is back on a later poll
	}
	mine, err := fl.f.Stat()
	if err != nil {
		return fmt.Errorf("follow decision log: %w", err)
	}
	if !os.SameFile(cur, mine) {
		// Rotated: the old file is complete (the writer rotates between
		// lines), so finish it and start the new one from its beginning.
		if err := fl.drain(fn); err != nil {
			return err
		}
		if err := fl.lb.flush(fn); err != nil {
			return err
		}
		return fl.advance(mine, fn)
	}
	off, err := fl.f.Seek(0, io.SeekCurrent)
	if err == nil && cur.Size() < off {
		fl.lb.reset() // truncated in place: start over
		_, err = fl.f.Seek(0, io.SeekStart)
	}
	if err != nil {
		return fmt.Errorf("follow decision log: %w", err)
	}
	return nil
}

// lostPolls is how many polls a follower looks for its rotated file before
// concluding it was dropped.
const lostPolls = 3

// maxCatchUp bounds the search for our file among the rotated ones, and
// the number of rotated files read in one poll.
const maxCatchUp = 1000

// advance moves from the finished file mine to its successor, reading
// every file rotated in between, so several rotations between two polls
// lose nothing. Files are identified by inode, not by name: a successor is
// only trusted once mine is confirmed to still sit right after it.
func (fl *follower) advance(mine os.FileInfo, fn func([]byte) error) error {
	for range maxCatchUp {
		k := fl.indexOf(mine)
		if k == 0 {
			// Not found: mid-rotation (renames in flight), or dropped by
			// rotation (keep reached, or keep 0). Give renames a few polls,
			// then go on with the current file: the lines in between are
			// gone from disk anyway.
			if fl.lost++; fl.lost < lostPolls {
				return nil
			}
			fl.close()
			if err := fl.open(); err != nil || fl.f == nil {
				return err
			}
			return fl.drain(fn)
		}
		fl.lost = 0
		next := fl.path
		if k > 1 {
			next = rotatedName(fl.path, k-1)
		}
		nf, err := os.Open(next)
		if err != nil {
			return nil // mid-rotation; the next poll tries again from mine
		}
		if st, err := os.Stat(rotatedName(fl.path, k)); err != nil || !os.SameFile(st, mine) {
			nf.Close() // rotated again meanwhile: look again
			continue
		}
		fl.close()
		fl.f = nf
		fl.lb.reset()
		if err := fl.drain(fn); err != nil {
			return err
		}
		if next == fl.path {
			return nil
		}
		// A rotated file is complete: finish it and find its successor.
		if err := fl.lb.flush(fn); err != nil {
			return err
		}
		if mine, err = nf.Stat(); err != nil {
			return fmt.Errorf("follow decision log: %w", err)
		}
	}
	return nil
}

// indexOf returns i when the file mine is now path.i, 0 if it is none.
func (fl *follower) indexOf(mine os.FileInfo) int {
	nums, _, err := rotatedFiles(fl.path)
	if err != nil {
		return 0
	}
	for _, n := range nums {
		if st, err := os.Stat(rotatedName(fl.path, n)); err == nil && os.SameFile(st, mine) {
			return n
		}
	}
	return 0
}

// drain reads fl.f to its current end.
func (fl *follower) drain(fn func([]byte) error) error {
	if fl.buf == nil {
		fl.buf = make([]byte, 32<<10)
	}
	for {
		n, err := fl.f.Read(fl.buf)
		if ferr := fl.lb.feed(fl.buf[:n], fn); ferr != nil {
			return ferr
		}
		if errors.Is(err, io.EOF) || (err == nil && n == 0) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("follow decision log: %w", err)
		}
	}
}
