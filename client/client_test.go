package client_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"maps"
	"net/http"
	"net/http/httptest"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/docket/docket/client"
	"github.com/docket/docket/internal/api"
	"github.com/docket/docket/internal/apitest"
	"github.com/docket/docket/internal/engine"
	"github.com/docket/docket/internal/job"
)

// newServer starts a real docket server (API, engine and SQLite store) with
// the default echo queue and these queues. A non-empty token is the only
// one it accepts, standing for alice with every right; empty runs it open.
func newServer(t *testing.T, token string, queues ...engine.Queue) (*apitest.Server, *client.Client) {
	t.Helper()
	opts := apitest.Options{Queues: queues}
	if token != "" {
		opts.Tokens = map[string]apitest.Token{token: {Owner: "alice", Scopes: []string{api.ScopeAdmin}}}
	}
	srv := apitest.Start(t, opts)
	return srv, client.New(srv.URL, token)
}

// held is a queue without workers: its jobs stay queued.
var held = engine.Queue{Name: "held"}

// submit submits body to queue and fails the test if the server refuses.
func submit(t *testing.T, c *client.Client, queue, body string, o client.SubmitOptions) *client.Job {
	t.Helper()
	j, err := c.Submit(t.Context(), queue, strings.NewReader(body), o)
	if err != nil {
		t.Fatalf("submit to %s: %v", queue, err)
	}
	return j
}

// wait follows job id to its end through the API.
func wait(t *testing.T, c *client.Client, id string) *client.Job {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	j, err := c.Wait(ctx, id, nil)
	if err != nil {
		t.Fatalf("wait for %s: %v", id, err)
	}
	return j
}

// jsonInput is SubmitOptions for an echo job that asks for something.
var jsonInput = client.SubmitOptions{ContentType: "application/json"}

// The job document of the API description decodes field by field, nulls
// included.
func TestDecodeJob(t *testing.T) {
	const doc = `{"id": "01936f", "queue": "thumbs", "owner": "alice", "state": "running", "version": 7,
	 "progress": {"current": 3, "total": 17, "message": "page 3", "percent": 17.6}, "position": 0,
	 "attempt": 1, "max_attempts": 3, "priority": 2, "labels": {"doc": "a"},
	 "input": {"content_type": "application/pdf", "size": 1211016, "filename": "scan.pdf"},
	 "result": null, "artifacts": 17, "error": {"message": "boom", "code": "handler_error"},
	 "created_at": "2025-01-02T03:04:05Z", "started_at": "2025-01-02T03:04:06.5Z", "finished_at": null,
	 "updated_at": "2025-01-02T03:04:07Z", "expires_at": null, "future_field": [1, 2],
	 "links": {"self": "/v1/jobs/01936f", "result": "/v1/jobs/01936f/result", "events": "/v1/jobs/01936f/events",
	   "cancel": "/v1/jobs/01936f/cancel", "artifacts": "/v1/jobs/01936f/artifacts"}}`
	hs := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/v1/jobs/01936f" {
			http.NotFound(w, r)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, doc)
	}))
	defer hs.Close()
	j, err := client.New(hs.URL, "").Get(t.Context(), "01936f")
	if err != nil {
		t.Fatal(err)
	}
	if j.ID != "01936f" || j.Queue != "thumbs" || j.Owner != "alice" || j.State != client.StateRunning || j.Version != 7 ||
		j.Attempt != 1 || j.MaxAttempts != 3 || j.Priority != 2 || j.Labels["doc"] != "a" || j.Artifacts != 17 {
		t.Errorf("scalars: %+v", j)
	}
	if p := j.Progress; p.Current != 3 || p.Total != 17 || p.Message != "page 3" || p.Percent == nil || *p.Percent != 17.6 {
		t.Errorf("progress: %+v", p)
	}
	if j.Input != (client.Blob{ContentType: "application/pdf", Size: 1211016, Filename: "scan.pdf"}) || j.Result != nil {
		t.Errorf("input %+v, result %+v", j.Input, j.Result)
	}
	if j.Error == nil || j.Error.Message != "boom" || j.Error.Code != "handler_error" {
		t.Errorf("error: %+v", j.Error)
	}
	if !j.StartedAt.Equal(time.Date(2025, 1, 2, 3, 4, 6, 5e8, time.UTC)) || !j.FinishedAt.IsZero() || !j.ExpiresAt.IsZero() {
		t.Errorf("times: started %v finished %v expires %v", j.StartedAt, j.FinishedAt, j.ExpiresAt)
	}
	if j.Links.Artifacts != "/v1/jobs/01936f/artifacts" || j.Terminal() {
		t.Errorf("links %+v, terminal %v", j.Links, j.Terminal())
	}
	j2, err := client.New(hs.URL+"/", "").Poll(t.Context(), "01936f", 0, 0)
	if err != nil || j2.Version != 7 {
		t.Fatalf("trailing slash in the server address: %v", err)
	}
}

