package web_test

// The dashboard is tested as a person uses it: in headless Chromium, driven
// with chromedp, against a real docket server (package apitest). One
// browser serves the whole package; every test has a tab of its own.

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/cdp"
	cdplog "github.com/chromedp/cdproto/log"
	"github.com/chromedp/cdproto/runtime"
	"github.com/chromedp/chromedp"

	"github.com/docket/docket/internal/api"
	"github.com/docket/docket/internal/apitest"
	"github.com/docket/docket/internal/engine"
	"github.com/docket/docket/web"
)

// The tokens of the test servers.
const (
	aliceToken  = "alice-token"
	bobToken    = "bob-token"
	adminToken  = "ops-token"
	readerToken = "carol-reads-only"
)

func tokens() map[string]apitest.Token {
	return map[string]apitest.Token{
		aliceToken:  {Owner: "alice", Scopes: []string{api.ScopeSubmit, api.ScopeRead}},
		bobToken:    {Owner: "bob", Scopes: []string{api.ScopeSubmit, api.ScopeRead}},
		adminToken:  {Owner: "ops", Scopes: []string{api.ScopeAdmin}},
		readerToken: {Owner: "carol", Scopes: []string{api.ScopeRead}},
	}
}

// startServer starts docket with the dashboard, the test tokens and queues.
func startServer(t *testing.T, queues ...engine.Queue) *apitest.Server {
	t.Helper()
	return apitest.Start(t, apitest.Options{Tokens: tokens(), Queues: queues, Apps: []api.App{web.App}})
}

var chrome struct {
	once sync.Once
	ctx  context.Context // the browser's: tabs are its children
	stop func()
	err  error
}

func TestMain(m *testing.M) {
	code := m.Run()
	if chrome.stop != nil {
		chrome.stop()
	}
	os.Exit(code)
}

// chromiumPath finds the browser: $DOCKET_CHROMIUM, else the usual names.
func chromiumPath() string {
	if p := os.Getenv("DOCKET_CHROMIUM"); p != "" {
		return p
	}
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome", "google-chrome-stable", "chrome", "headless-shell"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	return ""
}

// requireChromium skips the test without a browser, except in CI, where a
// missing browser must not pass for a green run.
func requireChromium(t testing.TB) string {
	t.Helper()
	p := chromiumPath()
	if p != "" {
		return p
	}
	const how = "install it (apt-get install -y chromium) or name it in DOCKET_CHROMIUM"
	if os.Getenv("CI") == "true" {
		t.Fatalf("Chromium not found: the dashboard's browser tests need it; %s", how)
	}
	t.Skipf("Chromium not found, so the dashboard's browser tests are skipped; %s", how)
	return ""
}

// startBrowser starts the package's one headless browser.
func startBrowser(t testing.TB) context.Context {
	t.Helper()
	path := requireChromium(t)
	chrome.once.Do(func() {
		opts := append(chromedp.DefaultExecAllocatorOptions[:],
			chromedp.ExecPath(path),
			chromedp.NoSandbox, // root in containers and CI
			chromedp.DisableGPU,
			chromedp.Flag("disable-background-networking", true),
			chromedp.WindowSize(1280, 900),
		)
		alloc, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
		ctx, cancel := chromedp.NewContext(alloc)
		chrome.err = chromedp.Do(ctx) // starts it, with no deadline
		chrome.ctx = ctx
		chrome.stop = func() { cancel(); cancelAlloc() }
	})
	if chrome.err != nil {
		t.Fatalf("starting Chromium (%s): %v", path, chrome.err)
	}
	return chrome.ctx
}

// page is one tab on one server.
type page struct {
	t   *testing.T
	ctx context.Context
	srv *apitest.Server
}

// stepTimeout bounds every step of a test, so that a page that never
// shows what a test waits for fails in seconds with a screenshot.
const stepTimeout = 10 * time.Second

