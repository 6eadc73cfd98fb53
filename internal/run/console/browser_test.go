package console

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/egressd/egressd/internal/shared/vocab"

	"github.com/chromedp/chromedp"
)

// chromiumPath is Debian's chromium; scripts/test installs it. Its absence
// is a failure, never a skip.
const chromiumPath = "/usr/bin/chromium"

// browser starts headless Chromium for the test.
func browser(t *testing.T) context.Context {
	t.Helper()
	if _, err := exec.LookPath(chromiumPath); err != nil {
		t.Fatalf("headless Chromium is required at %s (Debian package chromium; scripts/test installs it): %v", chromiumPath, err)
	}
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(chromiumPath),
		chromedp.NoSandbox, // the tests may run as root in a container
		chromedp.Flag("disable-gpu", true),
		chromedp.Flag("proxy-server", "direct://"), // loopback only, never a configured proxy
	)
	actx, cancel := chromedp.NewExecAllocator(context.Background(), opts...)
	t.Cleanup(cancel)
	ctx, cancel2 := chromedp.NewContext(actx)
	t.Cleanup(cancel2)
	ctx, cancel3 := context.WithTimeout(ctx, 60*time.Second)
	t.Cleanup(cancel3)
	return ctx
}

// TestConsoleInChromium: log in, see the held question, click "Allow
// once" and see the held request go through; the chart renders; and the
// page is captured at phone and desktop widths.
func TestConsoleInChromium(t *testing.T) {
	r := newRig(t)
	held := r.hold("new-api.example")
	q := r.waitPending(t, 1)[0]
	ctx := browser(t)

	err := chromedp.Do(ctx,
		chromedp.EmulateViewport(390, 844),
		chromedp.Navigate(r.srv.URL+"/"),
		chromedp.WaitVisible(chromedp.ID("token")),
		chromedp.SendKeys(chromedp.ID("token"), token),
		chromedp.Submit(chromedp.ID("token")),
		chromedp.WaitVisible(chromedp.ID("q-"+q.ID)),
	)
	if err != nil {
		t.Fatalf("log in and find the question: %v", err)
	}
	questionText, err := chromedp.Run(ctx, chromedp.Text(chromedp.CSS("#q-"+q.ID+" .target")))
	if err != nil || questionText != "new-api.example:443" {
		t.Errorf("question shows %q (%v), want new-api.example:443", questionText, err)
	}

	// The chart: a spend line with points and a visible size, and one bar
	// per model.
	if err := chromedp.Do(ctx, chromedp.WaitVisible(chromedp.ID("spend-chart"))); err != nil {
		t.Fatalf("chart: %v", err)
	}
	points, err := chromedp.Run(ctx, chromedp.AttributeValue(chromedp.CSS("#spend-chart polyline.spendline"), "points"))
	if err != nil {
		t.Fatal(err)
	}
	chartW, err := chromedp.Run(ctx, chromedp.Evaluate[float64](`document.getElementById("spend-chart").getBoundingClientRect().width`))
	if err != nil {
		t.Fatal(err)
	}
	bars, err := chromedp.Run(ctx, chromedp.Evaluate[int](`document.querySelectorAll("#model-chart rect.bar").length`))
	if err != nil {
		t.Fatal(err)
	}
	if strings.Count(points.Value, ",") != 5 || chartW < 300 || bars != 2 {
		t.Errorf("chart: points %q, width %v, bars %d; want a line of 5 points, the page's width, 2 model bars", points.Value, chartW, bars)
	}
	phone := screenshot(t, ctx, 390, "console-phone.png")

	if err := chromedp.Do(ctx, chromedp.Click(chromedp.CSS("#q-"+q.ID+` button[value="once"]`))); err != nil {
		t.Fatalf("click allow once: %v", err)
	}
	select {
	case got := <-held:
		if got != vocab.ReasonNone {
			t.Errorf("held request after the click: %v, want released to go on", got)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the click did not release the held request")
	}
	if err := chromedp.Do(ctx, chromedp.WaitVisible(chromedp.ID("done"))); err != nil {
		t.Fatal(err)
	}
	done, err := chromedp.Run(ctx, chromedp.Text(chromedp.ID("done")))
	if err != nil || !strings.Contains(done, "allowed new-api.example:443 once") {
		t.Errorf("after the click the page says %q (%v)", done, err)
	}

	// A second question for the desktop picture.
	r.hold("files.example")
	r.waitPending(t, 1)
	if err := chromedp.Do(ctx, chromedp.Navigate(r.srv.URL+"/")); err != nil {
		t.Fatal(err)
	}
	desktop := screenshot(t, ctx, 1280, "console-desktop.png")
	if len(phone) < 10_000 || len(desktop) < 10_000 {
		t.Errorf("screenshots: %d and %d bytes, want real pictures", len(phone), len(desktop))
	}
}

// screenshot captures the whole page at width; with EGRESSD_SCREENSHOTS
// set to a directory (make screenshots sets docs/) it is kept there.
func screenshot(t *testing.T, ctx context.Context, width int64, name string) []byte {
	t.Helper()
	if err := chromedp.Do(ctx, chromedp.EmulateViewport(width, 900)); err != nil {
		t.Fatal(err)
	}
	png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
	if err != nil {
		t.Fatalf("screenshot %s: %v", name, err)
	}
	if dir := os.Getenv("EGRESSD_SCREENSHOTS"); dir != "" {
		if err := os.WriteFile(filepath.Join(dir, name), png, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return png
}