func TestPercentNull(t *testing.T) {
	hs := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, `{"id": "a", "state": "running", "progress": {"current": 3, "total": 0, "percent": null}}`)
	}))
	defer hs.Close()
	j, err := client.New(hs.URL, "").Get(t.Context(), "a")
	if err != nil || j.Progress.Percent != nil || j.Progress.Current != 3 {
		t.Fatalf("%+v, %v", j, err)
	}
}

// What Submit sends arrives: the server stores the input, its type and
// file name, and applies every option.
func TestSubmit(t *testing.T) {
	var mu sync.Mutex
	var prefer []string // the Prefer headers of submits, in order
	srv := apitest.Start(t, apitest.Options{
		Tokens: map[string]apitest.Token{"secret": {Owner: "alice", Scopes: []string{api.ScopeSubmit, api.ScopeRead}}},
		Observe: func(r *http.Request) {
			if r.Method == http.MethodPost && strings.HasSuffix(r.URL.Path, "/jobs") {
				mu.Lock()
				prefer = append(prefer, r.Header.Get("Prefer"))
				mu.Unlock()
			}
		},
	})
	c := client.New(srv.URL, "secret")
	runAt := time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)
	cases := []struct {
		name     string
		body     io.Reader
		o        client.SubmitOptions
		ctype    string
		filename string
		input    string
		// stored checks what the store keeps beyond the job document.
		stored func(t *testing.T, j *job.Job)
	}{
		{
			name: "every option",
			body: strings.NewReader("hello"),
			o: client.SubmitOptions{ContentType: "text/plain", IdempotencyKey: "k1", Priority: 5,
				Delay: 90 * time.Second, Timeout: time.Minute, MaxAttempts: 2,
				Labels: map[string]string{"doc": "a", "b": "c:d"}, Unique: true},
			ctype: "text/plain",
			input: "hello",
			stored: func(t *testing.T, j *job.Job) {
				if d := j.RunAt.Sub(j.CreatedAt); d < 89*time.Second || d > 91*time.Second {
					t.Errorf("run_at %v after creation, want 90s", d)
				}
				if j.Timeout != time.Minute || j.IdempotencyKey != "k1" || !j.Unique || j.Owner != "alice" {
					t.Errorf("stored %+v", j)
				}
			},
		},
		{
			name:  "run at",
			body:  strings.NewReader("later"),
			o:     client.SubmitOptions{ContentType: "text/plain", RunAt: runAt},
			ctype: "text/plain",
			input: "later",
			stored: func(t *testing.T, j *job.Job) {
				if !j.RunAt.Equal(runAt) {
					t.Errorf("run_at %v, want %v", j.RunAt, runAt)
				}
			},
		},
		{
			name:  "nothing",
			ctype: "application/octet-stream", // the server's default
			stored: func(t *testing.T, j *job.Job) {
				if j.Timeout != 0 || j.IdempotencyKey != "" || j.Unique || j.RunAt.Sub(j.CreatedAt) > time.Second {
					t.Errorf("stored %+v", j)
				}
			},
		},
		{
			name:     "multipart",
			body:     io.MultiReader(strings.NewReader("%PDF-"), strings.NewReader("1.7")), // no known length
			o:        client.SubmitOptions{Multipart: true, ContentType: "application/pdf", Filename: `scan "1".pdf`, Priority: -1},
			ctype:    "application/pdf",
			filename: `scan "1".pdf`,
			input:    "%PDF-1.7",
		},
		{
			name:     "multipart without name or type",
			body:     strings.NewReader("x"),
			o:        client.SubmitOptions{Multipart: true},
			ctype:    "application/octet-stream",
			filename: "input",
			input:    "x",
		},
	}
	ids := map[string]string{}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			j, err := c.Submit(t.Context(), "echo", tc.body, tc.o)
			if err != nil {
				t.Fatal(err)
			}
			ids[tc.name] = j.ID
			if j.State != client.StateQueued || j.Queue != "echo" || j.Owner != "alice" || j.Links.Self != "/v1/jobs/"+j.ID {
				t.Errorf("job %+v", j)
			}
			got, err := c.Get(t.Context(), j.ID)
			if err != nil {
				t.Fatal(err)
			}
			want := client.Blob{ContentType: tc.ctype, Size: int64(len(tc.input)), Filename: tc.filename}
			if j.Input != want || got.Input != want {
				t.Errorf("input %+v, then %+v; want %+v", j.Input, got.Input, want)
			}
			maxAttempts := orDefault(tc.o.MaxAttempts, 3) // the echo queue's default
			if got.Priority != tc.o.Priority || got.MaxAttempts != maxAttempts || !maps.Equal(got.Labels, tc.o.Labels) {
				t.Errorf("priority %d, max_attempts %d, labels %v", got.Priority, got.MaxAttempts, got.Labels)
			}
			if b := srv.Input(t, j.ID); string(b) != tc.input {
				t.Errorf("stored input %q, want %q", b, tc.input)
			}
			if tc.stored != nil {
				tc.stored(t, srv.Job(t, j.ID))
			}
		})
	}
	t.Run("delay and run_at", func(t *testing.T) {
		_, err := c.Submit(t.Context(), "echo", nil, client.SubmitOptions{Delay: time.Second, RunAt: runAt})
		if p, ok := errors.AsType[*client.Problem](err); !ok || p.Status != 400 || !strings.Contains(p.Detail, "not both") {
			t.Fatalf("%v, want a 400 problem", err)
		}
	})
	t.Run("unique", func(t *testing.T) {
		j := submit(t, c, "echo", "hello", client.SubmitOptions{ContentType: "text/plain", Unique: true})
		if j.ID != ids["every option"] {
			t.Fatalf("job %s, want the queued %s with the same input", j.ID, ids["every option"])
		}
	})
	t.Run("idempotency key", func(t *testing.T) {
		a := submit(t, c, "echo", "1", client.SubmitOptions{IdempotencyKey: "same"})
		b := submit(t, c, "echo", "2", client.SubmitOptions{IdempotencyKey: "same"})
		if b.ID != a.ID {
			t.Fatalf("second submit: job %s, want %s", b.ID, a.ID)
		}
	})
	t.Run("prefer wait", func(t *testing.T) {
		j := submit(t, c, "echo", "quick", client.SubmitOptions{Wait: 9500 * time.Millisecond})
		if j.State != client.StateSucceeded || j.Result == nil || j.Result.Size != 5 {
			t.Errorf("job %+v", j)
		}
		mu.Lock()
		defer mu.Unlock()
		if got := prefer[len(prefer)-1]; got != "wait=10" {
			t.Errorf("Prefer: %q, want wait=10 (rounded up)", got)
		}
		if slices.ContainsFunc(prefer[:len(prefer)-1], func(p string) bool { return p != "" }) {
			t.Errorf("Prefer sent without Wait: %q", prefer)
		}
	})
}

