package web_test

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/cdproto/browser"
	"github.com/chromedp/cdproto/emulation"
	"github.com/chromedp/chromedp"

	"github.com/docket/docket/internal/api"
	"github.com/docket/docket/internal/apitest"
	"github.com/docket/docket/internal/engine"
	"github.com/docket/docket/internal/job"
	"github.com/docket/docket/web"
)

// rowSel selects a job's row in the jobs list.
func rowSel(id string) string { return fmt.Sprintf(`tr[data-id=%q]`, id) }

// TestSignInAndWatchProgress signs in, watches a job appear in the list and
// its progress bar move to done as the handler steps, then opens its page.
func TestSignInAndWatchProgress(t *testing.T) {
	next := make(chan struct{})
	srv := startServer(t, engine.Queue{Name: "steps", Concurrency: 1, MaxAttempts: 1, Handler: apitest.Steps(3, next)})
	p := newPage(t, srv, 1280, 900)

	p.open("#/jobs?queue=steps")
	p.wait("the sign-in form", `document.getElementById('token')`)
	// A wrong token is refused with the reason.
	p.do(chromedp.SendKeys(chromedp.ID("token"), "nobody\n")) // Enter submits
	p.wait("the refusal", `document.querySelector('#signin-error .alert')?.innerText.includes('not known')`)
	eval[chromedp.Void](p, `document.getElementById('token').value = ''`)
	p.signIn(aliceToken)
	if who := p.text("#who"); !strings.Contains(who, "alice") {
		t.Errorf("header says %q, want alice's name", who)
	}
	if stored := eval[string](p, `sessionStorage.getItem('docket.token')`); stored != aliceToken {
		t.Errorf("sessionStorage holds %q", stored)
	}
	if n := eval[int](p, `localStorage.length`); n != 0 {
		t.Errorf("localStorage holds %d items; the token belongs in sessionStorage only", n)
	}
	if c := eval[string](p, `document.cookie`); c != "" {
		t.Errorf("cookies %q", c)
	}
	p.wait("the jobs list, live", `document.querySelector('.live.on') && document.querySelector('.view')?.dataset.loaded`)

	id := submit(t, srv, aliceToken, "steps", "text/plain", "stepping")
	row := rowSel(id)
	percent := func(want string) {
		t.Helper()
		p.wait("progress "+want, fmt.Sprintf(`document.querySelector('%s .progress')?.dataset.percent === %q`, row, want))
	}
	p.wait("the new job's row", fmt.Sprintf(`document.querySelector(%q)`, row))
	percent("33.3")
	next <- struct{}{}
	percent("66.7")
	p.shot("jobs-running")
	next <- struct{}{}
	percent("100")
	next <- struct{}{}
	p.wait("the job done", fmt.Sprintf(`document.querySelector('%s')?.dataset.state === 'succeeded'`, row))
	if txt := p.text(row + " .ptext"); txt != "done" && !strings.Contains(txt, "100%") {
		t.Errorf("progress text %q", txt)
	}

	p.click(row + " a")
	p.wait("the job page", fmt.Sprintf(`location.hash === '#/jobs/%s' && document.querySelector('.view')?.dataset.state === 'succeeded'`, id))
	p.wait("the result preview", `document.querySelector('#result pre.preview')?.innerText === 'stepping'`)
	if h := eval[string](p, `document.activeElement.tagName`); h != "H1" {
		t.Errorf("focus on %s after navigating, want the page's heading", h)
	}
	hist := p.text("ol.history")
	for _, want := range []string{"Created on steps", "Started", "Succeeded"} {
		if !strings.Contains(hist, want) {
			t.Errorf("history lacks %q:\n%s", want, hist)
		}
	}

	// Sign out: the token is forgotten.
	p.click("#signout")
	p.wait("the sign-in form", `document.getElementById('token')`)
	if stored := eval[string](p, `sessionStorage.getItem('docket.token') ?? ''`); stored != "" {
		t.Errorf("sessionStorage still holds %q after signing out", stored)
	}
}

