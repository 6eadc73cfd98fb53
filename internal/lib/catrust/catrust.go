// Package catrust owns per-upstream trust: HTTP transports that trust a
// named PEM bundle (a private CA for a server on the LAN) instead of the
// system roots, built once per bundle and rebuilt when the file changes,
// so an upstream's CA never replaces egressd's trust store.
package catrust

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net/http"
	"os"
	"sync"
)

// Cache hands out transports by bundle path. Safe for concurrent use.
type Cache struct {
	base func() *http.Transport
	mu   sync.Mutex
	m    map[string]*entry
}

type entry struct {
	stamp string // modification time and size of the bundle when read
	t     *http.Transport
}

// New returns a cache whose transports are base() with the bundle's
// certificates as their only roots; base is called once per transport
// built, and its TLSClientConfig (if any) is kept otherwise.
func New(base func() *http.Transport) *Cache {
	return &Cache{base: base, m: map[string]*entry{}}
}

// Get returns the transport trusting caFile, or the system roots for "".
// A file that cannot be read or holds no PEM certificate is an error, so
// the caller fails closed rather than falling back to other roots.
func (c *Cache) Get(caFile string) (*http.Transport, error) {
	stamp := ""
	if caFile != "" {
		fi, err := os.Stat(caFile)
		if err != nil {
			return nil, fmt.Errorf("ca_file: %w", err)
		}
		stamp = fmt.Sprint(fi.ModTime().UnixNano(), "/", fi.Size())
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if e := c.m[caFile]; e != nil && e.stamp == stamp {
		return e.t, nil
	}
	t := c.base()
	if caFile != "" {
		pem, err := os.ReadFile(caFile)
		if err != nil {
			return nil, fmt.Errorf("ca_file: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("ca_file %s: no PEM certificate in it", caFile)
		}
		if t.TLSClientConfig == nil {
			t.TLSClientConfig = &tls.Config{MinVersion: tls.VersionTLS12}
		}
		t.TLSClientConfig.RootCAs = pool
	}
	if old := c.m[caFile]; old != nil {
		old.t.CloseIdleConnections()
	}
	c.m[caFile] = &entry{stamp: stamp, t: t}
	return t, nil
}