func orDefault(v, def int) int {
	if v == 0 {
		return def
	}
	return v
}

// Errors the server answers come back as *Problem, whatever their form.
func TestProblems(t *testing.T) {
	date := time.Now().Add(10 * time.Second).UTC().Format(http.TimeFormat)
	cases := []struct {
		name     string
		status   int
		ctype    string
		header   map[string]string
		body     string
		want     client.Problem
		retryMin time.Duration
		notFound bool
		text     string
	}{
		{name: "problem", status: 404, ctype: "application/problem+json",
			body:     `{"type":"about:blank","title":"Not Found","status":404,"detail":"no job x","instance":"/v1/jobs/x"}`,
			want:     client.Problem{Type: "about:blank", Title: "Not Found", Status: 404, Detail: "no job x", Instance: "/v1/jobs/x"},
			notFound: true, text: "404 Not Found: no job x"},
		{name: "failed job", status: 500, ctype: "application/problem+json",
			body: `{"type":"urn:docket:problem:job-failed","title":"The job failed","status":500,"detail":"boom","code":"handler_error"}`,
			want: client.Problem{Type: "urn:docket:problem:job-failed", Title: "The job failed", Status: 500, Detail: "boom", Code: "handler_error"},
			text: "500 The job failed: boom"},
		{name: "retry-after seconds", status: 503, ctype: "application/problem+json", header: map[string]string{"Retry-After": "7"},
			body: `{"title":"Queue full","status":503}`,
			want: client.Problem{Title: "Queue full", Status: 503, RetryAfter: 7 * time.Second}, text: "503 Queue full"},
		{name: "retry_after in the document", status: 429, ctype: "application/problem+json",
			body: `{"title":"Too Many Requests","status":429,"retry_after":3}`,
			want: client.Problem{Title: "Too Many Requests", Status: 429, RetryAfter: 3 * time.Second}},
		{name: "retry-after date", status: 503, ctype: "application/problem+json", header: map[string]string{"Retry-After": date},
			body: `{"title":"Unavailable","status":503}`,
			want: client.Problem{Title: "Unavailable", Status: 503}, retryMin: 8 * time.Second},
		{name: "no status in the document", status: 409, ctype: "application/json", body: `{"title":"Conflict","detail":"job is running"}`,
			want: client.Problem{Title: "Conflict", Status: 409, Detail: "job is running"}},
		{name: "plain text from a proxy", status: 502, ctype: "text/plain; charset=utf-8", body: "upstream went away\n",
			want: client.Problem{Title: "Bad Gateway", Status: 502, Detail: "upstream went away"}, text: "502 Bad Gateway: upstream went away"},
		{name: "html", status: 500, ctype: "text/html", body: "<html>oops</html>",
			want: client.Problem{Title: "Internal Server Error", Status: 500}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			hs := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Content-Type", tc.ctype)
				for k, v := range tc.header {
					w.Header().Set(k, v)
				}
				w.WriteHeader(tc.status)
				io.WriteString(w, tc.body)
			}))
			defer hs.Close()
			_, err := client.New(hs.URL, "").Get(t.Context(), "x")
			var p *client.Problem
			if !errors.As(err, &p) {
				t.Fatalf("error %T %v, want a *Problem", err, err)
			}
			got := *p
			if tc.retryMin > 0 {
				if got.RetryAfter < tc.retryMin || got.RetryAfter > tc.retryMin+3*time.Second {
					t.Errorf("RetryAfter %v, want about %v", got.RetryAfter, tc.retryMin+2*time.Second)
				}
				got.RetryAfter = 0
			}
			if got != tc.want {
				t.Errorf("problem %+v, want %+v", got, tc.want)
			}
			if client.IsNotFound(err) != tc.notFound {
				t.Errorf("IsNotFound %v", !tc.notFound)
			}
			if tc.text != "" && err.Error() != tc.text {
				t.Errorf("Error() %q, want %q", err.Error(), tc.text)
			}
		})
	}
}