// TestJobPageLiveAndCancel opens a running job's page, sees its progress,
// and cancels it there after confirming.
func TestJobPageLiveAndCancel(t *testing.T) {
	srv := startServer(t, engine.Queue{Name: "hold", Concurrency: 1, MaxAttempts: 1, Handler: apitest.Steps(4, nil)})
	id := submit(t, srv, aliceToken, "hold", "application/json", `{"pages": 4}`)
	srv.Await(t, id, func(j *job.Job) bool { return j.State == job.Running && j.Progress.Current == 1 })

	p := newPage(t, srv, 1280, 900)
	p.open("#/jobs/" + id)
	p.signIn(aliceToken)
	p.wait("the running job", `document.querySelector('.view')?.dataset.state === 'running' && document.querySelector('.live.on')`)
	if pct := eval[string](p, `document.querySelector('.progress.big').dataset.percent`); pct != "25" {
		t.Errorf("progress %q, want 25", pct)
	}
	if live := eval[string](p, `document.getElementById('progress-live').getAttribute('aria-live')`); live != "polite" {
		t.Errorf("progress region aria-live=%q", live)
	}
	in := p.text("#input-title + .panel-body")
	if !strings.Contains(in, "application/json") || !strings.Contains(in, "12 B") {
		t.Errorf("input summary %q", in)
	}

	// Keep it, then cancel it.
	p.click(`button[data-action="cancel"]`)
	p.wait("the dialog", `document.querySelector('dialog[open]')`)
	if f := eval[string](p, `document.activeElement.textContent`); f != "Keep it" {
		t.Errorf("focus in the dialog on %q, want the safe choice", f)
	}
	p.click(`dialog[open] button:not([data-confirm])`)
	p.wait("the dialog closed", `!document.querySelector('dialog')`)
	if st := srv.Job(t, id).State; st != job.Running {
		t.Fatalf("job %s after keeping it", st)
	}
	p.click(`button[data-action="cancel"]`)
	p.click(`dialog[open] button[data-confirm]`)
	p.wait("the canceled job", `document.querySelector('.view')?.dataset.state === 'canceled'`)
	if st := srv.Job(t, id).State; st != job.Canceled {
		t.Errorf("stored state %s, want canceled", st)
	}
	// A canceled job offers a retry instead.
	p.wait("the retry button", `document.querySelector('button[data-action="retry"]')`)
}

// TestArtifactDownload opens a finished job's page, previews its JSON
// result and downloads an artifact through the browser.
func TestArtifactDownload(t *testing.T) {
	srv := startServer(t)
	const content = "page one, with ünïcödé and a NUL \x00 byte"
	js, _ := json.Marshal(content)
	input := fmt.Sprintf(`{"artifacts": {"page-1.txt": %s, "page-2.txt": "two"}}`, js)
	id := submit(t, srv, bobToken, "echo", "application/json", input)
	srv.Await(t, id, func(j *job.Job) bool { return j.State == job.Succeeded })

	p := newPage(t, srv, 1280, 900)
	p.open("#/jobs/" + id)
	p.signIn(bobToken)
	p.wait("the artifacts", `document.querySelectorAll('#artifacts tr[data-artifact]').length === 2`)
	p.wait("the pretty-printed result", `document.querySelector('#result pre.preview')?.textContent.includes('\n  "artifacts": {')`)
	p.shot("job-page")

	dir := t.TempDir()
	if _, err := chromedp.CallBrowser(p.ctx, browser.SetDownloadBehavior, browser.SetDownloadBehaviorParams{
		Behavior: browser.SetDownloadBehaviorBehaviorAllowAndName, DownloadPath: dir, EventsEnabled: new(true),
	}); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(p.ctx, stepTimeout)
	defer cancel()
	begun := chromedp.BrowserEvents(ctx, browser.DownloadWillBegin)
	progress := chromedp.BrowserEvents(ctx, browser.DownloadProgress)
	p.click(`tr[data-artifact="page-1.txt"] button`)
	var name string
	for ev, err := range begun {
		if err != nil {
			t.Fatalf("no download began: %v", err)
		}
		name = ev.SuggestedFilename
		break
	}
	if name != "page-1.txt" {
		t.Errorf("download named %q", name)
	}
	var guid string
	for ev, err := range progress {
		if err != nil {
			t.Fatalf("download did not complete: %v", err)
		}
		if ev.State == browser.DownloadProgressStateCompleted {
			guid = ev.GUID
			break
		}
		if ev.State == browser.DownloadProgressStateCanceled {
			t.Fatal("download canceled")
		}
	}
	got, err := os.ReadFile(filepath.Join(dir, guid))
	if err != nil {
		t.Fatal(err)
	}
	if string(got) != content {
		t.Errorf("downloaded %q, want %q", got, content)
	}
}