// newPage opens a tab of width×height on srv. Uncaught script errors of
// the page fail the test.
func newPage(t *testing.T, srv *apitest.Server, width, height int64) *page {
	t.Helper()
	parent := startBrowser(t)
	ctx, cancel := chromedp.NewContext(parent)
	t.Cleanup(cancel)
	if err := chromedp.Do(ctx); err != nil { // opens the tab, with no deadline
		t.Fatalf("opening a tab: %v", err)
	}
	p := &page{t: t, ctx: ctx, srv: srv}
	// Uncaught exceptions, and what the browser logs about security (a
	// Content Security Policy violation) or script errors, fail the test.
	exceptions := chromedp.Events(ctx, runtime.ExceptionThrown)
	logs := chromedp.Events(ctx, cdplog.EntryAdded)
	if _, err := chromedp.Call(ctx, cdplog.Enable, cdp.Empty{}); err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var bad []string
	go func() {
		for ev, err := range exceptions {
			if err != nil {
				return
			}
			mu.Lock()
			bad = append(bad, "uncaught script error: "+exceptionText(ev))
			mu.Unlock()
		}
	}()
	go func() {
		for ev, err := range logs {
			if err != nil {
				return
			}
			e := ev.Entry
			if e.Level == cdplog.EntryLevelError && (e.Source == cdplog.EntrySourceSecurity || e.Source == cdplog.EntrySourceJavascript) {
				mu.Lock()
				bad = append(bad, fmt.Sprintf("browser %s error: %s (%s:%d)", e.Source, e.Text, e.URL, e.LineNumber))
				mu.Unlock()
			}
		}
	}()
	t.Cleanup(func() {
		mu.Lock()
		defer mu.Unlock()
		for _, e := range bad {
			t.Errorf("in the page: %s", e)
		}
	})
	p.do(chromedp.EmulateViewport(width, height))
	return p
}

func exceptionText(ev runtime.EventExceptionThrown) string {
	d := ev.ExceptionDetails
	s := d.Text
	if d.Exception != nil && d.Exception.Description != "" {
		s += " " + d.Exception.Description
	}
	return fmt.Sprintf("%s (%s:%d)", s, d.URL, d.LineNumber)
}

// do runs steps, failing the test (with a screenshot of the page) if one
// fails or takes longer than stepTimeout.
func (p *page) do(steps ...chromedp.Action[chromedp.Void]) {
	p.t.Helper()
	for _, s := range steps {
		ctx, cancel := context.WithTimeout(p.ctx, stepTimeout)
		err := chromedp.Do(ctx, s)
		cancel()
		if err != nil {
			p.fail(err)
		}
	}
}

func (p *page) fail(err error) {
	p.t.Helper()
	text, _ := evalIn[string](p, `document.body.innerText`)
	if len(text) > 3000 {
		text = text[:3000] + "…"
	}
	name := "failure-" + strings.NewReplacer("/", "_", " ", "_").Replace(p.t.Name())
	p.shot(name)
	p.t.Fatalf("%v\nthe page says:\n%s", err, text)
}

// evalIn evaluates a script in the page (with the step timeout).
func evalIn[T any](p *page, js string) (T, error) {
	ctx, cancel := context.WithTimeout(p.ctx, stepTimeout)
	defer cancel()
	return chromedp.Run(ctx, chromedp.Evaluate[T](js, chromedp.EvalAwaitPromise))
}

// eval evaluates a script and fails the test if it throws.
func eval[T any](p *page, js string) T {
	p.t.Helper()
	v, err := evalIn[T](p, js)
	if err != nil {
		p.fail(fmt.Errorf("evaluating %s: %w", js, err))
	}
	return v
}

// wait waits until a script is truthy in the page. A page between two
// documents has no context to run it in for a moment: that is retried.
func (p *page) wait(what, js string) {
	p.t.Helper()
	deadline := time.Now().Add(stepTimeout)
	for {
		ctx, cancel := context.WithDeadline(p.ctx, deadline.Add(time.Second))
		_, err := chromedp.Run(ctx, chromedp.Poll[chromedp.Void](js, chromedp.WithPollingTimeout(time.Until(deadline)), chromedp.WithPollingInterval(25*time.Millisecond)))
		cancel()
		if err == nil {
			return
		}
		if navigating(err) && time.Now().Before(deadline) {
			time.Sleep(25 * time.Millisecond)
			continue
		}
		p.fail(fmt.Errorf("waiting for %s (%s): %w", what, js, err))
	}
}

