package dnsfilter

import (
	"encoding/binary"

	"github.com/miekg/dns"
)

// The fast path reads the common query itself rather than through miekg:
// a header, one question and at most an OPT record. Anything else (other
// opcodes, several records, compression, unusual bytes in a name, EDNS
// options other than cookies and padding, trailing bytes) is left to the
// full path, which parses with miekg and answers exactly as before. What
// this parser accepts, miekg parses to the same query (FuzzParseQuery).

// Header bits as on the wire (RFC 1035 4.1.1).
const (
	bitQR     = 1 << 15
	maskOp    = 0xF << 11
	bitRD     = 1 << 8
	bitRA     = 1 << 7
	bitCD     = 1 << 4
	headerLen = 12
	// maxNameWire is the longest name miekg unpacks: its label bytes
	// plus their length bytes stay under 255, the root byte making 255.
	maxNameWire = 255
)

// optReply is the OPT record of every reply to an EDNS query, as
// makeReply's SetEdns0(maxUDPSize, false) packs it: root name, type 41,
// class maxUDPSize, TTL 0 (rcode, version, flags), no options.
var optReply = [11]byte{0, 0, 41, maxUDPSize >> 8, maxUDPSize & 0xFF, 0, 0, 0, 0, 0, 0}

// wireQuery is a plain query as the fast path reads it. The slices point
// into the packet or into scratch the query owns, so reading one into a
// reused wireQuery allocates nothing.
type wireQuery struct {
	id     uint16
	flags  uint16 // the RD and CD bits, where they sit in the header
	qtype  uint16
	edns   bool
	size   int    // the largest UDP reply the sender takes (udpSize)
	qname  []byte // the question name as sent (case kept: 0x20)
	qend   int    // offset just past the question
	key    []byte // reply cache key: host, then qtype and edns
	hostN  int    // key[:hostN] is the host
	packet []byte
}

// host is the name as the decision log spells it: lowercase, no
// trailing dot.
func (q *wireQuery) host() []byte { return q.key[:q.hostN] }

// parseQuery reads b into q and reports whether it is a query the fast
// path answers as the full path would.
func parseQuery(b []byte, q *wireQuery) bool {
	if len(b) < headerLen+1+4 {
		return false
	}
	bits := binary.BigEndian.Uint16(b[2:])
	if bits&(bitQR|maskOp) != 0 || binary.BigEndian.Uint16(b[4:]) != 1 ||
		binary.BigEndian.Uint16(b[6:]) != 0 || binary.BigEndian.Uint16(b[8:]) != 0 {
		return false
	}
	arcount := binary.BigEndian.Uint16(b[10:])
	if arcount > 1 {
		return false
	}
	q.key = q.key[:0]
	end, ok := readName(b, headerLen, q)
	if !ok || end+4 > len(b) || binary.BigEndian.Uint16(b[end+2:]) != dns.ClassINET {
		return false
	}
	q.id = binary.BigEndian.Uint16(b)
	q.flags = bits & (bitRD | bitCD)
	q.qname = b[headerLen:end]
	q.qtype = binary.BigEndian.Uint16(b[end:])
	q.qend = end + 4
	q.packet = b
	q.edns, q.size = false, dns.MinMsgSize
	if arcount == 1 {
		size, ok := readOPT(b, q.qend)
		if !ok {
			return false
		}
		q.edns, q.size = true, min(max(size, dns.MinMsgSize), maxUDPSize)
	} else if q.qend != len(b) {
		return false
	}
	q.hostN = len(q.key)
	q.key = appendKeyTail(q.key, q.qtype, q.edns)
	return true
}

// appendKeyTail completes a reply cache key after the host: a zero byte
// (never in a host the fast path reads), the type, and whether the query
// had EDNS, which decides the reply's OPT record and size limit.
func appendKeyTail(key []byte, qtype uint16, edns bool) []byte {
	e := byte(0)
	if edns {
		e = 1
	}
	return append(key, 0, byte(qtype>>8), byte(qtype), e)
}

