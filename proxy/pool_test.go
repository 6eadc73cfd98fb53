package proxy

import (
	"bufio"
	"context"
	"io"
	"net/http"
	"net/netip"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/egressd/egressd/internal/shared/vocab"
)

// TestHeldDestinationSkipsLookup: once egressd holds a connection to a
// destination, deciding a plain request to it still runs Decide but leaves
// resolution and the address checks to the dial, which happens only if the
// transport does not reuse that connection. Tunnels and destinations
// without a connection are resolved and checked before the decision.
func TestHeldDestinationSkipsLookup(t *testing.T) {
	f := newFixture(t, fixOpts{})
	target := f.hp("granted.test")
	if resp, body := f.get("http://"+target+"/", target); resp.StatusCode != http.StatusOK {
		t.Fatalf("first request: got %d %q, want 200", resp.StatusCode, body)
	}
	cases := []struct {
		host        string
		proto       vocab.Proto
		wantLookups int // lookups by this decision
	}{
		{"granted.test", vocab.ProtoHTTP, 0},
		{"GRANTED.test.", vocab.ProtoHTTP, 0}, // the same destination, spelled otherwise
		{"granted.test", vocab.ProtoConnect, 1},
		{"other.test", vocab.ProtoHTTP, 1},
	}
	for _, c := range cases {
		rq := &request{start: time.Now(), client: netip.MustParseAddr("127.0.0.1"), proto: c.proto,
			method: http.MethodGet, pol: f.pol.Load()}
		if dn := rq.setTarget(c.host, strconv.Itoa(f.http.port)); dn.denied() {
			t.Fatalf("%s: %v", c.host, dn)
		}
		before := f.res.callCount(rq.host)
		if dn := f.srv.decide(context.Background(), rq); dn.denied() || !rq.d.Verdict.Allowed() {
			t.Fatalf("%s %s: got denial %v, verdict %v, want allowed", c.proto, c.host, dn.reason, rq.d.Verdict)
		}
		lookups := f.res.callCount(rq.host) - before
		if lookups != c.wantLookups || (len(rq.targets) > 0) != (c.wantLookups > 0) {
			t.Errorf("%s %s: got %d lookups and targets %v, want %d lookups (targets only with a lookup)",
				c.proto, c.host, lookups, rq.targets, c.wantLookups)
		}
	}
}

// TestDeferredCheckAtDial: a request to a destination with an open
// connection leaves resolution to the dial; when that connection is busy the
// transport dials, and dialHTTP resolves and checks first. The name now
// answers a private address: the request gets the usual denial (403,
// X-Egressd-Reason, the hint), logged after its allow line, and nothing
// dials anything but the address checked for the first request.
func TestDeferredCheckAtDial(t *testing.T) {
	held, release := make(chan struct{}), make(chan struct{})
	var releaseOnce sync.Once
	dl := &dialLog{}
	f := newFixture(t, fixOpts{
		mod: func(c *Config) { c.Dial = dl.dial },
		httpH: func(w http.ResponseWriter, r *http.Request) {
			if r.URL.Path == "/hold" {
				close(held)
				<-release
			}
			_, _ = io.WriteString(w, "hello")
		},
	})
	defer releaseOnce.Do(func() { close(release) })
	url, host := "http://"+f.hp("rebind.b.test"), f.hp("rebind.b.test")

	// The first request holds its upstream connection until released.
	c := f.dial()
	if _, err := io.WriteString(c, getReq(url+"/hold", host)); err != nil {
		t.Fatal(err)
	}
	select {
	case <-held:
	case <-time.After(waitLimit):
		t.Fatal("the first request never reached the upstream")
	}
	mark := len(f.rec.All())
	resp, body := f.get(url+"/", host)
	if resp.StatusCode != http.StatusForbidden || resp.Header.Get("X-Egressd-Reason") != "private_address" {
		t.Errorf("second request: got %d %q (%q), want 403 private_address", resp.StatusCode,
			resp.Header.Get("X-Egressd-Reason"), body)
	}
	var got []string
	for _, e := range f.rec.All()[mark:] {
		if e.Event == vocab.EventDecision {
			got = append(got, e.Verdict.String()+" "+e.Reason.String()+" "+strconv.Itoa(e.Status))
		}
	}
	if want := []string{"allow allowlisted 0", "deny private_address 403"}; len(got) != 2 || got[0] != want[0] || got[1] != want[1] {
		t.Errorf("decisions for the second request: got %q, want %q", got, want)
	}

	releaseOnce.Do(func() { close(release) })
	first, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil || first.StatusCode != http.StatusOK {
		t.Fatalf("first request: got %v, %v, want 200", first, err)
	}
	if n := f.res.callCount("rebind.b.test"); n != 2 {
		t.Errorf("lookups: got %d, want 2 (the first request's and the dial's)", n)
	}
	if got, want := dl.list(), []string{"127.0.0.1:" + strconv.Itoa(f.http.port)}; len(got) != 1 || got[0] != want[0] {
		t.Errorf("dialed %v, want only %v", got, want)
	}
	if n := f.http.count(); n != 1 {
		t.Errorf("upstream requests: got %d, want 1 (the held one)", n)
	}
}
