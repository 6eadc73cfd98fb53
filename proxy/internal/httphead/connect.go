package httphead

import (
	"bytes"
	"net"
	"net/netip"
	"strings"
)

// Why ParseConnect exists: a new tunnel paid for net/http's connection,
// request, background read and hijack before egressd's own work started,
// about a tenth of its CPU per tunnel. The proxy reads a connection's first
// bytes itself and serves a CONNECT whose head ParseConnect calls plain.
// Everything else, including every head net/http would refuse or read in a
// way of its own, goes to net/http unchanged, so the refusals, limits and
// logs the hardening suite checks stay net/http's and refuse.go's. Plain
// is therefore deliberately narrow: a head that is sound, small and has
// nothing that net/http would act on.

// ConnectState is what ParseConnect made of the bytes read so far.
type ConnectState uint8

const (
	// ConnectMore: the bytes are a prefix of a plain CONNECT head; read on.
	ConnectMore ConnectState = iota
	// ConnectPlain: a whole plain CONNECT head; Connect describes it.
	ConnectPlain
	// ConnectOther: anything else; net/http reads the connection.
	ConnectOther
)

// Connect is a plain CONNECT head.
type Connect struct {
	Target string // the request target, host:port as sent
	HTTP10 bool   // the request line said HTTP/1.0
	Len    int    // bytes of the head, its final empty line included
}

var connectMethod = []byte("CONNECT ")

// ParseConnect reads the start of a client stream. A plain head is
//
//	CONNECT host:port HTTP/1.1 (or HTTP/1.0), ending in CRLF
//	header lines "name: value" ending in CRLF, then an empty line
//
// with a target of letters, digits and - . _ : [ ] whose port is 1 to 5
// digits, header names of token characters, values of visible ASCII,
// space and tab, at most one Host (of the target's characters), and no
// Content-Length, Transfer-Encoding or Expect. A line ending in a bare LF
// or CR, an obs-fold continuation, or any other byte makes it Other.
func ParseConnect(b []byte) (Connect, ConnectState) {
	if len(b) < len(connectMethod) {
		if bytes.HasPrefix(connectMethod, b) {
			return Connect{}, ConnectMore
		}
		return Connect{}, ConnectOther
	}
	if !bytes.HasPrefix(b, connectMethod) {
		return Connect{}, ConnectOther
	}
	line, rest, st := crlfLine(b)
	if st != ConnectPlain {
		return Connect{}, st
	}
	c, ok := connectLine(line[len(connectMethod):])
	if !ok {
		return Connect{}, ConnectOther
	}
	hosts := 0
	for {
		line, next, st := crlfLine(rest)
		if st != ConnectPlain {
			return Connect{}, st
		}
		if len(line) == 0 {
			c.Len = len(b) - len(next)
			return c, ConnectPlain
		}
		if !plainHeader(line, &hosts) {
			return Connect{}, ConnectOther
		}
		rest = next
	}
}

// crlfLine splits off one line ending in CRLF: More while no LF has come,
// Other for a CR or LF anywhere but that ending.
func crlfLine(b []byte) (line, rest []byte, st ConnectState) {
	i := bytes.IndexByte(b, '\n')
	if i < 0 {
		if bytes.IndexByte(b, '\r') >= 0 && b[len(b)-1] != '\r' {
			return nil, nil, ConnectOther
		}
		return nil, nil, ConnectMore
	}
	if i == 0 || b[i-1] != '\r' || bytes.IndexByte(b[:i-1], '\r') >= 0 {
		return nil, nil, ConnectOther
	}
	return b[:i-1], b[i+1:], ConnectPlain
}

// connectLine reads "host:port HTTP/1.x" after the method.
func connectLine(b []byte) (Connect, bool) {
	sp := bytes.IndexByte(b, ' ')
	if sp <= 0 {
		return Connect{}, false
	}
	target, version := b[:sp], b[sp+1:]
	var c Connect
	switch string(version) {
	case "HTTP/1.1":
	case "HTTP/1.0":
		c.HTTP10 = true
	default:
		return Connect{}, false
	}
	c.Target = string(target)
	return c, plainTarget(c.Target)
}

// plainTarget accepts host:port with a host of targetChars (an IPv6
// address in brackets) and a port of 1 to 5 digits.
func plainTarget(t string) bool {
	if len(t) > 300 {
		return false
	}
	for i := range len(t) {
		if !targetChar(t[i]) {
			return false
		}
	}
	host, port, err := net.SplitHostPort(t)
	if err != nil || host == "" || len(port) == 0 || len(port) > 5 {
		return false
	}
	for i := range len(port) {
		if !isDigit(port[i]) {
			return false
		}
	}
	if t[0] == '[' {
		// net/http refuses brackets around anything but an IPv6 address.
		a, err := netip.ParseAddr(host)
		return err == nil && a.Is6()
	}
	return true
}

func targetChar(ch byte) bool {
	switch {
	case 'a' <= ch && ch <= 'z', 'A' <= ch && ch <= 'Z', isDigit(ch):
		return true
	}
	return ch == '-' || ch == '.' || ch == '_' || ch == ':' || ch == '[' || ch == ']'
}

// plainHeader accepts "name: value" with a token name and a value of
// visible ASCII, space and tab, counting Host lines; a header net/http
// would act on for a CONNECT (framing, Expect, a second or odd Host) is
// not plain.
func plainHeader(line []byte, hosts *int) bool {
	colon := bytes.IndexByte(line, ':')
	if colon <= 0 {
		return false
	}
	name, value := line[:colon], line[colon+1:]
	for _, ch := range name {
		if !tokenChar(ch) {
			return false
		}
	}
	for _, ch := range value {
		if (ch < ' ' || ch > '~') && ch != '\t' {
			return false
		}
	}
	switch {
	case asciiEqualFold(name, "content-length"), asciiEqualFold(name, "transfer-encoding"),
		asciiEqualFold(name, "expect"):
		return false
	case asciiEqualFold(name, "host"):
		*hosts++
		for _, ch := range trimOWS(value) {
			if !targetChar(ch) {
				return false
			}
		}
		return *hosts == 1
	}
	return true
}

// tokenChar is RFC 9110's tchar.
func tokenChar(ch byte) bool {
	switch {
	case 'a' <= ch && ch <= 'z', 'A' <= ch && ch <= 'Z', isDigit(ch):
		return true
	}
	return strings.IndexByte("!#$%&'*+-.^_`|~", ch) >= 0
}
