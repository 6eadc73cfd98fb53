package statusline

import (
	"bufio"
	"bytes"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"
)

// serve runs h on loopback behind Listener and ConnContext.
func serve(t *testing.T, h http.Handler) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: h, ConnContext: ConnContext, ReadHeaderTimeout: 5 * time.Second}
	go srv.Serve(Listener(ln))
	t.Cleanup(func() { srv.Close() })
	return ln.Addr().String()
}

// statusLines sends raw requests on one connection and returns the status
// line of each response.
func statusLines(t *testing.T, addr string, reqs ...string) []string {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	br := bufio.NewReader(c)
	var got []string
	for _, rq := range reqs {
		if _, err := io.WriteString(c, rq); err != nil {
			t.Fatal(err)
		}
		line, err := br.ReadString('\n')
		if err != nil {
			t.Fatalf("reading status line: %v", err)
		}
		got = append(got, line)
		resp, err := http.ReadResponse(bufio.NewReader(io.MultiReader(strings.NewReader(line), br)), nil)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
	}
	return got
}

func TestArmRewritesOnWire(t *testing.T) {
	addr := serve(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/deny":
			Arm(r.Context(), http.StatusForbidden, "egressd not_allowlisted: denied.test:443 is not granted")
			w.Header().Set("X-Egressd-Reason", "not_allowlisted")
			w.WriteHeader(http.StatusForbidden)
			io.WriteString(w, "body\n")
		case "/big":
			Arm(r.Context(), http.StatusTooManyRequests, "egressd rate_limited: slow down")
			w.WriteHeader(http.StatusTooManyRequests)
			w.Write(bytes.Repeat([]byte("x"), 64<<10)) // head flushed with the first 4 KiB
		case "/bad":
			Arm(r.Context(), http.StatusForbidden, "a\r\nInjected: 1")
			w.WriteHeader(http.StatusForbidden)
		default:
			w.WriteHeader(http.StatusForbidden)
		}
	}))
	get := func(path string) string { return "GET " + path + " HTTP/1.1\r\nHost: x\r\n\r\n" }
	got := statusLines(t, addr, get("/deny"), get("/plain"), get("/big"), get("/bad"), get("/deny"))
	want := []string{
		"HTTP/1.1 403 egressd not_allowlisted: denied.test:443 is not granted\r\n",
		"HTTP/1.1 403 Forbidden\r\n", // keep-alive: the next response is net/http's own
		"HTTP/1.1 429 egressd rate_limited: slow down\r\n",
		"HTTP/1.1 403 Forbidden\r\n", // a phrase with CR/LF is refused
		"HTTP/1.1 403 egressd not_allowlisted: denied.test:443 is not granted\r\n",
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("response %d: got %q, want %q", i, got[i], want[i])
		}
	}
}

func TestArmWithoutHook(t *testing.T) {
	r, _ := http.NewRequest("GET", "http://x/", nil)
	if got, want := Arm(r.Context(), 403, "egressd x: y"), false; got != want {
		t.Errorf("Arm without ConnContext = %v, want %v", got, want)
	}
}

func TestRewriteInterim(t *testing.T) {
	// A 100 Continue before the final head passes untouched and keeps the
	// rewriter armed for the head that follows.
	var rw Rewriter
	rw.Arm(403, "egressd a: b")
	var out bytes.Buffer
	for _, p := range []string{"HTTP/1.1 100 Continue\r\n\r\n", "HTTP/1.1 403 Forbidden\r\nA: b\r\n\r\nbody", "HTTP/1.1 403 Forbidden\r\n\r\n"} {
		n, err := rw.Write(&out, []byte(p))
		if err != nil || n != len(p) {
			t.Fatalf("Write(%q) = %d, %v; want %d, nil", p, n, err, len(p))
		}
	}
	want := "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 403 egressd a: b\r\nA: b\r\n\r\nbodyHTTP/1.1 403 Forbidden\r\n\r\n"
	if got := out.String(); got != want {
		t.Errorf("got %q\nwant %q", got, want)
	}
}

func TestValid(t *testing.T) {
	tests := []struct {
		in   string
		want bool
	}{
		{"egressd a: b", true},
		{"", false},
		{"a\rb", false},
		{"a\nb", false},
		{"caf\xc3\xa9", false},
		{"a\x7f", false},
		{strings.Repeat("a", MaxPhrase), true},
		{strings.Repeat("a", MaxPhrase+1), false},
	}
	for _, tt := range tests {
		if got := Valid(tt.in); got != tt.want {
			t.Errorf("Valid(%q) = %v, want %v", tt.in, got, tt.want)
		}
	}
}

func FuzzRewrite(f *testing.F) {
	f.Add([]byte("HTTP/1.1 403 Forbidden\r\n\r\n"), 403)
	f.Add([]byte("HTTP/1.1 403"), 403)
	f.Add([]byte("HTTP/1.0 4x3 Forbidden\r\n"), 403)
	f.Fuzz(func(t *testing.T, p []byte, code int) {
		out, ok := rewrite(p, &armed{code: code, phrase: "egressd r: h"})
		if !ok {
			return
		}
		i := bytes.Index(p, []byte("\r\n"))
		if !bytes.HasSuffix(out, p[i:]) || !bytes.HasPrefix(out, p[:12]) {
			t.Fatalf("rewrite(%q) = %q: head or rest changed", p, out)
		}
		if got := string(out[12 : len(out)-len(p)+i]); got != " egressd r: h" {
			t.Fatalf("phrase %q", got)
		}
	})
}
