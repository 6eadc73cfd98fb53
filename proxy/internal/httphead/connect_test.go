package httphead

import (
	"bufio"
	"bytes"
	"net/http"
	"strings"
	"testing"

	"golang.org/x/net/http/httpguts"
)

func TestParseConnect(t *testing.T) {
	const plain = "CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\nUser-Agent: curl/8\r\n\r\n"
	tests := []struct {
		name string
		in   string
		want ConnectState
		tgt  string
		h10  bool
	}{
		{"plain", plain, ConnectPlain, "example.com:443", false},
		{"plain with early bytes", plain + "\x16\x03\x01", ConnectPlain, "example.com:443", false},
		{"no headers", "CONNECT 192.0.2.1:22 HTTP/1.1\r\n\r\n", ConnectPlain, "192.0.2.1:22", false},
		{"http/1.0", "CONNECT a.example:443 HTTP/1.0\r\n\r\n", ConnectPlain, "a.example:443", true},
		{"ipv6 literal", "CONNECT [2001:db8::1]:443 HTTP/1.1\r\n\r\n", ConnectPlain, "[2001:db8::1]:443", false},
		{"tab in value", "CONNECT a.example:443 HTTP/1.1\r\nX-A:\tb c\r\n\r\n", ConnectPlain, "a.example:443", false},

		{"empty", "", ConnectMore, "", false},
		{"method prefix", "CONN", ConnectMore, "", false},
		{"request line cut", "CONNECT example.com:4", ConnectMore, "", false},
		{"cut before LF", "CONNECT example.com:443 HTTP/1.1\r", ConnectMore, "", false},
		{"headers cut", "CONNECT example.com:443 HTTP/1.1\r\nHost: exa", ConnectMore, "", false},
		{"no empty line yet", "CONNECT example.com:443 HTTP/1.1\r\nHost: example.com\r\n", ConnectMore, "", false},

		{"plain GET", "GET http://example.com/ HTTP/1.1\r\n\r\n", ConnectOther, "", false},
		{"lower-case method", "connect example.com:443 HTTP/1.1\r\n\r\n", ConnectOther, "", false},
		{"not http", "\x16\x03\x01\x02\x00", ConnectOther, "", false},
		{"bare LF request line", "CONNECT example.com:443 HTTP/1.1\n\r\n", ConnectOther, "", false},
		{"bare LF header", "CONNECT example.com:443 HTTP/1.1\r\nHost: a\n\r\n", ConnectOther, "", false},
		{"bare CR", "CONNECT example.com:443 HTTP/1.1\rX", ConnectOther, "", false},
		{"obs-fold", "CONNECT example.com:443 HTTP/1.1\r\nX-A: b\r\n c\r\n\r\n", ConnectOther, "", false},
		{"content-length", "CONNECT example.com:443 HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello", ConnectOther, "", false},
		{"transfer-encoding", "CONNECT example.com:443 HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n", ConnectOther, "", false},
		{"expect", "CONNECT example.com:443 HTTP/1.1\r\nExpect: 100-continue\r\n\r\n", ConnectOther, "", false},
		{"two hosts", "CONNECT example.com:443 HTTP/1.1\r\nHost: a\r\nHOST: b\r\n\r\n", ConnectOther, "", false},
		{"odd host", "CONNECT example.com:443 HTTP/1.1\r\nHost: a b\r\n\r\n", ConnectOther, "", false},
		{"brackets around a name", "CONNECT [example.com]:443 HTTP/1.1\r\n\r\n", ConnectOther, "", false},
		{"brackets around ipv4", "CONNECT [192.0.2.1]:443 HTTP/1.1\r\n\r\n", ConnectOther, "", false},
		{"no port", "CONNECT example.com HTTP/1.1\r\n\r\n", ConnectOther, "", false},
		{"empty port", "CONNECT example.com: HTTP/1.1\r\n\r\n", ConnectOther, "", false},
		{"long port", "CONNECT example.com:123456 HTTP/1.1\r\n\r\n", ConnectOther, "", false},
		{"userinfo", "CONNECT a@example.com:443 HTTP/1.1\r\n\r\n", ConnectOther, "", false},
		{"path", "CONNECT example.com:443/x HTTP/1.1\r\n\r\n", ConnectOther, "", false},
		{"zone", "CONNECT [fe80::1%25eth0]:443 HTTP/1.1\r\n\r\n", ConnectOther, "", false},
		{"unbracketed ipv6", "CONNECT ::1:443 HTTP/1.1\r\n\r\n", ConnectOther, "", false},
		{"two spaces", "CONNECT  example.com:443 HTTP/1.1\r\n\r\n", ConnectOther, "", false},
		{"http/2 version", "CONNECT example.com:443 HTTP/2.0\r\n\r\n", ConnectOther, "", false},
		{"no version", "CONNECT example.com:443\r\n\r\n", ConnectOther, "", false},
		{"space before colon", "CONNECT example.com:443 HTTP/1.1\r\nHost : a\r\n\r\n", ConnectOther, "", false},
		{"control in value", "CONNECT example.com:443 HTTP/1.1\r\nX-A: \x01\r\n\r\n", ConnectOther, "", false},
		{"obs-text in value", "CONNECT example.com:443 HTTP/1.1\r\nX-A: \xff\r\n\r\n", ConnectOther, "", false},
		{"no colon", "CONNECT example.com:443 HTTP/1.1\r\nX-A\r\n\r\n", ConnectOther, "", false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, st := ParseConnect([]byte(tc.in))
			if st != tc.want {
				t.Fatalf("ParseConnect(%q): got state %d, want %d", tc.in, st, tc.want)
			}
			if st != ConnectPlain {
				return
			}
			wantLen := strings.Index(tc.in, "\r\n\r\n") + 4
			if got.Target != tc.tgt || got.HTTP10 != tc.h10 || got.Len != wantLen {
				t.Errorf("ParseConnect(%q) = %+v, want target %q, HTTP10 %v, Len %d", tc.in, got, tc.tgt, tc.h10, wantLen)
			}
		})
	}
}

