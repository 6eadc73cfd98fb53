package dnsfilter

import (
	"context"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/egressd/egressd/internal/shared/vocab"

	"github.com/miekg/dns"

	"github.com/egressd/egressd/internal/shared/declog"
	"github.com/egressd/egressd/internal/shared/resolver/resolvertest"
	"github.com/egressd/egressd/policy"
)

// The addresses are only DNS data: nothing in these tests dials them.
var testZone = []string{
	"example. 3600 IN SOA ns.example. host.example. 1 3600 600 86400 30",
	"granted.example. 60 IN A 93.184.215.14",
	"granted.example. 60 IN AAAA 2606:2800:21f:cb07::1",
	`granted.example. 60 IN TXT "v=spf1 -all"`,
	"mixed.wild.example. 60 IN A 93.184.215.15",
	"mixed.wild.example. 60 IN A 10.0.0.1",
	"private.wild.example. 60 IN A 10.0.0.2",
	"private.wild.example. 60 IN A 192.168.1.1",
	"meta.wild.example. 60 IN A 169.254.169.254",
	"loop6.wild.example. 60 IN AAAA ::1",
	"ula.wild.example. 60 IN AAAA fd00::1",
	"mapped.wild.example. 60 IN AAAA ::ffff:10.0.0.3",
	"cname.wild.example. 60 IN CNAME target.other.",
	"target.other. 60 IN A 93.184.215.16",
	"cnamepriv.wild.example. 60 IN CNAME hop.other.",
	"hop.other. 60 IN CNAME inside.other.",
	"inside.other. 60 IN A 10.1.2.3",
	"allowednet.wild.example. 60 IN A 10.9.0.5",
	"svc.wild.example. 60 IN HTTPS 1 . alpn=h2 ipv4hint=10.0.0.1,93.184.215.17 ipv6hint=fd00::1",
	"evil.example. 60 IN A 93.184.215.18",
	"privevil.example. 60 IN A 10.0.0.9",
}

func bigZone() []string {
	z := slices.Clone(testZone)
	for i := 1; i <= 60; i++ {
		z = append(z, "big.wild.example. 60 IN A 93.184.216."+strconv.Itoa(i))
	}
	return z
}

func TestGrantedAnswered(t *testing.T) {
	e := newEnv(t, basePolicy, resolvertest.Zone(testZone...))
	q := mkQuery("GrAnTeD.eXaMpLe.", dns.TypeA)
	q.Id = 4242
	q.CheckingDisabled = true
	r := e.ask(t, q)
	if r.Rcode != dns.RcodeSuccess || !slices.Equal(answerAddrs(r), []string{"93.184.215.14"}) {
		t.Fatalf("got %s %v, want NOERROR [93.184.215.14]", dns.RcodeToString[r.Rcode], answerAddrs(r))
	}
	if r.Id != 4242 || !r.Response || !r.RecursionDesired || !r.RecursionAvailable || !r.CheckingDisabled {
		t.Errorf("got id %d qr %v rd %v ra %v cd %v, want 4242 and all set", r.Id, r.Response, r.RecursionDesired, r.RecursionAvailable, r.CheckingDisabled)
	}
	if got := r.Question[0].Name; got != "GrAnTeD.eXaMpLe." {
		t.Errorf("question echoed as %q, want the client's 0x20 spelling", got)
	}
	got := e.rec.Last(t)
	want := declog.Entry{Event: vocab.EventDecision, Client: "172.30.0.2", Proto: vocab.ProtoDNS,
		Host: "granted.example", QType: "A", Verdict: vocab.Allow, Reason: vocab.ReasonAllowlisted}
	if got.Event != want.Event || got.Client != want.Client || got.Proto != want.Proto || got.Host != want.Host ||
		got.QType != want.QType || got.Verdict != want.Verdict || got.Reason != want.Reason {
		t.Errorf("logged %+v, want %+v", got, want)
	}
	if !strings.Contains(got.Rule, "granted.example") {
		t.Errorf("logged rule %q, want the allow rule", got.Rule)
	}
	if !got.Time.Equal(e.clock.Now()) {
		t.Errorf("logged time %v, want the injected clock's %v", got.Time, e.clock.Now())
	}
}

