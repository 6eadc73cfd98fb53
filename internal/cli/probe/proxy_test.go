package probe

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// fakeProxy answers every request, CONNECT included, with status and the
// reason header when reason is set: it stands in for egressd's proxy in
// front of the probe, which only reads the answer.
func fakeProxy(t *testing.T, status int, reason string) string {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodConnect && !strings.HasPrefix(r.RequestURI, "http://egressd-probe.invalid/") {
			t.Errorf("proxy got %s %s, want an absolute URI for the denied name", r.Method, r.RequestURI)
		}
		if r.Method == http.MethodConnect && r.Host != "egressd-probe.invalid:443" {
			t.Errorf("CONNECT authority %q, want egressd-probe.invalid:443", r.Host)
		}
		if reason != "" {
			w.Header().Set("X-Egressd-Reason", reason)
		}
		w.WriteHeader(status)
	}))
	t.Cleanup(srv.Close)
	return srv.URL
}

func TestProxyChecks(t *testing.T) {
	tests := []struct {
		name   string
		proxy  string
		proxyS Status
		deny   Status
		detail string
	}{
		{"egressd denies", fakeProxy(t, 403, "not_allowlisted"), Pass, Pass, "403 not_allowlisted"},
		{"open proxy", fakeProxy(t, 200, ""), Pass, Hole, "200 OK: the proxy did not refuse"},
		{"not egressd", fakeProxy(t, 403, ""), Pass, Fail, "403 without X-Egressd-Reason"},
		{"unreachable", "http://" + closedPort(t), Fail, Pass, ""},
	}
	for _, tt := range tests {
		rep := run(t, Options{Proxy: tt.proxy})
		if r := only(t, rep, CheckProxy); r.Status != tt.proxyS {
			t.Errorf("%s: proxy check got %v (%s), want %v", tt.name, r.Status, r.Detail, tt.proxyS)
		}
		deny := rep.Find(CheckProxyDeny)
		if tt.proxyS == Fail {
			if len(deny) != 0 {
				t.Errorf("%s: deny checks ran against an unreachable proxy: %+v", tt.name, deny)
			}
			continue
		}
		if len(deny) != 2 {
			t.Fatalf("%s: got %d deny results, want 2 (http and CONNECT)", tt.name, len(deny))
		}
		for _, r := range deny {
			if r.Status != tt.deny || !strings.HasPrefix(r.Detail, tt.detail) {
				t.Errorf("%s: %s got %v %q, want %v %q...", tt.name, r.Target, r.Status, r.Detail, tt.deny, tt.detail)
			}
		}
	}
}
