package daemon

import (
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/egressd/egressd/internal/operator/ask"
	"github.com/egressd/egressd/internal/operator/telegram/telegramtest"
	"github.com/egressd/egressd/policy"
)

const (
	botToken = "123456:TEST-token"
	operator = 42
	stranger = 7
)

// startTelegram runs egressd with ask: and its Telegram bot pointed at a
// fake Bot API.
func startTelegram(t *testing.T, hold string, extra ...string) (*running, *telegramtest.Server, string) {
	t.Helper()
	port := echoServer(t)
	_, _, dns := upstreams(t)
	tg := telegramtest.Start(t, botToken)
	body := askPolicy(dns.Addr, port, t.TempDir(), hold, "granted.test") +
		fmt.Sprintf("  telegram: {token_env: TG_TOKEN, operators: [%d], api: %q, ca_file: %q}\n", operator, tg.URL, tg.CAFile)
	r := startWith(t, fixAskIndent(body)+strings.Join(extra, ""), func(o *Options) {
		o.Env = func(k string) string {
			if k == "TG_TOKEN" {
				return botToken
			}
			return ""
		}
		o.TelegramPoll = time.Second
	})
	return r, tg, port
}

// fixAskIndent moves the telegram line (appended last) into the ask:
// section, which askPolicy follows with budget:.
func fixAskIndent(body string) string {
	i := strings.Index(body, "  telegram:")
	tgLine := body[i:]
	body = body[:i]
	return strings.Replace(body, "ask:\n", "ask:\n"+tgLine, 1)
}

// question returns the sendMessage carrying buttons for target.
func questionFor(sent []telegramtest.Sent, target string) (telegramtest.Sent, bool) {
	for _, s := range sent {
		if s.Method == "sendMessage" && len(s.Buttons) > 0 && strings.Contains(s.Text, target) {
			return s, true
		}
	}
	return telegramtest.Sent{}, false
}

func button(t *testing.T, m telegramtest.Sent, label string) string {
	t.Helper()
	for _, b := range m.Buttons {
		if b.Text == label {
			if len(b.CallbackData) > 64 {
				t.Errorf("callback_data %q is over Telegram's 64 bytes", b.CallbackData)
			}
			return b.CallbackData
		}
	}
	t.Fatalf("no %q button in %+v", label, m.Buttons)
	return ""
}

func TestTelegramAllowOnce(t *testing.T) {
	r, tg, port := startTelegram(t, "20s")
	target := "later.test:" + port
	held := connectAsync(r.addrs.Proxy, target)
	var q telegramtest.Sent
	tg.WaitFor(t, "the question with buttons", func(sent []telegramtest.Sent, _ []map[string]any) bool {
		var ok bool
		q, ok = questionFor(sent, target)
		return ok
	})
	if q.ChatID != operator {
		t.Errorf("question sent to chat %d, want the operator's %d", q.ChatID, operator)
	}
	once := button(t, q, "Allow once")

	// A press from someone else does nothing but say so.
	tg.Press(stranger, q, once)
	tg.WaitFor(t, "the stranger's press answered", func(_ []telegramtest.Sent, ans []map[string]any) bool { return len(ans) == 1 })
	if txt, _ := tg.Answered()[0]["text"].(string); !strings.Contains(txt, "not an operator") {
		t.Errorf("stranger's press answered %q", txt)
	}
	if l := r.pending(t); len(l.Pending) != 1 || len(l.Grants) != 0 {
		t.Fatalf("after a stranger's press: %+v, want the question still open and no grant", l)
	}
	select {
	case res := <-held:
		t.Fatalf("the held request ended after a stranger's press: %q %v", res.status, res.err)
	default:
	}

	tg.Press(operator, q, once)
	res := <-held
	if res.err != nil || !strings.HasPrefix(res.status, "200") {
		t.Fatalf("held CONNECT after the operator's press: %q %v", res.status, res.err)
	}
	defer res.conn.Close()
	fmt.Fprint(res.conn, "ping\n")
	if line, _ := res.br.ReadString('\n'); line != "ping\n" {
		t.Errorf("tunnel: %q", line)
	}
	tg.WaitFor(t, "the question edited with its outcome", func(sent []telegramtest.Sent, _ []map[string]any) bool {
		for _, s := range sent {
			if s.Method == "editMessageText" && s.MessageID == q.MessageID && strings.Contains(s.Text, "allowed "+target+" once") &&
				strings.Contains(s.Text, fmt.Sprintf("telegram:%d", operator)) {
				return true
			}
		}
		return false
	})
	if g := r.pending(t).Grants; len(g) != 1 || g[0].By != fmt.Sprintf("telegram:%d", operator) {
		t.Errorf("grant: %+v", g)
	}
}

