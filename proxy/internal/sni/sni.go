// Package sni owns the reading of a TLS ClientHello's server name from the
// first bytes a client sends into a tunnel: a byte-level parser that holds
// no state between calls, never reads past its input and never panics.
package sni

import (
	"errors"
)

// TLS wire constants (RFC 8446 §5.1, §4, §4.2; RFC 6066 §3).
const (
	recordHeaderLen     = 5
	recordTypeHandshake = 22
	handshakeClientHell = 1
	extServerName       = 0
	sniTypeHostName     = 0
	// maxRecordLen is the largest TLSPlaintext fragment (2^14).
	maxRecordLen = 1 << 14
	// MaxHelloLen bounds how much of a ClientHello egressd buffers before
	// deciding. Real ClientHellos (even with post-quantum key shares) are a
	// few KiB; anything near this is an attack on the buffer.
	MaxHelloLen = 64 << 10
)

// Errors from Parse. ErrNotTLS means the stream does not start with a
// TLS handshake record at all (plain bytes: the tunnel is not inspected);
// ErrBadHello means it claims to be TLS but the ClientHello is malformed,
// which egressd treats as a denial: a server might parse what we cannot.
var (
	ErrNotTLS   = errors.New("not a tls handshake")
	ErrBadHello = errors.New("malformed tls clienthello")
)

// Parse reads the server name from the first bytes a client sent into a
// tunnel. It returns complete == false when data holds only a prefix of the
// ClientHello (more bytes are needed), ErrNotTLS when the stream is not TLS,
// ErrBadHello when it is malformed, and otherwise the host_name from the
// server_name extension ("" when the client sent none). The ClientHello may
// span several records. It never reads past data and never panics.
func Parse(data []byte) (sni string, complete bool, err error) {
	if len(data) == 0 {
		return "", false, nil
	}
	if data[0] != recordTypeHandshake {
		return "", false, ErrNotTLS
	}
	msg, complete, err := assembleHandshake(data)
	if err != nil || !complete {
		return "", complete, err
	}
	sni, err = clientHelloSNI(msg)
	return sni, err == nil, err
}

// assembleHandshake concatenates handshake record fragments from data until
// the first handshake message is whole, and returns that message (type,
// length and body). Any non-handshake record before then is malformed.
func assembleHandshake(data []byte) (msg []byte, complete bool, err error) {
	var fragBuf [4][]byte // a hello rarely spans more records; avoids an allocation
	frags := fragBuf[:0]
	total := 0
	need := -1 // handshake message length incl. 4-byte header, once known
	for len(data) > 0 {
		if len(data) < recordHeaderLen {
			return nil, false, nil
		}
		if data[0] != recordTypeHandshake || data[1] != 3 {
			return nil, false, ErrBadHello
		}
		n := int(data[3])<<8 | int(data[4])
		if n == 0 || n > maxRecordLen {
			return nil, false, ErrBadHello
		}
		if len(data) < recordHeaderLen+n {
			return nil, false, nil
		}
		frags = append(frags, data[recordHeaderLen:recordHeaderLen+n])
		total += n
		data = data[recordHeaderLen+n:]
		if need < 0 && total >= 4 {
			first := joinPrefix(frags, 4)
			if first[0] != handshakeClientHell {
				return nil, false, ErrBadHello
			}
			need = 4 + (int(first[1])<<16 | int(first[2])<<8 | int(first[3]))
			if need > MaxHelloLen {
				return nil, false, ErrBadHello
			}
		}
		if need >= 0 && total >= need {
			return joinPrefix(frags, need), true, nil
		}
		if total > MaxHelloLen {
			return nil, false, ErrBadHello
		}
	}
	return nil, false, nil
}

// joinPrefix returns the first n bytes of the concatenated fragments,
// without copying when the first fragment holds them all.
func joinPrefix(frags [][]byte, n int) []byte {
	if len(frags[0]) >= n {
		return frags[0][:n]
	}
	out := make([]byte, 0, n)
	for _, f := range frags {
		out = append(out, f[:min(len(f), n-len(out))]...)
		if len(out) == n {
			break
		}
	}
	return out
}

// clientHelloSNI walks a whole ClientHello handshake message (RFC 8446
// §4.1.2) to its extensions and returns the server_name host_name.
// Duplicate server_name extensions or several host_name entries are
// malformed: different servers would pick different ones.
func clientHelloSNI(msg []byte) (string, error) {
	r := reader(msg[4:])
	if !r.skip(2+32) || !r.skipVec(1) || !r.skipVec(2) || !r.skipVec(1) {
		return "", ErrBadHello
	}
	if r.empty() {
		return "", nil // no extensions at all: legal before TLS 1.2
	}
	exts, ok := r.vec(2)
	if !ok || !r.empty() {
		return "", ErrBadHello
	}
	sni, seen := "", false
	for !exts.empty() {
		typ, ok1 := exts.u16()
		body, ok2 := exts.vec(2)
		if !ok1 || !ok2 {
			return "", ErrBadHello
		}
		if typ != extServerName {
			continue
		}
		if seen {
			return "", ErrBadHello
		}
		seen = true
		name, err := serverNameList(body)
		if err != nil {
			return "", err
		}
		sni = name
	}
	return sni, nil
}

// serverNameList parses the server_name extension body (RFC 6066 §3).
func serverNameList(body reader) (string, error) {
	list, ok := body.vec(2)
	if !ok || !body.empty() || list.empty() {
		return "", ErrBadHello
	}
	name, found := "", false
	for !list.empty() {
		typ, ok1 := list.u8()
		v, ok2 := list.vec(2)
		if !ok1 || !ok2 || len(v) == 0 {
			return "", ErrBadHello
		}
		if typ != sniTypeHostName {
			continue
		}
		if found {
			return "", ErrBadHello
		}
		name, found = string(v), true
	}
	return name, nil
}

// reader is a bounds-checked cursor over TLS vectors.
type reader []byte

func (r *reader) empty() bool { return len(*r) == 0 }

func (r *reader) skip(n int) bool {
	if len(*r) < n {
		return false
	}
	*r = (*r)[n:]
	return true
}

func (r *reader) u8() (int, bool) {
	if len(*r) < 1 {
		return 0, false
	}
	v := int((*r)[0])
	*r = (*r)[1:]
	return v, true
}

func (r *reader) u16() (int, bool) {
	if len(*r) < 2 {
		return 0, false
	}
	v := int((*r)[0])<<8 | int((*r)[1])
	*r = (*r)[2:]
	return v, true
}

// vec reads a vector whose length prefix is lenBytes (1 or 2) long.
func (r *reader) vec(lenBytes int) (reader, bool) {
	var n int
	var ok bool
	if lenBytes == 1 {
		n, ok = r.u8()
	} else {
		n, ok = r.u16()
	}
	if !ok || len(*r) < n {
		return nil, false
	}
	v := (*r)[:n]
	*r = (*r)[n:]
	return v, true
}

func (r *reader) skipVec(lenBytes int) bool {
	_, ok := r.vec(lenBytes)
	return ok
}
