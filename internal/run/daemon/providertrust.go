package daemon

import (
	"net/http"
	"net/url"
	"strings"

	"github.com/egressd/egressd/internal/lib/catrust"
	"github.com/egressd/egressd/policy"
)

// providerTrust is the provider gateway's upstream transport: a call to a
// provider whose entry names a ca_file goes through a transport trusting
// that bundle (a model server on the LAN with a private CA), every other
// call through def. The gateway never follows redirects, so a call's URL
// is always its provider's upstream.
type providerTrust struct {
	policy func() *policy.Policy
	def    http.RoundTripper
	cas    *catrust.Cache
}

func (t providerTrust) RoundTrip(req *http.Request) (*http.Response, error) {
	for _, pc := range t.policy().Config().Providers {
		if pc.CAFile == "" || !sameOrigin(pc.Upstream, req.URL) {
			continue
		}
		tr, err := t.cas.Get(pc.CAFile)
		if err != nil {
			if req.Body != nil {
				req.Body.Close()
			}
			return nil, err
		}
		return tr.RoundTrip(req)
	}
	return t.def.RoundTrip(req)
}

// sameOrigin reports whether u is on the upstream's scheme and host:port.
func sameOrigin(upstream string, u *url.URL) bool {
	b, err := url.Parse(upstream)
	return err == nil && b.Scheme == u.Scheme && strings.EqualFold(b.Host, u.Host)
}
