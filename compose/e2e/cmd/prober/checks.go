package main

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/egressd/egressd/internal/cli/probe"
)

// Check is one thing the test asks the prober to try.
type Check struct {
	ID        string            `json:"id"`
	Kind      string            `json:"kind"` // http | connect | dns | tcp | env
	TimeoutMS int               `json:"timeout_ms,omitempty"`
	Proxy     string            `json:"proxy,omitempty"`  // http, connect: proxy URL ("" = direct)
	URL       string            `json:"url,omitempty"`    // http
	Method    string            `json:"method,omitempty"` // http; default GET
	Body      string            `json:"body,omitempty"`   // http
	Header    map[string]string `json:"header,omitempty"` // http
	CAFile    string            `json:"ca_file,omitempty"`
	Target    string            `json:"target,omitempty"` // connect: host:port; tcp: ip:port
	Server    string            `json:"server,omitempty"` // dns: ip:port
	Name      string            `json:"name,omitempty"`   // dns
}

// Result is what the prober saw.
type Result struct {
	ID     string            `json:"id"`
	Err    string            `json:"err,omitempty"`
	Status int               `json:"status,omitempty"` // http, connect
	Reason string            `json:"reason,omitempty"` // X-Egressd-Reason
	Body   string            `json:"body,omitempty"`   // first 4 KiB
	Header map[string]string `json:"header,omitempty"`
	Rcode  string            `json:"rcode,omitempty"` // dns
	Addrs  []string          `json:"addrs,omitempty"` // dns
	Reach  string            `json:"reach,omitempty"` // tcp
	MS     int64             `json:"ms"`
	Env    []string          `json:"env,omitempty"`
}

func (c Check) run(ctx context.Context, timeout time.Duration) Result {
	start := time.Now()
	var r Result
	var err error
	switch c.Kind {
	case "http":
		r, err = c.http(ctx)
	case "connect":
		r, err = c.connect(ctx)
	case "dns":
		var ans probe.Answer
		ans, err = probe.LookupA(ctx, nil, c.Server, c.Name)
		r.Rcode = probe.RcodeName(ans.Rcode)
		for _, a := range ans.Addrs {
			r.Addrs = append(r.Addrs, a.String())
		}
	case "tcp":
		var reach probe.Reach
		reach, err = probe.TCP(ctx, nil, c.Target, timeout)
		r.Reach = reach.String()
	case "env":
		r.Env = os.Environ()
	default:
		err = fmt.Errorf("unknown check kind %q", c.Kind)
	}
	if err != nil {
		r.Err = err.Error()
	}
	r.MS = time.Since(start).Milliseconds()
	return r
}

func (c Check) tlsConfig() (*tls.Config, error) {
	if c.CAFile == "" {
		return nil, nil
	}
	pem, err := os.ReadFile(c.CAFile)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("no certificate in %s", c.CAFile)
	}
	return &tls.Config{RootCAs: pool}, nil
}

// http sends one request, through the proxy when one is given (for https
// URLs that is a CONNECT tunnel with TLS verified against CAFile).
func (c Check) http(ctx context.Context) (Result, error) {
	tcfg, err := c.tlsConfig()
	if err != nil {
		return Result{}, err
	}
	tr := &http.Transport{TLSClientConfig: tcfg, DisableKeepAlives: true, Proxy: nil}
	if c.Proxy != "" {
		u, err := url.Parse(c.Proxy)
		if err != nil {
			return Result{}, err
		}
		tr.Proxy = http.ProxyURL(u)
	}
	defer tr.CloseIdleConnections()
	req, err := http.NewRequestWithContext(ctx, cmpOr(c.Method, http.MethodGet), c.URL, strings.NewReader(c.Body))
	if err != nil {
		return Result{}, err
	}
	for k, v := range c.Header {
		req.Header.Set(k, v)
	}
	resp, err := (&http.Client{Transport: tr}).Do(req)
	if err != nil {
		return Result{}, err
	}
	return readResponse(resp)
}

// connect opens a CONNECT tunnel by hand and reports the proxy's answer:
// the test needs the 403 and its reason, which net/http's transport hides
// behind an error.
func (c Check) connect(ctx context.Context) (Result, error) {
	u, err := url.Parse(c.Proxy)
	if err != nil {
		return Result{}, err
	}
	conn, err := (&net.Dialer{}).DialContext(ctx, "tcp", u.Host)
	if err != nil {
		return Result{}, err
	}
	defer conn.Close()
	if dl, ok := ctx.Deadline(); ok {
		conn.SetDeadline(dl)
	}
	fmt.Fprintf(conn, "CONNECT %s HTTP/1.1\r\nHost: %s\r\n\r\n", c.Target, c.Target)
	resp, err := http.ReadResponse(bufio.NewReader(conn), &http.Request{Method: http.MethodConnect})
	if err != nil {
		return Result{}, err
	}
	return readResponse(resp)
}

func readResponse(resp *http.Response) (Result, error) {
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 4096))
	r := Result{Status: resp.StatusCode, Reason: resp.Header.Get("X-Egressd-Reason"), Body: string(body), Header: map[string]string{}}
	for k := range resp.Header {
		r.Header[k] = resp.Header.Get(k)
	}
	return r, err
}

func cmpOr(s, def string) string {
	if s == "" {
		return def
	}
	return s
}
