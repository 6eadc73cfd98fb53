package proxy

import (
	"bufio"
	"io"
	"net/http"
	"strings"
	"testing"
)

// TestRefusalStatusLineOnWire: the bytes egressd writes for a refusal start
// with a status line that names the reason and the target, for a CONNECT
// and for plain HTTP, and a keep-alive connection's next answer is not
// touched by it.
func TestRefusalStatusLineOnWire(t *testing.T) {
	f := newFixture(t, fixOpts{})
	granted := "http://" + f.hp("granted.test") + "/"
	tests := []struct {
		name     string
		raw      []string // sent in turn on one connection
		wantHead []string // each answer's status line, exactly
	}{
		{"connect", []string{connectReq("denied.test:443")},
			[]string{"HTTP/1.1 403 egressd not_allowlisted: denied.test:443 is not granted\r\n"}},
		{"connect port", []string{connectReq("granted.test:8443")},
			[]string{"HTTP/1.1 403 egressd port_not_allowed: granted.test:8443: the host is granted, this port is not\r\n"}},
		{"plain then granted", []string{getReq("http://denied.test/x", "denied.test"), getReq(granted, f.hp("granted.test"))},
			[]string{"HTTP/1.1 403 egressd not_allowlisted: denied.test:80 is not granted\r\n", "HTTP/1.1 200 OK\r\n"}},
		{"refused by net/http", []string{"GET http://granted.test/ HTTP/1.1\r\nHost: granted.test\r\nBad Name: x\r\n\r\n"},
			[]string{"HTTP/1.1 400 egressd bad_request: invalid header name\r\n"}},
		{"bad request", []string{getReq("/", f.hp("granted.test"))},
			[]string{"HTTP/1.1 400 egressd bad_request: origin-form request: egressd is a forward proxy, not a web server; send absolute URIs via ..." + "\r\n"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := f.dial()
			br := bufio.NewReader(c)
			for i, raw := range tt.raw {
				if _, err := io.WriteString(c, raw); err != nil {
					t.Fatal(err)
				}
				line, err := br.ReadString('\n')
				if err != nil {
					t.Fatalf("answer %d: %v", i, err)
				}
				if line != tt.wantHead[i] {
					t.Errorf("answer %d status line:\n got %q\nwant %q", i, line, tt.wantHead[i])
				}
				resp, err := http.ReadResponse(bufio.NewReader(io.MultiReader(strings.NewReader(line), br)), nil)
				if err != nil {
					t.Fatalf("answer %d: %v", i, err)
				}
				body, _ := io.ReadAll(resp.Body)
				if resp.StatusCode != http.StatusOK {
					if resp.Header.Get("X-Egressd-Reason") == "" || !strings.HasPrefix(string(body), "egressd: denied ") {
						t.Errorf("answer %d: header %v body %q: want X-Egressd-Reason and the body line kept", i, resp.Header, body)
					}
				}
			}
		})
	}
}