func TestUngrantedNeverForwarded(t *testing.T) {
	e := newEnv(t, basePolicy, resolvertest.Zone(testZone...))
	tests := []struct {
		name   string
		qtype  uint16
		reason vocab.Reason
	}{
		{"evil.example.", dns.TypeA, vocab.ReasonNotAllowlisted},
		{"EvIl.ExAmPlE.", dns.TypeA, vocab.ReasonNotAllowlisted}, // 0x20
		{"evil.example.", dns.TypeTXT, vocab.ReasonNotAllowlisted},
		{"wild.example.", dns.TypeA, vocab.ReasonNotAllowlisted}, // wildcard excludes the apex
		{"x.granted.example.", dns.TypeA, vocab.ReasonNotAllowlisted},
		{"granted.example.evil.", dns.TypeA, vocab.ReasonNotAllowlisted},
		{`a\.wild.example.`, dns.TypeA, vocab.ReasonBadRequest},
		{`granted\.example.`, dns.TypeA, vocab.ReasonBadRequest},
		{`granted.example\000.`, dns.TypeA, vocab.ReasonBadRequest},
		{"10.0.0.1.", dns.TypeA, vocab.ReasonNotAllowlisted},
	}
	for _, tc := range tests {
		r := e.ask(t, mkQuery(tc.name, tc.qtype))
		if r.Rcode != dns.RcodeNameError || len(r.Answer) != 0 {
			t.Errorf("%s %s: got %s with %d answers, want NXDOMAIN and none", tc.name, dns.Type(tc.qtype), dns.RcodeToString[r.Rcode], len(r.Answer))
		}
		if got := e.rec.Last(t); got.Verdict != vocab.Deny || got.Reason != tc.reason {
			t.Errorf("%s: logged %s/%s, want deny/%s", tc.name, got.Verdict, got.Reason, tc.reason)
		}
	}
	if got := e.up.Total(); got != 0 {
		t.Errorf("upstream received %d queries for ungranted names, want 0", got)
	}
}

func TestQTypeRefused(t *testing.T) {
	e := newEnv(t, basePolicy, resolvertest.Zone(testZone...))
	for _, qt := range []uint16{dns.TypeTXT, dns.TypeNULL, dns.TypeANY, dns.TypeMX, dns.TypeAXFR, 65000} {
		r := e.ask(t, mkQuery("granted.example.", qt))
		if r.Rcode != dns.RcodeRefused {
			t.Errorf("%s: got %s, want REFUSED", dns.Type(qt), dns.RcodeToString[r.Rcode])
		}
		if got := e.rec.Last(t); got.Reason != vocab.ReasonQTypeNotAllowed || got.Verdict != vocab.Deny {
			t.Errorf("%s: logged %s/%s, want deny/qtype_not_allowed", dns.Type(qt), got.Verdict, got.Reason)
		}
	}
	if got := e.up.Total(); got != 0 {
		t.Errorf("upstream received %d queries, want 0", got)
	}
}