func TestTelegramAlways(t *testing.T) {
	r, tg, port := startTelegram(t, "20s")
	target := "later.test:" + port
	before, _ := os.ReadFile(r.path)
	held := connectAsync(r.addrs.Proxy, target)
	var q telegramtest.Sent
	tg.WaitFor(t, "the question", func(sent []telegramtest.Sent, _ []map[string]any) bool {
		var ok bool
		q, ok = questionFor(sent, target)
		return ok
	})
	tg.Press(operator, q, button(t, q, "Always"))
	if res := <-held; res.err != nil || !strings.HasPrefix(res.status, "200") {
		t.Fatalf("held CONNECT after always: %q %v", res.status, res.err)
	} else {
		res.conn.Close()
	}
	after, _ := os.ReadFile(r.path)
	var kept []string
	var added int
	for _, l := range strings.SplitAfter(string(after), "\n") {
		if strings.HasPrefix(l, fmt.Sprintf("  # approved by telegram:%d at ", operator)) || l == "  - {host: later.test, ports: ["+port+"]}\n" {
			added++
			continue
		}
		kept = append(kept, l)
	}
	if added != 2 || strings.Join(kept, "") != string(before) {
		t.Errorf("policy after always (want the old bytes plus two lines):\n%s", after)
	}
	if _, err := policy.Load(r.path); err != nil {
		t.Errorf("egressd check would fail: %v", err)
	}
}

// TestTelegramFloodIsBounded: 1,000 denied requests to 500 names from one
// client send at most ask.MaxOpenPerClient questions.
func TestTelegramFloodIsBounded(t *testing.T) {
	// No client rate limit, so that every request reaches the ask: step.
	r, tg, _ := startTelegram(t, "100ms", "limits: {client: {rps: 0, burst: 0}, host: {rps: 0, burst: 0}}\n")
	var wg sync.WaitGroup
	var refused atomic.Int64
	work := make(chan int)
	for range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range work {
				c, err := net.DialTimeout("tcp", r.addrs.Proxy, 5*time.Second)
				if err != nil {
					t.Error(err)
					return
				}
				c.SetDeadline(time.Now().Add(10 * time.Second))
				fmt.Fprintf(c, "CONNECT n%d.flood.test:443 HTTP/1.1\r\nHost: x\r\n\r\n", i%500)
				buf := make([]byte, 12)
				if n, _ := io.ReadFull(c, buf); n == 12 && string(buf[9:12]) == "403" {
					refused.Add(1)
				} else {
					t.Errorf("flood request %d: got %q, want a 403", i, buf[:n])
				}
				c.Close()
			}
		}()
	}
	start := time.Now()
	for i := range 1000 {
		work <- i
	}
	close(work)
	wg.Wait()
	t.Logf("1000 requests in %v", time.Since(start))
	if refused.Load() != 1000 {
		t.Errorf("refused: %d of 1000, want all (nobody answered)", refused.Load())
	}
	tg.WaitFor(t, "the first questions", func(sent []telegramtest.Sent, _ []map[string]any) bool { return len(sent) >= ask.MaxOpenPerClient })
	n := 0
	for _, s := range tg.Sent() {
		if s.Method == "sendMessage" {
			n++
		}
	}
	if n > ask.MaxOpenPerClient {
		t.Errorf("messages sent: %d, want at most %d", n, ask.MaxOpenPerClient)
	}
	if p := r.pending(t); len(p.Pending) != ask.MaxOpenPerClient {
		t.Errorf("open questions: %d, want %d", len(p.Pending), ask.MaxOpenPerClient)
	}
}
