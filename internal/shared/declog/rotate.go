package declog

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
)

// fileMode keeps the decision log away from other users: it names every
// host the agent tried.
const fileMode = 0o640

// rotator is an append-only file that rotates by size: path is renamed to
// path.1, path.1 to path.2 ... and path.keep is dropped. It is used by the
// writer goroutine only, so it has no lock.
type rotator struct {
	path     string
	maxBytes int64
	keep     int
	f        *os.File
	size     int64
}

// Write appends p, one or more whole lines. Before a line that would push
// the file past maxBytes it rotates, so a line is never split across files
// and each file ends where it would if the lines came one by one; the
// lines that fit go in one write. After an error the file is closed and
// reopened on the next write, so a deleted log file or a disk that filled
// up and was cleaned recovers on its own.
func (r *rotator) Write(p []byte) (int, error) {
	written := 0
	rotated := false
	for len(p) > 0 {
		if r.f == nil {
			if err := r.open(); err != nil {
				return written, err
			}
		}
		chunk := r.fit(p, rotated)
		if chunk == 0 {
			if err := r.rotate(); err != nil {
				return written, err
			}
			rotated = true
			continue
		}
		n, err := r.f.Write(p[:chunk])
		r.size += int64(n)
		written += n
		if err != nil {
			r.closeFile()
			return written, fmt.Errorf("write decision log: %w", err)
		}
		p, rotated = p[chunk:], false
	}
	return written, nil
}

// fit is how many leading bytes of p go into the current file: all of p if
// it fits, else the whole lines that fit, else 0 (rotate first). An empty
// or just rotated file takes at least one line, however long, as a file of
// its own.
func (r *rotator) fit(p []byte, rotated bool) int {
	room := r.maxBytes - r.size
	if int64(len(p)) <= room {
		return len(p)
	}
	n := 0
	if room > 0 {
		n = bytes.LastIndexByte(p[:room], '\n') + 1
	}
	if n == 0 && (r.size == 0 || rotated) {
		if n = bytes.IndexByte(p, '\n') + 1; n == 0 {
			n = len(p)
		}
	}
	return n
}

func (r *rotator) open() error {
	f, err := os.OpenFile(r.path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, fileMode)
	if err != nil {
		return fmt.Errorf("open decision log: %w", err)
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return fmt.Errorf("stat decision log: %w", err)
	}
	r.f, r.size = f, st.Size()
	return nil
}

// rotate shifts the numbered files up by one and starts a new file.
func (r *rotator) rotate() error {
	r.closeFile()
	if r.keep <= 0 {
		if err := os.Remove(r.path); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("rotate decision log: %w", err)
		}
		return r.open()
	}
	// Dropping the oldest first makes room; a missing file is fine (fewer
	// rotations so far than keep).
	if err := os.Remove(rotatedName(r.path, r.keep)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("rotate decision log: %w", err)
	}
	for i := r.keep - 1; i >= 1; i-- {
		err := os.Rename(rotatedName(r.path, i), rotatedName(r.path, i+1))
		if err != nil && !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("rotate decision log: %w", err)
		}
	}
	if err := os.Rename(r.path, rotatedName(r.path, 1)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("rotate decision log: %w", err)
	}
	return r.open()
}

func (r *rotator) closeFile() error {
	if r.f == nil {
		return nil
	}
	err := r.f.Close()
	r.f, r.size = nil, 0
	return err
}

func rotatedName(path string, i int) string {
	return path + "." + strconv.Itoa(i)
}

// Files lists the decision log at path and its rotated files, oldest
// first: path.N ... path.1, path. Files that do not exist are left out; it
// returns an error wrapping fs.ErrNotExist when there are none.
func Files(path string) ([]string, error) {
	nums, current, err := rotatedFiles(path)
	if err != nil {
		return nil, err
	}
	files := make([]string, 0, len(nums)+1)
	for _, n := range nums {
		files = append(files, rotatedName(path, n))
	}
	if current {
		files = append(files, path)
	}
	if len(files) == 0 {
		return nil, fmt.Errorf("decision log %s: %w", path, fs.ErrNotExist)
	}
	return files, nil
}

// rotatedFiles returns the numbers N of the existing path.N files, highest
// (oldest) first, and whether path itself exists. It lists the directory
// rather than probing path.1, path.2 ... because a rotation in progress
// leaves a gap in the numbers.
func rotatedFiles(path string) ([]int, bool, error) {
	dir, base := filepath.Split(path)
	if dir == "" {
		dir = "."
	}
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, false, fmt.Errorf("list decision log files: %w", err)
	}
	var nums []int
	current := false
	for _, de := range ents {
		name := de.Name()
		if name == base {
			current = true
			continue
		}
		suffix, ok := strings.CutPrefix(name, base+".")
		if !ok {
			continue
		}
		n, err := strconv.Atoi(suffix)
		if err != nil || n <= 0 || strconv.Itoa(n) != suffix {
			continue // path.gz, path.01, path.bak are not ours
		}
		nums = append(nums, n)
	}
	sort.Sort(sort.Reverse(sort.IntSlice(nums)))
	return nums, current, nil
}
