package policy

import (
	"fmt"
	"math"
	"strings"

	"github.com/egressd/egressd/internal/lib/canonpath"
)

// providerExtras checks what a provider entry adds to the gateway's
// built-in tables: endpoints may only be an unmetered GET or a POST with
// a declared price, so that nothing the policy opens is forwarded without
// either costing nothing or being charged.
func (c *compiler) providerExtras(path string, pc ProviderConfig) {
	for i := range pc.Endpoints {
		e := &pc.Endpoints[i]
		at := fmt.Sprintf("%s.endpoints[%d]", path, i)
		e.Method = strings.ToUpper(strings.TrimSpace(e.Method))
		if _, err := canonpath.Compile(e.Path); err != nil {
			c.errf(at+".path", "%v", err)
		}
		bad := math.IsNaN(e.PerCallUSD) || math.IsInf(e.PerCallUSD, 0) || e.PerCallUSD < 0
		switch {
		case e.Method != "GET" && e.Method != "POST":
			c.errf(at+".method", "%q: want GET (unmetered) or POST (with per_call_usd)", e.Method)
		case bad:
			c.errf(at+".per_call_usd", "%v: must be a non-negative amount", e.PerCallUSD)
		case e.Method == "GET" && e.PerCallUSD != 0:
			c.errf(at+".per_call_usd", "a GET endpoint is forwarded unmetered; only a POST takes a price")
		case e.Method == "POST" && e.PerCallUSD == 0:
			c.errf(at+".per_call_usd", "required for a POST endpoint: the USD it is charged per call")
		}
	}
	for i, f := range pc.AllowFields {
		if strings.TrimSpace(f) == "" || strings.ContainsAny(f, " \t\n\"") {
			c.errf(fmt.Sprintf("%s.allow_fields[%d]", path, i), "%q: want a top-level request field name", f)
		}
	}
	for i, t := range pc.AllowTools {
		if strings.TrimSpace(t) == "" || strings.ContainsAny(t, " \t\n\"") {
			c.errf(fmt.Sprintf("%s.allow_tools[%d]", path, i), "%q: want a tool type such as web_search_20250305 or plugin:web", t)
		}
	}
}

// toolFees checks budget.tool_fees: known families, non-negative amounts.
func (c *compiler) toolFees() {
	for k, v := range c.p.cfg.Budget.ToolFees {
		path := joinKey("budget.tool_fees", k)
		switch strings.ToLower(k) {
		case "web_search", "web_fetch", "file_search", "code_execution", "image_generation", "plugin:web", "web_search_options":
		default:
			c.errf(path, "unknown tool family: want web_search, web_fetch, file_search, code_execution, image_generation, plugin:web or web_search_options")
		}
		if math.IsNaN(v) || math.IsInf(v, 0) || v < 0 {
			c.errf(path, "%v: must be a non-negative amount (USD per use)", v)
		}
	}
}
