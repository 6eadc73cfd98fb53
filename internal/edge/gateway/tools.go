package gateway

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"

	"github.com/egressd/egressd/internal/shared/vocab"

	"github.com/egressd/egressd/internal/shared/meter"
)

// Granted provider-run tools. A tool the policy grants (allow_tools) may
// bill per use on top of tokens; its worst case is reserved: the bound on
// its uses times its fee (meter.ToolFee). The bound is the agent's own
// (Anthropic's per-tool max_uses, the Responses max_tool_calls, OpenRouter's
// plugin max_results) or, when the agent gave none, DefaultToolUses, which
// egressd then sends upstream so that the provider holds to it. The call
// settles from the uses the provider reports (Anthropic's
// usage.server_tool_use, the tool-call items of a Responses answer);
// OpenRouter's usage.cost, which includes its plugin fees, wins over both.
//
// A granted tool that fetches pages (web search and web fetch) is
// restricted to the allow-list: domains the agent names in allowed_domains
// must each be granted by the policy, and when it names none egressd sends
// the exact hosts of the allow-list as allowed_domains (a provider matches
// a domain's subdomains too; wildcard grants are not sent). OpenRouter's
// web plugin takes no such restriction: granting plugin:web lets its
// search engine fetch anywhere, and the README says so.

// DefaultToolUses bounds a granted per-use tool whose call names no bound.
const DefaultToolUses = 5

// toolPlan is the per-use side of one call's reservation.
type toolPlan struct {
	fees       map[string]float64 // family → fee per use, for the families the call may use
	reserved   map[string]int64   // family → uses reserved
	reserveUSD float64
}

func (p *toolPlan) add(family string, fee float64, uses int64) {
	if p.fees == nil {
		p.fees, p.reserved = map[string]float64{}, map[string]int64{}
	}
	p.fees[family] = fee
	p.reserved[family] += uses
	p.reserveUSD += fee * float64(uses)
}

// feesFor prices the uses u reports; families the provider does not
// count (OpenRouter's plugin, web_search_options) are charged as reserved.
func (p *toolPlan) feesFor(u meter.Usage) float64 {
	var usd float64
	for fam, fee := range p.fees {
		n := u.Tools.Get(fam)
		if fam == "plugin:web" || fam == "web_search_options" {
			n = p.reserved[fam]
		}
		usd += fee * float64(n)
	}
	return usd
}

// planTools prices the granted per-use tools of a call and rewrites the
// body to carry their bounds and domain restrictions.
func (c *call) planTools(s *shaped, g grants) (toolPlan, error) {
	var plan toolPlan
	m := c.h.meter
	fee := func(fam string) float64 { f, _ := m.ToolFee(fam); return f }
	perCall := int64(DefaultToolUses) // Responses: max_tool_calls bounds every built-in tool
	rewrite := false
	for i, mb := range s.members {
		switch foldKey(mb.key) {
		case "max_tool_calls":
			n, err := positiveInt(mb.raw, mb.key)
			if err != nil {
				return plan, err
			}
			if n > 0 {
				perCall = n
			}
		case "web_search_options":
			if string(bytes.TrimSpace(mb.raw)) != "null" {
				plan.add("web_search_options", fee("web_search_options"), 1)
			}
		case "plugins":
			if err := c.planPlugins(&plan, mb.raw, fee("plugin:web")); err != nil {
				return plan, err
			}
		case "tools":
			raw, changed, err := c.planToolList(&plan, mb.raw, g, fee)
			if err != nil {
				return plan, err
			}
			if changed {
				s.members[i].raw, rewrite = raw, true
			}
		}
	}
	if strings.HasSuffix(strings.ToLower(s.model), ":online") {
		plan.add("plugin:web", fee("plugin:web"), DefaultToolUses)
	}
	if c.ep.kind == kindResponses && plan.fees != nil {
		// One bound for every built-in tool call of the response.
		for fam := range plan.reserved {
			plan.reserveUSD -= plan.fees[fam] * float64(plan.reserved[fam])
			plan.reserved[fam] = perCall
			plan.reserveUSD += plan.fees[fam] * float64(perCall)
		}
		s.setMember("max_tool_calls", []byte(strconv.FormatInt(perCall, 10)))
		rewrite = true
	}
	if rewrite {
		s.body = encodeObject(s.members)
	}
	return plan, nil
}

