package declog

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/egressd/egressd/policy"
)

// dnsDenial is a DNS denial of host from client.
func dnsDenial(client, host string) Entry {
	return Entry{
		Event: EventDecision, Client: client, Proto: policy.ProtoDNS, Host: host, QType: "A",
		Verdict: policy.Deny, Reason: policy.ReasonNotAllowlisted,
	}
}

// logLines runs record against a Logger with the given table bounds and
// returns what it wrote, in order.
func logLines(t *testing.T, maxKeys, perClient int, record func(l *Logger)) []Entry {
	t.Helper()
	var stdout syncBuffer
	l, err := New(Options{Stdout: &stdout, Clock: newFakeClock().Now, ThrottleWindow: time.Hour,
		MaxThrottleKeys: maxKeys, MaxThrottleKeysPerClient: perClient})
	if err != nil {
		t.Fatal(err)
	}
	record(l)
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	var got []Entry
	if err := Read(strings.NewReader(stdout.String()), func(e Entry) error { got = append(got, e); return nil }); err != nil {
		t.Fatal(err)
	}
	return got
}

// brief is an entry as "event client host count [hosts] [clients]".
func brief(e Entry) string {
	s := fmt.Sprintf("%s %s %s %d", e.Event, e.Client, e.Host, e.Count)
	if len(e.Hosts) > 0 {
		s += " hosts=" + strings.Join(e.Hosts, ",")
	}
	if len(e.Clients) > 0 {
		s += " clients=" + strings.Join(e.Clients, ",")
	}
	return s
}

func briefs(es []Entry) []string {
	var out []string
	for _, e := range es {
		out = append(out, brief(e))
	}
	return out
}

// TestThrottleClientQuota: a client flooding distinct names uses up only
// its own quota. Its later names fold into its own overflow summary, which
// names the first ones folded (the real target among them), and another
// client's denials keep their own lines.
func TestThrottleClientQuota(t *testing.T) {
	got := logLines(t, 100, 2, func(l *Logger) {
		l.Record(denial("10.0.0.2", "a0.example"))
		l.Record(denial("10.0.0.2", "a1.example"))
		l.Record(denial("10.0.0.2", "f0.example")) // quota used: opens the overflow window, written
		l.Record(denial("10.0.0.2", "target.example"))
		for i := range 200 {
			l.Record(denial("10.0.0.2", fmt.Sprintf("flood%d.example", i)))
		}
		l.Record(denial("10.0.0.2", "target.example"))
		l.Record(denial("10.0.0.2", "a0.example")) // has a key of its own: folds there
		for range 3 {
			l.Record(denial("10.0.0.9", "other.example"))
		}
	})
	sample := "target.example"
	for i := range SampleMax - 1 {
		sample += fmt.Sprintf(",flood%d.example", i)
	}
	want := []string{
		"decision 10.0.0.2 a0.example 0",
		"decision 10.0.0.2 a1.example 0",
		"decision 10.0.0.2 f0.example 0",
		"decision 10.0.0.9 other.example 0",
		// Close sweeps in time order; the fake clock stands still, so the
		// order among equal times is not fixed: compare as a set below.
	}
	wantSummaries := map[string]bool{
		"summary 10.0.0.2 * 202 hosts=" + sample: true,
		"summary 10.0.0.2 a0.example 1":          true,
		"summary 10.0.0.9 other.example 2":       true,
	}
	var lines []string
	for _, b := range briefs(got) {
		if strings.HasPrefix(b, "summary") {
			if !wantSummaries[b] {
				t.Errorf("unexpected summary %q; want one of %v", b, wantSummaries)
			}
			delete(wantSummaries, b)
			continue
		}
		lines = append(lines, b)
	}
	if diff := cmp.Diff(want, lines); diff != "" {
		t.Errorf("decision lines (-want +got):\n%s", diff)
	}
	if len(wantSummaries) != 0 {
		t.Errorf("missing summaries %v", wantSummaries)
	}
	for _, e := range got {
		if e.Event == EventSummary && e.Host == overflowHost && (e.Hint != "" || e.Port != 0) {
			t.Errorf("overflow summary kept the first denial's hint %q / port %d, want neither", e.Hint, e.Port)
		}
	}
}