// navigating reports whether err says the page changed documents under a
// script.
func navigating(err error) bool {
	s := err.Error()
	return strings.Contains(s, "Cannot find context with specified id") || strings.Contains(s, "Execution context was destroyed") ||
		strings.Contains(s, "Inspected target navigated or closed")
}

// open loads the dashboard at a route, such as "#/jobs".
func (p *page) open(route string) {
	p.t.Helper()
	p.do(chromedp.Navigate(p.srv.URL + "/" + route))
}

// goTo changes the route in the page, as a click on a link does.
func (p *page) goTo(route string) {
	p.t.Helper()
	eval[chromedp.Void](p, fmt.Sprintf(`location.hash = %q`, route))
}

// signIn signs in with a token on the sign-in form the page shows.
func (p *page) signIn(token string) {
	p.t.Helper()
	p.do(chromedp.WaitVisible(chromedp.ID("token")),
		chromedp.SendKeys(chromedp.ID("token"), token),
		chromedp.Click(chromedp.CSS(`form button[type=submit]`)))
	p.wait("the navigation after signing in", `!document.getElementById('nav').hidden`)
}

// text is the text of the first element that matches sel ("" for none).
func (p *page) text(sel string) string {
	p.t.Helper()
	return eval[string](p, fmt.Sprintf(`document.querySelector(%q)?.innerText ?? ''`, sel))
}

// click clicks the first element that matches a CSS selector.
func (p *page) click(sel string) {
	p.t.Helper()
	p.do(chromedp.WaitVisible(chromedp.CSS(sel)), chromedp.Click(chromedp.CSS(sel)))
}

// shot saves a screenshot of the whole page as name.png into the test's
// artifact directory (kept with go test -artifacts) or $DOCKET_SCREENSHOTS.
func (p *page) shot(name string) string {
	p.t.Helper()
	ctx, cancel := context.WithTimeout(p.ctx, stepTimeout)
	defer cancel()
	png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
	if err != nil {
		p.t.Logf("screenshot %s: %v", name, err)
		return ""
	}
	dir := os.Getenv("DOCKET_SCREENSHOTS")
	if dir == "" {
		dir = p.t.ArtifactDir()
	} else if err := os.MkdirAll(dir, 0o755); err != nil {
		p.t.Fatal(err)
	}
	path := filepath.Join(dir, name+".png")
	if err := os.WriteFile(path, png, 0o644); err != nil {
		p.t.Fatal(err)
	}
	p.t.Logf("screenshot: %s", path)
	return path
}

// call sends an API request as token's owner and decodes the JSON answer
// into out (when not nil), failing the test on an unexpected status.
func call(t *testing.T, srv *apitest.Server, token, method, path, ctype string, body []byte, want int, out any) {
	t.Helper()
	req, err := http.NewRequest(method, srv.URL+path, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	if ctype != "" {
		req.Header.Set("Content-Type", ctype)
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	if res.StatusCode != want {
		t.Fatalf("%s %s: %d, want %d: %s", method, path, res.StatusCode, want, b)
	}
	if out != nil {
		if err := json.Unmarshal(b, out); err != nil {
			t.Fatalf("%s %s: %v: %s", method, path, err, b)
		}
	}
}

// submit submits a job as token's owner and returns its id.
func submit(t *testing.T, srv *apitest.Server, token, queue, ctype, body string) string {
	t.Helper()
	var j struct{ ID string }
	call(t, srv, token, "POST", "/v1/queues/"+queue+"/jobs", ctype, []byte(body), http.StatusAccepted, &j)
	return j.ID
}
