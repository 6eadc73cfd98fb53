package probe

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

func TestReportPrint(t *testing.T) {
	rep := &Report{Duration: 1500 * time.Millisecond, Results: []Result{
		{Check: CheckHost, Target: "172.30.0.1", Status: Hole, Detail: "connected on 22", Fix: "egressd hostwall --bridge hermes0 --apply"},
		{Check: CheckDNS, Target: "172.30.0.2:53", Status: Pass, Detail: "NXDOMAIN in 2ms"},
		{Check: CheckLateral, Target: "172.30.0.3", Status: Info, Detail: "answers on 6379"},
	}}
	rep.sort()
	var buf bytes.Buffer
	if err := rep.Print(&buf); err != nil {
		t.Fatal(err)
	}
	got := strings.Split(strings.TrimRight(buf.String(), "\n"), "\n")
	want := []string{
		"STATUS  CHECK    TARGET         DETAIL",
		"PASS    dns      172.30.0.2:53  NXDOMAIN in 2ms",
		"HOLE    host     172.30.0.1     connected on 22",
		"                   fix:         egressd hostwall --bridge hermes0 --apply",
		"INFO    lateral  172.30.0.3     answers on 6379",
		"",
		"CONTAINMENT NOT VERIFIED: 1 hole(s), 0 failure(s), 1 passed, 1 info, in 1.5s",
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("Print mismatch (-want +got):\n%s", diff)
	}
	if rep.OK() {
		t.Error("OK() with a hole: got true, want false")
	}
}

func TestReportJSON(t *testing.T) {
	rep := &Report{Results: []Result{{Check: CheckAdmin, Target: "a", Status: Fail, Detail: "d", Fix: "f"}}}
	var buf bytes.Buffer
	if err := rep.JSON(&buf); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(buf.String(), `"status": "FAIL"`) {
		t.Errorf("JSON: got %s, want status as text", buf.String())
	}
	var back Report
	if err := json.Unmarshal(buf.Bytes(), &back); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(rep.Results, back.Results); diff != "" {
		t.Errorf("JSON round trip mismatch (-want +got):\n%s", diff)
	}
}
