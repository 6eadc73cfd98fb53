package declog

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/egressd/egressd/internal/lib/testutil"
	"github.com/egressd/egressd/internal/shared/vocab"

	"github.com/google/go-cmp/cmp"
)

// dnsDenial is a DNS denial of host from client.
func dnsDenial(client, host string) Entry {
	return Entry{
		Event: vocab.EventDecision, Client: client, Proto: vocab.ProtoDNS, Host: host, QType: "A",
		Verdict: vocab.Deny, Reason: vocab.ReasonNotAllowlisted,
	}
}

// logLines runs record against a Logger with the given table bounds and
// returns what it wrote, in order.
func logLines(t *testing.T, maxKeys, perClient int, record func(l *Logger)) []Entry {
	t.Helper()
	var stdout testutil.Buffer
	l, err := New(Options{Stdout: &stdout, Clock: testutil.NewClock(time.Date(2025, 3, 14, 15, 9, 26, 0, time.UTC)).Now, ThrottleWindow: time.Hour,
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
		if e.Event == vocab.EventSummary && e.Host == overflowHost && (e.Hint != "" || e.Port != 0) {
			t.Errorf("overflow summary kept the first denial's hint %q / port %d, want neither", e.Hint, e.Port)
		}
	}
}

// decisionsAndSummaries splits what a Logger wrote into decision lines, in
// order, and summaries keyed by client and host.
func decisionsAndSummaries(got []Entry) ([]string, map[string]Entry) {
	var decisions []string
	sums := map[string]Entry{}
	for _, e := range got {
		if e.Event == vocab.EventDecision {
			decisions = append(decisions, brief(e))
		} else {
			sums[e.Client+" "+e.Host] = e
		}
	}
	return decisions, sums
}

// TestThrottleSwarm: a swarm of forged DNS sources takes the DNS pool's
// free client slots; later swarm members fold into one shared summary that
// samples clients and hosts. A DNS client admitted before the swarm keeps
// its own lines (its reserve), and the proxy's clients (the other pool)
// are untouched.
func TestThrottleSwarm(t *testing.T) {
	// 200 keys: 100 per pool, 6 clients per pool with 8 reserved each.
	got := logLines(t, 200, 5, func(l *Logger) {
		l.Record(dnsDenial("172.30.0.2", "agent1.example"))
		for i := range 500 {
			l.Record(dnsDenial(fmt.Sprintf("172.30.%d.%d", 1+i/250, i%250), fmt.Sprintf("s%d.example", i)))
		}
		l.Record(dnsDenial("172.30.0.2", "agent2.example"))   // admitted before: its own key
		l.Record(dnsDenial("172.30.200.1", "target.example")) // not admitted: shared, sampled
		l.Record(denial("172.30.0.2", "tcp-target.example"))  // the other pool
	})
	decisions, sums := decisionsAndSummaries(got)
	want := []string{
		"decision 172.30.0.2 agent1.example 0",
		"decision 172.30.1.0 s0.example 0",
		"decision 172.30.1.1 s1.example 0",
		"decision 172.30.1.2 s2.example 0",
		"decision 172.30.1.3 s3.example 0",
		"decision 172.30.1.4 s4.example 0",
		"decision 172.30.1.5 s5.example 0", // first of the shared window, written as it is
		"decision 172.30.0.2 agent2.example 0",
		"decision 172.30.0.2 tcp-target.example 0",
	}
	if diff := cmp.Diff(want, decisions); diff != "" {
		t.Errorf("decision lines (-want +got):\n%s", diff)
	}
	shared, ok := sums[overflowClient+" "+overflowHost]
	if !ok {
		t.Fatalf("no shared overflow summary in %v", briefs(got))
	}
	if shared.Count != 495 || len(shared.Clients) != SampleMax || len(shared.Hosts) != SampleMax {
		t.Errorf("shared summary: got %s, want count 495, %d clients and hosts sampled", brief(shared), SampleMax)
	}
	if shared.Clients[0] != "172.30.1.6" || shared.Hosts[0] != "s6.example" {
		t.Errorf("shared sample starts with %s / %s, want the first folded: 172.30.1.6 / s6.example",
			shared.Clients[0], shared.Hosts[0])
	}
}

// TestThrottleBurstSparesReserves: one client flooding distinct names
// with a quota larger than the table uses up the burst room, then folds
// under its own name; it never takes an admitted client's reserve.
func TestThrottleBurstSparesReserves(t *testing.T) {
	// 100 keys: 50 per pool, 3 clients with 8 reserved each, 26 burst.
	got := logLines(t, 100, 1000, func(l *Logger) {
		l.Record(denial("10.0.0.2", "a0.example"))
		for i := range 500 {
			l.Record(denial("10.0.0.66", fmt.Sprintf("f%d.example", i)))
		}
		for i := 1; i <= 6; i++ {
			l.Record(denial("10.0.0.2", fmt.Sprintf("a%d.example", i)))
		}
		l.Record(denial("10.0.0.3", "c.example")) // the third slot
		l.Record(denial("10.0.0.4", "d.example")) // no slot left: shared
		l.Record(denial("10.0.0.5", "e.example")) // folded into the shared window
	})
	decisions, sums := decisionsAndSummaries(got)
	var want []string
	want = append(want, "decision 10.0.0.2 a0.example 0")
	for i := range 7 + 26 + 1 { // reserve less one, burst, then the overflow window's first
		want = append(want, fmt.Sprintf("decision 10.0.0.66 f%d.example 0", i))
	}
	for i := 1; i <= 6; i++ {
		want = append(want, fmt.Sprintf("decision 10.0.0.2 a%d.example 0", i))
	}
	want = append(want, "decision 10.0.0.3 c.example 0", "decision 10.0.0.4 d.example 0")
	if diff := cmp.Diff(want, decisions); diff != "" {
		t.Errorf("decision lines (-want +got):\n%s", diff)
	}
	if own := sums["10.0.0.66 *"]; own.Count != 500-34 || len(own.Hosts) != SampleMax || own.Hosts[0] != "f34.example" {
		t.Errorf("flooder's own overflow summary: got %s, want %d folded, sample from f34.example", brief(own), 500-34)
	}
	if sh := sums["* *"]; sh.Count != 1 || len(sh.Clients) != 1 || sh.Clients[0] != "10.0.0.5" {
		t.Errorf("shared summary: got %s, want 1 folded from 10.0.0.5", brief(sh))
	}
}

// TestThrottleBounded feeds a large mix of clients, hosts and protocols
// and checks the table never holds more than its bounds allow, and gives
// every slot back when the windows end.
func TestThrottleBounded(t *testing.T) {
	const maxKeys, perClient = 400, 30
	thr := newThrottle(time.Minute, maxKeys, perClient)
	now := time.Date(2025, 3, 14, 0, 0, 0, 0, time.UTC)
	// Keys charged to clients fill at most the table; the shared keys are
	// one per (proto, verdict, reason) and pool: one for DNS and two for
	// the other pool here.
	const bound = maxKeys + 3
	for i := range 30000 {
		var e Entry
		switch i % 3 {
		case 0:
			e = dnsDenial(fmt.Sprintf("10.%d.%d.%d", i%7, i%251, i%13), fmt.Sprintf("h%d.example", i))
		case 1:
			e = denial(fmt.Sprintf("10.1.0.%d", i%40), fmt.Sprintf("h%d.example", i))
		default:
			e = denial("10.1.0.1", fmt.Sprintf("h%d.example", i%97))
			e.Proto = vocab.ProtoHTTP
		}
		e.Time = now
		thr.check(&e)
		if n := len(thr.m); n > bound {
			t.Fatalf("after %d denials the table holds %d keys, want at most %d", i+1, n, bound)
		}
	}
	for i, p := range thr.pools {
		if n := len(p.clients); n > thr.maxClients {
			t.Errorf("pool %d holds %d clients, want at most %d", i, n, thr.maxClients)
		}
		if p.burst > thr.burstCap {
			t.Errorf("pool %d burst %d, want at most %d", i, p.burst, thr.burstCap)
		}
	}
	sums := thr.sweep(now.Add(time.Minute), false)
	for i, p := range thr.pools {
		if len(p.clients) != 0 || p.keys != 0 || p.burst != 0 {
			t.Errorf("pool %d after the windows ended: %d clients, %d keys, %d burst; want none", i, len(p.clients), p.keys, p.burst)
		}
	}
	if len(thr.m) != 0 {
		t.Errorf("after the windows ended: %d keys left, want none", len(thr.m))
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
	e := Entry{Time: time.Date(2025, 3, 14, 0, 0, 0, 0, time.UTC), Event: vocab.EventSummary, Client: "*",
		Proto: vocab.ProtoDNS, Host: "*", Verdict: vocab.Deny, Reason: vocab.ReasonNotAllowlisted, Count: 3,
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

// TestThrottleKeepsRouteCallsApart: path_not_allowed refusals of different
// calls on one route are separate lines (suggest proposes a rule for each);
// the same call repeated folds as any denial does.
func TestThrottleKeepsRouteCallsApart(t *testing.T) {
	call := func(method, path string) Entry {
		return Entry{Event: vocab.EventDecision, Client: "10.0.0.2", Proto: vocab.ProtoGateway, Host: "github",
			Method: method, Path: path, Verdict: vocab.Deny, Reason: vocab.ReasonPathNotAllowed}
	}
	got := logLines(t, 100, 50, func(l *Logger) {
		l.Record(call("POST", "/repos/acme/app/issues"))
		l.Record(call("POST", "/repos/acme/app/issues"))
		l.Record(call("DELETE", "/repos/acme/app/issues"))
		l.Record(call("GET", "/repos/acme/other"))
	})
	var lines []string
	for _, e := range got {
		lines = append(lines, fmt.Sprintf("%s %s %s %d", e.Event, e.Method, e.Path, e.Count))
	}
	want := []string{
		"decision POST /repos/acme/app/issues 0",
		"decision DELETE /repos/acme/app/issues 0",
		"decision GET /repos/acme/other 0",
		"summary POST /repos/acme/app/issues 1",
	}
	if diff := cmp.Diff(want, lines); diff != "" {
		t.Errorf("lines (-want +got):\n%s", diff)
	}
}
