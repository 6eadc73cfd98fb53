package probe

import (
	"cmp"
	"encoding/json"
	"fmt"
	"io"
	"slices"
	"text/tabwriter"
	"time"
)

// Status is the outcome of one check.
type Status uint8

// Statuses. A Hole is a way out of (or into) the agent's network that does
// not pass egressd; a Fail is egressd or the network not behaving as the
// probe expects, which makes the wall unverifiable; Info is for the user
// to judge (lateral reach, routes).
const (
	Pass Status = iota
	Hole
	Fail
	Info
)

var statusNames = [...]string{"PASS", "HOLE", "FAIL", "INFO"}

func (s Status) String() string {
	if int(s) < len(statusNames) {
		return statusNames[s]
	}
	return "UNKNOWN"
}

// MarshalText makes Status a readable JSON string.
func (s Status) MarshalText() ([]byte, error) { return []byte(s.String()), nil }

// UnmarshalText is the inverse of MarshalText.
func (s *Status) UnmarshalText(b []byte) error {
	for i, n := range statusNames {
		if n == string(b) {
			*s = Status(i)
			return nil
		}
	}
	return fmt.Errorf("unknown probe status %q", b)
}

// Check names, in the order the report lists them.
const (
	CheckRoute     = "route"       // IPv4 default route
	CheckRoute6    = "route6"      // IPv6 default route
	CheckProxy     = "proxy"       // egressd's proxy answers
	CheckProxyDeny = "proxy-deny"  // an ungranted name is refused with 403
	CheckDNS       = "dns"         // an ungranted name gets NXDOMAIN, fast
	CheckAdmin     = "admin"       // egressd's admin listener is unreachable
	CheckHost      = "host"        // host addresses on common ports
	CheckDirect    = "direct"      // egress without the proxy
	CheckDirectDNS = "direct-dns"  // DNS to outside resolvers without egressd
	CheckLateral   = "lateral"     // other hosts on the agent's subnet
	CheckSetup     = "probe-setup" // the probe itself could not do something
)

var checkOrder = map[string]int{
	CheckSetup: 0, CheckRoute: 1, CheckRoute6: 2, CheckProxy: 3, CheckProxyDeny: 4,
	CheckDNS: 5, CheckAdmin: 6, CheckHost: 7, CheckDirect: 8, CheckDirectDNS: 9, CheckLateral: 10,
}

// Result is one line of the report.
type Result struct {
	Check  string `json:"check"`
	Target string `json:"target"`
	Status Status `json:"status"`
	Detail string `json:"detail"`
	Fix    string `json:"fix,omitempty"` // one line, for holes and failures
}

// Report is the outcome of Run.
type Report struct {
	Results  []Result      `json:"results"`
	Duration time.Duration `json:"duration_ns"`
}

// Count returns how many results have status s.
func (r *Report) Count(s Status) int {
	n := 0
	for _, res := range r.Results {
		if res.Status == s {
			n++
		}
	}
	return n
}

// OK reports whether the probe found no hole and no failure: the exit
// status of `egressd probe`.
func (r *Report) OK() bool { return r.Count(Hole) == 0 && r.Count(Fail) == 0 }

// Find returns the results of one check, in report order.
func (r *Report) Find(check string) []Result {
	var out []Result
	for _, res := range r.Results {
		if res.Check == check {
			out = append(out, res)
		}
	}
	return out
}

// sort puts results in the fixed check order, then by target, so two runs
// against the same network print the same table.
func (r *Report) sort() {
	slices.SortStableFunc(r.Results, func(a, b Result) int {
		return cmp.Or(cmp.Compare(checkOrder[a.Check], checkOrder[b.Check]), cmp.Compare(a.Target, b.Target))
	})
}

// Print writes the report as a table, a fix under each hole or failure, and
// a summary line.
func (r *Report) Print(w io.Writer) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "STATUS\tCHECK\tTARGET\tDETAIL")
	for _, res := range r.Results {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", res.Status, res.Check, res.Target, res.Detail)
		if res.Fix != "" {
			fmt.Fprintf(tw, "\t\t  fix:\t%s\n", res.Fix)
		}
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	verdict := "no hole found"
	if !r.OK() {
		verdict = "CONTAINMENT NOT VERIFIED"
	}
	_, err := fmt.Fprintf(w, "\n%s: %d hole(s), %d failure(s), %d passed, %d info, in %s\n",
		verdict, r.Count(Hole), r.Count(Fail), r.Count(Pass), r.Count(Info), r.Duration.Round(time.Millisecond))
	return err
}

// JSON writes the report as one JSON document.
func (r *Report) JSON(w io.Writer) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(r)
}