func TestAdmissionAndAuth(t *testing.T) {
	srv, c := newServer(t, "secret", engine.Queue{Name: "small", MaxQueued: 1})
	cases := []struct {
		name   string
		c      *client.Client
		queue  string
		status int
		retry  time.Duration
	}{
		{"unknown queue", c, "nope", 404, 0},
		{"no token", client.New(srv.URL, ""), "echo", 401, 0},
		{"wrong token", client.New(srv.URL, "guess"), "echo", 401, 0},
		{"first fits", c, "small", 0, 0},
		{"queue full", c, "small", 503, time.Second},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			for _, mp := range []bool{false, true} {
				_, err := tc.c.Submit(t.Context(), tc.queue, strings.NewReader("x"), client.SubmitOptions{Multipart: mp})
				if tc.status == 0 {
					if err != nil {
						t.Fatal(err)
					}
					return // once is enough
				}
				var p *client.Problem
				if !errors.As(err, &p) || p.Status != tc.status || p.RetryAfter != tc.retry {
					t.Fatalf("multipart %v: %#v, want status %d retry %v", mp, err, tc.status, tc.retry)
				}
			}
		})
	}
}

func TestResult(t *testing.T) {
	srv, c := newServer(t, "", held, engine.Queue{Name: "steps", Concurrency: 1, Handler: apitest.Steps(2, nil)})
	ctx := t.Context()
	queued := submit(t, c, "held", "in", client.SubmitOptions{}).ID
	running := submit(t, c, "steps", "in", client.SubmitOptions{}).ID
	srv.Await(t, running, func(j *job.Job) bool { return j.State == job.Running })
	done := submit(t, c, "echo", "# done", client.SubmitOptions{ContentType: "text/markdown"}).ID
	failed := submit(t, c, "echo", `{"fail": "no pages"}`, jsonInput).ID
	wait(t, c, done)
	wait(t, c, failed)
	canceled := submit(t, c, "held", "in", client.SubmitOptions{}).ID
	if _, err := c.Cancel(ctx, canceled); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		id      string
		pending client.State
		status  int
		detail  string
		code    string
		body    string
	}{
		{id: queued, pending: client.StateQueued},
		{id: running, pending: client.StateRunning},
		{id: done, body: "# done"},
		{id: failed, status: 500, detail: "no pages", code: "handler_error"},
		{id: canceled, status: 409},
		{id: "nope", status: 404},
	}
	for _, tc := range cases {
		ctype, body, err := c.Result(ctx, tc.id)
		switch {
		case tc.pending != "":
			pe, ok := errors.AsType[*client.PendingError](err)
			if !ok || !errors.Is(err, client.ErrPending) || pe.RetryAfter != time.Second || pe.Job == nil || pe.Job.State != tc.pending {
				t.Errorf("%s: %#v, want pending while %s", tc.id, err, tc.pending)
			}
		case tc.status != 0:
			p, ok := errors.AsType[*client.Problem](err)
			if !ok || p.Status != tc.status || !strings.Contains(p.Detail, tc.detail) || p.Code != tc.code || errors.Is(err, client.ErrPending) {
				t.Errorf("%s: %v, want %d %q", tc.id, err, tc.status, tc.detail)
			}
		default:
			if err != nil {
				t.Fatalf("%s: %v", tc.id, err)
			}
			b, _ := io.ReadAll(body)
			body.Close()
			if string(b) != tc.body || ctype != "text/markdown" {
				t.Errorf("%s: %q (%s)", tc.id, b, ctype)
			}
		}
	}
}

