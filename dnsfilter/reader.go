package dnsfilter

import (
	"errors"
	"net"
	"net/netip"
	"time"

	"github.com/egressd/egressd/internal/shared/vocab"

	"github.com/miekg/dns"

	"github.com/egressd/egressd/internal/lib/netaddr"
	"github.com/egressd/egressd/internal/shared/declog"
)

// errMalformed ends a TCP connection whose message did not parse.
var errMalformed = errors.New("malformed dns message")

// checkedReader sits under miekg's server and drops messages that do not
// parse, after logging them with the client that sent them. miekg's own
// hook for such messages (MsgInvalidFunc) is not told who sent them, and a
// probe the log cannot attribute is one the operator never sees. Dropped
// UDP packets get no reply: any reply to garbage can be used to amplify.
// Serve puts miekg on TCP only; the UDP readers (udp.go) apply the same
// rule through malformed, and ReadUDP remains for the dns.Reader
// interface and the test comparing the readers with miekg's server.
type checkedReader struct {
	inner dns.Reader
	s     *Server
}

func (s *Server) decorateReader(r dns.Reader) dns.Reader { return checkedReader{inner: r, s: s} }

// ReadUDP returns the next message that parses; garbage is logged and
// skipped.
func (r checkedReader) ReadUDP(conn *net.UDPConn, timeout time.Duration) ([]byte, *dns.SessionUDP, error) {
	for {
		m, sess, err := r.inner.ReadUDP(conn, timeout)
		if err != nil || r.ok(m, sess.RemoteAddr()) {
			return m, sess, err
		}
	}
}

// ReadTCP returns the next message; one that does not parse ends the
// connection.
func (r checkedReader) ReadTCP(conn net.Conn, timeout time.Duration) ([]byte, error) {
	m, err := r.inner.ReadTCP(conn, timeout)
	if err != nil || r.ok(m, conn.RemoteAddr()) {
		return m, err
	}
	return nil, errMalformed
}

// ok reports whether m parses as a DNS message; if not, it logs a
// bad_request decision for from. Header-level rejections (answers, other
// opcodes, several questions) parse and are left to acceptQuery, which
// answers them.
func (r checkedReader) ok(m []byte, from net.Addr) bool {
	var msg dns.Msg
	if len(m) >= headerLen && msg.Unpack(m) == nil {
		return true
	}
	r.s.malformed(from)
	return false
}

// malformed logs a message from from that does not parse: a bad_request
// decision naming the sender, and nothing else (it is not answered).
func (s *Server) malformed(from net.Addr) { s.malformedFrom(netaddr.Of(from)) }

func (s *Server) malformedFrom(from netip.Addr) {
	s.rec.Record(declog.Entry{
		Time:    s.clock(),
		Event:   vocab.EventDecision,
		Client:  netaddr.String(from),
		Proto:   vocab.ProtoDNS,
		Verdict: vocab.Deny,
		Reason:  vocab.ReasonBadRequest,
	})
}
