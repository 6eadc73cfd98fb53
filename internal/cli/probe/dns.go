package probe

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"time"
)

// DNS response codes the probe tells apart.
const (
	RcodeSuccess  = 0
	RcodeServFail = 2
	RcodeNXDomain = 3
	RcodeRefused  = 5
)

// RcodeName names a DNS response code for reports.
func RcodeName(rcode int) string {
	switch rcode {
	case RcodeSuccess:
		return "NOERROR"
	case 1:
		return "FORMERR"
	case RcodeServFail:
		return "SERVFAIL"
	case RcodeNXDomain:
		return "NXDOMAIN"
	case 4:
		return "NOTIMP"
	case RcodeRefused:
		return "REFUSED"
	}
	return fmt.Sprintf("RCODE%d", rcode)
}

// DNS record types and class used by the probe.
const (
	typeA    = 1
	typeAAAA = 28
	classIN  = 1
)

// errMalformed wraps every DNS parse failure.
var errMalformed = errors.New("malformed dns message")

// Answer is what one DNS query returned.
type Answer struct {
	Rcode int
	Addrs []netip.Addr // A and AAAA records in the answer section
	RTT   time.Duration
}

// LookupA sends one A query for name to server ("ip:port") over UDP and
// waits for the matching answer until ctx ends. It is deliberately tiny
// (one question, no EDNS, no retries) so the probe measures exactly how
// the server answers, and it needs no DNS library. A nil dial uses a plain
// net.Dialer.
func LookupA(ctx context.Context, dial DialFunc, server, name string) (Answer, error) {
	var idb [2]byte
	if _, err := rand.Read(idb[:]); err != nil {
		return Answer{}, err
	}
	id := binary.BigEndian.Uint16(idb[:])
	query, err := buildQuery(id, name, typeA)
	if err != nil {
		return Answer{}, err
	}
	if dial == nil {
		dial = (&net.Dialer{}).DialContext
	}
	conn, err := dial(ctx, "udp", server)
	if err != nil {
		return Answer{}, fmt.Errorf("dns %s: %w", server, err)
	}
	defer conn.Close()
	if dl, ok := ctx.Deadline(); ok {
		conn.SetDeadline(dl)
	}
	start := time.Now()
	if _, err := conn.Write(query); err != nil {
		return Answer{}, fmt.Errorf("dns %s: %w", server, err)
	}
	buf := make([]byte, 4096)
	for { // skip stray datagrams with another ID until the deadline
		n, err := conn.Read(buf)
		if err != nil {
			return Answer{}, fmt.Errorf("dns %s: %w", server, err)
		}
		rcode, addrs, err := parseResponse(buf[:n], id)
		if errors.Is(err, errWrongID) {
			continue
		}
		if err != nil {
			return Answer{}, fmt.Errorf("dns %s: %w", server, err)
		}
		return Answer{Rcode: rcode, Addrs: addrs, RTT: time.Since(start)}, nil
	}
}

// buildQuery encodes a standard query (RD set) with one question.
func buildQuery(id uint16, name string, qtype uint16) ([]byte, error) {
	msg := make([]byte, 12, 12+len(name)+6)
	binary.BigEndian.PutUint16(msg[0:], id)
	binary.BigEndian.PutUint16(msg[2:], 0x0100) // RD
	binary.BigEndian.PutUint16(msg[4:], 1)      // QDCOUNT
	msg, err := appendName(msg, name)
	if err != nil {
		return nil, err
	}
	msg = binary.BigEndian.AppendUint16(msg, qtype)
	return binary.BigEndian.AppendUint16(msg, classIN), nil
}

// appendName encodes name as DNS labels. A trailing dot is optional.
func appendName(msg []byte, name string) ([]byte, error) {
	name = strings.TrimSuffix(name, ".")
	if name == "" || len(name) > 253 {
		return nil, fmt.Errorf("dns name %q: length %d not in 1..253", name, len(name))
	}
	for label := range strings.SplitSeq(name, ".") {
		if len(label) == 0 || len(label) > 63 {
			return nil, fmt.Errorf("dns name %q: label length %d not in 1..63", name, len(label))
		}
		msg = append(msg, byte(len(label)))
		msg = append(msg, label...)
	}
	return append(msg, 0), nil
}

var errWrongID = errors.New("dns answer for another query")

// parseResponse checks msg answers query id and returns its rcode and the
// addresses of its A/AAAA answer records. Every length is bounds-checked:
// a hostile server gets an error, never a panic.
func parseResponse(msg []byte, id uint16) (int, []netip.Addr, error) {
	if len(msg) < 12 {
		return 0, nil, fmt.Errorf("%w: %d-byte header", errMalformed, len(msg))
	}
	if binary.BigEndian.Uint16(msg[0:]) != id {
		return 0, nil, errWrongID
	}
	flags := binary.BigEndian.Uint16(msg[2:])
	if flags&0x8000 == 0 {
		return 0, nil, fmt.Errorf("%w: not a response", errMalformed)
	}
	rcode := int(flags & 0x000f)
	qd, an := int(binary.BigEndian.Uint16(msg[4:])), int(binary.BigEndian.Uint16(msg[6:]))
	off := 12
	var err error
	for range qd {
		if off, err = skipName(msg, off); err != nil {
			return 0, nil, err
		}
		if off += 4; off > len(msg) {
			return 0, nil, fmt.Errorf("%w: truncated question", errMalformed)
		}
	}
	var addrs []netip.Addr
	for range an {
		if off, err = skipName(msg, off); err != nil {
			return 0, nil, err
		}
		if off+10 > len(msg) {
			return 0, nil, fmt.Errorf("%w: truncated record header", errMalformed)
		}
		rtype, class := binary.BigEndian.Uint16(msg[off:]), binary.BigEndian.Uint16(msg[off+2:])
		rdlen := int(binary.BigEndian.Uint16(msg[off+8:]))
		off += 10
		if off+rdlen > len(msg) {
			return 0, nil, fmt.Errorf("%w: truncated rdata", errMalformed)
		}
		rdata := msg[off : off+rdlen]
		off += rdlen
		if class != classIN {
			continue
		}
		if a, ok := netip.AddrFromSlice(rdata); ok && (rtype == typeA && rdlen == 4 || rtype == typeAAAA && rdlen == 16) {
			addrs = append(addrs, a)
		}
	}
	return rcode, addrs, nil
}

// skipName returns the offset just past the (possibly compressed) name at
// off. A compression pointer ends the name in the message, so no loop over
// pointers is needed.
func skipName(msg []byte, off int) (int, error) {
	for {
		if off >= len(msg) {
			return 0, fmt.Errorf("%w: truncated name", errMalformed)
		}
		l := int(msg[off])
		switch {
		case l == 0:
			return off + 1, nil
		case l&0xc0 == 0xc0:
			if off+2 > len(msg) {
				return 0, fmt.Errorf("%w: truncated pointer", errMalformed)
			}
			return off + 2, nil
		case l&0xc0 != 0:
			return 0, fmt.Errorf("%w: label type %#x", errMalformed, l&0xc0)
		}
		off += 1 + l
	}
}