func TestAddressFiltering(t *testing.T) {
	yaml := basePolicy + "networks:\n  allow: [10.9.0.0/16]\n"
	e := newEnv(t, yaml, resolvertest.Zone(testZone...))
	tests := []struct {
		name   string
		qtype  uint16
		rcode  int
		addrs  []string
		reason vocab.Reason
	}{
		{"mixed.wild.example.", dns.TypeA, dns.RcodeSuccess, []string{"93.184.215.15"}, vocab.ReasonAllowlisted},
		{"private.wild.example.", dns.TypeA, dns.RcodeNameError, nil, vocab.ReasonPrivateAddress},
		{"meta.wild.example.", dns.TypeA, dns.RcodeNameError, nil, vocab.ReasonMetadataAddress},
		{"loop6.wild.example.", dns.TypeAAAA, dns.RcodeNameError, nil, vocab.ReasonPrivateAddress},
		{"ula.wild.example.", dns.TypeAAAA, dns.RcodeNameError, nil, vocab.ReasonPrivateAddress},
		{"mapped.wild.example.", dns.TypeAAAA, dns.RcodeNameError, nil, vocab.ReasonPrivateAddress},
		{"cname.wild.example.", dns.TypeA, dns.RcodeSuccess, []string{"93.184.215.16"}, vocab.ReasonAllowlisted},
		{"cnamepriv.wild.example.", dns.TypeA, dns.RcodeNameError, nil, vocab.ReasonPrivateAddress},
		{"allowednet.wild.example.", dns.TypeA, dns.RcodeSuccess, []string{"10.9.0.5"}, vocab.ReasonAllowlisted},
		{"granted.example.", dns.TypeAAAA, dns.RcodeSuccess, []string{"2606:2800:21f:cb07::1"}, vocab.ReasonAllowlisted},
		{"nx.wild.example.", dns.TypeA, dns.RcodeNameError, nil, vocab.ReasonAllowlisted},
	}
	for _, tc := range tests {
		r := e.ask(t, mkQuery(tc.name, tc.qtype))
		if r.Rcode != tc.rcode || !slices.Equal(answerAddrs(r), tc.addrs) {
			t.Errorf("%s %s: got %s %v, want %s %v", tc.name, dns.Type(tc.qtype), dns.RcodeToString[r.Rcode], answerAddrs(r), dns.RcodeToString[tc.rcode], tc.addrs)
		}
		if got := e.rec.Last(t).Reason; got != tc.reason {
			t.Errorf("%s: logged reason %s, want %s", tc.name, got, tc.reason)
		}
		if len(r.Extra) > 0 && r.Extra[0].Header().Rrtype != dns.TypeOPT {
			t.Errorf("%s: additional section leaked %v", tc.name, r.Extra)
		}
	}
}

func TestCNAMEChainKept(t *testing.T) {
	e := newEnv(t, basePolicy, resolvertest.Zone(testZone...))
	r := e.ask(t, mkQuery("cname.wild.example.", dns.TypeA))
	if len(r.Answer) != 2 {
		t.Fatalf("got %d records, want the CNAME and the A", len(r.Answer))
	}
	c, ok := r.Answer[0].(*dns.CNAME)
	if !ok || c.Target != "target.other." {
		t.Errorf("first record %v, want CNAME to target.other.", r.Answer[0])
	}
}

func TestHTTPSHintsPruned(t *testing.T) {
	e := newEnv(t, basePolicy, resolvertest.Zone(testZone...))
	r := e.ask(t, mkQuery("svc.wild.example.", dns.TypeHTTPS))
	if r.Rcode != dns.RcodeSuccess || len(r.Answer) != 1 {
		t.Fatalf("got %s with %d records, want NOERROR with 1", dns.RcodeToString[r.Rcode], len(r.Answer))
	}
	h := r.Answer[0].(*dns.HTTPS)
	var keys []string
	for _, kv := range h.Value {
		keys = append(keys, kv.Key().String()+"="+kv.String())
	}
	want := []string{"alpn=h2", "ipv4hint=93.184.215.17"}
	if !slices.Equal(keys, want) {
		t.Errorf("got params %v, want %v", keys, want)
	}
}

func TestCacheHitSkipsUpstream(t *testing.T) {
	e := newEnv(t, basePolicy, resolvertest.Zone(testZone...))
	for range 3 {
		if r := e.ask(t, mkQuery("granted.example.", dns.TypeA)); r.Rcode != dns.RcodeSuccess {
			t.Fatalf("got %s, want NOERROR", dns.RcodeToString[r.Rcode])
		}
	}
	if got := e.up.Count("granted.example.", dns.TypeA); got != 1 {
		t.Errorf("upstream got %d queries, want 1", got)
	}
}

func TestUpstreamTimeoutServfail(t *testing.T) {
	e := newEnv(t, basePolicy, func(string, *dns.Msg) *dns.Msg { return nil })
	start := time.Now()
	r := e.ask(t, mkQuery("granted.example.", dns.TypeA))
	if el := time.Since(start); el > 2*time.Second {
		t.Errorf("SERVFAIL after %s, want within ~600ms (2 × 300ms timeout)", el)
	}
	if r.Rcode != dns.RcodeServerFailure {
		t.Errorf("got %s, want SERVFAIL", dns.RcodeToString[r.Rcode])
	}
	if got := e.rec.Last(t).Reason; got != vocab.ReasonResolveFailed {
		t.Errorf("logged %s, want resolve_failed", got)
	}
}