func TestArtifacts(t *testing.T) {
	_, c := newServer(t, "")
	ctx := t.Context()
	j := submit(t, c, "echo", `{"artifacts": {"page-2.png": "png22", "page-001.png": "png1"}}`, jsonInput)
	if j = wait(t, c, j.ID); j.State != client.StateSucceeded || j.Artifacts != 2 {
		t.Fatalf("job %+v", j)
	}
	list, err := c.Artifacts(ctx, j.ID)
	if err != nil {
		t.Fatal(err)
	}
	if len(list) != 2 || list[0] != (client.Artifact{Name: "page-001.png", ContentType: "image/png", Size: 4, URL: "/v1/jobs/" + j.ID + "/artifacts/page-001.png"}) || list[1].Size != 5 {
		t.Fatalf("artifacts %+v", list)
	}
	ctype, body, err := c.Artifact(ctx, j.ID, "page-2.png")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(body)
	body.Close()
	if string(b) != "png22" || ctype != "image/png" {
		t.Errorf("artifact %q (%s)", b, ctype)
	}
	if _, _, err := c.Artifact(ctx, j.ID, "page-3.png"); !client.IsNotFound(err) {
		t.Errorf("unknown artifact: %v", err)
	}
	// The name goes as one path segment, "/" included, and the server
	// refuses it as a name: it never reaches another path.
	if _, _, err := c.Artifact(ctx, j.ID, "../etc/passwd"); !isStatus(err, 400) {
		t.Errorf("name with slashes: %v, want 400", err)
	}
	if _, err := c.Artifacts(ctx, "nope"); !client.IsNotFound(err) {
		t.Errorf("unknown job: %v", err)
	}
}

func isStatus(err error, status int) bool {
	p, ok := errors.AsType[*client.Problem](err)
	return ok && p.Status == status
}

func TestCancelRetryDelete(t *testing.T) {
	_, c := newServer(t, "", held)
	ctx := t.Context()
	j := submit(t, c, "held", "", client.SubmitOptions{})
	status := func(err error) int {
		if p, ok := errors.AsType[*client.Problem](err); ok {
			return p.Status
		}
		if err != nil {
			t.Fatal(err)
		}
		return 0
	}
	steps := []struct {
		name   string
		do     func() (*client.Job, error)
		state  client.State
		status int
	}{
		{"retry a queued job", func() (*client.Job, error) { return c.Retry(ctx, j.ID) }, "", 409},
		{"cancel", func() (*client.Job, error) { return c.Cancel(ctx, j.ID) }, client.StateCanceled, 0},
		{"cancel again", func() (*client.Job, error) { return c.Cancel(ctx, j.ID) }, "", 409},
		{"retry", func() (*client.Job, error) { return c.Retry(ctx, j.ID) }, client.StateQueued, 0},
		{"get", func() (*client.Job, error) { return c.Get(ctx, j.ID) }, client.StateQueued, 0},
		{"delete", func() (*client.Job, error) { return nil, c.Delete(ctx, j.ID) }, "", 0},
		{"get deleted", func() (*client.Job, error) { return c.Get(ctx, j.ID) }, "", 404},
		{"delete deleted", func() (*client.Job, error) { return nil, c.Delete(ctx, j.ID) }, "", 404},
		{"cancel unknown", func() (*client.Job, error) { return c.Cancel(ctx, "nope") }, "", 404},
	}
	for _, st := range steps {
		got, err := st.do()
		if s := status(err); s != st.status {
			t.Fatalf("%s: status %d (%v), want %d", st.name, s, err, st.status)
		}
		if st.state != "" && got.State != st.state {
			t.Fatalf("%s: state %s, want %s", st.name, got.State, st.state)
		}
	}
}

