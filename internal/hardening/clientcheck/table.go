package clientcheck

import "strings"

// view is what one client shows of a refusal.
type view struct {
	client  string // as the README names it
	https   bool   // the reason token reaches its output for a refused CONNECT
	http    bool   // ... for a refused plain-HTTP request
	instead string // where to read the reason when the client does not show it
}

// views is measured by TestClientsShowReason and printed in the README.
var views = []view{
	{"curl", false, true, "`curl -v` prints the status line; `egressd tail --denied`"},
	{"curl -v", true, true, ""},
	{"wget", true, true, ""},
	{"git clone", false, true, "`GIT_TRACE_CURL=1 git ...` prints the status line; `egressd tail --denied`"},
	{"GIT_TRACE_CURL=1 git clone", true, true, ""},
	{"Python urllib", true, true, ""},
	{"Python requests", true, true, ""},
	{"Python httpx", true, true, ""},
	{"Go net/http", true, true, ""},
	{"Chromium", false, true, "`egressd tail --denied`"},
}

// tableHeading introduces the README table.
const tableHeading = "### Which clients show the reason"

// tableRows renders views as the README's markdown table.
func tableRows() []string {
	rows := []string{
		"| client | HTTPS (CONNECT refused) | plain HTTP | where to read the reason otherwise |",
		"| --- | --- | --- | --- |",
	}
	yes := map[bool]string{true: "shows it", false: "code only"}
	for _, v := range views {
		instead := v.instead
		if instead == "" {
			instead = "—"
		}
		rows = append(rows, "| `"+v.client+"` | "+yes[v.https]+" | "+yes[v.http]+" | "+instead+" |")
	}
	return rows
}

// readmeTable is the table under tableHeading in readme: its lines that
// start with "|", up to the first line that does not.
func readmeTable(readme string) []string {
	_, after, ok := strings.Cut(readme, tableHeading+"\n")
	if !ok {
		return nil
	}
	var rows []string
	started := false
	for _, line := range strings.Split(after, "\n") {
		if strings.HasPrefix(line, "|") {
			rows, started = append(rows, line), true
		} else if started {
			break
		}
	}
	return rows
}
