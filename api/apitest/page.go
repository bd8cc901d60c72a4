package apitest

// CheckPage drives a real headless Chromium (Debian's /usr/bin/chromium)
// through the DevTools protocol with chromedp: it loads a peer's status
// page, fails the test on any console error, uncaught exception or request
// to another host, waits until the page shows the mesh, and writes a
// screenshot.

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/log"
	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/cdproto/runtime"
	"github.com/chromedp/chromedp"
)

// PageReport is what CheckPage saw on the page.
type PageReport struct {
	Peers      []string // names in the peers table
	States     []string // their states, in the same order
	Ranges     int      // segments drawn in the ring
	DNSRecords int      // rows of the DNS table
	Pods       int      // rows of the local pods table
	Problems   []string // lines of the problems box
	KubeNodes  []string // names in the Kubernetes nodes table (Kubernetes mode)
	Drops      []string // rows of the policy drops table from the direction on, cells joined by spaces
	Modes      []string // the mode column of the local pods table
	Taken      []string // addresses of the underlay pool's taken table
	Screenshot string   // path of the PNG
}

// Chromium returns the path of a Chromium binary, or "" when there is none.
func Chromium() string {
	for _, name := range []string{"/usr/bin/chromium", "chromium", "chromium-browser", "google-chrome"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	return ""
}

// OutDir returns where tests write artefacts: $WEFT_TEST_OUT when set
// (created if needed), else a fresh temporary directory of t.
func OutDir(t testing.TB) string {
	t.Helper()
	if d := os.Getenv("WEFT_TEST_OUT"); d != "" {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatalf("create WEFT_TEST_OUT %s: %v", d, err)
		}
		return d
	}
	return t.TempDir()
}

// pageState is what the page shows, read by one evaluation.
const pageState = `(() => {
  const rows = (id) => [...document.querySelectorAll('#' + id + ' tbody tr')].filter((r) => !r.querySelector('.empty'));
  return {
    peers: rows('peers').map((r) => r.querySelector('b') ? r.querySelector('b').textContent : ''),
    states: rows('peers').map((r) => r.querySelector('.pill') ? r.querySelector('.pill').textContent : ''),
    ranges: document.querySelectorAll('#ring g.seg').length,
    dns: rows('dns').length,
    pods: rows('pods').length,
    problems: [...document.querySelectorAll('#problems li')].map((li) => li.textContent),
    kube: rows('kube').map((r) => r.querySelector('b') ? r.querySelector('b').textContent : ''),
    drops: rows('drops').map((r) => [...r.cells].slice(2).map((c) => c.textContent).join(' ')),
    modes: rows('pods').map((r) => r.cells[2].textContent),
    taken: rows('underlay-taken').map((r) => r.cells[0].textContent),
    live: document.getElementById('live-dot').className.includes('ok'),
  };
})()`

type pageView struct {
	Peers    []string `json:"peers"`
	States   []string `json:"states"`
	Ranges   int      `json:"ranges"`
	DNS      int      `json:"dns"`
	Pods     int      `json:"pods"`
	Problems []string `json:"problems"`
	Kube     []string `json:"kube"`
	Drops    []string `json:"drops"`
	Modes    []string `json:"modes"`
	Taken    []string `json:"taken"`
	Live     bool     `json:"live"`
}