// Every prefix of a plain head is More, so a head read in pieces is
// served like one read whole.
func TestParseConnectPrefixes(t *testing.T) {
	head := []byte("CONNECT [2001:db8::1]:8443 HTTP/1.1\r\nHost: [2001:db8::1]:8443\r\nProxy-Connection: keep-alive\r\n\r\n")
	for i := range len(head) {
		if _, st := ParseConnect(head[:i]); st != ConnectMore {
			t.Fatalf("ParseConnect(%q): got state %d, want More", head[:i], st)
		}
	}
	if _, st := ParseConnect(head); st != ConnectPlain {
		t.Fatalf("whole head: got state %d, want Plain", st)
	}
}

func TestParseConnectAllocs(t *testing.T) {
	head := []byte("CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\nUser-Agent: curl/8\r\n\r\n")
	got := testing.AllocsPerRun(100, func() {
		if _, st := ParseConnect(head); st != ConnectPlain {
			t.Fatal("not plain")
		}
	})
	if got > 1 {
		t.Errorf("ParseConnect: got %v allocations, want at most 1 (the target)", got)
	}
}

// FuzzParseConnect holds ParseConnect to net/http: a head it calls plain
// is one net/http reads as the same CONNECT, ending where ParseConnect
// says, with no body, so serving it without net/http changes nothing a
// client could tell.
func FuzzParseConnect(f *testing.F) {
	for _, s := range []string{
		"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n",
		"CONNECT [::1]:443 HTTP/1.0\r\n\r\nrest",
		"CONNECT a:1 HTTP/1.1\r\nX: y\r\n z\r\n\r\n",
		"CONNECT a:1 HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc",
		"GET / HTTP/1.1\r\n\r\n",
		"CONNECT [a]:1 HTTP/1.1\r\n\r\n",
		"CONNECT a.example:443 HTTP/1.1\r\nHost: a.example:443\r\nX-A: b\tc\r\n\r\n",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		c, st := ParseConnect(b)
		for i := range c.Len {
			if _, pst := ParseConnect(b[:i]); pst != ConnectMore {
				t.Fatalf("prefix %q of plain head %q: got state %d, want More", b[:i], b, pst)
			}
		}
		if st != ConnectPlain {
			return
		}
		br := bufio.NewReaderSize(bytes.NewReader(b), len(b)+16)
		r, err := http.ReadRequest(br)
		if err != nil {
			t.Fatalf("plain head %q: net/http refuses it: %v", b, err)
		}
		if r.Method != http.MethodConnect || r.RequestURI != c.Target || (r.ProtoMinor == 0) != c.HTTP10 || r.ProtoMajor != 1 {
			t.Fatalf("plain head %q: net/http read %s %s HTTP/%d.%d; ParseConnect %+v", b, r.Method, r.RequestURI, r.ProtoMajor, r.ProtoMinor, c)
		}
		if r.ContentLength > 0 || len(r.TransferEncoding) > 0 || r.Header.Get("Expect") != "" {
			t.Fatalf("plain head %q has a body or expectation for net/http", b)
		}
		// What net/http's server checks beyond ReadRequest: the Host
		// header and every header line.
		if hs, ok := r.Header["Host"]; ok && (len(hs) != 1 || !httpguts.ValidHostHeader(hs[0])) {
			t.Fatalf("plain head %q: net/http's server refuses its Host %q", b, hs)
		}
		for k, vs := range r.Header {
			if !httpguts.ValidHeaderFieldName(k) {
				t.Fatalf("plain head %q: invalid header name %q", b, k)
			}
			for _, v := range vs {
				if !httpguts.ValidHeaderFieldValue(v) {
					t.Fatalf("plain head %q: invalid header value %q", b, v)
				}
			}
		}
		if rest := br.Buffered(); rest != len(b)-c.Len {
			t.Fatalf("plain head %q: net/http left %d bytes after the head, ParseConnect %d", b, rest, len(b)-c.Len)
		}
	})
}
