package canonpath

import (
	"errors"
	"net/url"
	"strings"
	"testing"
)

func TestClean(t *testing.T) {
	tests := []struct {
		in, want string
		err      error
	}{
		{in: "/", want: "/"},
		{in: "/v1/chat/completions", want: "/v1/chat/completions"},
		{in: "/v1//chat///completions", want: "/v1/chat/completions"},
		{in: "/v1/chat/completions/", want: "/v1/chat/completions"},
		{in: "//", want: "/"},
		{in: "/v1/%63hat/completions", want: "/v1/chat/completions"},
		{in: "/v1/%7euser", want: "/v1/~user"},
		{in: "/a%3ab", want: "/a%3Ab"},
		{in: "/a%3Ab", want: "/a%3Ab"},
		{in: "/a%20b", want: "/a%20b"},
		{in: "/V1/Chat", want: "/V1/Chat"},
		{in: "/a/.b/c.", want: "/a/.b/c."},
		{in: "/a/..b", want: "/a/..b"},
		{in: "", err: ErrEmpty},
		{in: "v1/chat", err: ErrEmpty},
		{in: "/v1/../files", err: ErrDotSegment},
		{in: "/v1/./files", err: ErrDotSegment},
		{in: "/v1/..", err: ErrDotSegment},
		{in: "/v1/%2e%2E/files", err: ErrDotSegment},
		{in: "/v1/.%2e", err: ErrDotSegment},
		{in: "/repos/acme/app/issues/..;", err: ErrDotSegment},
		{in: "/a/..;x/b", err: ErrDotSegment},
		{in: "/a/.;/b", err: ErrDotSegment},
		{in: "/a/%2e%2e%3bx/b", err: ErrDotSegment},
		{in: "/a/x;..", want: "/a/x;.."},
		{in: "/v1%2ffiles", err: ErrEncoding},
		{in: "/v1%2Ffiles", err: ErrEncoding},
		{in: "/v1%5cfiles", err: ErrEncoding},
		{in: "/v1%00", err: ErrEncoding},
		{in: "/v1%zz", err: ErrEncoding},
		{in: "/v1%4", err: ErrEncoding},
		{in: "/v1\\files", err: ErrByte},
		{in: "/v1 files", err: ErrByte},
		{in: "/v1\x00", err: ErrByte},
		{in: "/v1\tx", err: ErrByte},
		{in: "/v1/\xc3\xa9", err: ErrByte},
		{in: "/" + strings.Repeat("a", MaxLen), err: ErrTooLong},
	}
	for _, tt := range tests {
		got, err := Clean(tt.in)
		if !errors.Is(err, tt.err) {
			t.Errorf("Clean(%q) error = %v, want %v", tt.in, err, tt.err)
			continue
		}
		if got != tt.want {
			t.Errorf("Clean(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

func TestGlob(t *testing.T) {
	tests := []struct {
		pattern, path string
		want          bool
	}{
		{"/repos/acme/app/issues", "/repos/acme/app/issues", true},
		{"/repos/acme/app/issues", "/repos/acme/app/issues/1", false},
		{"/repos/acme/app/issues/*", "/repos/acme/app/issues/1", true},
		{"/repos/acme/app/issues/*", "/repos/acme/app/issues", false},
		{"/repos/acme/app/issues/*", "/repos/acme/app/issues/1/comments", false},
		{"/repos/acme/app/issues/*/comments", "/repos/acme/app/issues/7/comments", true},
		{"/repos/acme/**", "/repos/acme", true},
		{"/repos/acme/**", "/repos/acme/app/issues/1", true},
		{"/repos/acme/**", "/repos/acmex/app", false},
		{"/**/comments", "/a/b/comments", true},
		{"/**/comments", "/comments", true},
		{"/**/comments", "/a/b/comment", false},
		{"/**", "/", true},
		{"/*", "/", false},
		{"/", "/", true},
		{"/v1/models", "/v1/Models", false},
	}
	for _, tt := range tests {
		g, err := Compile(tt.pattern)
		if err != nil {
			t.Fatalf("Compile(%q): %v", tt.pattern, err)
		}
		if got := g.Match(tt.path); got != tt.want {
			t.Errorf("%q.Match(%q) = %v, want %v", tt.pattern, tt.path, got, tt.want)
		}
	}
}

func TestCompileRefuses(t *testing.T) {
	for _, p := range []string{"", "repos", "/a//b", "/a/", "/a/../b", "/a/b*", "/a/*x/c", "/a%2fb", "/a/%61"} {
		if _, err := Compile(p); !errors.Is(err, ErrPattern) {
			t.Errorf("Compile(%q) error = %v, want ErrPattern", p, err)
		}
	}
}

// FuzzClean checks the properties the gateway relies on: Clean is
// idempotent, its output never holds a dot segment, an empty segment or a
// byte a reader could split on, and it decodes to the same bytes as Go's own
// URL decoder reads from it.
func FuzzClean(f *testing.F) {
	for _, s := range []string{"/", "/v1/chat/completions", "/a//b/", "/%2e%2e/x", "/a%2fb", "/%41%7e", "/a/./b"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, in string) {
		out, err := Clean(in)
		if err != nil {
			return
		}
		again, err := Clean(out)
		if err != nil || again != out {
			t.Fatalf("Clean(Clean(%q)) = %q, %v; want %q", in, again, err, out)
		}
		for _, seg := range strings.Split(out, "/")[1:] {
			if seg == "." || seg == ".." || (seg == "" && out != "/") {
				t.Fatalf("Clean(%q) = %q has segment %q", in, out, seg)
			}
		}
		dec, err := url.PathUnescape(out)
		if err != nil {
			t.Fatalf("Clean(%q) = %q does not unescape: %v", in, out, err)
		}
		if strings.Count(dec, "/") != strings.Count(out, "/") {
			t.Fatalf("Clean(%q) = %q decodes to more segments: %q", in, out, dec)
		}
	})
}
