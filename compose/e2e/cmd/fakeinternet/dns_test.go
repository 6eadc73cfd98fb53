package main

import (
	"context"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/egressd/egressd/internal/cli/probe"
)

func TestDNSServer(t *testing.T) {
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	rec := &recorder{}
	d := &dnsServer{rec: rec, records: records{"granted.e2e.test": netip.MustParseAddr("10.9.8.7")}}
	go d.serveUDP(pc)

	tests := []struct {
		name  string
		rcode int
		addrs []netip.Addr
	}{
		{"granted.e2e.test", probe.RcodeSuccess, []netip.Addr{netip.MustParseAddr("10.9.8.7")}},
		{"GRANTED.e2e.test.", probe.RcodeSuccess, []netip.Addr{netip.MustParseAddr("10.9.8.7")}},
		{"other.e2e.test", probe.RcodeNXDomain, nil},
	}
	for _, tt := range tests {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		ans, err := probe.LookupA(ctx, nil, pc.LocalAddr().String(), tt.name)
		cancel()
		if err != nil {
			t.Fatalf("%s: %v", tt.name, err)
		}
		if ans.Rcode != tt.rcode || len(ans.Addrs) != len(tt.addrs) || (len(tt.addrs) > 0 && ans.Addrs[0] != tt.addrs[0]) {
			t.Errorf("%s: got %s %v, want %s %v", tt.name, probe.RcodeName(ans.Rcode), ans.Addrs, probe.RcodeName(tt.rcode), tt.addrs)
		}
	}
	rec.mu.Lock()
	defer rec.mu.Unlock()
	if got := len(rec.seen.Queries); got != len(tests) {
		t.Errorf("recorded %d queries, want %d", got, len(tests))
	}
	if rec.seen.Queries[2].Name != "other.e2e.test" {
		t.Errorf("third query recorded as %q, want other.e2e.test", rec.seen.Queries[2].Name)
	}
}

func TestParseQuestionRejectsGarbage(t *testing.T) {
	for _, q := range [][]byte{nil, make([]byte, 11), {0, 1, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0}, {0, 1, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 5, 'a'}} {
		if _, _, _, err := parseQuestion(q); err == nil {
			t.Errorf("parseQuestion(%v): got nil error, want one", q)
		}
	}
}