func TestRateLimit(t *testing.T) {
	yaml := strings.Replace(basePolicy, "{rps: 1000, burst: 1000}", "{rps: 1, burst: 3}", 1)
	e := newEnv(t, yaml, resolvertest.Zone(testZone...))
	send := func(n int) (refused int) {
		for range n {
			if e.ask(t, mkQuery("evil.example.", dns.TypeA)).Rcode == dns.RcodeRefused {
				refused++
			}
		}
		return refused
	}
	limited := func() (lines []declog.Entry) {
		for _, en := range e.rec.All() {
			if en.Reason == vocab.ReasonRateLimited {
				lines = append(lines, en)
			}
		}
		return lines
	}
	if got := send(8); got != 5 {
		t.Fatalf("refused %d of 8 queries with burst 3, want 5", got)
	}
	if got := len(limited()); got != 1 {
		t.Fatalf("logged %d rate_limited lines for 5 refusals, want 1", got)
	}
	// Another client has its own bucket.
	w := newWriter()
	w.remote = &net.UDPAddr{IP: net.IPv4(172, 30, 0, 3), Port: 1}
	e.srv.ServeDNS(w, mkQuery("evil.example.", dns.TypeA))
	if w.reply.Rcode != dns.RcodeNameError {
		t.Errorf("other client: got %s, want NXDOMAIN", dns.RcodeToString[w.reply.Rcode])
	}

	// Next window: 3 tokens back, then refusals again; the new line is
	// preceded by a summary of the 4 refusals that were not logged.
	e.clock.Advance(limitLogWindow)
	if got := send(5); got != 2 {
		t.Fatalf("second window: refused %d of 5, want 2", got)
	}
	lines := limited()
	if len(lines) != 3 || lines[1].Event != vocab.EventSummary || lines[1].Count != 4 || lines[2].Event != vocab.EventDecision {
		t.Fatalf("got rate_limited lines %+v, want decision, summary(4), decision", lines)
	}
	e.srv.flushLimitLog(true)
	lines = limited()
	if last := lines[len(lines)-1]; last.Event != vocab.EventSummary || last.Count != 1 {
		t.Errorf("flush: got %+v, want a summary of 1", last)
	}
	if got := e.up.Total(); got != 0 {
		t.Errorf("upstream got %d queries, want 0", got)
	}
}

func TestReportMode(t *testing.T) {
	e := newEnv(t, basePolicy+"mode: report\n", resolvertest.Zone(testZone...))
	r := e.ask(t, mkQuery("evil.example.", dns.TypeA))
	if r.Rcode != dns.RcodeSuccess || !slices.Equal(answerAddrs(r), []string{"93.184.215.18"}) {
		t.Errorf("report mode: got %s %v, want the answer", dns.RcodeToString[r.Rcode], answerAddrs(r))
	}
	if got := e.rec.Last(t); got.Verdict != vocab.Report || got.Reason != vocab.ReasonNotAllowlisted {
		t.Errorf("logged %s/%s, want would_deny/not_allowlisted", got.Verdict, got.Reason)
	}
	// Report mode never relaxes address checks or the type list.
	if r := e.ask(t, mkQuery("privevil.example.", dns.TypeA)); r.Rcode != dns.RcodeNameError {
		t.Errorf("report mode private answer: got %s, want NXDOMAIN", dns.RcodeToString[r.Rcode])
	}
	if r := e.ask(t, mkQuery("evil.example.", dns.TypeTXT)); r.Rcode != dns.RcodeRefused {
		t.Errorf("report mode TXT: got %s, want REFUSED", dns.RcodeToString[r.Rcode])
	}
}

