package daemon

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// startWatcher runs a Watcher on path and returns a channel that receives
// once per Reload call.
func startWatcher(t *testing.T, path string, poll time.Duration) (chan struct{}, chan struct{}) {
	t.Helper()
	reloads := make(chan struct{}, 16)
	trigger := make(chan struct{})
	ctx, cancel := context.WithCancel(context.Background())
	w := &Watcher{
		Path:     path,
		Reload:   func([]byte, error) { reloads <- struct{}{} },
		Poll:     poll,
		Debounce: 10 * time.Millisecond,
		Trigger:  trigger,
	}
	done := w.Start(ctx)
	t.Cleanup(func() { cancel(); <-done })
	return reloads, trigger
}

func waitReload(t *testing.T, reloads chan struct{}, what string) {
	t.Helper()
	select {
	case <-reloads:
	case <-time.After(5 * time.Second):
		t.Fatalf("%s: no reload within 5s", what)
	}
}

func TestWatcherSeesEdits(t *testing.T) {
	tests := []struct {
		name string
		edit func(t *testing.T, path string)
	}{
		{"write in place", func(t *testing.T, path string) {
			if err := os.WriteFile(path, []byte("version: 1\nmode: report\n"), 0o644); err != nil {
				t.Fatal(err)
			}
		}},
		{"write temp and rename", func(t *testing.T, path string) {
			tmp := path + ".swp"
			if err := os.WriteFile(tmp, []byte("version: 1\nmode: report\n"), 0o644); err != nil {
				t.Fatal(err)
			}
			if err := os.Rename(tmp, path); err != nil {
				t.Fatal(err)
			}
		}},
		{"delete", func(t *testing.T, path string) {
			if err := os.Remove(path); err != nil {
				t.Fatal(err)
			}
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "policy.yaml")
			if err := os.WriteFile(path, []byte("version: 1\n"), 0o644); err != nil {
				t.Fatal(err)
			}
			// A long poll proves the fsnotify path does the work.
			reloads, _ := startWatcher(t, path, time.Hour)
			tc.edit(t, path)
			waitReload(t, reloads, tc.name)
		})
	}
}

func TestWatcherPollFallback(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "policy.yaml")
	if err := os.WriteFile(path, []byte("version: 1\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	reloads := make(chan struct{}, 4)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	w := &Watcher{Path: path, Reload: func([]byte, error) { reloads <- struct{}{} }, Poll: 20 * time.Millisecond}
	// No directory watch: only the poll can see the edit.
	done := w.start(ctx, nil, func() {})
	if err := os.WriteFile(path, []byte("version: 1\nmode: report\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	waitReload(t, reloads, "poll")
	cancel()
	<-done
}

func TestWatcherIgnoresUnchangedAndOtherFiles(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "policy.yaml")
	content := []byte("version: 1\n")
	if err := os.WriteFile(path, content, 0o644); err != nil {
		t.Fatal(err)
	}
	reloads, trigger := startWatcher(t, path, 20*time.Millisecond)
	// Neither a sibling file nor rewriting identical bytes is a change.
	if err := os.WriteFile(filepath.Join(dir, "other.yaml"), []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, content, 0o644); err != nil {
		t.Fatal(err)
	}
	// The trigger is handled by the same loop after any pending events, so
	// exactly one reload (the forced one) proves nothing else fired.
	trigger <- struct{}{}
	waitReload(t, reloads, "trigger")
	trigger <- struct{}{}
	waitReload(t, reloads, "second trigger")
	select {
	case <-reloads:
		t.Error("reload fired for unchanged content or another file")
	default:
	}
}

// TestWatcherPassesTheBytesItHashed: the policy applied is the content
// whose change was seen, not a second read that may differ.
func TestWatcherPassesTheBytesItHashed(t *testing.T) {
	path := filepath.Join(t.TempDir(), "policy.yaml")
	if err := os.WriteFile(path, []byte("version: 1\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	got := make(chan []byte, 4)
	ctx, cancel := context.WithCancel(context.Background())
	w := &Watcher{Path: path, Poll: time.Hour, Debounce: 10 * time.Millisecond,
		Reload: func(data []byte, err error) {
			if err != nil {
				t.Errorf("Reload error %v", err)
			}
			got <- data
		}}
	done := w.Start(ctx)
	defer func() { cancel(); <-done }()
	want := "version: 1\nmode: report\n"
	if err := os.WriteFile(path, []byte(want), 0o644); err != nil {
		t.Fatal(err)
	}
	select {
	case b := <-got:
		if string(b) != want {
			t.Errorf("Reload got %q, want %q", b, want)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no reload within 5s")
	}
}
