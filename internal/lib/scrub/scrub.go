// Package scrub owns masking secrets out of a byte stream on its way to the
// agent: every byte-exact occurrence of any of a set of secrets is replaced
// by a mask of the same length, in flight, holding back only a tail that
// could still begin a secret.
package scrub

import (
	"bytes"
	"io"
	"strings"
)

// maskText starts every mask, so a person reading a response sees what
// happened; the rest of the mask is '*' up to the secret's length (a
// Content-Length stays right).
const maskText = "[egressd:redacted]"

// Mask returns the mask for a secret of n bytes.
func Mask(n int) string {
	if n >= len(maskText) {
		return maskText + strings.Repeat("*", n-len(maskText))
	}
	return strings.Repeat("*", n)
}

// Writer masks secrets in what is written to it before passing it on.
// Not safe for concurrent use; Close flushes the held-back tail.
type Writer struct {
	w       io.Writer
	secrets [][]byte // longest first, so the longest secret at a position wins
	masks   [][]byte
	hold    []byte
	buf     []byte
}

// NewWriter returns a Writer masking each non-empty secret. With no
// secrets it passes everything through unchanged.
func NewWriter(w io.Writer, secrets ...string) *Writer {
	s := &Writer{w: w}
	for _, sec := range secrets {
		if sec != "" {
			s.secrets = append(s.secrets, []byte(sec))
		}
	}
	// Longest first: a secret containing another is masked whole.
	for i := 1; i < len(s.secrets); i++ {
		for j := i; j > 0 && len(s.secrets[j]) > len(s.secrets[j-1]); j-- {
			s.secrets[j], s.secrets[j-1] = s.secrets[j-1], s.secrets[j]
		}
	}
	for _, sec := range s.secrets {
		s.masks = append(s.masks, []byte(Mask(len(sec))))
	}
	return s
}

// Write masks and forwards p (it never modifies p). It reports len(p) when
// the bytes were accepted, even if some are held back until the next
// Write or Close.
func (s *Writer) Write(p []byte) (int, error) {
	if len(s.secrets) == 0 {
		return s.w.Write(p)
	}
	s.buf = append(append(s.buf[:0], s.hold...), p...)
	s.hold = s.hold[:0]
	data := s.buf
	masked := 0 // bytes before this are final: a mask is never rescanned
	for {
		at, which := s.next(data[masked:])
		if which < 0 {
			break
		}
		copy(data[masked+at:], s.masks[which])
		masked += at + len(s.secrets[which])
	}
	keep := 0
	for _, sec := range s.secrets {
		keep = max(keep, partialSuffix(data[masked:], sec))
	}
	s.hold = append(s.hold, data[len(data)-keep:]...)
	if out := data[:len(data)-keep]; len(out) > 0 {
		if _, err := s.w.Write(out); err != nil {
			return 0, err
		}
	}
	return len(p), nil
}

// next finds the earliest occurrence of any secret in data (the longest
// one when several start there); which is -1 when there is none.
func (s *Writer) next(data []byte) (at, which int) {
	at, which = -1, -1
	for i, sec := range s.secrets {
		j := bytes.Index(data, sec)
		if j >= 0 && (at < 0 || j < at) {
			at, which = j, i
		}
	}
	return at, which
}

// Close writes the held-back tail: the stream ended, so it was no secret.
// It does not close the underlying writer.
func (s *Writer) Close() error {
	if len(s.hold) == 0 {
		return nil
	}
	_, err := s.w.Write(s.hold)
	s.hold = s.hold[:0]
	return err
}

// partialSuffix is the length of the longest proper prefix of sec that
// data ends with.
func partialSuffix(data, sec []byte) int {
	from := max(0, len(data)-(len(sec)-1))
	for i := from; i < len(data); i++ {
		if data[i] == sec[0] && bytes.HasPrefix(sec, data[i:]) {
			return len(data) - i
		}
	}
	return 0
}

// String masks every secret in s, for text bound for a log line or an
// error message.
func String(s string, secrets ...string) string {
	var b strings.Builder
	w := NewWriter(&b, secrets...)
	w.Write([]byte(s)) // a strings.Builder never fails
	w.Close()
	return b.String()
}
