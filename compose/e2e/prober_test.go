//go:build e2e

package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"
)

// check and result mirror cmd/prober's JSON.
type check struct {
	ID        string            `json:"id"`
	Kind      string            `json:"kind"`
	TimeoutMS int               `json:"timeout_ms,omitempty"`
	Proxy     string            `json:"proxy,omitempty"`
	URL       string            `json:"url,omitempty"`
	Method    string            `json:"method,omitempty"`
	Body      string            `json:"body,omitempty"`
	Header    map[string]string `json:"header,omitempty"`
	CAFile    string            `json:"ca_file,omitempty"`
	Target    string            `json:"target,omitempty"`
	Server    string            `json:"server,omitempty"`
	Name      string            `json:"name,omitempty"`
}

type result struct {
	ID     string            `json:"id"`
	Err    string            `json:"err"`
	Status int               `json:"status"`
	Reason string            `json:"reason"`
	Body   string            `json:"body"`
	Header map[string]string `json:"header"`
	Rcode  string            `json:"rcode"`
	Addrs  []string          `json:"addrs"`
	Reach  string            `json:"reach"`
	MS     int64             `json:"ms"`
	Env    []string          `json:"env"`
}

func (r result) String() string {
	b, _ := json.Marshal(r)
	return string(b)
}

// fromAgent runs checks inside the agent container (the prober) and returns
// the results by ID.
func (s *stack) fromAgent(t *testing.T, ctx context.Context, agent string, checks []check) map[string]result {
	t.Helper()
	spec, err := json.Marshal(checks)
	if err != nil {
		t.Fatal(err)
	}
	out, err := runCmd(ctx, nil, "docker", "exec", agent, "/prober", "run", string(spec))
	if err != nil {
		t.Fatalf("prober: %v", err)
	}
	var res []result
	decodeJSON(t, "prober output", out.out, &res)
	byID := make(map[string]result, len(res))
	for _, r := range res {
		byID[r.ID] = r
	}
	return byID
}

// seen is the fake internet's record of what reached it.
type seen struct {
	Queries []struct {
		Name string `json:"name"`
		Type uint16 `json:"type"`
		From string `json:"from"`
	} `json:"queries"`
	Requests []struct {
		Host          string `json:"host"`
		Method        string `json:"method"`
		Path          string `json:"path"`
		TLS           bool   `json:"tls"`
		Authorization string `json:"authorization"`
	} `json:"requests"`
}

// fakeSeen asks the fake internet's control port, from the host, over the
// outside network the test created.
func (s *stack) fakeSeen(t *testing.T, ctx context.Context) seen {
	t.Helper()
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, fmt.Sprintf("http://%s:8053/seen", s.fakeIP), nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := (&http.Client{Transport: &http.Transport{Proxy: nil}}).Do(req)
	if err != nil {
		t.Fatalf("fake internet control port: %v", err)
	}
	defer resp.Body.Close()
	b, err := readAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	var out seen
	decodeJSON(t, "fake internet /seen", string(b), &out)
	return out
}

// queried reports whether the fake internet's DNS saw a query for name.
func (sn seen) queried(name string) bool {
	for _, q := range sn.Queries {
		if strings.EqualFold(strings.TrimSuffix(q.Name, "."), name) {
			return true
		}
	}
	return false
}