// planToolList reserves each granted per-use tool of a tools list and
// returns the list with bounds and domain restrictions added.
func (c *call) planToolList(plan *toolPlan, raw json.RawMessage, g grants, fee func(string) float64) (json.RawMessage, bool, error) {
	var tools []map[string]json.RawMessage
	if string(bytes.TrimSpace(raw)) == "null" || json.Unmarshal(raw, &tools) != nil {
		return raw, false, nil // checkTools has judged the shape
	}
	changed := false
	for _, t := range tools {
		typ := strings.ToLower(stringMember(t, "type"))
		fam := meter.ToolFamily(typ)
		if g.clientTool(typ) || fam == "" {
			continue
		}
		uses := int64(DefaultToolUses)
		if c.format == meter.FormatAnthropic {
			n, err := toolMaxUses(t)
			if err != nil {
				return nil, false, err
			}
			if n > 0 {
				uses = n
			}
			t["max_uses"] = json.RawMessage(strconv.FormatInt(uses, 10))
		}
		if fam == "web_search" || fam == "web_fetch" {
			if err := restrictDomains(t, c.format, g); err != nil {
				return nil, false, err
			}
		}
		plan.add(fam, fee(fam), uses)
		changed = true
	}
	if !changed {
		return raw, false, nil
	}
	b, err := json.Marshal(tools)
	return b, true, err
}

// planPlugins reserves OpenRouter's web plugin per result it may return.
func (c *call) planPlugins(plan *toolPlan, raw json.RawMessage, fee float64) error {
	var ps []map[string]json.RawMessage
	if json.Unmarshal(raw, &ps) != nil {
		return nil
	}
	for _, p := range ps {
		if strings.ToLower(stringMember(p, "id")) != "web" {
			continue
		}
		n := int64(DefaultToolUses)
		if r, ok := p["max_results"]; ok {
			v, err := positiveInt(r, "plugins[].max_results")
			if err != nil {
				return err
			}
			n = max(v, 1)
		}
		plan.add("plugin:web", fee, n)
	}
	return nil
}

// toolMaxUses reads a tool's max_uses (0 = none); spellings differing
// only in case are refused, as duplicate top-level keys are.
func toolMaxUses(t map[string]json.RawMessage) (int64, error) {
	var n int64
	seen := 0
	for k, v := range t {
		if foldKey(k) != "max_uses" {
			continue
		}
		if seen++; seen > 1 || k != "max_uses" {
			return 0, fmt.Errorf(`a tool's "max_uses" must be written once, in lower case`)
		}
		var err error
		if n, err = positiveInt(v, "max_uses"); err != nil {
			return 0, err
		}
	}
	return n, nil
}

// restrictDomains checks the domains a fetching tool names against the
// policy, or sets them to the allow-list's exact hosts.
func restrictDomains(t map[string]json.RawMessage, f meter.Format, g grants) error {
	holder, key := t, "allowed_domains"
	var filters map[string]json.RawMessage
	if f != meter.FormatAnthropic {
		// OpenAI's web_search: filters.allowed_domains.
		if raw, ok := t["filters"]; ok && json.Unmarshal(raw, &filters) != nil {
			return fmt.Errorf(`a web_search tool's "filters" must be an object`)
		}
		if filters == nil {
			filters = map[string]json.RawMessage{}
		}
		holder = filters
	}
	var domains []string
	if raw, ok := holder[key]; ok && string(bytes.TrimSpace(raw)) != "null" {
		if json.Unmarshal(raw, &domains) != nil {
			return fmt.Errorf("%s must be a list of domain names", key)
		}
	}
	if len(domains) == 0 {
		domains = g.grantedHosts()
		if len(domains) == 0 {
			return &reachError{vocab.ReasonNotAllowlisted, "a web search or fetch tool is granted, but the allow-list names no host it could be restricted to"}
		}
	}
	for _, d := range domains {
		if err := checkURL(key, "https://"+strings.TrimPrefix(strings.TrimPrefix(d, "https://"), "http://")+"/", g); err != nil {
			return err
		}
	}
	b, _ := json.Marshal(domains)
	holder[key] = b
	if filters != nil {
		t["filters"], _ = json.Marshal(filters)
	}
	return nil
}

// stringMember reads a string member by its folded key.
func stringMember(obj map[string]json.RawMessage, key string) string {
	for k, v := range obj {
		if foldKey(k) == key {
			var s string
			_ = json.Unmarshal(v, &s)
			return s
		}
	}
	return ""
}

// setMember replaces (or appends) a top-level member.
func (s *shaped) setMember(key string, raw json.RawMessage) {
	for i, m := range s.members {
		if foldKey(m.key) == foldKey(key) {
			s.members[i].raw = raw
			return
		}
	}
	s.members = append(s.members, member{key, raw})
}