func TestList(t *testing.T) {
	_, c := newServer(t, "", engine.Queue{Name: "other"})
	// Jobs 0, 2 and 4 go to echo: 0 fails, 2 succeeds and 4 waits for its
	// delay; 1 and 3 stay queued in other, which has no workers.
	inputs := []string{`{"fail": "x"}`, `{}`, `{}`, `{}`, `{}`}
	var ids []string
	for i, in := range inputs {
		q, o := "echo", client.SubmitOptions{ContentType: "application/json", Labels: map[string]string{"n": string(rune('a' + i))}}
		if i%2 == 1 {
			q, o.Labels["odd"] = "other", "yes"
		}
		if i == 4 {
			o.Delay = time.Hour
		}
		ids = append(ids, submit(t, c, q, in, o).ID)
	}
	wait(t, c, ids[0])
	wait(t, c, ids[2])
	ids0, ids1, ids2, ids3, ids4 := ids[0], ids[1], ids[2], ids[3], ids[4]
	cases := []struct {
		name string
		o    client.ListOptions
		want []string // newest first
		next bool
	}{
		{"all", client.ListOptions{}, []string{ids4, ids3, ids2, ids1, ids0}, false},
		{"queue", client.ListOptions{Queue: "other"}, []string{ids3, ids1}, false},
		{"states", client.ListOptions{States: []string{"failed", "succeeded"}}, []string{ids2, ids0}, false},
		{"label", client.ListOptions{Labels: map[string]string{"odd": "yes", "n": "d"}}, []string{ids3}, false},
		{"first page", client.ListOptions{Limit: 2}, []string{ids4, ids3}, true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			l, err := c.List(t.Context(), tc.o)
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, j := range l.Jobs {
				got = append(got, j.ID)
			}
			if !slices.Equal(got, tc.want) || (l.NextCursor != "") != tc.next {
				t.Errorf("jobs %v (next %q), want %v", got, l.NextCursor, tc.want)
			}
		})
	}
	t.Run("pages", func(t *testing.T) {
		var got []string
		o := client.ListOptions{Limit: 2}
		for {
			l, err := c.List(t.Context(), o)
			if err != nil {
				t.Fatal(err)
			}
			for _, j := range l.Jobs {
				got = append(got, j.ID)
			}
			if l.NextCursor == "" {
				break
			}
			if len(got) > len(ids) {
				t.Fatalf("paging does not end: %v", got)
			}
			o.Cursor = l.NextCursor
		}
		if !slices.Equal(got, []string{ids4, ids3, ids2, ids1, ids0}) {
			t.Errorf("paged %v", got)
		}
	})
}

func TestQueues(t *testing.T) {
	// One worker, held by its first job: the second stays queued.
	srv, c := newServer(t, "", engine.Queue{Name: "pdf", Concurrency: 1, MaxQueued: 100, Handler: apitest.Steps(1, nil)})
	ctx := t.Context()
	j := submit(t, c, "pdf", "", client.SubmitOptions{})
	srv.Await(t, j.ID, func(j *job.Job) bool { return j.State == job.Running })
	submit(t, c, "pdf", "", client.SubmitOptions{})
	q, err := c.Pause(ctx, "pdf")
	if err != nil || !q.Paused || q.Name != "pdf" || q.Counts.Running != 1 {
		t.Fatalf("pause: %+v, %v", q, err)
	}
	qs, err := c.Queues(ctx)
	if err != nil {
		t.Fatal(err)
	}
	want := []client.Queue{
		{Name: "echo", Concurrency: 4, MaxAttempts: 3, Retention: "24h0m0s"},
		{Name: "pdf", Concurrency: 1, Paused: true, MaxQueued: 100, MaxAttempts: 1, Retention: "24h0m0s", Counts: client.QueueCounts{Queued: 1, Running: 1}},
	}
	if !slices.Equal(qs, want) {
		t.Errorf("queues %+v, want %+v", qs, want)
	}
	if q, err := c.Resume(ctx, "pdf"); err != nil || q.Paused {
		t.Errorf("resume: %+v, %v", q, err)
	}
	if _, err := c.Pause(ctx, "nope"); !client.IsNotFound(err) {
		t.Errorf("unknown queue: %v", err)
	}
}

