package gateway

import (
	"errors"
	"fmt"
	"strings"

	"github.com/egressd/egressd/internal/shared/vocab"

	"github.com/egressd/egressd/internal/lib/canonpath"
	"github.com/egressd/egressd/internal/shared/meter"
	"github.com/egressd/egressd/policy"
)

// Route is how the gateway would treat one call, for `egressd explain`.
type Route struct {
	Method      string
	Path        string // the canonical path the agent sent after /<provider>
	Forwarded   bool
	Reason      vocab.Reason
	Upstream    string // the URL forwarded to; "" when refused
	Endpoint    string // the table row's name (chat_completions, free, ...)
	Billing     string
	Reservation string
}

// Explain says how a call of method (any method the table allows when
// "") to path on provider name would be treated: forwarded where, billed
// and reserved how, or refused with which reason. It answers from the
// same table and canonicalisation the gateway serves with.
func Explain(providers map[string]policy.ProviderConfig, name, method, path string) ([]Route, error) {
	shown := strings.ToUpper(method)
	if shown == "" {
		shown = "GET/POST"
	}
	prov, ok := providers[strings.ToLower(name)]
	if !ok {
		return []Route{{Method: shown, Path: path, Reason: vocab.ReasonNotAllowlisted}}, nil
	}
	f, err := meter.ParseFormat(prov.Format)
	if err != nil {
		return nil, err
	}
	rest, err := canonpath.Clean(path)
	if err != nil {
		return []Route{{Method: shown, Path: path, Reason: vocab.ReasonBadRequest}}, nil
	}
	base, full, err := upstreamPath(prov.Upstream, rest)
	if err != nil {
		return nil, fmt.Errorf("provider %s: %w", name, err)
	}
	methods := []string{strings.ToUpper(method)}
	if method == "" {
		methods = []string{"GET", "POST"}
	}
	var out []Route
	for _, m := range methods {
		e, fwd, ok := lookup(f, prov.Endpoints, m, full)
		if !ok {
			continue
		}
		info := kindInfo[e.kind]
		r := Route{Method: m, Path: rest, Forwarded: true, Reason: vocab.ReasonAllowlisted,
			Upstream: base + fwd, Endpoint: info.name, Billing: info.billing, Reservation: info.reservation}
		if e.kind == kindFixed {
			r.Billing = fmt.Sprintf("$%g per call (declared in providers.%s.endpoints)", e.price, name)
			r.Reservation = r.Billing
		}
		out = append(out, r)
	}
	if len(out) == 0 {
		out = append(out, Route{Method: shown, Path: rest, Reason: vocab.ReasonEndpointNotAllowed})
	}
	return out, nil
}

// ErrNotGateway is returned by ParseGatewayTarget for other targets.
var ErrNotGateway = errors.New("not a gateway target")

// ParseGatewayTarget splits "gateway:<provider>/<path>".
func ParseGatewayTarget(s string) (provider, path string, err error) {
	rest, ok := strings.CutPrefix(s, "gateway:")
	if !ok {
		return "", "", ErrNotGateway
	}
	rest = strings.TrimPrefix(rest, "/")
	provider, path, _ = strings.Cut(rest, "/")
	if provider == "" {
		return "", "", errors.New("want gateway:<provider>/<path>, e.g. gateway:openrouter/api/v1/chat/completions")
	}
	return provider, "/" + path, nil
}