// CheckPage loads the status page at pageURL in headless Chromium and
// fails t unless, within 30 s, it shows wantPeers peers, a ring with at
// least one range and at least one DNS record, with no console error, no
// uncaught exception and no request to another host. It writes
// status-page.png into outDir ("" = OutDir(t)) and logs its path. It skips
// t when no Chromium is installed.
func CheckPage(t testing.TB, pageURL string, wantPeers int, outDir string) PageReport {
	t.Helper()
	bin := Chromium()
	if bin == "" {
		t.Skip("chromium not installed; the status page browser check needs /usr/bin/chromium")
	}
	if outDir == "" {
		outDir = OutDir(t)
	}
	base, err := url.Parse(pageURL)
	if err != nil {
		t.Fatalf("CheckPage: parse %q: %v", pageURL, err)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	actx, acancel := chromedp.NewExecAllocator(ctx,
		chromedp.ExecPath(bin),
		chromedp.Flag("headless", true),
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		chromedp.Flag("disable-quic", true),
		chromedp.NoFirstRun,
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.UserDataDir(t.TempDir()),
		chromedp.WindowSize(1360, 1000),
	)
	defer acancel()
	bctx, bcancel := chromedp.NewContext(actx)
	defer bcancel()

	var mu sync.Mutex // guards following
	var bad []string
	record := func(format string, args ...any) {
		mu.Lock()
		bad = append(bad, fmt.Sprintf(format, args...))
		mu.Unlock()
	}
	// Listen runs on the tab's read loop: it must only record.
	err = chromedp.Listen(bctx, func(ev any) {
		switch e := ev.(type) {
		case *runtime.EventConsoleAPICalled:
			if e.Type == runtime.ConsoleAPICalledTypeError || e.Type == runtime.ConsoleAPICalledTypeAssert {
				var parts []string
				for _, a := range e.Args {
					if a.Value != nil {
						parts = append(parts, string(a.Value))
					} else {
						parts = append(parts, a.Description)
					}
				}
				record("console.%s: %s", e.Type, strings.Join(parts, " "))
			}
		case *runtime.EventExceptionThrown:
			d := e.ExceptionDetails
			msg := d.Text
			if d.Exception != nil {
				msg += " " + d.Exception.Description
			}
			record("uncaught exception at %s:%d: %s", d.URL, d.LineNumber, msg)
		case *log.EventEntryAdded:
			if e.Entry.Level == log.EntryLevelError {
				record("browser log error (%s): %s %s", e.Entry.Source, e.Entry.Text, e.Entry.URL)
			}
		case *network.EventRequestWillBeSent:
			u, err := url.Parse(e.Request.URL)
			if err != nil || (u.Scheme != "data" && u.Host != base.Host) {
				record("request to another host: %s (the page must work offline)", e.Request.URL)
			}
		}
	})
	if err != nil {
		t.Fatalf("CheckPage: start chromium %s: %v", bin, err)
	}
	if err := chromedp.Do(bctx, chromedp.Navigate(pageURL)); err != nil {
		t.Fatalf("CheckPage: navigate to %s: %v", pageURL, err)
	}

	// Poll until the page shows the mesh; then wait for one more refresh
	// cycle (2 s) so that errors of the periodic redraw are caught too.
	var v pageView
	var shownAt time.Time
	deadline := time.Now().Add(30 * time.Second)
	for {
		v, err = chromedp.Run(bctx, chromedp.Evaluate[pageView](pageState))
		if err != nil {
			t.Fatalf("CheckPage: read page state: %v", err)
		}
		ok := v.Live && len(v.Peers) == wantPeers && v.Ranges > 0 && v.DNS > 0
		if ok && shownAt.IsZero() {
			shownAt = time.Now()
		}
		if ok && time.Since(shownAt) > 2500*time.Millisecond {
			break
		}
		if time.Now().After(deadline) {
			t.Errorf("CheckPage: after 30 s the page shows peers %v (want %d), %d ring ranges (want >0), %d DNS records (want >0), live=%v",
				v.Peers, wantPeers, v.Ranges, v.DNS, v.Live)
			break
		}
		if err := chromedp.Do(bctx, chromedp.Sleep(200*time.Millisecond)); err != nil {
			t.Fatalf("CheckPage: %v", err)
		}
	}

	png, err := chromedp.Run(bctx, chromedp.FullScreenshot(100))
	if err != nil {
		t.Fatalf("CheckPage: screenshot: %v", err)
	}
	shot := filepath.Join(outDir, "status-page.png")
	if err := os.WriteFile(shot, png, 0o644); err != nil {
		t.Fatalf("CheckPage: write screenshot: %v", err)
	}
	t.Logf("status page screenshot: %s", shot)

	mu.Lock()
	for _, b := range bad {
		t.Errorf("CheckPage %s: %s", pageURL, b)
	}
	mu.Unlock()

	// Close the browser before the test's TempDir cleanup removes its profile.
	bcancel()
	acancel()
	if err := ctx.Err(); errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("CheckPage: timed out")
	}
	return PageReport{Peers: v.Peers, States: v.States, Ranges: v.Ranges, DNSRecords: v.DNS, Pods: v.Pods, Problems: v.Problems, KubeNodes: v.Kube, Drops: v.Drops, Modes: v.Modes, Taken: v.Taken, Screenshot: shot}
}
