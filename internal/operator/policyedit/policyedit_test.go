package policyedit

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/egressd/egressd/internal/shared/vocab"

	"github.com/egressd/egressd/internal/lib/atomicfile"
	"github.com/egressd/egressd/policy"
)

var at = time.Date(2026, 12, 7, 18, 30, 0, 0, time.UTC)

// isSubsequence reports whether every byte of a appears in b in order:
// the edit only inserted.
func isSubsequence(a, b []byte) bool {
	i := 0
	for j := 0; i < len(a) && j < len(b); j++ {
		if a[i] == b[j] {
			i++
		}
	}
	return i == len(a)
}

// removeInserted drops the inserted lines from out; what is left must be
// the original byte for byte.
func removeInserted(out string, inserted ...string) string {
	for _, l := range inserted {
		out = strings.Replace(out, l+"\n", "", 1)
	}
	return out
}

func TestAppend(t *testing.T) {
	const comment = "# approved by telegram:42 at 2026-12-07T18:30:00Z (egressd ask)"
	tests := []struct {
		name, in string
		port     uint16
		inserted []string
	}{
		{"block list with comments", "version: 1\n# the agent's grants\nallow:\n  - host: pypi.org   # packages\n  - {host: api.github.com, ports: [443]}\n\n# limits below\nlimits:\n  client: {rps: 5, burst: 10}\n",
			443, []string{"  " + comment, "  - host: new.example"}},
		{"item spanning lines", "version: 1\nallow:\n  - host: a.example\n    ports: [443, 8443]\n    # trailing note\nmode: enforce\n",
			8080, []string{"  " + comment, "  - {host: new.example, ports: [8080]}"}},
		{"unindented list, last key", "version: 1\nallow:\n- host: a.example\n- host: b.example", 443,
			[]string{comment, "- host: new.example"}},
		{"no allow key", "version: 1\nmode: enforce # strict\n", 443,
			[]string{comment, "allow:", "  - host: new.example"}},
		{"empty allow", "version: 1\nallow:\nmode: enforce\n", 443,
			[]string{"  " + comment, "  - host: new.example"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out, err := Append([]byte(tt.in), Entry{Host: "new.example", Port: tt.port, By: "telegram:42", At: at})
			if err != nil {
				t.Fatal(err)
			}
			for _, l := range tt.inserted {
				if !strings.Contains(string(out), l+"\n") {
					t.Errorf("output lacks line %q:\n%s", l, out)
				}
			}
			in := tt.in
			if !strings.HasSuffix(in, "\n") {
				in += "\n"
			}
			if got := removeInserted(string(out), tt.inserted...); got != in {
				t.Errorf("other bytes changed:\ngot\n%s\nwant\n%s", got, in)
			}
			if !isSubsequence([]byte(tt.in), out) {
				t.Errorf("the original is not a subsequence of the output")
			}
			p, err := policy.LoadBytes(out, "out.yaml")
			if err != nil {
				t.Fatalf("edited policy does not load: %v\n%s", err, out)
			}
			if d := p.Decide(policy.Request{Host: "new.example", Port: tt.port, Proto: vocab.ProtoConnect}); d.Verdict != vocab.Allow {
				t.Errorf("edited policy: %v %v, want allow", d.Verdict, d.Reason)
			}
		})
	}
}

func TestAppendRefuses(t *testing.T) {
	for _, in := range []string{
		"version: 1\nallow: [{host: a.example}]\n",                     // flow style: would rewrite a line
		"version: 1\nallow:\n  - host: new.example\n    ports: [80]\n", // host already listed: a second entry is a duplicate
		"version: 1\nallow: ~\n",
	} {
		if out, err := Append([]byte(in), Entry{Host: "new.example", Port: 443, By: "cli", At: at}); err == nil {
			t.Errorf("Append(%q) = %q, want an error", in, out)
		}
	}
	if _, err := Append([]byte("version: 1\n"), Entry{Host: "bad host", Port: 443}); err == nil {
		t.Errorf("a host that is not a name was rendered")
	}
}

func TestAppendFile(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "policy.yaml")
	in := "version: 1\nallow:\n  - host: a.example\n"
	if err := os.WriteFile(path, []byte(in), 0o640); err != nil {
		t.Fatal(err)
	}
	if _, err := AppendFile(path, Entry{Host: "new.example", Port: 443, By: "cli", At: at}); err != nil {
		t.Fatal(err)
	}
	got, _ := os.ReadFile(path)
	if !isSubsequence([]byte(in), got) || !strings.Contains(string(got), "- host: new.example\n") {
		t.Errorf("file after: %q", got)
	}
	if st, _ := os.Stat(path); st.Mode().Perm() != 0o640 {
		t.Errorf("mode changed to %v", st.Mode())
	}
	// A read-only file system: the file is untouched and the error says so.
	writeFile = func(string, []byte, os.FileMode) error {
		return &os.PathError{Op: "open", Path: path, Err: syscall.EROFS}
	}
	defer func() { writeFile = atomicfile.WriteFile }()
	before, _ := os.ReadFile(path)
	_, err := AppendFile(path, Entry{Host: "other.example", Port: 443, By: "cli", At: at})
	after, _ := os.ReadFile(path)
	if err == nil || !strings.Contains(err.Error(), "not writable") || !errors.Is(err, syscall.EROFS) {
		t.Errorf("read-only file system: got %v, want a not writable error wrapping EROFS", err)
	}
	if string(after) != string(before) {
		t.Errorf("failed edit changed the file")
	}
	if _, err := AppendFile(filepath.Join(dir, "missing.yaml"), Entry{Host: "x.example", Port: 443}); err == nil || errors.Is(err, ErrCannotEdit) {
		t.Errorf("missing file: got %v", err)
	}
}

// FuzzAppend: whatever the file, Append either refuses or only inserts
// lines, and its result loads and grants the entry.
func FuzzAppend(f *testing.F) {
	f.Add("version: 1\nallow:\n  - host: a.example\n")
	f.Add("version: 1\nallow:\n- {host: a.example, ports: [1]}\n  # x\nmode: report\n")
	f.Add("version: 1\n")
	f.Add("version: 1\nallow:\n")
	f.Add("version: 1\nallow: []\n")
	f.Fuzz(func(t *testing.T, in string) {
		out, err := Append([]byte(in), Entry{Host: "new.example", Port: 8443, By: "fuzz", At: at})
		if err != nil {
			return
		}
		if !isSubsequence([]byte(in), out) {
			t.Fatalf("not an insertion:\n%q\n%q", in, out)
		}
		p, err := policy.LoadBytes(out, "out.yaml")
		if err != nil {
			t.Fatalf("accepted output does not load: %v", err)
		}
		if d := p.Decide(policy.Request{Host: "new.example", Port: 8443, Proto: vocab.ProtoConnect}); d.Verdict != vocab.Allow {
			t.Fatalf("accepted output does not grant: %v", d.Reason)
		}
	})
}
