package declog

import (
	"math"
	"strconv"
	"time"
	"unicode/utf8"
)

// The JSON primitives of the decision log line. They append to a reused
// buffer and allocate nothing; their output is byte-for-byte what
// slog.JSONHandler writes for the same attributes (slogref_test.go holds
// that reference and encode_test.go compares the two, also under fuzzing),
// because operators' log shippers and our own readers read that format.

const hexDigits = "0123456789abcdef"

// escapeStyle picks between slog's two escapers: slog writes its own string
// attributes, and encoding/json (via slog.Any) the Hosts and Clients
// arrays. They differ only in \b and \f.
type escapeStyle bool

const (
	slogEscape escapeStyle = false // \b and \f as \u0008, \u000c
	jsonEscape escapeStyle = true  // \b and \f as \b, \f
)

// appendString appends s as a quoted JSON string: '"' and '\' escaped,
// control characters as \n \r \t (and \b \f for jsonEscape) or \u00XX,
// invalid UTF-8 bytes as \ufffd, U+2028 and U+2029 escaped (they end
// lines in JavaScript). <, > and & are not escaped: neither encoder did.
func appendString(dst []byte, s string, style escapeStyle) []byte {
	dst = append(dst, '"')
	start := 0
	for i := 0; i < len(s); {
		b := s[i]
		if b < utf8.RuneSelf {
			if b >= 0x20 && b != '"' && b != '\\' {
				i++
				continue
			}
			dst = append(dst, s[start:i]...)
			switch {
			case b == '"' || b == '\\':
				dst = append(dst, '\\', b)
			case b == '\n':
				dst = append(dst, '\\', 'n')
			case b == '\r':
				dst = append(dst, '\\', 'r')
			case b == '\t':
				dst = append(dst, '\\', 't')
			case b == '\b' && style == jsonEscape:
				dst = append(dst, '\\', 'b')
			case b == '\f' && style == jsonEscape:
				dst = append(dst, '\\', 'f')
			default:
				dst = append(dst, '\\', 'u', '0', '0', hexDigits[b>>4], hexDigits[b&0xF])
			}
			i++
			start = i
			continue
		}
		c, size := utf8.DecodeRuneInString(s[i:])
		switch {
		case c == utf8.RuneError && size == 1:
			dst = append(dst, s[start:i]...)
			dst = append(dst, `\ufffd`...)
		case c == '\u2028' || c == '\u2029':
			dst = append(dst, s[start:i]...)
			dst = append(dst, '\\', 'u', '2', '0', '2', hexDigits[c&0xF])
		default:
			i += size
			continue
		}
		i += size
		start = i
	}
	dst = append(dst, s[start:]...)
	return append(dst, '"')
}

// appendFloat appends f as encoding/json writes a float64 (slog handed
// floats to it): shortest representation, plain notation for
// 1e-6 <= |f| < 1e21, otherwise exponent notation without a leading zero
// in a negative exponent. f must be finite; callers never pass NaN or Inf.
func appendFloat(dst []byte, f float64) []byte {
	format := byte('f')
	if abs := math.Abs(f); abs != 0 && (abs < 1e-6 || abs >= 1e21) {
		format = 'e'
	}
	dst = strconv.AppendFloat(dst, f, format, -1, 64)
	if format == 'e' {
		// e-07 -> e-7
		if n := len(dst); n >= 4 && dst[n-4] == 'e' && dst[n-3] == '-' && dst[n-2] == '0' {
			dst[n-2] = dst[n-1]
			dst = dst[:n-1]
		}
	}
	return dst
}

// yearError is what slog wrote in front of a time it could not write as
// RFC 3339. Only a broken clock produces such a time; the line is kept
// as slog wrote it (Unmarshal rejects it) rather than silently changed.
const yearError = "!ERROR:time.Time year outside of range [0,9999]"

// appendTime appends t (already UTC) as a quoted RFC 3339 time with
// nanoseconds, trailing zeros trimmed, as slog did. Written out by hand
// rather than with AppendFormat's layout interpreter: every line starts
// with it, and this is a third of the cost.
func appendTime(dst []byte, t time.Time) []byte {
	y, mo, d := t.Date()
	if y < 0 || y >= 10000 {
		dst = appendString(dst, yearError, slogEscape)
		dst = append(dst, '"')
		dst = t.AppendFormat(dst, time.RFC3339Nano)
		return append(dst, '"')
	}
	h, mi, sec := t.Clock()
	dst = append(dst, '"')
	dst = appendDigits(dst, y, 4)
	dst = append(dst, '-')
	dst = appendDigits(dst, int(mo), 2)
	dst = append(dst, '-')
	dst = appendDigits(dst, d, 2)
	dst = append(dst, 'T')
	dst = appendDigits(dst, h, 2)
	dst = append(dst, ':')
	dst = appendDigits(dst, mi, 2)
	dst = append(dst, ':')
	dst = appendDigits(dst, sec, 2)
	if ns := t.Nanosecond(); ns != 0 {
		n := 9
		for ns%10 == 0 {
			ns /= 10
			n--
		}
		dst = append(dst, '.')
		dst = appendDigits(dst, ns, n)
	}
	return append(dst, 'Z', '"')
}

// appendDigits appends v (0 <= v < 10^width) as exactly width decimal
// digits.
func appendDigits(dst []byte, v, width int) []byte {
	var b [9]byte
	for i := width - 1; i >= 0; i-- {
		b[i] = byte('0' + v%10)
		v /= 10
	}
	return append(dst, b[:width]...)
}

// appendStringField appends ,"key":"v"; key is a constant that needs no
// escaping.
func appendStringField(dst []byte, key, v string) []byte {
	dst = append(dst, ',', '"')
	dst = append(dst, key...)
	dst = append(dst, '"', ':')
	return appendString(dst, v, slogEscape)
}

// appendIntField appends ,"key":v.
func appendIntField(dst []byte, key string, v int64) []byte {
	dst = append(dst, ',', '"')
	dst = append(dst, key...)
	dst = append(dst, '"', ':')
	return strconv.AppendInt(dst, v, 10)
}

// appendUintField appends ,"key":v.
func appendUintField(dst []byte, key string, v uint64) []byte {
	dst = append(dst, ',', '"')
	dst = append(dst, key...)
	dst = append(dst, '"', ':')
	return strconv.AppendUint(dst, v, 10)
}

// appendStrings appends ,"key":["a","b"] as encoding/json writes a
// []string.
func appendStrings(dst []byte, key string, v []string) []byte {
	dst = append(dst, ',', '"')
	dst = append(dst, key...)
	dst = append(dst, '"', ':', '[')
	for i, s := range v {
		if i > 0 {
			dst = append(dst, ',')
		}
		dst = appendString(dst, s, jsonEscape)
	}
	return append(dst, ']')
}