// TestOwnersSeeTheirOwnJobs: a user sees only their jobs; an admin sees
// everyone's, with the owner column.
func TestOwnersSeeTheirOwnJobs(t *testing.T) {
	srv := startServer(t)
	alices := submit(t, srv, aliceToken, "echo", "text/plain", "alice's")
	bobs := submit(t, srv, bobToken, "echo", "text/plain", "bob's")

	bob := newPage(t, srv, 1280, 900)
	bob.open("#/jobs")
	bob.signIn(bobToken)
	bob.wait("bob's job", fmt.Sprintf(`document.querySelector(%q)`, rowSel(bobs)))
	if n := eval[int](bob, `document.querySelectorAll('tbody tr[data-id]').length`); n != 1 {
		t.Errorf("bob sees %d jobs, want his one", n)
	}
	if eval[bool](bob, `[...document.querySelectorAll('th')].some(th => th.textContent === 'Owner')`) {
		t.Error("bob sees an owner column")
	}
	// A job alice submits now does not reach bob's list live either.
	later := submit(t, srv, aliceToken, "echo", "text/plain", "later")
	srv.Await(t, later, func(j *job.Job) bool { return j.State == job.Succeeded })
	bob.goTo("#/jobs/" + alices)
	bob.wait("not found", `document.querySelector('h1')?.innerText === 'No such job'`)
	bob.goTo("#/jobs")
	bob.wait("the list again", fmt.Sprintf(`document.querySelector(%q)`, rowSel(bobs)))
	if eval[bool](bob, fmt.Sprintf(`!!document.querySelector(%q) || !!document.querySelector(%q)`, rowSel(alices), rowSel(later))) {
		t.Error("bob sees alice's jobs")
	}

	admin := newPage(t, srv, 1280, 900)
	admin.open("#/jobs")
	admin.signIn(adminToken)
	admin.wait("every job", fmt.Sprintf(`[%q, %q, %q].every(s => document.querySelector(s))`, rowSel(alices), rowSel(bobs), rowSel(later)))
	owners := eval[string](admin, fmt.Sprintf(`document.querySelector('%s td[data-label=Owner]').innerText + ',' + document.querySelector('%s td[data-label=Owner]').innerText`, rowSel(alices), rowSel(bobs)))
	if owners != "alice,bob" {
		t.Errorf("owner column %q", owners)
	}
	if who := admin.text("#who"); !strings.Contains(who, "admin") {
		t.Errorf("header %q does not say admin", who)
	}
	// The admin filters by owner.
	admin.do(chromedp.SendKeys(chromedp.ID("f-owner"), "bob\n"))
	admin.wait("bob's jobs only", fmt.Sprintf(`location.hash.includes('owner=bob') && !document.querySelector(%q) && document.querySelector(%q)`, rowSel(alices), rowSel(bobs)))
}

// TestPauseResume pauses and resumes a queue from the queues view; only
// admins get the buttons.
func TestPauseResume(t *testing.T) {
	srv := startServer(t)
	submit(t, srv, aliceToken, "echo", "text/plain", "x")

	alice := newPage(t, srv, 1280, 900)
	alice.open("#/queues")
	alice.signIn(aliceToken)
	alice.wait("the echo queue", `document.querySelector('tr[data-queue="echo"]')`)
	if eval[bool](alice, `!!document.querySelector('tr[data-queue="echo"] button')`) {
		t.Error("a non-admin has a pause button")
	}

	p := newPage(t, srv, 1280, 900)
	p.open("#/queues")
	p.signIn(adminToken)
	p.click(`button[aria-label="Pause queue echo"]`)
	p.wait("the resume button", `document.querySelector('button[aria-label="Resume queue echo"]') && document.querySelector('tr[data-queue="echo"] .badge').dataset.state === 'paused'`)
	if !srv.Engine.Paused("echo") {
		t.Fatal("the queue is not paused")
	}
	p.click(`button[aria-label="Resume queue echo"]`)
	p.wait("the pause button", `document.querySelector('button[aria-label="Pause queue echo"]')`)
	if srv.Engine.Paused("echo") {
		t.Fatal("the queue is still paused")
	}
	if f := eval[string](p, `document.activeElement.getAttribute('aria-label')`); f != "Pause queue echo" {
		t.Errorf("focus on %q after resuming, want the button", f)
	}
}

