// Package canonpath owns the one spelling of a request path that egressd
// checks and forwards, and the path globs that policy rules match against it.
//
// A gateway that checks one spelling and forwards another lets the agent
// reach what the check refused: /v1//files, /v1/%66iles and /v1/chat/../files
// may all mean /v1/files to the upstream. So the gateway canonicalises once,
// matches the canonical form, and forwards exactly that form. Spellings that
// could be read two ways (dot segments, encoded slashes, control bytes) are
// refused rather than guessed at.
package canonpath

import (
	"errors"
	"fmt"
	"strings"
)

// Errors Clean returns; callers branch on them with errors.Is.
var (
	ErrEmpty      = errors.New("path is empty or does not start with /")
	ErrDotSegment = errors.New("path has a . or .. segment")
	ErrEncoding   = errors.New("path has a bad or ambiguous percent-encoding")
	ErrByte       = errors.New("path has a byte not allowed in a path")
	ErrTooLong    = errors.New("path is too long")
)

// MaxLen bounds the paths Clean accepts; no API egressd fronts needs more.
const MaxLen = 8192

// Clean returns the canonical form of an escaped request path (the path
// part of a request target, without the query): percent-encoded unreserved
// characters decoded, other escapes in upper-case hex, repeated slashes
// collapsed and a trailing slash dropped (except for "/" itself). It refuses
// dot segments (also when percent-encoded), an encoded slash, backslash or
// NUL, control and non-ASCII bytes, and malformed escapes.
func Clean(escaped string) (string, error) {
	if escaped == "" || escaped[0] != '/' {
		return "", ErrEmpty
	}
	if len(escaped) > MaxLen {
		return "", ErrTooLong
	}
	var b strings.Builder
	b.Grow(len(escaped))
	for i := 0; i < len(escaped); i++ {
		c := escaped[i]
		switch {
		case c == '/':
			if err := closeSegment(&b); err != nil {
				return "", err
			}
			if b.Len() == 0 || lastByte(&b) != '/' {
				b.WriteByte('/')
			}
		case c == '%':
			if i+2 >= len(escaped) || !isHex(escaped[i+1]) || !isHex(escaped[i+2]) {
				return "", fmt.Errorf("%w: %q", ErrEncoding, clip(escaped[i:]))
			}
			d := unhex(escaped[i+1])<<4 | unhex(escaped[i+2])
			if err := writeDecoded(&b, d); err != nil {
				return "", err
			}
			i += 2
		case c == '\\' || c < 0x21 || c >= 0x7f:
			return "", fmt.Errorf("%w: 0x%02x", ErrByte, c)
		default:
			b.WriteByte(c)
		}
	}
	if err := closeSegment(&b); err != nil {
		return "", err
	}
	out := b.String()
	if len(out) > 1 && out[len(out)-1] == '/' {
		out = out[:len(out)-1]
	}
	return out, nil
}

// writeDecoded writes one percent-decoded byte in its canonical spelling.
func writeDecoded(b *strings.Builder, d byte) error {
	switch {
	case isUnreserved(d):
		b.WriteByte(d)
	case d == '/' || d == '\\' || d == 0:
		// An encoded separator splits segments for some servers and not for
		// others: the one spelling two readers disagree on.
		return fmt.Errorf("%w: encoded 0x%02x", ErrEncoding, d)
	default:
		const hex = "0123456789ABCDEF"
		b.WriteByte('%')
		b.WriteByte(hex[d>>4])
		b.WriteByte(hex[d&15])
	}
	return nil
}

// closeSegment refuses the segment just written if it is "." or "..",
// also with path parameters ("..;x", or ";" escaped), which Java servers
// strip before they resolve dot segments. It runs on the decoded form, so %2e%2E is caught
// like "..".
func closeSegment(b *strings.Builder) error {
	s := b.String()
	seg := s[strings.LastIndexByte(s, '/')+1:]
	for _, sep := range [...]string{";", "%3B"} {
		if i := strings.Index(seg, sep); i >= 0 {
			seg = seg[:i]
		}
	}
	if seg == "." || seg == ".." {
		return ErrDotSegment
	}
	return nil
}

func lastByte(b *strings.Builder) byte {
	s := b.String()
	return s[len(s)-1]
}

func isUnreserved(c byte) bool {
	return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' ||
		c == '-' || c == '.' || c == '_' || c == '~'
}

func isHex(c byte) bool {
	return '0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F'
}

func unhex(c byte) byte {
	switch {
	case c <= '9':
		return c - '0'
	case c <= 'F':
		return c - 'A' + 10
	default:
		return c - 'a' + 10
	}
}

func clip(s string) string {
	if len(s) > 8 {
		return s[:8]
	}
	return s
}
