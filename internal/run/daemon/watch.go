package daemon

import (
	"context"
	"crypto/sha256"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	"github.com/fsnotify/fsnotify"
)

// Watcher calls Reload when the policy file's content changes. It watches
// the file's directory, not the file: editors that write a temp file and
// rename it replace the inode, and a watch on the old inode would go
// silent. A slow stat poll backs the watch up, because some mounts
// (Docker single-file bind mounts, network filesystems) deliver no events.
// Reload is only called when the bytes differ from the last ones seen, so
// a burst of events from one save is one reload.
type Watcher struct {
	Path string
	// Reload is called with no lock held, from one goroutine at a time,
	// with the exact bytes whose hash changed (or the read error), so the
	// policy applied is the content that was seen, never a second read.
	Reload func(data []byte, err error)
	// Poll is the stat-poll interval; zero means 1s.
	Poll time.Duration
	// Debounce waits this long after an event before reading the file, so
	// a save in several writes is read once; zero means 100ms.
	Debounce time.Duration
	// Trigger forces a reload (SIGHUP), even when the bytes are unchanged.
	Trigger <-chan struct{}
	Logger  *slog.Logger

	last [sha256.Size]byte
}

// Start reads the file's current content (taken as already loaded), sets
// up the directory watch, and runs until ctx ends; done closes then. Setup
// is synchronous, so an edit made after Start returns is always seen.
func (w *Watcher) Start(ctx context.Context) (done <-chan struct{}) {
	log := w.Logger
	if log == nil {
		log = slog.Default()
	}
	events, stop := w.watchDir(log)
	return w.start(ctx, events, stop)
}

func (w *Watcher) start(ctx context.Context, events <-chan struct{}, stop func()) <-chan struct{} {
	w.last, _, _ = read(w.Path)
	poll := w.Poll
	if poll <= 0 {
		poll = time.Second
	}
	debounce := w.Debounce
	if debounce <= 0 {
		debounce = 100 * time.Millisecond
	}
	ch := make(chan struct{})
	go func() {
		defer close(ch)
		defer stop()
		w.loop(ctx, events, poll, debounce)
	}()
	return ch
}

func (w *Watcher) loop(ctx context.Context, events <-chan struct{}, poll, debounce time.Duration) {
	ticker := time.NewTicker(poll)
	defer ticker.Stop()
	var timer *time.Timer
	var fire <-chan time.Time
	for {
		select {
		case <-ctx.Done():
			if timer != nil {
				timer.Stop()
			}
			return
		case <-events:
			if timer == nil {
				timer = time.NewTimer(debounce)
			} else {
				timer.Reset(debounce)
			}
			fire = timer.C
		case <-fire:
			fire = nil
			w.reloadIfChanged()
		case <-ticker.C:
			w.reloadIfChanged()
		case <-w.Trigger:
			var data []byte
			var err error
			w.last, data, err = read(w.Path)
			w.Reload(data, err)
		}
	}
}

// watchDir returns a channel of events that concern Path. On failure it
// logs and returns a nil channel: the poll still works.
func (w *Watcher) watchDir(log *slog.Logger) (<-chan struct{}, func()) {
	fw, err := fsnotify.NewWatcher()
	if err != nil {
		log.Warn("policy watch unavailable, polling only", "error", err)
		return nil, func() {}
	}
	dir := filepath.Dir(w.Path)
	if err := fw.Add(dir); err != nil {
		log.Warn("policy watch unavailable, polling only", "dir", dir, "error", err)
		fw.Close()
		return nil, func() {}
	}
	out := make(chan struct{}, 1)
	done := make(chan struct{})
	base := filepath.Base(w.Path)
	go func() {
		defer close(done)
		for {
			select {
			case ev, ok := <-fw.Events:
				if !ok {
					return
				}
				// Kubernetes-style ..data symlink swaps touch other names.
				if filepath.Base(ev.Name) != base && !isDotDot(ev.Name) {
					continue
				}
				select {
				case out <- struct{}{}:
				default:
				}
			case _, ok := <-fw.Errors:
				if !ok {
					return
				}
			}
		}
	}()
	return out, func() { fw.Close(); <-done }
}

func isDotDot(name string) bool {
	b := filepath.Base(name)
	return len(b) > 2 && b[:2] == ".."
}

func (w *Watcher) reloadIfChanged() {
	sum, data, err := read(w.Path)
	if err != nil {
		// A missing or unreadable file is a failed reload worth reporting
		// once per distinct state, not once per poll.
		var zero [sha256.Size]byte
		if w.last == zero {
			return
		}
		w.last = zero
		w.Reload(nil, err)
		return
	}
	if sum == w.last {
		return
	}
	w.last = sum
	w.Reload(data, nil)
}

// read returns the file's bytes and their hash; the zero hash means
// unreadable.
func read(path string) ([sha256.Size]byte, []byte, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return [sha256.Size]byte{}, nil, err
	}
	if len(b) == 0 {
		// An editor truncates before writing: treat "empty" as its own state
		// so the write that follows still differs.
		return sha256.Sum256([]byte{0}), b, nil
	}
	return sha256.Sum256(b), b, nil
}