// Wait follows a job through its versions with long polls and hands each
// new one to progress, ending with the final state.
func TestWait(t *testing.T) {
	// The handler takes each step only once Wait has shown the previous
	// one, so that none is coalesced away.
	next := make(chan struct{}, 5)
	_, c := newServer(t, "", held, engine.Queue{Name: "steps", Concurrency: 1, Handler: apitest.Steps(5, next)})
	j := submit(t, c, "steps", "", client.SubmitOptions{})
	var seen []*client.Job
	var steps []int64
	start := time.Now()
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	final, err := c.Wait(ctx, j.ID, func(j *client.Job) {
		seen = append(seen, j)
		if j.State == client.StateRunning && j.Progress.Current > 0 {
			steps = append(steps, j.Progress.Current)
			next <- struct{}{}
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	if final.State != client.StateSucceeded || final.Progress.Current != 5 {
		t.Fatalf("final %+v", final)
	}
	if !slices.Equal(steps, []int64{1, 2, 3, 4, 5}) {
		t.Errorf("steps seen %v", steps)
	}
	if len(seen) < 6 || seen[len(seen)-1].Version != final.Version {
		t.Fatalf("progress called %d times, last %+v", len(seen), seen[len(seen)-1])
	}
	for i := 1; i < len(seen); i++ {
		if seen[i].Version <= seen[i-1].Version {
			t.Fatalf("versions not increasing: %d then %d", seen[i-1].Version, seen[i].Version)
		}
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("took %v: long polls did not return on changes", d)
	}

	t.Run("context ends first", func(t *testing.T) {
		j := submit(t, c, "held", "", client.SubmitOptions{})
		ctx, cancel := context.WithTimeout(t.Context(), 100*time.Millisecond)
		defer cancel()
		if _, err := c.Wait(ctx, j.ID, nil); !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("err %v", err)
		}
		if got, err := c.Get(t.Context(), j.ID); err != nil || got.State != client.StateQueued {
			t.Errorf("the job was touched: %+v, %v", got, err)
		}
	})
	t.Run("unknown job", func(t *testing.T) {
		if _, err := c.Wait(t.Context(), "nope", nil); !client.IsNotFound(err) {
			t.Fatalf("err %v", err)
		}
	})
}

// Wait rides out a server that is briefly unavailable, and falls back to
// long polls on a server without event streams.
func TestWaitRetriesUnavailable(t *testing.T) {
	var calls atomic.Int32
	hs := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		events := strings.HasSuffix(r.URL.Path, "/events")
		if !events && (r.URL.Query().Get("wait") != "30s" || r.URL.Query().Get("after") == "") {
			t.Errorf("poll without wait and after: %s", r.URL)
		}
		switch n := calls.Add(1); {
		case n <= 2:
			w.Header().Set("Retry-After", "0")
			w.Header().Set("Content-Type", "application/problem+json")
			w.WriteHeader(503)
			io.WriteString(w, `{"title":"restarting","status":503}`)
		case events:
			w.Header().Set("Content-Type", "application/problem+json")
			w.WriteHeader(404)
			io.WriteString(w, `{"type":"urn:docket:problem:not-found","title":"Not found","status":404}`)
		default:
			io.WriteString(w, `{"id":"a","state":"succeeded","version":9}`)
		}
	}))
	defer hs.Close()
	j, err := client.New(hs.URL, "").Wait(t.Context(), "a", nil)
	if err != nil || j.Version != 9 || calls.Load() != 4 {
		t.Fatalf("%+v, %v after %d calls", j, err, calls.Load())
	}
}

// patternReader produces size bytes of a known pattern without holding
// them.
type patternReader struct {
	off, size int64
}