// TestSubmitUpload submits a file from the page and lands on the new job;
// a token that cannot submit sees the API's reason.
func TestSubmitUpload(t *testing.T) {
	srv := startServer(t)
	file := filepath.Join(t.TempDir(), "notes.txt")
	content := "notes from the dashboard\n"
	if err := os.WriteFile(file, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}

	p := newPage(t, srv, 1280, 900)
	p.open("#/submit")
	p.signIn(aliceToken)
	p.wait("the queues", `document.querySelector('#s-queue option[value="echo"]')`)
	p.click(`input[name=kind][value=file]`)
	p.click(`details summary`)
	p.do(chromedp.SetUploadFiles(chromedp.ID("s-file"), []string{file}),
		chromedp.SendKeys(chromedp.ID("s-labels"), "doc:notes"))
	p.click(`button[type=submit]`)
	p.wait("the new job's page", `/^#\/jobs\/[0-9a-f-]{36}$/.test(location.hash) && document.querySelector('.view')?.dataset.state === 'succeeded'`)
	id := strings.TrimPrefix(eval[string](p, `location.hash`), "#/jobs/")
	j := srv.Job(t, id)
	if j.Owner != "alice" || j.Input.Name != "notes.txt" || !strings.HasPrefix(j.Input.ContentType, "text/plain") || j.Labels["doc"] != "notes" {
		t.Errorf("job %+v, input %+v, labels %v", j, j.Input, j.Labels)
	}
	if got := string(srv.Input(t, id)); got != content {
		t.Errorf("input %q, want %q", got, content)
	}
	if in := p.text("#input-title + .panel-body"); !strings.Contains(in, "notes.txt") {
		t.Errorf("input summary %q lacks the file name", in)
	}

	// JSON typed on the page; an invalid one is caught before sending.
	p.goTo("#/submit")
	p.wait("the form", `document.querySelector('#s-queue option[value="echo"]') && document.getElementById('s-text')`)
	p.do(chromedp.SetValue(chromedp.ID("s-text"), `{"steps": 2,}`))
	p.click(`button[type=submit]`)
	p.wait("the JSON error", `document.querySelector('#submit-error .alert')?.innerText.includes('not valid JSON')`)
	if f := eval[string](p, `document.activeElement.id`); f != "s-text" {
		t.Errorf("focus on #%s after the error, want the input", f)
	}

	// A token without the submit scope: the API's problem detail is shown.
	r := newPage(t, srv, 1280, 900)
	r.open("#/submit")
	r.signIn(readerToken)
	r.wait("the form", `document.querySelector('#s-queue option[value="echo"]')`)
	r.do(chromedp.SetValue(chromedp.ID("s-text"), `{"steps": 1}`))
	r.click(`button[type=submit]`)
	r.wait("the API's refusal", `document.querySelector('#submit-error .alert')?.innerText.includes('needs the submit scope')`)
	if h := eval[string](r, `location.hash`); h != "#/submit" {
		t.Errorf("moved to %s after a refused submit", h)
	}
}

// TestOpenMode: without tokens there is no sign-in; every caller is an
// admin.
func TestOpenMode(t *testing.T) {
	srv := apitest.Start(t, apitest.Options{Apps: []api.App{web.App}})
	id := submit(t, srv, "", "echo", "text/plain", "open")
	p := newPage(t, srv, 1280, 900)
	p.open("")
	p.wait("the queues view", `document.querySelector('tr[data-queue="echo"]')`)
	if eval[bool](p, `!!document.getElementById('token')`) {
		t.Error("open mode asks for a token")
	}
	if who := p.text("#who"); !strings.Contains(who, "open mode") {
		t.Errorf("header %q", who)
	}
	if eval[bool](p, `!document.getElementById('signout').hidden`) {
		t.Error("sign out offered in open mode")
	}
	if eval[bool](p, `!document.querySelector('button[aria-label="Pause queue echo"]')`) {
		t.Error("no pause button in open mode, where every caller is an admin")
	}
	p.goTo("#/jobs")
	p.wait("the job", fmt.Sprintf(`document.querySelector(%q)`, rowSel(id)))
}

