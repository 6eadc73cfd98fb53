package policy

import (
	"fmt"
	"strconv"
	"strings"

	"github.com/egressd/egressd/internal/shared/vocab"
)

// String renders the rule as it would appear in policy.yaml, one line:
// `allow[3] host: "*.github.com" ports: [443]`. Provider reservations
// render as `providers.openrouter host: "openrouter.ai"`.
func (r *Rule) String() string {
	if r == nil {
		return ""
	}
	if r.text != "" {
		return r.text
	}
	return r.render()
}

func (r *Rule) render() string {
	var b strings.Builder
	switch {
	case r.Provider != "":
		b.WriteString(joinKey("providers", r.Provider))
	case r.API != "":
		b.WriteString(joinKey("apis", r.API))
	default:
		fmt.Fprintf(&b, "allow[%d]", r.Index)
	}
	if r.Host != "" {
		fmt.Fprintf(&b, " host: %q", r.Host)
	} else {
		fmt.Fprintf(&b, " cidr: %s", r.Prefix)
	}
	if r.Provider != "" || r.API != "" {
		return b.String()
	}
	b.WriteString(" ports: ")
	b.WriteString(portList(r.Ports))
	if r.Rate != nil {
		fmt.Fprintf(&b, " rate: {rps: %v, burst: %d}", r.Rate.RPS, r.Rate.Burst)
	}
	return b.String()
}

func portList(ports []uint16) string {
	s := make([]string, len(ports))
	for i, p := range ports {
		s[i] = strconv.Itoa(int(p))
	}
	return "[" + strings.Join(s, ", ") + "]"
}

// Hint is the one-line, actionable grant text for a denial, e.g.
// `add "- host: evil.example" under allow:`; "" when no grant can help
// (allowed requests, rate limits, malformed requests, ...).
func Hint(req Request, d Decision) string {
	if d.Verdict == vocab.Allow || req.Proto == vocab.ProtoGateway {
		return "" // the gateway reaches providers: only; allow: cannot widen it
	}
	switch d.Reason {
	case vocab.ReasonNotAllowlisted:
		name, ip, prob := normalizeHost(req.Host)
		if prob != hostOK || ip.IsValid() {
			return ""
		}
		return grantHint("host: "+name, req)
	case vocab.ReasonPortNotAllowed:
		if d.Rule == nil || d.Rule.Index < 0 {
			return ""
		}
		return fmt.Sprintf("add %d to ports: of allow[%d]", req.Port, d.Rule.Index)
	case vocab.ReasonIPLiteralNotAllowed:
		_, ip, prob := normalizeHost(req.Host)
		if prob != hostOK || !ip.IsValid() {
			return ""
		}
		return grantHint("cidr: "+hostPrefix(ip).String(), req)
	case vocab.ReasonPrivateAddress:
		return privateHint(req)
	case vocab.ReasonMetadataAddress:
		return "cloud metadata addresses can never be granted"
	case vocab.ReasonUseGateway:
		switch {
		case d.Rule == nil:
			return ""
		case d.Rule.Provider != "":
			return fmt.Sprintf("send provider calls to the egressd gateway at /%s/ instead", d.Rule.Provider)
		case d.Rule.API != "":
			return fmt.Sprintf("call the egressd gateway's route instead: base URL http://<gateway>/%s in place of %s, with the agent token", d.Rule.API, d.Rule.Base)
		}
		return ""
	case vocab.ReasonDeniedNetwork:
		return "the address is in networks.deny:"
	}
	return ""
}

// grantHint writes an allow entry as copy-pastable YAML: the plain form for
// port 443 (and DNS, where ports do not matter), the flow form otherwise.
func grantHint(target string, req Request) string {
	if req.Proto == vocab.ProtoDNS || req.Port == 443 || req.Port == 0 {
		return fmt.Sprintf("add \"- %s\" under allow:", target)
	}
	return fmt.Sprintf("add \"- {%s, ports: [%d]}\" under allow:", target, req.Port)
}

// privateHint explains that allow: cannot grant a private address: only
// networks.allow can, and only on purpose.
func privateHint(req Request) string {
	_, ip, prob := normalizeHost(req.Host)
	if prob != hostOK || !ip.IsValid() {
		return "the name resolves to a private or special address; allow: cannot grant it (only networks.allow: can)"
	}
	return fmt.Sprintf("%s is a %s address; allow: cannot grant it, only \"- %s\" under networks.allow: can",
		ip, Classify(ip), hostPrefix(ip))
}