func (r *patternReader) Read(p []byte) (int, error) {
	if r.off >= r.size {
		return 0, io.EOF
	}
	n := int(min(int64(len(p)), r.size-r.off, 64<<10))
	copy(p, pattern[r.off%251:][:n])
	r.off += int64(n)
	return n, nil
}

// pattern holds the byte at offset i at pattern[i%251], for any 64 KiB
// stretch.
var pattern = func() []byte {
	b := make([]byte, 251+64<<10)
	for i := range b {
		b[i] = byte(i % 251)
	}
	return b
}()

// A 50 MiB input goes through the client as a stream, and arrives whole.
// The server runs in this process and spools uploads to disk as they
// arrive, so the heap stays small only if the client streams too.
func TestSubmitStreams(t *testing.T) {
	const size = 50 << 20
	// Bodies are limited as in production, with room for this one.
	srv := apitest.Start(t, apitest.Options{Queues: []engine.Queue{held}, MaxBody: 64 << 20})
	c := client.New(srv.URL, "")
	for _, mp := range []bool{false, true} {
		t.Run(map[bool]string{false: "raw", true: "multipart"}[mp], func(t *testing.T) {
			src := &patternReader{size: size}
			runtime.GC()
			var ms runtime.MemStats
			runtime.ReadMemStats(&ms)
			base := ms.HeapAlloc
			var peak atomic.Uint64
			stop := make(chan struct{})
			var wg sync.WaitGroup
			wg.Go(func() {
				tick := time.NewTicker(2 * time.Millisecond)
				defer tick.Stop()
				for {
					var ms runtime.MemStats
					runtime.ReadMemStats(&ms)
					if ms.HeapAlloc > peak.Load() {
						peak.Store(ms.HeapAlloc)
					}
					select {
					case <-stop:
						return
					case <-tick.C:
					}
				}
			})
			j, err := c.Submit(t.Context(), "held", src, client.SubmitOptions{Multipart: mp, Filename: "big.bin"})
			close(stop)
			wg.Wait()
			if err != nil {
				t.Fatalf("submit: %v", err)
			}
			want := client.Blob{ContentType: "application/octet-stream", Size: size}
			if mp {
				want.Filename = "big.bin" // a raw body has no place for one
			}
			if j.Input != want {
				t.Errorf("input %+v, want %+v", j.Input, want)
			}
			grew := int64(peak.Load()) - int64(base)
			t.Logf("heap grew by %d KiB", grew>>10)
			if grew > 20<<20 {
				t.Errorf("heap grew by %d MiB during the upload", grew>>20)
			}
			// What was stored is what was read, byte for byte.
			rc, err := srv.Engine.Store().OpenInput(t.Context(), j.ID)
			if err != nil {
				t.Fatal(err)
			}
			defer rc.Close()
			var off int64
			buf := make([]byte, 64<<10)
			for {
				n, err := io.ReadFull(rc, buf)
				if !bytes.Equal(buf[:n], pattern[off%251:][:n]) {
					t.Fatalf("stored input differs from the sent one within %d bytes from offset %d", n, off)
				}
				off += int64(n)
				if err == io.EOF || err == io.ErrUnexpectedEOF {
					break
				}
				if err != nil {
					t.Fatal(err)
				}
			}
			if off != size {
				t.Fatalf("stored %d bytes, want %d", off, size)
			}
		})
	}
}

// Submit tells the server the length of inputs whose length it knows, so
// that an oversized one can be refused before it is sent.
func TestSubmitContentLength(t *testing.T) {
	lengths := make(chan int64, 1)
	srv := apitest.Start(t, apitest.Options{Queues: []engine.Queue{held}, Observe: func(r *http.Request) {
		if r.Method == http.MethodPost {
			lengths <- r.ContentLength
		}
	}})
	c := client.New(srv.URL, "")
	for _, tc := range []struct {
		body io.Reader
		want int64
		size int64
	}{
		{bytes.NewReader([]byte("12345")), 5, 5},
		{strings.NewReader(""), 0, 0},
		{nil, 0, 0},
		{io.LimitReader(strings.NewReader("abc"), 3), -1, 3},
	} {
		j, err := c.Submit(t.Context(), "held", tc.body, client.SubmitOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if got := <-lengths; got != tc.want {
			t.Errorf("%T: Content-Length %d, want %d", tc.body, got, tc.want)
		}
		if j.Input.Size != tc.size {
			t.Errorf("%T: stored %d bytes, want %d", tc.body, j.Input.Size, tc.size)
		}
	}
}
