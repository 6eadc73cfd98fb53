package dnsfilter

import (
	"net"
	"testing"
	"time"

	"github.com/egressd/egressd/internal/shared/vocab"

	"github.com/miekg/dns"

	"github.com/egressd/egressd/internal/shared/declog"
	"github.com/egressd/egressd/internal/shared/resolver/resolvertest"
)

// TestMalformedMessagesAreLoggedAndDropped: a message that does not parse
// is a logged bad_request naming its sender; over UDP it gets no reply,
// over TCP it ends the connection, and the server keeps answering.
func TestMalformedMessagesAreLoggedAndDropped(t *testing.T) {
	e := newEnv(t, basePolicy, resolvertest.Zone(bigZone()...))
	udp, tcp, stop := serveSockets(t, e)
	defer stop()

	raw, err := net.Dial("udp", udp)
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	raw.Write([]byte{0xde, 0xad})                                          // shorter than a header
	raw.Write([]byte("not dns at all, but long enough to have a header"))  // header, then nonsense
	raw.Write(append([]byte{0, 1, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0}, 63, 'a')) // a label running past the end
	c := dns.Client{Net: "udp", Timeout: 2 * time.Second}
	if _, _, err := c.Exchange(mkQuery("granted.example.", dns.TypeA), udp); err != nil {
		t.Fatalf("after garbage: %v", err)
	}
	// The server reads its socket in order, so the garbage was judged
	// before the query above was answered.
	if got := countBadRequests(e.rec.All()); got != 3 {
		t.Errorf("garbage over UDP: %d bad_request entries from 127.0.0.1, want 3", got)
	}

	tc, err := net.Dial("tcp", tcp)
	if err != nil {
		t.Fatal(err)
	}
	defer tc.Close()
	tc.Write(append([]byte{0, 14}, "garbage bytes!"...))
	tc.SetReadDeadline(time.Now().Add(5 * time.Second))
	if n, err := tc.Read(make([]byte, 64)); err == nil {
		t.Errorf("TCP garbage: got a %d-byte reply, want the connection closed", n)
	} else if ne, ok := err.(net.Error); ok && ne.Timeout() {
		t.Error("TCP garbage: connection still open after 5s")
	}
	if got := countBadRequests(e.rec.All()); got != 4 {
		t.Errorf("garbage over TCP: %d bad_request entries in all, want 4", got)
	}
	if n, granted := e.up.Total(), e.up.Count("granted.example.", dns.TypeA); n != granted {
		t.Errorf("upstream saw %d queries, want only the %d for granted.example", n, granted)
	}
}

func countBadRequests(es []declog.Entry) int {
	n := 0
	for _, e := range es {
		if e.Reason == vocab.ReasonBadRequest && e.Verdict == vocab.Deny && e.Client == "127.0.0.1" {
			n++
		}
	}
	return n
}
