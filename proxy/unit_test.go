package proxy

import (
	"net/http"
	"net/url"
	"strconv"
	"testing"

	"github.com/egressd/egressd/internal/lib/hop"
)

func TestPrepareOutbound(t *testing.T) {
	cases := []struct {
		host     string
		port     uint16
		wantHost string
	}{
		{"granted.test", 80, "granted.test"},
		{"granted.test", 8080, "granted.test:8080"},
		{"::1", 80, "[::1]"},
		{"::1", 8080, "[::1]:8080"},
		{"127.0.0.1", 80, "127.0.0.1"},
	}
	for _, c := range cases {
		var rq request
		if dn := rq.setTarget(c.host, strconv.Itoa(int(c.port))); dn.denied() {
			t.Fatalf("setTarget(%q): %+v", c.host, dn)
		}
		r := &http.Request{URL: &url.URL{Scheme: "http", Host: "ignored", Path: "/"}, Host: "ignored", Header: http.Header{
			"Connection": {"close, X-Hop"}, "X-Hop": {"1"}, "Proxy-Authorization": {"x"}, "X-End": {"1"},
		}}
		prepareOutbound(r, &rq)
		if r.URL.Host != c.wantHost || r.Host != "" {
			t.Errorf("%s port %d: URL.Host %q Host %q, want %q and empty", c.host, c.port, r.URL.Host, r.Host, c.wantHost)
		}
		if len(r.Header) != 1 || r.Header.Get("X-End") != "1" {
			t.Errorf("headers after stripping: got %v, want only X-End", r.Header)
		}
	}
}

func TestRemoveHopHeadersKeepsWebSocketHandshake(t *testing.T) {
	h := http.Header{"Connection": {"keep-alive, Upgrade, X-Hop"}, "Upgrade": {"websocket"}, "X-Hop": {"1"},
		"Sec-Websocket-Key": {"k"}}
	hop.Remove(h, isWebSocket(h))
	if h.Get("Connection") != "Upgrade" || h.Get("Upgrade") != "websocket" || h.Get("X-Hop") != "" || h.Get("Sec-Websocket-Key") != "k" {
		t.Errorf("websocket handshake headers: got %v", h)
	}
	h = http.Header{"Connection": {"Upgrade"}, "Upgrade": {"h2c"}}
	hop.Remove(h, isWebSocket(h))
	if len(h) != 0 {
		t.Errorf("non-websocket upgrade: got %v, want every hop header removed", h)
	}
}
