package main

import (
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// Addresses: every system on its own loopback address, so no two can be
// confused and nothing leaves 127.0.0.0/8. Ports are below the kernel's
// ephemeral range so tests elsewhere on the machine cannot take them.
const (
	originHost   = "origin.bench.test" // resolves to originIP via dnsmasq
	originIP     = "127.0.0.1"
	httpPort     = "18080"
	tunnelPort   = "18443"
	providerAddr = "127.0.0.2:18090" // apart from originIP: egressd reserves a provider's address for its gateway
	dnsmasqIP    = "127.0.0.20"      // port 53: squid cannot ask any other port
	unboundIP    = "127.0.0.21"
	proxyPort    = "13128"

	egressdIP      = "127.0.0.10"
	egressdDNS     = egressdIP + ":15353"
	egressdGateway = egressdIP + ":18081"
	egressdAdmin   = egressdIP + ":19090"

	providerKey = "bench-real-provider-key"
	agentToken  = "bench-agent-token"
	benchModel  = "bench-model"
)

// system is one thing traffic can go through. DIRECT has no process.
type system struct {
	name    string
	ip      string // listen address; "" for DIRECT
	http    bool   // forwards plain HTTP (the tunnel ceiling does not)
	peer    bool   // what a user would pick instead of egressd
	ceiling bool   // a bare Go reference
	// targetHost is the host the system is asked for: names everywhere
	// except tinyproxy, which resolves through the system resolver and
	// so gets an IP literal (a name would leave the machine).
	targetHost string
	start      func(e *env) (*proc, error)
}

func (s system) addr() string {
	if s.ip == "" {
		return ""
	}
	return s.ip + ":" + proxyPort
}

func (s system) httpTarget() string { return "http://" + s.targetHost + ":" + httpPort + "/" }
func (s system) tunnelTarget() string {
	return s.targetHost + ":" + tunnelPort
}

const (
	sysDirect  = "DIRECT"
	sysEgressd = "egressd"
	// sysEgressdB is a second egressd build (-compare), measured in the
	// same repetitions as the first: a change's effect is then read from
	// runs minutes apart, not from two tables an hour apart.
	sysEgressdB = "egressd-b"
	sysGoproxy  = "goproxy"
	sysTunnel   = "go-tunnel"
)

// allSystems in report order.
func allSystems() []system {
	return []system{
		{name: sysDirect, http: true, targetHost: originIP},
		{name: sysEgressd, ip: egressdIP, http: true, targetHost: originHost, start: startEgressd},
		{name: "squid", ip: "127.0.0.12", http: true, peer: true, targetHost: originHost, start: startSquid},
		{name: "tinyproxy", ip: "127.0.0.13", http: true, peer: true, targetHost: originIP, start: startTinyproxy},
		{name: "smokescreen", ip: "127.0.0.14", http: true, peer: true, targetHost: originHost, start: startSmokescreen},
		{name: sysGoproxy, ip: "127.0.0.15", http: true, ceiling: true, targetHost: originHost, start: startGoproxy},
		{name: sysTunnel, ip: "127.0.0.16", ceiling: true, targetHost: originHost, start: startTunnel},
	}
}

func writeFile(dir, name, content string) (string, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	p := filepath.Join(dir, name)
	return p, os.WriteFile(p, []byte(content), 0o644)
}

// startDnsmasq serves the benchmark's names from local records: every
// name under bench.test is originIP, every name under denied.test is
// NXDOMAIN. It is the upstream of egressd, squid and smokescreen, and the
// DNS peer egressd is compared with.
func startDnsmasq(e *env) (*proc, error) {
	dir := filepath.Join(e.tmp, "dnsmasq")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	p, err := startProc("dnsmasq", filepath.Join(dir, "log"), nil, e.bin("dnsmasq"),
		"--keep-in-foreground", "--conf-file=/dev/null", "--no-resolv", "--no-hosts", "--no-poll",
		"--bind-interfaces", "--listen-address="+dnsmasqIP, "--port=53", "--pid-file=",
		"--log-facility=-", "--cache-size=10000", "--local-ttl=300",
		"--address=/bench.test/"+originIP, "--local=/bench.test/", "--address=/denied.test/")
	if err != nil {
		return nil, err
	}
	return p, p.waitReady(10*time.Second, dnsAnswers(dnsmasqIP+":53"))
}

// startUnbound runs unbound 1.17 as the caching resolver a self-hoster
// would put in front of an agent: granted names are forwarded to dnsmasq
// once and answered from unbound's cache afterwards, exactly as egressd
// answers from its own; denied.test is refused locally (NXDOMAIN), as
// egressd refuses by policy. One thread, Debian's default, like the one
// process of dnsmasq; no DNSSEC validation (there is no trust anchor for
// bench.test), no logging.
func startUnbound(e *env) (*proc, error) {
	dir := filepath.Join(e.tmp, "unbound")
	conf := strings.Join([]string{
		"server:",
		"  interface: " + unboundIP + "@53",
		"  port: 53",
		"  do-ip6: no",
		"  access-control: 127.0.0.0/8 allow",
		"  chroot: \"\"",
		"  username: \"\"",
		"  directory: \"" + dir + "\"",
		"  pidfile: \"\"",
		"  use-syslog: no",
		"  logfile: \"\"",
		"  verbosity: 0",
		"  num-threads: 1",
		"  module-config: \"iterator\"",
		"  do-not-query-localhost: no",
		"  local-zone: \"test.\" nodefault", // unbound refuses RFC 6761's test. itself by default
		"  local-zone: \"denied.test.\" always_nxdomain",
		"  domain-insecure: \"bench.test.\"",
		"forward-zone:",
		"  name: \"bench.test.\"",
		"  forward-addr: " + dnsmasqIP + "@53",
		"remote-control:",
		"  control-enable: no",
		"",
	}, "\n")
	path, err := writeFile(dir, "unbound.conf", conf)
	if err != nil {
		return nil, err
	}
	// -d: stay in the foreground, one process, so it is stopped by PID.
	p, err := startProc(sysUnbound, filepath.Join(dir, "out.log"), nil, e.bin("unbound"), "-d", "-c", path)
	if err != nil {
		return nil, err
	}
	return p, p.waitReady(10*time.Second, dnsAnswers(unboundIP+":53"))
}

func startSquid(e *env) (*proc, error) {
	dir := filepath.Join(e.tmp, "squid")
	conf := strings.Join([]string{
		"http_port 127.0.0.12:" + proxyPort,
		"http_access allow all",
		"cache deny all",
		"access_log none",
		"cache_store_log none",
		"cache_log " + filepath.Join(dir, "cache.log"),
		"pid_filename " + filepath.Join(dir, "squid.pid"),
		"coredump_dir " + dir,
		"netdb_filename none",
		"dns_nameservers " + dnsmasqIP,
		"max_filedescriptors 16384",
		"shutdown_lifetime 1 seconds",
		"icp_port 0",
		"htcp_port 0",
		"via off",
		"forwarded_for delete",
		"",
	}, "\n")
	path, err := writeFile(dir, "squid.conf", conf)
	if err != nil {
		return nil, err
	}
	// squid drops root for the "proxy" user and must still write its log
	// and PID file.
	if u, err := user.Lookup("proxy"); err == nil {
		uid, _ := strconv.Atoi(u.Uid)
		gid, _ := strconv.Atoi(u.Gid)
		_ = os.Chown(dir, uid, gid)
	}
	// -N: stay in the foreground, one process, so it is stopped by PID.
	p, err := startProc("squid", filepath.Join(dir, "out.log"), nil, e.bin("squid"), "-N", "-f", path)
	if err != nil {
		return nil, err
	}
	return p, p.waitReady(20*time.Second, tcpUp("127.0.0.12:"+proxyPort))
}

func startTinyproxy(e *env) (*proc, error) {
	dir := filepath.Join(e.tmp, "tinyproxy")
	conf := strings.Join([]string{
		"Port " + proxyPort,
		"Listen 127.0.0.13",
		"Timeout 600",
		"MaxClients 8192",
		"LogLevel Critical",
		"LogFile \"" + filepath.Join(dir, "tinyproxy.log") + "\"",
		"PidFile \"" + filepath.Join(dir, "tinyproxy.pid") + "\"",
		"DisableViaHeader Yes",
		"",
	}, "\n")
	path, err := writeFile(dir, "tinyproxy.conf", conf)
	if err != nil {
		return nil, err
	}
	// -d: do not daemonize.
	p, err := startProc("tinyproxy", filepath.Join(dir, "out.log"), nil, e.bin("tinyproxy"), "-d", "-c", path)
	if err != nil {
		return nil, err
	}
	return p, p.waitReady(10*time.Second, tcpUp("127.0.0.13:"+proxyPort))
}

func startSmokescreen(e *env) (*proc, error) {
	dir := filepath.Join(e.tmp, "smokescreen")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	// No ACL file: every destination is allowed; loopback is allowed
	// explicitly (smokescreen denies private ranges by default).
	p, err := startProc("smokescreen", filepath.Join(dir, "out.log"), nil, e.bin("smokescreen"),
		"--listen-ip", "127.0.0.14", "--listen-port", proxyPort,
		"--resolver-address", dnsmasqIP+":53", "--allow-range", "127.0.0.0/8",
		"--statsd-address", "127.0.0.1:18125")
	if err != nil {
		return nil, err
	}
	return p, p.waitReady(10*time.Second, tcpUp("127.0.0.14:"+proxyPort))
}

func startGoproxy(e *env) (*proc, error) {
	p, err := startProc(sysGoproxy, filepath.Join(e.tmp, "goproxy.log"), nil, e.bin("goproxy-bare"),
		"-listen", "127.0.0.15:"+proxyPort, "-host", originHost+"="+originIP)
	if err != nil {
		return nil, err
	}
	return p, p.waitReady(10*time.Second, tcpUp("127.0.0.15:"+proxyPort))
}

func startTunnel(e *env) (*proc, error) {
	p, err := startProc(sysTunnel, filepath.Join(e.tmp, "tunnel.log"), nil, e.bin("tunnel-ceiling"),
		"-listen", "127.0.0.16:"+proxyPort, "-host", originHost+"="+originIP)
	if err != nil {
		return nil, err
	}
	return p, p.waitReady(10*time.Second, tcpUp("127.0.0.16:"+proxyPort))
}

// versionOf runs a binary's version flag for the report.
func versionLine(out []byte) string {
	s := strings.TrimSpace(string(out))
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		s = s[:i]
	}
	return s
}
