package proxy

import (
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"strconv"
	"testing"
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
	removeHopHeaders(h, isWebSocket(h))
	if h.Get("Connection") != "Upgrade" || h.Get("Upgrade") != "websocket" || h.Get("X-Hop") != "" || h.Get("Sec-Websocket-Key") != "k" {
		t.Errorf("websocket handshake headers: got %v", h)
	}
	h = http.Header{"Connection": {"Upgrade"}, "Upgrade": {"h2c"}}
	removeHopHeaders(h, isWebSocket(h))
	if len(h) != 0 {
		t.Errorf("non-websocket upgrade: got %v, want every hop header removed", h)
	}
}

func TestSelfSetUnspecified(t *testing.T) {
	s := newSelfSet([]netip.AddrPort{netip.MustParseAddrPort("0.0.0.0:3128"), netip.MustParseAddrPort("127.0.0.1:9090")})
	cases := []struct {
		ap   string
		want bool
	}{
		{"127.0.0.1:3128", true},
		{"127.9.9.9:3128", true},
		{"[::1]:3128", true},
		{"[::ffff:127.0.0.1]:3128", true},
		{"0.0.0.0:3128", true},
		{"127.0.0.1:9090", true},
		{"127.0.0.2:9090", false},
		{"192.0.2.55:3128", false}, // not a local address (TEST-NET-1)
		{"127.0.0.1:3129", false},
	}
	addrs, _ := net.InterfaceAddrs()
	for _, a := range addrs {
		if p, err := netip.ParsePrefix(a.String()); err == nil && !p.Addr().IsLoopback() {
			cases = append(cases, struct {
				ap   string
				want bool
			}{netip.AddrPortFrom(p.Addr(), 3128).String(), true})
		}
	}
	for _, c := range cases {
		if got := s.contains(netip.MustParseAddrPort(c.ap)); got != c.want {
			t.Errorf("contains(%s): got %v, want %v", c.ap, got, c.want)
		}
	}
}
