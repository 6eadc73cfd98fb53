package catrust

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"io"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"testing"
	"time"
)

func writePEM(t *testing.T, path string, srv *httptest.Server) {
	t.Helper()
	b := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw})
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
}

func get(t *testing.T, tr http.RoundTripper, url string) error {
	t.Helper()
	req, _ := http.NewRequest("GET", url, nil)
	resp, err := tr.RoundTrip(req)
	if err != nil {
		return err
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return nil
}

// TestBundleTrustedAndReplaced: a transport trusts exactly its bundle, a
// replaced bundle takes effect on the next Get, and a bad file is an error.
func TestBundleTrustedAndReplaced(t *testing.T) {
	ok := func(w http.ResponseWriter, _ *http.Request) {}
	a := httptest.NewTLSServer(http.HandlerFunc(ok))
	defer a.Close()
	b := httptest.NewUnstartedServer(http.HandlerFunc(ok))
	b.TLS = &tls.Config{Certificates: []tls.Certificate{selfSigned(t)}} // httptest's own CA is shared by every server
	b.StartTLS()
	defer b.Close()
	dir := t.TempDir()
	ca := filepath.Join(dir, "ca.pem")
	writePEM(t, ca, a)
	c := New(func() *http.Transport { return &http.Transport{DisableKeepAlives: true} })

	tr, err := c.Get(ca)
	if err != nil {
		t.Fatal(err)
	}
	if err := get(t, tr, a.URL); err != nil {
		t.Errorf("server of the bundle: %v, want trusted", err)
	}
	if err := get(t, tr, b.URL); err == nil {
		t.Error("another CA's server was trusted")
	}
	if again, _ := c.Get(ca); again != tr {
		t.Error("an unchanged bundle built a new transport")
	}

	writePEM(t, ca, b)
	future := time.Now().Add(time.Minute) // a distinct mtime even on coarse clocks
	if err := os.Chtimes(ca, future, future); err != nil {
		t.Fatal(err)
	}
	tr2, err := c.Get(ca)
	if err != nil {
		t.Fatal(err)
	}
	if err := get(t, tr2, b.URL); err != nil {
		t.Errorf("after the bundle was replaced: %v, want the new CA trusted", err)
	}

	for name, content := range map[string]string{"empty.pem": "", "junk.pem": "not a certificate"} {
		p := filepath.Join(dir, name)
		os.WriteFile(p, []byte(content), 0o600)
		if _, err := c.Get(p); err == nil {
			t.Errorf("Get(%s) = nil error, want a refusal", name)
		}
	}
	if _, err := c.Get(filepath.Join(dir, "missing.pem")); err == nil {
		t.Error("Get(missing file) = nil error, want a refusal")
	}
	sys, err := c.Get("")
	if err != nil || sys.TLSClientConfig != nil && sys.TLSClientConfig.RootCAs != nil {
		t.Errorf("Get(\"\") = %v, %v; want the system roots", sys, err)
	}
}

// selfSigned is a loopback server certificate that is its own CA.
func selfSigned(t *testing.T) tls.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "catrust test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true,
		KeyUsage:    x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}