func TestMalformedQueries(t *testing.T) {
	e := newEnv(t, basePolicy, resolvertest.Zone(testZone...))
	twoQ := mkQuery("granted.example.", dns.TypeA)
	twoQ.Question = append(twoQ.Question, dns.Question{Name: "evil.example.", Qtype: dns.TypeA, Qclass: dns.ClassINET})
	noQ := mkQuery("granted.example.", dns.TypeA)
	noQ.Question = nil
	chaos := mkQuery("version.bind.", dns.TypeTXT)
	chaos.Question[0].Qclass = dns.ClassCHAOS
	notify := mkQuery("granted.example.", dns.TypeSOA)
	notify.Opcode = dns.OpcodeNotify
	badvers := mkQuery("granted.example.", dns.TypeA)
	badvers.SetEdns0(1232, false)
	badvers.IsEdns0().SetVersion(1)

	tests := []struct {
		name  string
		q     *dns.Msg
		rcode int
	}{
		{"two questions", twoQ, dns.RcodeFormatError},
		{"no question", noQ, dns.RcodeFormatError},
		{"chaos class", chaos, dns.RcodeRefused},
		{"notify", notify, dns.RcodeNotImplemented},
		{"edns version 1", badvers, dns.RcodeBadVers},
	}
	for _, tc := range tests {
		w := newWriter()
		e.srv.ServeDNS(w, tc.q)
		if w.writes != 1 || w.reply.Rcode != tc.rcode {
			t.Errorf("%s: got %d replies, rcode %v; want 1, %s", tc.name, w.writes, w.reply, dns.RcodeToString[tc.rcode])
		}
	}
	resp := mkQuery("granted.example.", dns.TypeA)
	resp.Response = true
	w := newWriter()
	e.srv.ServeDNS(w, resp)
	if w.writes != 0 {
		t.Errorf("answered a response: got %d replies, want 0", w.writes)
	}
	if got := e.up.Total(); got != 0 {
		t.Errorf("upstream got %d queries, want 0", got)
	}
}

func TestNilPolicyFailsClosed(t *testing.T) {
	up := resolvertest.Start(t, resolvertest.Zone(testZone...))
	for _, getter := range []func() *policy.Policy{nil, func() *policy.Policy { return nil }} {
		s := New(Config{Policy: getter})
		w := newWriter()
		s.ServeDNS(w, mkQuery("granted.example.", dns.TypeA))
		if w.reply.Rcode != dns.RcodeServerFailure {
			t.Errorf("got %s, want SERVFAIL", dns.RcodeToString[w.reply.Rcode])
		}
	}
	if up.Total() != 0 {
		t.Errorf("upstream got %d queries, want 0", up.Total())
	}
}

func TestTruncationAndEDNS(t *testing.T) {
	e := newEnv(t, basePolicy, resolvertest.Zone(bigZone()...))
	tests := []struct {
		name     string
		edns     uint16 // 0 = no OPT
		tcp      bool
		wantTC   bool
		maxBytes int
	}{
		{"udp no edns", 0, false, true, 512},
		{"udp edns 1232", 1232, false, false, 1232},
		{"udp edns 4096 capped", 4096, false, false, 1232},
		{"udp edns 100 raised to 512", 100, false, true, 512},
		{"tcp", 0, true, false, dns.MaxMsgSize},
	}
	for _, tc := range tests {
		q := mkQuery("big.wild.example.", dns.TypeA)
		if tc.edns > 0 {
			q.SetEdns0(tc.edns, false)
		}
		w := newWriter()
		if tc.tcp {
			w.remote = &net.TCPAddr{IP: net.IPv4(172, 30, 0, 2), Port: 40000}
		}
		e.srv.ServeDNS(w, q)
		r := w.reply
		if r.Truncated != tc.wantTC || w.size > tc.maxBytes {
			t.Errorf("%s: got TC %v, %d bytes; want TC %v, at most %d bytes", tc.name, r.Truncated, w.size, tc.wantTC, tc.maxBytes)
		}
		if !tc.wantTC && len(r.Answer) != 60 {
			t.Errorf("%s: got %d records, want 60", tc.name, len(r.Answer))
		}
		if opt := r.IsEdns0(); (opt != nil) != (tc.edns > 0) || (opt != nil && opt.UDPSize() != maxUDPSize) {
			t.Errorf("%s: reply OPT %v, want one advertising %d exactly when asked", tc.name, opt, maxUDPSize)
		}
	}
}

