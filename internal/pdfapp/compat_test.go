package pdfapp_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime/multipart"
	"net/http"
	"net/textproto"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/docket/docket/internal/api"
	"github.com/docket/docket/internal/apitest"
	"github.com/docket/docket/internal/engine"
	"github.com/docket/docket/internal/job"
	"github.com/docket/docket/internal/pdfapp"
	"github.com/docket/docket/internal/store"
)

const (
	aliceToken  = "alice-secret"
	bobToken    = "bob-secret"
	adminToken  = "admin-secret"
	readerToken = "reader-secret"
)

var testTokens = map[string]apitest.Token{
	aliceToken:  {Owner: "alice", Scopes: []string{api.ScopeSubmit, api.ScopeRead}},
	bobToken:    {Owner: "bob", Scopes: []string{api.ScopeSubmit, api.ScopeRead}},
	adminToken:  {Owner: "ops", Scopes: []string{api.ScopeAdmin}},
	readerToken: {Owner: "alice", Scopes: []string{api.ScopeRead}},
}

// fakeOCR stands in for the pdf.ocr handler: it reports 0 of pages, then
// one step per page, adds a PNG per page and returns markdown. With a step
// channel, every page waits for a value on it, so that a test sees the job
// processing at each page. A file name containing "fail" fails the job
// after its first page.
type fakeOCR struct {
	pages int64
	step  chan struct{}
}

func pagePNG(page int) []byte {
	return fmt.Appendf([]byte("\x89PNG\r\n\x1a\n"), "page %d", page)
}

func markdown(pages int64) string {
	var b strings.Builder
	for i := range pages {
		fmt.Fprintf(&b, "## Page %d\n\ntext of page %d <&>\n\n", i+1, i+1)
	}
	return b.String()
}

func (f *fakeOCR) Run(ctx context.Context, tk *engine.Task) error {
	rc, err := tk.OpenInput(ctx)
	if err != nil {
		return err
	}
	in, err := io.ReadAll(rc)
	rc.Close()
	if err != nil {
		return err
	}
	if tk.Job().Input.ContentType != "application/pdf" || !bytes.Contains(in, []byte("%PDF-")) {
		return engine.Permanent(fmt.Errorf("input %q is no PDF", tk.Job().Input.ContentType))
	}
	tk.Progress(0, f.pages, "")
	for i := range f.pages {
		if f.step != nil {
			select {
			case <-f.step:
			case <-ctx.Done():
				return ctx.Err()
			}
		}
		tk.Progress(i+1, f.pages, fmt.Sprintf("page %d", i+1))
		if strings.Contains(tk.InputName(), "fail") {
			return engine.Permanent(errors.New("tesseract: page 2 is unreadable"))
		}
	}
	for i := range int(f.pages) {
		if err := tk.AddArtifact(pdfapp.ArtifactName(i+1), "image/png", bytes.NewReader(pagePNG(i+1))); err != nil {
			return err
		}
	}
	tk.SetResult("text/markdown; charset=utf-8", []byte(markdown(f.pages)))
	return nil
}

type envOptions struct {
	pages     int64
	step      chan struct{}
	open      bool // no tokens
	maxBody   int64
	maxQueued int
	rate      float64
	idle      bool // no workers: jobs stay pending
	// paused declares the queue paused, so that its jobs stay pending
	// until the test resumes it: pausing a started queue would not stop
	// a claim already under way.
	paused bool
}

// env is the compatible API over a real engine and SQLite store, with the
// /v1 API on the same server, as `docket serve --app pdf` runs it.
type env struct {
	t   testing.TB
	url string
	srv *apitest.Server
}

func newEnv(t testing.TB, o envOptions) *env {
	t.Helper()
	if o.pages == 0 {
		o.pages = 3
	}
	q := engine.Queue{Name: pdfapp.OCRQueue, Concurrency: 2, MaxAttempts: 1, MaxQueued: o.maxQueued, Paused: o.paused,
		Handler: &fakeOCR{pages: o.pages, step: o.step}}
	if o.idle {
		q.Concurrency = 0
	}
	opts := apitest.Options{Tokens: testTokens, Queues: []engine.Queue{q}, MaxBody: o.maxBody, Rate: o.rate, Burst: 1,
		Apps: []api.App{pdfapp.Compat}}
	if o.open {
		opts.Tokens = nil
	}
	srv := apitest.Start(t, opts)
	return &env{t: t, url: srv.URL, srv: srv}
}

