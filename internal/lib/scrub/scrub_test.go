package scrub

import (
	"bytes"
	"strings"
	"testing"
)

func TestWriter(t *testing.T) {
	tests := []struct {
		name    string
		secrets []string
		chunks  []string
		want    string
	}{
		{"none", []string{"s3cr3t-token-value"}, []string{"hello ", "world"}, "hello world"},
		{"whole", []string{"s3cr3t-token-value"}, []string{"a s3cr3t-token-value b"}, "a [egressd:redacted] b"},
		{"split", []string{"s3cr3t-token-value"}, []string{"a s3cr3t", "-token-", "value b"}, "a [egressd:redacted] b"},
		{"split false start", []string{"s3cr3t-token-value"}, []string{"a s3cr3t", "-nope"}, "a s3cr3t-nope"},
		{"short secret", []string{"abc"}, []string{"xabcx", "ab", "c"}, "x***x***"},
		{"two secrets", []string{"tok", "dG9r"}, []string{"tok dG9", "r"}, "*** ****"},
		{"nested", []string{"Bearer-abcdefghijklmnopq", "abcdefghijklmnopq"}, []string{"Bearer-abcdefghijklmnopq abcdefghijklmnopq"}, "[egressd:redacted]****** *****************"},
		{"tail at end", []string{"s3cr3t-token-value"}, []string{"x s3cr3t-tok"}, "x s3cr3t-tok"},
		{"empty secret ignored", []string{""}, []string{"abc"}, "abc"},
	}
	for _, tt := range tests {
		var out bytes.Buffer
		w := NewWriter(&out, tt.secrets...)
		for _, c := range tt.chunks {
			if n, err := w.Write([]byte(c)); n != len(c) || err != nil {
				t.Fatalf("%s: Write = %d, %v", tt.name, n, err)
			}
		}
		w.Close()
		if got := out.String(); got != tt.want {
			t.Errorf("%s: got %q, want %q", tt.name, got, tt.want)
		}
	}
}

func TestString(t *testing.T) {
	if got, want := String("key=abcdef", "abcdef"), "key=******"; got != want {
		t.Errorf("String = %q, want %q", got, want)
	}
}

// FuzzWriter: however the stream is split, no secret survives, the length
// is kept, and a stream without secrets passes unchanged.
func FuzzWriter(f *testing.F) {
	f.Add([]byte("hello s3cret world"), "s3cret", "czNjcmV0", uint8(3))
	f.Add([]byte("[egressd:redacted][egressd"), "[egressd", "x", uint8(1))
	f.Add([]byte("aaaaaaa"), "aa", "aaa", uint8(2))
	f.Fuzz(func(t *testing.T, in []byte, s1, s2 string, step uint8) {
		if s1 == "" || len(s1) > 64 || len(s2) > 64 {
			return
		}
		var out bytes.Buffer
		w := NewWriter(&out, s1, s2)
		n := int(step%16) + 1
		for i := 0; i < len(in); i += n {
			w.Write(in[i:min(len(in), i+n)])
		}
		w.Close()
		got := out.Bytes()
		if len(got) != len(in) {
			t.Fatalf("length %d, want %d", len(got), len(in))
		}
		if !bytes.Contains(in, []byte(s1)) && (s2 == "" || !bytes.Contains(in, []byte(s2))) && !bytes.Equal(got, in) {
			t.Fatalf("changed a stream with no secret: %q → %q", in, got)
		}
		// A secret spelled with mask characters can re-form next to a
		// mask; any other secret must be gone.
		for _, s := range []string{s1, s2} {
			if s == "" || strings.ContainsAny(s, maskText+"*") {
				continue
			}
			if bytes.Contains(got, []byte(s)) {
				t.Fatalf("secret %q survives in %q (input %q)", s, got, in)
			}
		}
	})
}

// scrubAll runs a Writer with one secret over chunks and returns what it wrote.
func scrubAll(key string, chunks ...[]byte) string {
	var out bytes.Buffer
	s := NewWriter(&out, key)
	for _, c := range chunks {
		s.Write(c)
	}
	s.Close()
	return out.String()
}

func TestWriterOneSecret(t *testing.T) {
	key := "sk-abcabd"
	tests := []struct{ in, want string }{
		{"no secret here", "no secret here"},
		{"x sk-abcabd y sk-abcabd", "x ********* y *********"},
		{"sk-sk-abcabd", "sk-*********"}, // a false start just before the key
		{"ends with a partial sk-abc", "ends with a partial sk-abc"},
		{"sk-abcabdsk-abcabd", "******************"},
	}
	for _, tt := range tests {
		if got := scrubAll(key, []byte(tt.in)); got != tt.want {
			t.Errorf("%q: got %q, want %q", tt.in, got, tt.want)
		}
		var bytewise [][]byte
		for i := range len(tt.in) {
			bytewise = append(bytewise, []byte(tt.in[i:i+1]))
		}
		if got := scrubAll(key, bytewise...); got != tt.want {
			t.Errorf("%q byte by byte: got %q, want %q", tt.in, got, tt.want)
		}
	}
	if got := Mask(40); len(got) != 40 || !strings.HasPrefix(got, maskText) {
		t.Errorf("mask %q: want %d bytes starting with %q", got, 40, maskText)
	}
}

// FuzzWriterOneSecret: however the stream is cut, the output is the input with
// every occurrence of the one secret masked, exactly where it stood.
func FuzzWriterOneSecret(f *testing.F) {
	f.Add("k3y!", []byte("a k3y! b k3k3y! k3"), []byte{1, 3, 2})
	f.Add("aa", []byte("aaaaa"), []byte{1, 1, 1})
	f.Fuzz(func(t *testing.T, key string, in, cuts []byte) {
		if key == "" || len(key) > 64 {
			return
		}
		want := strings.ReplaceAll(string(in), key, Mask(len(key)))
		var chunks [][]byte
		rest := in
		for _, c := range cuts {
			n := min(int(c)%16, len(rest))
			chunks, rest = append(chunks, rest[:n]), rest[n:]
		}
		got := scrubAll(key, append(chunks, rest)...)
		if got != want {
			t.Fatalf("key %q in %q cuts %v: got %q, want %q", key, in, cuts, got, want)
		}
	})
}