// TestServeUDPAndTCP runs the server on real loopback sockets.
func TestServeUDPAndTCP(t *testing.T) {
	e := newEnv(t, basePolicy, resolvertest.Zone(bigZone()...))
	udp, tcp, stop := serveSockets(t, e)

	tests := []struct {
		network, addr, name string
		rcode, answers      int
		tc                  bool
	}{
		{"udp", udp, "granted.example.", dns.RcodeSuccess, 1, false},
		{"udp", udp, "evil.example.", dns.RcodeNameError, 0, false},
		{"udp", udp, "big.wild.example.", dns.RcodeSuccess, -1, true},
		{"tcp", tcp, "big.wild.example.", dns.RcodeSuccess, 60, false},
		{"tcp", tcp, "evil.example.", dns.RcodeNameError, 0, false},
	}
	for _, tc := range tests {
		c := dns.Client{Net: tc.network, Timeout: 2 * time.Second}
		r, _, err := c.Exchange(mkQuery(tc.name, dns.TypeA), tc.addr)
		if err != nil {
			t.Fatalf("%s %s: %v", tc.network, tc.name, err)
		}
		if r.Rcode != tc.rcode || r.Truncated != tc.tc || (tc.answers >= 0 && len(r.Answer) != tc.answers) {
			t.Errorf("%s %s: got %s, TC %v, %d answers; want %s, TC %v, %d", tc.network, tc.name,
				dns.RcodeToString[r.Rcode], r.Truncated, len(r.Answer), dns.RcodeToString[tc.rcode], tc.tc, tc.answers)
		}
	}
	// Garbage must not take the server down.
	raw, err := net.Dial("udp", udp)
	if err != nil {
		t.Fatal(err)
	}
	raw.Write([]byte{0xde, 0xad})
	raw.Write([]byte("not dns at all, but long enough to have a header"))
	raw.Close()
	c := dns.Client{Net: "udp", Timeout: 2 * time.Second}
	if _, _, err := c.Exchange(mkQuery("granted.example.", dns.TypeA), udp); err != nil {
		t.Errorf("after garbage: %v", err)
	}

	if err := stop(); err != nil {
		t.Errorf("Serve returned %v, want nil after cancel", err)
	}
	if got := e.up.Count("evil.example.", dns.TypeA); got != 0 {
		t.Errorf("upstream got %d queries for evil.example, want 0", got)
	}
}

func TestServeSocketErrors(t *testing.T) {
	if err := New(Config{}).Serve(context.Background(), nil, nil); err == nil {
		t.Error("Serve(nil, nil): got nil error, want one")
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ln.Close()
	done := make(chan error, 1)
	go func() { done <- New(Config{}).Serve(context.Background(), nil, ln) }()
	select {
	case err := <-done:
		if err == nil {
			t.Error("Serve on a closed listener: got nil error, want one")
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Serve on a closed listener did not return")
	}
}

func TestSelfAddressNeverAnswered(t *testing.T) {
	yaml := basePolicy + "networks:\n  allow: [10.9.0.0/16]\n"
	e := newEnv(t, yaml, resolvertest.Zone(testZone...))
	p := loadPolicy(t, yaml)
	e.srv = New(Config{
		Policy:   func() *policy.Policy { return p },
		Resolver: e.res,
		Recorder: e.rec,
		Self:     []netip.Addr{netip.MustParseAddr("0.0.0.0"), netip.MustParseAddr("::ffff:10.9.0.5")},
	})
	r := e.ask(t, mkQuery("allowednet.wild.example.", dns.TypeA))
	if r.Rcode != dns.RcodeNameError {
		t.Errorf("got %s %v, want NXDOMAIN", dns.RcodeToString[r.Rcode], answerAddrs(r))
	}
	if got := e.rec.Last(t).Reason; got != vocab.ReasonSelfAddress {
		t.Errorf("logged %s, want self_address", got)
	}
	// The unspecified address stands for this machine's own addresses, not
	// for every address.
	if r := e.ask(t, mkQuery("granted.example.", dns.TypeA)); r.Rcode != dns.RcodeSuccess {
		t.Errorf("granted.example: got %s, want NOERROR", dns.RcodeToString[r.Rcode])
	}
}
