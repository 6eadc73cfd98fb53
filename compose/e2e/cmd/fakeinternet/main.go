// Command fakeinternet is the whole "internet" of the containment test: one
// container on egressd's outside network serving plain HTTP, HTTPS (with a
// certificate the test generated), an OpenAI-shaped chat completions API
// standing for the model provider, and an authoritative DNS server for the
// test's names. It records every DNS query and every HTTP request it sees,
// and serves that record on a control port, so the test can prove that a
// denied name never reached it.
package main

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"flag"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/signal"
	"strings"
	"sync"
	"syscall"
	"time"
)

// maxLog bounds each record so a flood cannot exhaust memory.
const maxLog = 10000

// Query is one DNS question the server received.
type Query struct {
	Name string `json:"name"`
	Type uint16 `json:"type"`
	From string `json:"from"`
}

// Request is one HTTP request the server received.
type Request struct {
	Host          string `json:"host"`
	Method        string `json:"method"`
	Path          string `json:"path"`
	TLS           bool   `json:"tls"`
	From          string `json:"from"`
	Authorization string `json:"authorization,omitempty"`
}

// Seen is what the control port serves.
type Seen struct {
	Queries  []Query   `json:"queries"`
	Requests []Request `json:"requests"`
}

type recorder struct {
	mu   sync.Mutex
	seen Seen
}

func (r *recorder) query(q Query) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.seen.Queries) < maxLog {
		r.seen.Queries = append(r.seen.Queries, q)
	}
}

func (r *recorder) request(q Request) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.seen.Requests) < maxLog {
		r.seen.Requests = append(r.seen.Requests, q)
	}
}

func (r *recorder) ServeHTTP(w http.ResponseWriter, _ *http.Request) {
	r.mu.Lock()
	defer r.mu.Unlock()
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(r.seen)
}

// records collects repeated -record name=ip flags.
type records map[string]netip.Addr

func (r records) String() string { return fmt.Sprint(map[string]netip.Addr(r)) }

func (r records) Set(s string) error {
	name, ip, ok := strings.Cut(s, "=")
	a, err := netip.ParseAddr(ip)
	if !ok || err != nil || !a.Is4() {
		return fmt.Errorf("record %q: want name=ipv4", s)
	}
	r[canonical(name)] = a
	return nil
}

func canonical(name string) string { return strings.ToLower(strings.TrimSuffix(name, ".")) }

func main() {
	recs := records{}
	flag.Var(recs, "record", "name=ipv4 answered by the DNS server (repeatable)")
	dnsAddr := flag.String("dns", ":53", "DNS listen address (UDP and TCP)")
	httpAddr := flag.String("http", ":80", "HTTP listen address")
	httpsAddr := flag.String("https", ":443", "HTTPS listen address")
	control := flag.String("control", ":8053", "control listen address (GET /seen)")
	cert := flag.String("cert", "/e2e/certs/cert.pem", "TLS certificate")
	key := flag.String("key", "/e2e/certs/key.pem", "TLS key")
	apiKey := flag.String("api-key", "", "the real provider key the chat API accepts")
	flag.Parse()

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	if err := serve(ctx, recs, *dnsAddr, *httpAddr, *httpsAddr, *control, *cert, *key, *apiKey); err != nil {
		fmt.Fprintln(os.Stderr, "fakeinternet:", err)
		os.Exit(1)
	}
}

func serve(ctx context.Context, recs records, dnsAddr, httpAddr, httpsAddr, control, cert, key, apiKey string) error {
	rec := &recorder{}
	pair, err := tls.LoadX509KeyPair(cert, key)
	if err != nil {
		return err
	}
	web := &site{rec: rec, apiKey: apiKey}
	servers := []*http.Server{
		{Addr: httpAddr, Handler: web, ReadHeaderTimeout: 5 * time.Second},
		{Addr: httpsAddr, Handler: web, ReadHeaderTimeout: 5 * time.Second, TLSConfig: &tls.Config{Certificates: []tls.Certificate{pair}}},
		{Addr: control, Handler: rec, ReadHeaderTimeout: 5 * time.Second},
	}
	pc, err := net.ListenPacket("udp", dnsAddr)
	if err != nil {
		return err
	}
	tl, err := net.Listen("tcp", dnsAddr)
	if err != nil {
		return err
	}
	d := &dnsServer{rec: rec, records: recs}
	errc := make(chan error, 5)
	go func() { errc <- d.serveUDP(pc) }()
	go func() { errc <- d.serveTCP(tl) }()
	for i, s := range servers {
		go func() {
			if i == 1 {
				errc <- s.ListenAndServeTLS("", "")
				return
			}
			errc <- s.ListenAndServe()
		}()
	}
	fmt.Fprintln(os.Stderr, "fakeinternet: serving", recs)
	select {
	case <-ctx.Done():
	case err = <-errc:
	}
	pc.Close()
	tl.Close()
	for _, s := range servers {
		s.Close()
	}
	return err
}