type resp struct {
	status int
	header http.Header
	body   []byte
}

func (r resp) json(t testing.TB) map[string]any {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(r.body, &m); err != nil {
		t.Fatalf("status %d: body %q is not a JSON object: %v", r.status, r.body, err)
	}
	return m
}

// problem checks that r is a problem of status and type whose detail
// member is set, as FastAPI clients read it.
func (r resp) problem(t testing.TB, status int, typ string) map[string]any {
	t.Helper()
	if r.status != status {
		t.Fatalf("status %d, want %d: %s", r.status, status, r.body)
	}
	if ct := r.header.Get("Content-Type"); ct != "application/problem+json" {
		t.Fatalf("Content-Type %q, want application/problem+json: %s", ct, r.body)
	}
	p := r.json(t)
	if p["type"] != "urn:docket:problem:"+typ || p["status"] != float64(status) {
		t.Fatalf("problem %v, want type %s", p, typ)
	}
	if d, _ := p["detail"].(string); d == "" {
		t.Fatalf("problem without detail: %v", p)
	}
	return p
}

func (e *env) do(method, path, token string, body io.Reader, ctype string) resp {
	e.t.Helper()
	req, err := http.NewRequest(method, e.url+path, body)
	if err != nil {
		e.t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	if ctype != "" {
		req.Header.Set("Content-Type", ctype)
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	if err != nil {
		e.t.Fatal(err)
	}
	return resp{status: res.StatusCode, header: res.Header, body: b}
}

func (e *env) get(path, token string) resp { return e.do(http.MethodGet, path, token, nil, "") }

// form is a multipart form with content as its field part, named filename.
func form(field, filename string, content []byte) (string, *bytes.Buffer) {
	var buf bytes.Buffer
	mw := multipart.NewWriter(&buf)
	mw.WriteField("language", "eng") // fields besides the file are ignored
	h := textproto.MIMEHeader{}
	h.Set("Content-Disposition", fmt.Sprintf(`form-data; name=%q; filename=%q`, field, filename))
	pw, _ := mw.CreatePart(h) // no Content-Type, as Python's requests sends it
	pw.Write(content)
	mw.Close()
	return mw.FormDataContentType(), &buf
}

func pdf(size int) []byte {
	b := append([]byte("%PDF-1.7\n"), bytes.Repeat([]byte("x"), max(size-9, 0))...)
	return b[:max(size, 9)]
}

// upload posts a PDF and returns the job id of the 200 answer.
func (e *env) upload(token, filename string, content []byte) string {
	e.t.Helper()
	ct, body := form("file", filename, content)
	r := e.do(http.MethodPost, "/process_pdf", token, body, ct)
	if r.status != http.StatusOK {
		e.t.Fatalf("upload: status %d: %s", r.status, r.body)
	}
	m := r.json(e.t)
	id, _ := m["job_id"].(string)
	if id == "" || m["status"] != "pending" || m["message"] == "" {
		e.t.Fatalf("upload answered %v", m)
	}
	return id
}

func (e *env) status(id, token string) map[string]any {
	e.t.Helper()
	r := e.get("/result/"+id+"/status", token)
	if r.status != http.StatusOK {
		e.t.Fatalf("status: %d: %s", r.status, r.body)
	}
	return r.json(e.t)
}

// statusUntil polls the task's status until ok accepts it, checking on
// the way that processed_pages never goes down.
func (e *env) statusUntil(id, token string, ok func(map[string]any) bool) map[string]any {
	e.t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	last := -1.0
	for {
		m := e.status(id, token)
		if p := m["processed_pages"].(float64); p < last {
			e.t.Fatalf("processed_pages went from %v down to %v", last, p)
		} else {
			last = p
		}
		if ok(m) {
			return m
		}
		if time.Now().After(deadline) {
			e.t.Fatalf("task %s still %v", id, m)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func statusIs(s string) func(map[string]any) bool {
	return func(m map[string]any) bool { return m["status"] == s }
}

func TestUploadAnswersAtOnce(t *testing.T) {
	// The handler never gets a page: the answer cannot wait for the work.
	e := newEnv(t, envOptions{step: make(chan struct{})})
	for _, tc := range []struct {
		name  string
		size  int
		tries int
	}{
		{"small, in memory", 2 << 10, 5},
		{"large, spooled to a file", 3 << 20, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			content := pdf(tc.size)
			fastest := time.Hour
			for range tc.tries {
				start := time.Now()
				id := e.upload(aliceToken, "scan.pdf", content)
				fastest = min(fastest, time.Since(start))
				j := e.srv.Job(t, id)
				if j.Queue != pdfapp.OCRQueue || j.Owner != "alice" || j.Input.ContentType != "application/pdf" ||
					j.Input.Name != "scan.pdf" || j.Input.Size != int64(len(content)) || j.State.Terminal() {
					t.Fatalf("job %+v", j)
				}
				if !bytes.Equal(e.srv.Input(t, id), content) {
					t.Error("the stored input differs from the upload")
				}
				// The same job for the /v1 API.
				v1 := e.get("/v1/jobs/"+id, aliceToken)
				if m := v1.json(t); v1.status != http.StatusOK || m["queue"] != pdfapp.OCRQueue {
					t.Fatalf("/v1/jobs/%s: %d %v", id, v1.status, m)
				}
			}
			// The fastest of a few, so that a machine busy with other
			// tests does not fail this one; the large upload's time is
			// its transfer's.
			t.Logf("%d bytes answered in %v", tc.size, fastest)
			if fastest > 100*time.Millisecond && tc.size < 1<<20 {
				t.Errorf("upload answered after %v, want within 100ms", fastest)
			}
		})
	}
}

func resume(t *testing.T, e *env) {
	t.Helper()
	if err := e.srv.Engine.SetPaused(pdfapp.OCRQueue, false); err != nil {
		t.Fatal(err)
	}
}

func TestStatusFollowsTheJob(t *testing.T) {
	step := make(chan struct{})
	e := newEnv(t, envOptions{pages: 4, step: step, paused: true})
	before := time.Now().UTC().Add(-time.Second)
	id := e.upload(aliceToken, "report.pdf", pdf(100))

	m := e.status(id, aliceToken)
	want := map[string]any{"job_id": id, "status": "pending", "filename": "report.pdf",
		"total_pages": 0.0, "processed_pages": 0.0, "error_message": nil}
	for k, v := range want {
		if m[k] != v {
			t.Errorf("pending: %s = %v, want %v", k, m[k], v)
		}
	}
	for _, k := range []string{"created_at", "updated_at"} {
		s, _ := m[k].(string)
		ts, err := time.Parse(time.RFC3339Nano, s)
		if err != nil || !strings.HasSuffix(s, "+00:00") || ts.Before(before) || ts.After(time.Now().Add(time.Second)) {
			t.Errorf("%s = %q (%v), want an RFC 3339 time of now with offset +00:00", k, s, err)
		}
	}
	if len(m) != 8 {
		t.Errorf("status has %d fields: %v", len(m), m)
	}

	resume(t, e)
	m = e.statusUntil(id, aliceToken, func(m map[string]any) bool { return m["total_pages"] == 4.0 })
	if m["status"] != "processing" || m["processed_pages"] != 0.0 {
		t.Fatalf("started: %v", m)
	}
	for page := 1.0; page <= 4; page++ {
		step <- struct{}{}
		e.statusUntil(id, aliceToken, func(m map[string]any) bool { return m["processed_pages"] == page })
	}
	m = e.statusUntil(id, aliceToken, statusIs("completed"))
	if m["processed_pages"] != 4.0 || m["total_pages"] != 4.0 || m["error_message"] != nil {
		t.Fatalf("completed: %v", m)
	}
	if m["updated_at"].(string) < m["created_at"].(string) {
		t.Errorf("updated_at %v before created_at %v", m["updated_at"], m["created_at"])
	}
}

func TestMarkdown(t *testing.T) {
	step := make(chan struct{})
	e := newEnv(t, envOptions{pages: 2, step: step, paused: true})
	id := e.upload(aliceToken, "a.pdf", pdf(100))

	notYet := func(status string) {
		t.Helper()
		r := e.get("/result/"+id+"/markdown", aliceToken)
		if r.status != http.StatusAccepted || r.header.Get("Retry-After") == "" {
			t.Fatalf("%s: %d (Retry-After %q): %s", status, r.status, r.header.Get("Retry-After"), r.body)
		}
		if m := r.json(t); m["job_id"] != id || m["status"] != status || m["detail"] == "" || m["content"] != nil {
			t.Fatalf("%s: %v", status, m)
		}
	}
	notYet("pending")
	resume(t, e)
	e.statusUntil(id, aliceToken, statusIs("processing"))
	notYet("processing")
	step <- struct{}{}
	step <- struct{}{}
	e.statusUntil(id, aliceToken, statusIs("completed"))

	r := e.get("/result/"+id+"/markdown", aliceToken)
	if r.status != http.StatusOK || r.header.Get("Content-Type") != "application/json" {
		t.Fatalf("%d %q: %s", r.status, r.header.Get("Content-Type"), r.body)
	}
	want := map[string]any{"job_id": id, "status": "completed", "content": markdown(2)}
	if m := r.json(t); len(m) != len(want) || m["job_id"] != want["job_id"] || m["status"] != want["status"] || m["content"] != want["content"] {
		t.Fatalf("markdown %v, want %v", m, want)
	}
}

func TestFailedTask(t *testing.T) {
	e := newEnv(t, envOptions{pages: 3})
	id := e.upload(aliceToken, "fail.pdf", pdf(100))
	m := e.statusUntil(id, aliceToken, statusIs("failed"))
	if m["error_message"] != "tesseract: page 2 is unreadable" || m["processed_pages"] != 1.0 || m["total_pages"] != 3.0 {
		t.Fatalf("failed: %v", m)
	}
	p := e.get("/result/"+id+"/markdown", aliceToken).problem(t, http.StatusInternalServerError, "job-failed")
	if p["detail"] != "tesseract: page 2 is unreadable" {
		t.Errorf("detail %v", p["detail"])
	}
	if m := e.get("/result/"+id+"/images", aliceToken).json(t); m["count"] != 0.0 {
		t.Errorf("images of a failed task: %v", m)
	}

	// A canceled task is a failed one for the original's clients.
	e2 := newEnv(t, envOptions{step: make(chan struct{})})
	id = e2.upload(aliceToken, "a.pdf", pdf(100))
	e2.statusUntil(id, aliceToken, statusIs("processing"))
	if r := e2.do(http.MethodPost, "/v1/jobs/"+id+"/cancel", aliceToken, nil, ""); r.status != http.StatusOK {
		t.Fatalf("cancel: %d %s", r.status, r.body)
	}
	if m := e2.status(id, aliceToken); m["status"] != "failed" || m["error_message"] == nil {
		t.Fatalf("canceled: %v", m)
	}
	e2.get("/result/"+id+"/markdown", aliceToken).problem(t, http.StatusInternalServerError, "job-failed")
}

func TestImages(t *testing.T) {
	e := newEnv(t, envOptions{pages: 3})
	id := e.upload(aliceToken, "a.pdf", pdf(100))
	e.statusUntil(id, aliceToken, statusIs("completed"))

	m := e.get("/result/"+id+"/images", aliceToken).json(t)
	names := []string{"page-001.png", "page-002.png", "page-003.png"}
	got, _ := m["images"].([]any)
	if m["job_id"] != id || m["count"] != 3.0 || len(got) != 3 {
		t.Fatalf("images %v", m)
	}
	for i, n := range names {
		if got[i] != n {
			t.Errorf("images[%d] = %v, want %s", i, got[i], n)
		}
		r := e.get("/result/"+id+"/images/"+n, aliceToken)
		if r.status != http.StatusOK || r.header.Get("Content-Type") != "image/png" || !bytes.Equal(r.body, pagePNG(i+1)) {
			t.Errorf("%s: %d %q %q", n, r.status, r.header.Get("Content-Type"), r.body)
		}
	}
	e.get("/result/"+id+"/images/page-009.png", aliceToken).problem(t, http.StatusNotFound, "artifact-not-found")
	e.get("/result/"+id+"/images/.hidden", aliceToken).problem(t, http.StatusBadRequest, "bad-request")
	e.get("/result/"+id+"/images/a%20b.png", aliceToken).problem(t, http.StatusBadRequest, "bad-request")
}

// tasksOf lists the tasks a token sees, with an optional status filter.
func (e *env) tasksOf(token, query string) []string {
	e.t.Helper()
	r := e.get("/tasks"+query, token)
	if r.status != http.StatusOK {
		e.t.Fatalf("tasks%s: %d %s", query, r.status, r.body)
	}
	var out struct {
		Count int              `json:"count"`
		Tasks []map[string]any `json:"tasks"`
	}
	if err := json.Unmarshal(r.body, &out); err != nil || out.Count != len(out.Tasks) {
		e.t.Fatalf("tasks%s: %s (%v)", query, r.body, err)
	}
	var ids []string
	for _, tk := range out.Tasks {
		for _, k := range []string{"job_id", "status", "filename", "total_pages", "processed_pages", "created_at", "updated_at", "error_message"} {
			if _, ok := tk[k]; !ok {
				e.t.Errorf("task without %s: %v", k, tk)
			}
		}
		ids = append(ids, tk["job_id"].(string))
	}
	slices.Sort(ids)
	return ids
}

func sorted(ids ...string) []string {
	slices.Sort(ids)
	return ids
}

func TestTasks(t *testing.T) {
	e := newEnv(t, envOptions{pages: 2})
	done := e.upload(aliceToken, "done.pdf", pdf(100))
	failed := e.upload(aliceToken, "fail.pdf", pdf(100))
	bobs := e.upload(bobToken, "bob.pdf", pdf(100))
	for _, id := range []string{done, bobs} {
		e.statusUntil(id, adminToken, statusIs("completed"))
	}
	e.statusUntil(failed, adminToken, statusIs("failed"))
	// A job of another queue is no task.
	echo := e.do(http.MethodPost, "/v1/queues/echo/jobs", aliceToken, strings.NewReader("hi"), "text/plain")
	if echo.status != http.StatusAccepted {
		t.Fatalf("echo: %d %s", echo.status, echo.body)
	}
	echoID := echo.json(t)["id"].(string)
	e.get("/result/"+echoID+"/status", aliceToken).problem(t, http.StatusNotFound, "job-not-found")

	cases := []struct {
		token, query string
		want         []string
	}{
		{aliceToken, "", sorted(done, failed)},
		{readerToken, "", sorted(done, failed)},
		{aliceToken, "?status=completed", []string{done}},
		{aliceToken, "?status=failed", []string{failed}},
		{aliceToken, "?status=pending", nil},
		{aliceToken, "?status=processing", nil},
		{bobToken, "", []string{bobs}},
		{adminToken, "", sorted(done, failed, bobs)},
		{adminToken, "?status=completed", sorted(done, bobs)},
	}
	for _, tc := range cases {
		if got := e.tasksOf(tc.token, tc.query); !slices.Equal(got, tc.want) {
			t.Errorf("%s tasks%s = %v, want %v", testTokens[tc.token].Owner, tc.query, got, tc.want)
		}
	}
	for _, q := range []string{"?status=done", "?status=", "?status=PENDING", "?status=queued"} {
		e.get("/tasks"+q, aliceToken).problem(t, http.StatusUnprocessableEntity, "invalid-field")
	}
}

func TestDelete(t *testing.T) {
	step := make(chan struct{})
	e := newEnv(t, envOptions{pages: 2, step: step})
	running := e.upload(aliceToken, "a.pdf", pdf(100))
	e.statusUntil(running, aliceToken, statusIs("processing"))
	close(step) // every later page is done at once
	done := e.upload(aliceToken, "b.pdf", pdf(100))
	e.statusUntil(done, aliceToken, statusIs("completed"))
	for _, id := range []string{running, done} {
		r := e.do(http.MethodDelete, "/result/"+id, aliceToken, nil, "")
		if m := r.json(t); r.status != http.StatusOK || m["job_id"] != id || m["message"] == "" {
			t.Fatalf("delete %s: %d %s", id, r.status, r.body)
		}
		for _, path := range []string{"/result/" + id + "/status", "/result/" + id + "/markdown", "/result/" + id + "/images",
			"/result/" + id + "/images/page-001.png", "/v1/jobs/" + id} {
			e.get(path, aliceToken).problem(t, http.StatusNotFound, "job-not-found")
		}
		e.do(http.MethodDelete, "/result/"+id, aliceToken, nil, "").problem(t, http.StatusNotFound, "job-not-found")
		if list, err := e.srv.Engine.Store().Artifacts(t.Context(), id); err == nil && len(list) > 0 {
			t.Errorf("images of %s kept: %v", id, list)
		}
	}
	if ids := e.tasksOf(aliceToken, ""); len(ids) != 0 {
		t.Errorf("tasks after delete: %v", ids)
	}
}

func TestTenantIsolation(t *testing.T) {
	e := newEnv(t, envOptions{pages: 1})
	id := e.upload(aliceToken, "mine.pdf", pdf(100))
	e.statusUntil(id, aliceToken, statusIs("completed"))
	for _, tc := range []struct{ method, path string }{
		{http.MethodGet, "/result/" + id + "/status"},
		{http.MethodGet, "/result/" + id + "/markdown"},
		{http.MethodGet, "/result/" + id + "/images"},
		{http.MethodGet, "/result/" + id + "/images/page-001.png"},
		{http.MethodDelete, "/result/" + id},
		{http.MethodGet, "/v1/jobs/" + id},
	} {
		foreign := e.do(tc.method, tc.path, bobToken, nil, "")
		foreign.problem(t, http.StatusNotFound, "job-not-found")
		// Exactly as a job that never was.
		unknown := e.do(tc.method, strings.Replace(tc.path, id, job.NewID(), 1), bobToken, nil, "")
		unknown.problem(t, http.StatusNotFound, "job-not-found")
	}
	if ids := e.tasksOf(bobToken, ""); len(ids) != 0 {
		t.Errorf("bob sees %v", ids)
	}
	if m := e.status(id, aliceToken); m["status"] != "completed" {
		t.Errorf("after bob's delete: %v", m)
	}
	if m := e.status(id, adminToken); m["job_id"] != id {
		t.Errorf("admin: %v", m)
	}
}

func TestAuth(t *testing.T) {
	e := newEnv(t, envOptions{idle: true})
	id := e.upload(aliceToken, "a.pdf", pdf(100))
	routes := []struct{ method, path string }{
		{http.MethodPost, "/process_pdf"},
		{http.MethodGet, "/result/" + id + "/status"},
		{http.MethodGet, "/result/" + id + "/markdown"},
		{http.MethodGet, "/result/" + id + "/images"},
		{http.MethodGet, "/result/" + id + "/images/page-001.png"},
		{http.MethodDelete, "/result/" + id},
		{http.MethodGet, "/tasks"},
	}
	for _, rt := range routes {
		for _, tok := range []string{"", "nobody"} {
			r := e.do(rt.method, rt.path, tok, nil, "")
			r.problem(t, http.StatusUnauthorized, "unauthorized")
			if r.header.Get("WWW-Authenticate") == "" {
				t.Errorf("%s %s: 401 without WWW-Authenticate", rt.method, rt.path)
			}
		}
	}
	// Reading does not allow submitting or deleting.
	ct, body := form("file", "a.pdf", pdf(100))
	e.do(http.MethodPost, "/process_pdf", readerToken, body, ct).problem(t, http.StatusForbidden, "forbidden")
	e.do(http.MethodDelete, "/result/"+id, readerToken, nil, "").problem(t, http.StatusForbidden, "forbidden")
	if m := e.status(id, readerToken); m["status"] != "pending" {
		t.Errorf("reader: %v", m)
	}
	// Health needs no token, but a token sent must be known.
	if r := e.get("/health", ""); r.status != http.StatusOK || r.json(t)["status"] != "healthy" {
		t.Errorf("health: %d %s", r.status, r.body)
	}
	e.get("/health", "nobody").problem(t, http.StatusUnauthorized, "unauthorized")
	e.do(http.MethodPost, "/health", "", nil, "").problem(t, http.StatusMethodNotAllowed, "method-not-allowed")
}

func TestOpenMode(t *testing.T) {
	e := newEnv(t, envOptions{open: true, pages: 1})
	id := e.upload("", "a.pdf", pdf(100))
	e.statusUntil(id, "", statusIs("completed"))
	if ids := e.tasksOf("", ""); !slices.Equal(ids, []string{id}) {
		t.Errorf("tasks %v", ids)
	}
}

// rawForm is a hand-written multipart body, for forms a client library
// would not make.
func rawForm(parts ...string) (string, string) {
	var b strings.Builder
	for _, p := range parts {
		b.WriteString("--XX\r\n" + p + "\r\n")
	}
	b.WriteString("--XX--\r\n")
	return "multipart/form-data; boundary=XX", b.String()
}

func TestRefusedUploads(t *testing.T) {
	ctPDF, bodyPDF := form("file", "a.pdf", pdf(100))
	ctNoFile, bodyNoFile := form("document", "a.pdf", pdf(100))
	ctEmpty, bodyEmpty := form("file", "a.pdf", nil)
	ctText, bodyText := form("file", "notes.txt", []byte("just some notes"))
	ctPNG, bodyPNG := form("file", "a.pdf", pagePNG(1))
	ctBig, bodyBig := form("file", "big.pdf", pdf(1<<20))
	ctBroken, bodyBroken := rawForm("Content-Disposition: form-data; name=\"file\"; filename=\"a.pdf\"\r\n\r\n%PDF-1.4 and no end")
	bodyBroken = strings.TrimSuffix(bodyBroken, "--XX--\r\n")
	cases := []struct {
		name   string
		opts   envOptions
		ctype  string
		body   string
		token  string
		status int
		typ    string
	}{
		{"a bare PDF body", envOptions{}, "application/pdf", string(pdf(100)), aliceToken, 415, "unsupported-media-type"},
		{"JSON", envOptions{}, "application/json", `{"file": "a.pdf"}`, aliceToken, 415, "unsupported-media-type"},
		{"no content type", envOptions{}, "", string(pdf(100)), aliceToken, 415, "unsupported-media-type"},
		{"multipart without boundary", envOptions{}, "multipart/form-data", bodyPDF.String(), aliceToken, 415, "unsupported-media-type"},
		{"no file field", envOptions{}, ctNoFile, bodyNoFile.String(), aliceToken, 422, "invalid-field"},
		{"empty form", envOptions{}, "multipart/form-data; boundary=XX", "--XX--\r\n", aliceToken, 422, "invalid-field"},
		{"empty file", envOptions{}, ctEmpty, bodyEmpty.String(), aliceToken, 422, "invalid-field"},
		{"a text file", envOptions{}, ctText, bodyText.String(), aliceToken, 415, "unsupported-media-type"},
		{"a PNG named .pdf", envOptions{}, ctPNG, bodyPNG.String(), aliceToken, 415, "unsupported-media-type"},
		{"a form cut short", envOptions{}, ctBroken, bodyBroken, aliceToken, 400, "bad-request"},
		{"over the body limit", envOptions{maxBody: 64 << 10}, ctBig, bodyBig.String(), aliceToken, 413, "body-too-large"},
		{"the queue is full", envOptions{idle: true, maxQueued: 1}, ctPDF, bodyPDF.String(), aliceToken, 503, "queue-full"},
		{"over the rate", envOptions{rate: 0.001}, ctPDF, bodyPDF.String(), aliceToken, 429, "rate-limited"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, tc.opts)
			if tc.status == 503 || tc.status == 429 {
				e.upload(aliceToken, "first.pdf", pdf(100))
			}
			r := e.do(http.MethodPost, "/process_pdf", tc.token, strings.NewReader(tc.body), tc.ctype)
			r.problem(t, tc.status, tc.typ)
			if tc.status == 503 || tc.status == 429 {
				if r.header.Get("Retry-After") == "" {
					t.Errorf("%d without Retry-After", tc.status)
				}
				return
			}
			page, err := e.srv.Engine.Store().List(t.Context(), store.Filter{})
			if err != nil || len(page.Jobs) != 0 {
				t.Errorf("a refused upload made jobs %v (%v)", page.Jobs, err)
			}
		})
	}
}

func TestSameJobOnV1Events(t *testing.T) {
	e := newEnv(t, envOptions{pages: 2})
	id := e.upload(aliceToken, "a.pdf", pdf(100))
	req, err := http.NewRequest(http.MethodGet, e.url+"/v1/jobs/"+id+"/events", nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+aliceToken)
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	sc := bufio.NewScanner(res.Body)
	var last string
	for sc.Scan() {
		if data, ok := strings.CutPrefix(sc.Text(), "data: "); ok {
			last = data
		}
	}
	var j struct {
		State    string `json:"state"`
		Progress struct{ Current, Total int64 }
	}
	if err := json.Unmarshal([]byte(last), &j); err != nil || j.State != "succeeded" || j.Progress.Current != 2 || j.Progress.Total != 2 {
		t.Fatalf("last event %q (%v)", last, err)
	}
	if m := e.status(id, aliceToken); m["status"] != "completed" {
		t.Errorf("status after the stream ended: %v", m)
	}
}
