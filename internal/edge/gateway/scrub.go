package gateway

import (
	"bytes"
	"io"
	"strings"
)

// scrubber masks every byte-exact occurrence of the provider key in a
// stream before it reaches the agent. The mask has the key's length, so
// a Content-Length stays right. Only a tail that could be the start of
// the key is held back (SSE chunks end in a newline, which no key
// contains, so streams are not delayed).
type scrubber struct {
	w    io.Writer
	key  []byte
	mask []byte
	hold []byte
	buf  []byte
}

func newScrubber(w io.Writer, key string) *scrubber {
	return &scrubber{w: w, key: []byte(key), mask: maskFor(len(key))}
}

const maskText = "[egressd:redacted]"

func maskFor(n int) []byte {
	if n >= len(maskText) {
		return []byte(maskText + strings.Repeat("*", n-len(maskText)))
	}
	return []byte(strings.Repeat("*", n))
}

// Write masks and forwards p (it never modifies p).
func (s *scrubber) Write(p []byte) (int, error) {
	if len(s.key) == 0 {
		return s.w.Write(p)
	}
	data := p
	if len(s.hold) > 0 {
		s.buf = append(append(s.buf[:0], s.hold...), p...)
		data, s.hold = s.buf, s.hold[:0]
	}
	masked := 0 // bytes up to here are final: a mask is never scanned again
	if bytes.Contains(data, s.key) {
		if len(s.buf) == 0 || &data[0] != &s.buf[0] {
			s.buf = append(s.buf[:0], data...)
			data = s.buf
		}
		for i := 0; ; {
			j := bytes.Index(data[i:], s.key)
			if j < 0 {
				break
			}
			copy(data[i+j:], s.mask)
			i += j + len(s.key)
			masked = i
		}
	}
	// Hold back only unmasked bytes: a held mask would be rescanned with
	// the next chunk and, for a key that starts with the mask's characters,
	// matched again (found by FuzzScrubber).
	keep := partialSuffix(data[masked:], s.key)
	s.hold = append(s.hold, data[len(data)-keep:]...)
	if out := data[:len(data)-keep]; len(out) > 0 {
		if _, err := s.w.Write(out); err != nil {
			return 0, err
		}
	}
	return len(p), nil
}

// Close writes the held-back tail: the stream ended, so it was not the key.
func (s *scrubber) Close() error {
	if len(s.hold) == 0 {
		return nil
	}
	_, err := s.w.Write(s.hold)
	s.hold = s.hold[:0]
	return err
}

// partialSuffix is the length of the longest proper prefix of key that
// data ends with.
func partialSuffix(data, key []byte) int {
	from := max(0, len(data)-(len(key)-1))
	for i := from; i < len(data); i++ {
		if data[i] == key[0] && bytes.HasPrefix(key, data[i:]) {
			return len(data) - i
		}
	}
	return 0
}

// scrubString masks the key in a string bound for a log line.
func scrubString(s, key string) string {
	if key == "" {
		return s
	}
	return strings.ReplaceAll(s, key, string(maskFor(len(key))))
}