// readName reads an uncompressed name of letters, digits, '-' and '_' at
// off, appending its lowercase dotted form (no trailing dot) to q.key, and
// returns the offset past it. The root name and any other byte are
// refused: the full path spells those with escapes, and decides on them.
func readName(b []byte, off int, q *wireQuery) (int, bool) {
	start := off
	for {
		if off >= len(b) {
			return 0, false
		}
		n := int(b[off])
		if n == 0 {
			return off + 1, off > start && off+1-start <= maxNameWire
		}
		if n > 63 || off+1+n > len(b) {
			return 0, false
		}
		if off > start {
			q.key = append(q.key, '.')
		}
		for _, c := range b[off+1 : off+1+n] {
			switch {
			case 'a' <= c && c <= 'z', '0' <= c && c <= '9', c == '-', c == '_':
			case 'A' <= c && c <= 'Z':
				c += 'a' - 'A'
			default:
				return 0, false
			}
			q.key = append(q.key, c)
		}
		off += 1 + n
	}
}

// readOPT reads the OPT record that must end the message at off: root
// name, EDNS version 0, and options (if any) only cookies and padding,
// whose contents miekg takes as they are. It returns the advertised UDP
// size.
func readOPT(b []byte, off int) (int, bool) {
	if off+11 > len(b) || b[off] != 0 || binary.BigEndian.Uint16(b[off+1:]) != dns.TypeOPT {
		return 0, false
	}
	size := int(binary.BigEndian.Uint16(b[off+3:]))
	if b[off+6] != 0 { // EDNS version: others get BADVERS on the full path
		return 0, false
	}
	rdlen := int(binary.BigEndian.Uint16(b[off+9:]))
	opts := b[off+11:]
	if len(opts) != rdlen {
		return 0, false
	}
	for len(opts) > 0 {
		if len(opts) < 4 {
			return 0, false
		}
		code, n := binary.BigEndian.Uint16(opts), int(binary.BigEndian.Uint16(opts[2:]))
		if code != dns.EDNS0COOKIE && code != dns.EDNS0PADDING || 4+n > len(opts) {
			return 0, false
		}
		opts = opts[4+n:]
	}
	return size, true
}

// appendShortReply appends the reply to q that carries no records, as
// makeReply and miekg pack it: q's ID, QR, RD and CD as asked, RA, rcode,
// the question as sent, and the OPT record when q had one.
func appendShortReply(dst []byte, q *wireQuery, rcode int) []byte {
	ar := byte(0)
	if q.edns {
		ar = 1
	}
	flags := bitQR | bitRA | q.flags | uint16(rcode&0xF)
	dst = append(dst, byte(q.id>>8), byte(q.id), byte(flags>>8), byte(flags), 0, 1, 0, 0, 0, 0, 0, ar)
	dst = append(dst, q.packet[headerLen:q.qend]...)
	if q.edns {
		dst = append(dst, optReply[:]...)
	}
	return dst
}

// recordTTLs returns the offsets of the TTL fields of the answer and
// authority records of the packed reply b, and ok false when b is not a
// reply of one question whose records all walk cleanly to the additional
// section.
func recordTTLs(b []byte) ([]uint16, bool) {
	if len(b) < headerLen || binary.BigEndian.Uint16(b[4:]) != 1 {
		return nil, false
	}
	off, ok := skipName(b, headerLen)
	if !ok || off+4 > len(b) {
		return nil, false
	}
	off += 4
	n := int(binary.BigEndian.Uint16(b[6:])) + int(binary.BigEndian.Uint16(b[8:]))
	offs := make([]uint16, 0, n)
	for range n {
		if off, ok = skipName(b, off); !ok || off+10 > len(b) {
			return nil, false
		}
		offs = append(offs, uint16(off+4))
		off += 10 + int(binary.BigEndian.Uint16(b[off+8:]))
		if off > len(b) {
			return nil, false
		}
	}
	return offs, true
}

// skipName returns the offset past the (possibly compressed) name at off.
func skipName(b []byte, off int) (int, bool) {
	for off < len(b) {
		n := int(b[off])
		switch {
		case n == 0:
			return off + 1, true
		case n&0xC0 == 0xC0:
			return off + 2, off+2 <= len(b)
		case n&0xC0 != 0:
			return 0, false
		}
		off += 1 + n
	}
	return 0, false
}
