package daemon

import (
	"os/exec"
	"strings"
	"testing"
)

// python is Debian's python3 with python3-requests and python3-httpx
// (scripts/test installs them); Hermes is a Python agent on httpx. A
// missing one fails the test with Python's ModuleNotFoundError.
const python = "/usr/bin/python3"

// pyFetch fetches https://target/ through proxy with the named client
// library and returns what the script printed: the error a Python agent
// would see.
const pyFetch = `
import sys
lib, proxy, target = sys.argv[1], sys.argv[2], sys.argv[3]
try:
    if lib == "requests":
        import requests
        requests.get("https://" + target + "/", proxies={"https": proxy}, timeout=10, verify=False)
    else:
        import httpx
        httpx.Client(proxies=proxy, verify=False, timeout=10).get("https://" + target + "/")
    print("no error")
except Exception as e:
    print(type(e).__name__, e)
`

// TestPythonClientsSayAPersonWasAsked: a held CONNECT that nobody answered
// is reported by Python's HTTP clients with the status line, which says a
// person was asked and when to retry.
func TestPythonClientsSayAPersonWasAsked(t *testing.T) {
	if _, err := exec.LookPath(python); err != nil {
		t.Fatalf("%s is required (Debian python3 with python3-requests and python3-httpx): %v", python, err)
	}
	port := echoServer(t)
	_, _, dns := upstreams(t)
	r := start(t, askPolicy(dns.Addr, port, t.TempDir(), "100ms"))
	for _, lib := range []string{"requests", "httpx"} {
		cmd := exec.Command(python, "-c", pyFetch, lib, "http://"+r.addrs.Proxy, "later.test:"+port)
		cmd.Env = []string{"PATH=/usr/bin:/bin", "HOME=" + t.TempDir()} // no proxy variables of our own
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("%s: %v\n%s", lib, err, out)
		}
		t.Logf("%s: %s", lib, strings.TrimSpace(string(out)))
		if !strings.Contains(string(out), "egressd approval_pending: a person was asked; retry in 30s") {
			t.Errorf("%s shows %q; want the status line saying a person was asked", lib, strings.TrimSpace(string(out)))
		}
	}
}
