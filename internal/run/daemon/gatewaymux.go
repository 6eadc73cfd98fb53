package daemon

import (
	"net/http"

	"github.com/egressd/egressd/internal/edge/apiroute"
	"github.com/egressd/egressd/policy"
)

// gatewayMux serves the gateway listener: /<name>/... goes to the apis:
// route handler when the current policy has a route called name, and
// everything else to the provider gateway. Route and provider names never
// collide (the policy refuses that), so the order does not hide either.
type gatewayMux struct {
	policy    func() *policy.Policy
	apis      *apiroute.Handler
	providers http.Handler
}

func (m gatewayMux) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if m.apis.RouteName(m.policy(), r.URL.EscapedPath()) != "" {
		m.apis.ServeHTTP(w, r)
		return
	}
	m.providers.ServeHTTP(w, r)
}