// TestThrottleSwarm: a swarm of forged DNS sources fills the DNS pool's
// client slots; later swarm members fold into one shared summary that
// samples clients and hosts. A DNS client admitted before the swarm keeps
// its own lines, and the proxy's clients (the other pool) are untouched.
func TestThrottleSwarm(t *testing.T) {
	// 40 keys: 20 per pool, 5 per client, so 4 clients per pool.
	got := logLines(t, 40, 5, func(l *Logger) {
		l.Record(dnsDenial("172.30.0.2", "agent1.example"))
		for i := range 500 {
			l.Record(dnsDenial(fmt.Sprintf("172.30.%d.%d", 1+i/250, i%250), fmt.Sprintf("s%d.example", i)))
		}
		l.Record(dnsDenial("172.30.0.2", "agent2.example"))   // admitted before: its own key
		l.Record(dnsDenial("172.30.200.1", "target.example")) // not admitted: shared, sampled
		l.Record(denial("172.30.0.2", "tcp-target.example"))  // the other pool
	})
	var decisions []string
	var shared *Entry
	for i, e := range got {
		switch {
		case e.Event == EventDecision:
			decisions = append(decisions, brief(e))
		case e.Client == overflowClient:
			shared = &got[i]
		}
	}
	want := []string{
		"decision 172.30.0.2 agent1.example 0",
		"decision 172.30.1.0 s0.example 0",
		"decision 172.30.1.1 s1.example 0",
		"decision 172.30.1.2 s2.example 0",
		"decision 172.30.1.3 s3.example 0", // first of the shared window, written as it is
		"decision 172.30.0.2 agent2.example 0",
		"decision 172.30.0.2 tcp-target.example 0",
	}
	if diff := cmp.Diff(want, decisions); diff != "" {
		t.Errorf("decision lines (-want +got):\n%s", diff)
	}
	if shared == nil {
		t.Fatalf("no shared overflow summary in %v", briefs(got))
	}
	if shared.Count != 497 || shared.Host != overflowHost || len(shared.Clients) != SampleMax || len(shared.Hosts) != SampleMax {
		t.Errorf("shared summary: got %s, want count 497, host *, %d clients and hosts sampled", brief(*shared), SampleMax)
	}
	if shared.Clients[0] != "172.30.1.4" || shared.Hosts[0] != "s4.example" {
		t.Errorf("shared sample starts with %s / %s, want the first folded: 172.30.1.4 / s4.example",
			shared.Clients[0], shared.Hosts[0])
	}
}

// TestThrottleBounded feeds a large mix of clients, hosts and protocols
// and checks the table never holds more than its bounds allow, and gives
// every slot back when the windows end.
func TestThrottleBounded(t *testing.T) {
	const maxKeys, perClient = 40, 5
	thr := newThrottle(time.Minute, maxKeys, perClient)
	now := time.Date(2025, 3, 14, 0, 0, 0, 0, time.UTC)
	// Per pool: own keys up to maxClients*perClient, one overflow key per
	// admitted client, one shared; one (proto, verdict, reason) per pool
	// here, and two protos in the connection pool.
	bound := maxKeys + 2*(thr.maxClients+1) + 1*(thr.maxClients+1)
	for i := range 20000 {
		var e Entry
		switch i % 3 {
		case 0:
			e = dnsDenial(fmt.Sprintf("10.%d.%d.%d", i%7, i%251, i%13), fmt.Sprintf("h%d.example", i))
		case 1:
			e = denial(fmt.Sprintf("10.1.0.%d", i%9), fmt.Sprintf("h%d.example", i))
		default:
			e = denial("10.1.0.1", fmt.Sprintf("h%d.example", i%97))
			e.Proto = policy.ProtoHTTP
		}
		e.Time = now
		thr.check(&e)
		if n := len(thr.m); n > bound {
			t.Fatalf("after %d denials the table holds %d keys, want at most %d", i+1, n, bound)
		}
	}
	for _, pool := range thr.pools {
		if n := len(pool); n > thr.maxClients {
			t.Errorf("pool holds %d clients, want at most %d", n, thr.maxClients)
		}
	}
	sums := thr.sweep(now.Add(time.Minute), false)
	if len(thr.m) != 0 || len(thr.pools[dnsPool]) != 0 || len(thr.pools[connPool]) != 0 {
		t.Errorf("after the windows ended: %d keys, %d + %d clients left, want none",
			len(thr.m), len(thr.pools[dnsPool]), len(thr.pools[connPool]))
	}
	folded := 0
	for _, s := range sums {
		folded += s.Count
		if len(s.Hosts) > SampleMax || len(s.Clients) > SampleMax {
			t.Errorf("summary %s: sample longer than %d", brief(s), SampleMax)
		}
	}
	if folded == 0 {
		t.Error("no denial was folded; the test did not reach the bounds")
	}
	// The freed slots are usable again.
	e := dnsDenial("192.0.2.1", "after.example")
	e.Time = now.Add(2 * time.Minute)
	if suppress, _, _ := thr.check(&e); suppress {
		t.Error("a new client after the sweep was folded, want its own line")
	}
}

// TestThrottleSampleRoundTrip: the samples survive the log line.
func TestThrottleSampleRoundTrip(t *testing.T) {
	e := Entry{Time: time.Date(2025, 3, 14, 0, 0, 0, 0, time.UTC), Event: EventSummary, Client: "*",
		Proto: policy.ProtoDNS, Host: "*", Verdict: policy.Deny, Reason: policy.ReasonNotAllowlisted, Count: 3,
		Hosts: []string{"a.example", "b\x00.example"}, Clients: []string{"10.0.0.2"}}
	got, err := Unmarshal(Marshal(e))
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(e, got); diff != "" {
		t.Errorf("round trip (-want +got):\n%s", diff)
	}
	long := `{"time":"2025-03-14T00:00:00Z","event":"summary","client":"*","proto":"dns","host":"*",` +
		`"verdict":"deny","reason":"not_allowlisted","count":1,"hosts":["1","2","3","4","5","6","7","8","9","10"],"clients":[]}`
	got, err = Unmarshal([]byte(long))
	if err != nil {
		t.Fatal(err)
	}
	if len(got.Hosts) != SampleMax || got.Clients != nil {
		t.Errorf("read a 10-host sample and an empty client list: got %d hosts, clients %#v; want %d, nil",
			len(got.Hosts), got.Clients, SampleMax)
	}
}
