// Package hop owns which HTTP headers are hop-by-hop: the ones egressd never
// passes from one connection to the next, in the proxy and the gateway alike.
package hop

import (
	"net/http"
	"strings"
)

// headers are never forwarded (RFC 9110 §7.6.1, plus the proxy ones and
// Proxy-Connection, which old clients still send).
var headers = [...]string{
	"Connection", "Proxy-Connection", "Keep-Alive", "Proxy-Authenticate",
	"Proxy-Authorization", "Te", "Trailer", "Transfer-Encoding", "Upgrade",
}

// Is reports whether the canonical header name k is hop-by-hop in h: one of
// the fixed set, or named by h's Connection header.
func Is(k string, h http.Header) bool {
	for _, hk := range headers {
		if k == hk {
			return true
		}
	}
	for _, v := range h["Connection"] {
		for _, f := range strings.Split(v, ",") {
			if http.CanonicalHeaderKey(strings.TrimSpace(f)) == k {
				return true
			}
		}
	}
	return false
}

// Remove strips h of every hop-by-hop header. A WebSocket handshake
// (keepUpgrade) keeps exactly "Connection: Upgrade" and its Upgrade header,
// which it needs end to end.
func Remove(h http.Header, keepUpgrade bool) {
	var upgrade []string
	if keepUpgrade {
		upgrade = h["Upgrade"]
	}
	for _, v := range h["Connection"] {
		for _, name := range strings.Split(v, ",") {
			if name = strings.TrimSpace(name); name != "" {
				h.Del(name)
			}
		}
	}
	for _, name := range headers {
		h.Del(name)
	}
	if keepUpgrade {
		h["Connection"] = []string{"Upgrade"}
		h["Upgrade"] = upgrade
	}
}
