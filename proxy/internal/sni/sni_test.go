package sni

import (
	"errors"
	"testing"

	"github.com/egressd/egressd/internal/lib/testutil"
)

// refragment splits the handshake message in one record into records of
// at most size bytes, as a client may.
func refragment(rec []byte, size int) []byte {
	msg := rec[recordHeaderLen:]
	var out []byte
	for len(msg) > 0 {
		n := min(size, len(msg))
		out = append(out, recordTypeHandshake, 3, 1, byte(n>>8), byte(n))
		out = append(out, msg[:n]...)
		msg = msg[n:]
	}
	return out
}

// helloBody is a minimal ClientHello body up to (not including) the
// extensions block.
func helloBody() []byte {
	body := []byte{3, 3}
	body = append(body, make([]byte, 32)...) // random
	body = append(body, 0)                   // session id
	body = append(body, 0, 2, 0x13, 0x01)    // one cipher suite
	return append(body, 1, 0)                // null compression
}

// helloRecord wraps a ClientHello body in its handshake header and record.
func helloRecord(body []byte) []byte {
	msg := append([]byte{handshakeClientHell, 0, byte(len(body) >> 8), byte(len(body))}, body...)
	return append([]byte{recordTypeHandshake, 3, 1, byte(len(msg) >> 8), byte(len(msg))}, msg...)
}

// helloWithExtensions builds a minimal ClientHello record around exts.
func helloWithExtensions(exts ...[]byte) []byte {
	var all []byte
	for _, e := range exts {
		all = append(all, e...)
	}
	body := append(helloBody(), byte(len(all)>>8), byte(len(all)))
	return helloRecord(append(body, all...))
}

func sniExt(names ...string) []byte {
	var list []byte
	for _, n := range names {
		list = append(list, sniTypeHostName, byte(len(n)>>8), byte(len(n)))
		list = append(list, n...)
	}
	body := append([]byte{byte(len(list) >> 8), byte(len(list))}, list...)
	return append([]byte{0, extServerName, byte(len(body) >> 8), byte(len(body))}, body...)
}

func TestParseSNI(t *testing.T) {
	real := testutil.ClientHello(t, "granted.test")
	cases := []struct {
		name     string
		data     []byte
		sni      string
		complete bool
		err      error
	}{
		{"crypto/tls hello", real, "granted.test", true, nil},
		{"no sni", testutil.ClientHello(t, ""), "", true, nil},
		{"split into 100-byte records", refragment(real, 100), "granted.test", true, nil},
		{"split into 1-byte records", refragment(real, 1), "granted.test", true, nil},
		{"prefix", real[:len(real)/2], "", false, nil},
		{"record header only", real[:3], "", false, nil},
		{"empty", nil, "", false, nil},
		{"plain http", []byte("GET / HTTP/1.1\r\n"), "", false, ErrNotTLS},
		{"ssh", []byte("SSH-2.0-x\r\n"), "", false, ErrNotTLS},
		{"minimal", helloWithExtensions(sniExt("a.test")), "a.test", true, nil},
		{"no extensions block", helloRecord(helloBody()), "", true, nil},
		{"trailing garbage after extensions", helloRecord(append(helloBody(), 0, 0, 9)), "", false, ErrBadHello},
		{"two server_name extensions", helloWithExtensions(sniExt("a.test"), sniExt("b.test")), "", false, ErrBadHello},
		{"two host names", helloWithExtensions(sniExt("a.test", "b.test")), "", false, ErrBadHello},
		{"not a client hello", []byte{recordTypeHandshake, 3, 1, 0, 4, 2, 0, 0, 0}, "", false, ErrBadHello},
		{"alert record", []byte{recordTypeHandshake, 3, 1, 0, 1, 1, 21, 3, 1, 0, 2, 2, 40}, "", false, ErrBadHello},
		{"zero-length record", []byte{recordTypeHandshake, 3, 1, 0, 0}, "", false, ErrBadHello},
		{"oversized record", []byte{recordTypeHandshake, 3, 1, 0x50, 0}, "", false, ErrBadHello},
		{"hello claims 16MB", []byte{recordTypeHandshake, 3, 1, 0, 4, 1, 0xff, 0xff, 0xff}, "", false, ErrBadHello},
		{"bad record version", []byte{recordTypeHandshake, 9, 9, 0, 4, 1, 0, 0, 0}, "", false, ErrBadHello},
	}
	// A hello whose ServerNameList length overruns its extension.
	bad := helloWithExtensions(sniExt("a.test"))
	bad[len(bad)-len("a.test")-5] = 0xff
	cases = append(cases, struct {
		name     string
		data     []byte
		sni      string
		complete bool
		err      error
	}{"list length overrun", bad, "", false, ErrBadHello})
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			sni, complete, err := Parse(c.data)
			if sni != c.sni || complete != c.complete || !errors.Is(err, c.err) {
				t.Errorf("parseSNI: got (%q, %v, %v), want (%q, %v, %v)", sni, complete, err, c.sni, c.complete, c.err)
			}
		})
	}
}

func TestParseSNIAllocs(t *testing.T) {
	real := testutil.ClientHello(t, "granted.test")
	allocs := testing.AllocsPerRun(100, func() { _, _, _ = Parse(real) })
	if allocs > 1 { // the returned string
		t.Errorf("parseSNI of a single-record hello: got %v allocs, want at most 1", allocs)
	}
}

// FuzzParse: never panics, and the answer is monotonic in the input:
// a prefix of a complete hello is either incomplete or the same answer.
func FuzzParse(f *testing.F) {
	real := testutil.ClientHello(f, "granted.test")
	f.Add(real)
	f.Add(refragment(real, 7))
	f.Add(testutil.ClientHello(f, ""))
	f.Add(helloWithExtensions(sniExt("a.test", "b.test")))
	f.Add([]byte("GET / HTTP/1.1\r\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		sni, complete, err := Parse(data)
		if err != nil || !complete {
			if sni != "" {
				t.Fatalf("incomplete or failed parse returned SNI %q", sni)
			}
			return
		}
		for _, cut := range []int{0, 1, 5, len(data) / 2, len(data) - 1} {
			if cut < 0 || cut >= len(data) {
				continue
			}
			psni, pcomplete, perr := Parse(data[:cut])
			if perr != nil && !errors.Is(perr, ErrNotTLS) || pcomplete && psni != sni {
				t.Fatalf("prefix %d: got (%q, %v, %v), whole input gives %q", cut, psni, pcomplete, perr, sni)
			}
		}
	})
}