// TestScreenshots fills a server with jobs in every state and saves the
// main pages at desktop and phone widths, for people to look at; it also
// checks that nothing is wider than a phone's screen.
func TestScreenshots(t *testing.T) {
	next := make(chan struct{})
	srv := startServer(t,
		engine.Queue{Name: "thumbs", Concurrency: 2, MaxAttempts: 1, Handler: apitest.Steps(8, next)},
		engine.Queue{Name: "reports", Concurrency: 0, MaxAttempts: 3})
	queues := newPage(t, srv, 1280, 800)
	queues.open("#/queues")
	queues.signIn(adminToken)

	// Work that finishes over a few polls of the queues view, so that its
	// throughput has something to show.
	var last string
	for round, n := range []int{4, 10, 6} {
		for i := range n {
			tok := []string{aliceToken, bobToken}[i%2]
			in := fmt.Sprintf(`{"steps": 3, "round": %d, "n": %d}`, round, i)
			if i == 3 {
				in = `{"fail": "the scanner returned no pages"}`
			}
			last = submit(t, srv, tok, "echo", "application/json", in)
		}
		time.Sleep(2100 * time.Millisecond)
	}
	srv.Await(t, last, func(j *job.Job) bool { return j.State.Terminal() })
	running := submit(t, srv, aliceToken, "thumbs", "image/png", "a picture")
	for range 2 {
		submit(t, srv, bobToken, "reports", "application/json", `{"report": "q3"}`)
	}
	srv.Await(t, running, func(j *job.Job) bool { return j.State == job.Running })
	for range 2 {
		next <- struct{}{}
	}
	srv.Await(t, running, func(j *job.Job) bool { return j.Progress.Current == 3 })
	withArtifacts := submit(t, srv, aliceToken, "echo", "application/json",
		`{"steps": 2, "artifacts": {"page-001.txt": "first page", "page-002.txt": "second page"}, "title": "Quarterly report", "pages": [1, 2]}`)
	srv.Await(t, withArtifacts, func(j *job.Job) bool { return j.State == job.Succeeded })

	queues.wait("the counts", `document.querySelector('tr[data-queue="thumbs"] td[data-label=Running]')?.innerText === '1' &&
		document.querySelector('tr[data-queue="reports"] td[data-label=Queued]')?.innerText === '2'`)
	queues.shot("queues")

	p := newPage(t, srv, 1280, 800)
	p.open("#/jobs")
	p.signIn(adminToken)
	p.wait("the jobs", fmt.Sprintf(`document.querySelector(%q)`, rowSel(running)))
	p.shot("jobs")
	p.goTo("#/jobs/" + running)
	p.wait("the running job", `document.querySelector('.view')?.dataset.state === 'running'`)
	p.shot("job-running")
	p.goTo("#/jobs/" + withArtifacts)
	p.wait("the result", `document.querySelector('#result pre.preview') && document.querySelector('#artifacts tr')`)
	p.shot("job-succeeded")
	p.goTo("#/submit")
	p.wait("the form", `document.querySelector('#s-queue option')?.value`)
	p.shot("submit")

	// The same pages in the dark.
	if _, err := chromedp.Call(p.ctx, emulation.SetEmulatedMedia, emulation.SetEmulatedMediaParams{
		Features: []*emulation.MediaFeature{{Name: "prefers-color-scheme", Value: "dark"}},
	}); err != nil {
		t.Fatal(err)
	}
	p.goTo("#/jobs")
	p.wait("the jobs", fmt.Sprintf(`document.querySelector(%q)`, rowSel(running)))
	p.shot("dark-jobs")
	p.goTo("#/jobs/" + withArtifacts)
	p.wait("the result", `document.querySelector('#result pre.preview') && document.querySelector('#artifacts tr')`)
	p.shot("dark-job")

	phone := newPage(t, srv, 360, 740)
	phone.open("#/queues")
	phone.signIn(aliceToken)
	wide := `document.documentElement.scrollWidth <= window.innerWidth`
	phone.wait("the queues", `document.querySelector('tr[data-queue="thumbs"] td[data-label=Running]')?.innerText === '1'`)
	phone.shot("phone-queues")
	if !eval[bool](phone, wide) {
		t.Error("the queues view is wider than a phone")
	}
	phone.goTo("#/jobs")
	phone.wait("the jobs", fmt.Sprintf(`document.querySelector(%q)`, rowSel(running)))
	phone.shot("phone-jobs")
	if !eval[bool](phone, wide) {
		t.Error("the jobs list is wider than a phone")
	}
	phone.goTo("#/jobs/" + withArtifacts)
	phone.wait("the job", `document.querySelector('#artifacts tr')`)
	phone.shot("phone-job")
	if !eval[bool](phone, wide) {
		t.Error("the job page is wider than a phone")
	}
}
