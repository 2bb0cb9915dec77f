package client_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"mime"
	"mime/multipart"
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
	"github.com/docket/docket/client/clienttest"
)

func newFake(t *testing.T, token string) (*clienttest.Server, *client.Client) {
	t.Helper()
	s := clienttest.NewServer(token)
	t.Cleanup(s.Close)
	return s, client.New(s.URL, token)
}

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

func TestSubmit(t *testing.T) {
	s, c := newFake(t, "secret")
	runAt := time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)
	cases := []struct {
		name      string
		body      io.Reader
		o         client.SubmitOptions
		query     string // encoded, sorted by key
		header    map[string]string
		ctype     string
		filename  string
		input     string
		multipart bool
	}{
		{
			name: "every option",
			body: strings.NewReader("hello"),
			o: client.SubmitOptions{ContentType: "text/plain", IdempotencyKey: "k1", Priority: 5,
				Delay: 90 * time.Second, RunAt: runAt, Timeout: time.Minute, MaxAttempts: 2,
				Labels: map[string]string{"doc": "a", "b": "c:d"}, Unique: true},
			query:  "delay=1m30s&label=b%3Ac%3Ad&label=doc%3Aa&max_attempts=2&priority=5&run_at=2030-01-02T03%3A04%3A05Z&timeout=1m0s&unique=true",
			header: map[string]string{"Idempotency-Key": "k1", "Authorization": "Bearer secret", "Prefer": ""},
			ctype:  "text/plain",
			input:  "hello",
		},
		{
			name:   "nothing",
			query:  "",
			ctype:  "application/octet-stream", // the server's default
			header: map[string]string{"Idempotency-Key": ""},
		},
		{
			name:      "multipart",
			body:      io.MultiReader(strings.NewReader("%PDF-"), strings.NewReader("1.7")), // no known length
			o:         client.SubmitOptions{Multipart: true, ContentType: "application/pdf", Filename: `scan "1".pdf`, Priority: -1},
			query:     "priority=-1",
			ctype:     "application/pdf",
			filename:  `scan "1".pdf`,
			input:     "%PDF-1.7",
			multipart: true,
		},
		{
			name:      "multipart without name or type",
			body:      strings.NewReader("x"),
			o:         client.SubmitOptions{Multipart: true},
			ctype:     "application/octet-stream",
			filename:  "input",
			input:     "x",
			multipart: true,
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			j, err := c.Submit(t.Context(), "echo", tc.body, tc.o)
			if err != nil {
				t.Fatal(err)
			}
			if j.State != client.StateQueued || j.Queue != "echo" || j.Links.Self != "/v1/jobs/"+j.ID {
				t.Errorf("job %+v", j)
			}
			sub := s.Submission(j.ID)
			if got := sub.Query.Encode(); got != tc.query {
				t.Errorf("query %s, want %s", got, tc.query)
			}
			for k, v := range tc.header {
				if got := sub.Header.Get(k); got != v {
					t.Errorf("header %s: %q, want %q", k, got, v)
				}
			}
			if sub.ContentType != tc.ctype || sub.Filename != tc.filename || string(sub.Input) != tc.input ||
				sub.Multipart != tc.multipart || sub.Size != int64(len(tc.input)) {
				t.Errorf("input %+v", sub)
			}
			if j.Input.ContentType != tc.ctype || j.Input.Size != int64(len(tc.input)) {
				t.Errorf("job input %+v", j.Input)
			}
		})
	}
	t.Run("idempotency key", func(t *testing.T) {
		a, err := c.Submit(t.Context(), "echo", strings.NewReader("1"), client.SubmitOptions{IdempotencyKey: "same"})
		if err != nil {
			t.Fatal(err)
		}
		b, err := c.Submit(t.Context(), "echo", strings.NewReader("2"), client.SubmitOptions{IdempotencyKey: "same"})
		if err != nil || b.ID != a.ID {
			t.Fatalf("second submit: %v, %v; want job %s", b, err, a.ID)
		}
	})
	t.Run("prefer wait", func(t *testing.T) {
		s.OnSubmit(func(id string) { s.Succeed(id, "text/plain", []byte("done")) })
		defer s.OnSubmit(nil)
		j, err := c.Submit(t.Context(), "echo", strings.NewReader("quick"), client.SubmitOptions{Wait: 1500 * time.Millisecond})
		if err != nil {
			t.Fatal(err)
		}
		if j.State != client.StateSucceeded || j.Result == nil || j.Result.Size != 4 {
			t.Errorf("job %+v", j)
		}
		if got := s.Submission(j.ID).Header.Get("Prefer"); got != "wait=2" {
			t.Errorf("Prefer: %q, want wait=2 (rounded up)", got)
		}
	})
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
	s, c := newFake(t, "secret")
	s.AddQueue("small", 1, 1)
	cases := []struct {
		name   string
		c      *client.Client
		queue  string
		status int
		retry  time.Duration
	}{
		{"unknown queue", c, "nope", 404, 0},
		{"no token", client.New(s.URL, ""), "echo", 401, 0},
		{"wrong token", client.New(s.URL, "guess"), "echo", 401, 0},
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
	s, c := newFake(t, "")
	ctx := t.Context()
	submit := func() string {
		j, err := c.Submit(ctx, "echo", strings.NewReader("in"), client.SubmitOptions{})
		if err != nil {
			t.Fatal(err)
		}
		return j.ID
	}
	queued, running, done, failed, canceled := submit(), submit(), submit(), submit(), submit()
	s.Progress(running, 1, 2, "half")
	s.Succeed(done, "text/markdown", []byte("# done"))
	s.Fail(failed, "no pages")
	if _, err := c.Cancel(ctx, canceled); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		id      string
		pending client.State
		status  int
		detail  string
		body    string
	}{
		{id: queued, pending: client.StateQueued},
		{id: running, pending: client.StateRunning},
		{id: done, body: "# done"},
		{id: failed, status: 500, detail: "no pages"},
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
			if !ok || p.Status != tc.status || !strings.Contains(p.Detail, tc.detail) || errors.Is(err, client.ErrPending) {
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
	s, c := newFake(t, "")
	ctx := t.Context()
	j, _ := c.Submit(ctx, "echo", nil, client.SubmitOptions{})
	s.AddArtifact(j.ID, "page-001.png", "image/png", []byte("png1"))
	s.AddArtifact(j.ID, "page 2.png", "image/png", []byte("png22"))
	list, err := c.Artifacts(ctx, j.ID)
	if err != nil {
		t.Fatal(err)
	}
	if len(list) != 2 || list[0] != (client.Artifact{Name: "page-001.png", ContentType: "image/png", Size: 4, URL: "/v1/jobs/" + j.ID + "/artifacts/page-001.png"}) || list[1].Size != 5 {
		t.Fatalf("artifacts %+v", list)
	}
	ctype, body, err := c.Artifact(ctx, j.ID, "page 2.png")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(body)
	body.Close()
	if string(b) != "png22" || ctype != "image/png" {
		t.Errorf("artifact %q (%s)", b, ctype)
	}
	if _, _, err := c.Artifact(ctx, j.ID, "../etc/passwd"); !client.IsNotFound(err) {
		t.Errorf("unknown artifact: %v", err)
	}
	if _, err := c.Artifacts(ctx, "nope"); !client.IsNotFound(err) {
		t.Errorf("unknown job: %v", err)
	}
}

func TestCancelRetryDelete(t *testing.T) {
	s, c := newFake(t, "")
	ctx := t.Context()
	j, _ := c.Submit(ctx, "echo", nil, client.SubmitOptions{})
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
	_ = s
}

func TestList(t *testing.T) {
	s, c := newFake(t, "")
	ctx := t.Context()
	s.AddQueue("other", 2, 0)
	var ids []string
	for i := range 5 {
		q, labels := "echo", map[string]string{"n": string(rune('a' + i))}
		if i%2 == 1 {
			q, labels["odd"] = "other", "yes"
		}
		j, err := c.Submit(ctx, q, nil, client.SubmitOptions{Labels: labels})
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, j.ID)
	}
	s.Fail(ids[0], "x")
	s.Succeed(ids[2], "text/plain", nil)
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
			l, err := c.List(ctx, tc.o)
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
			l, err := c.List(ctx, o)
			if err != nil {
				t.Fatal(err)
			}
			for _, j := range l.Jobs {
				got = append(got, j.ID)
			}
			if l.NextCursor == "" {
				break
			}
			o.Cursor = l.NextCursor
		}
		if !slices.Equal(got, []string{ids4, ids3, ids2, ids1, ids0}) {
			t.Errorf("paged %v", got)
		}
	})
}

func TestQueues(t *testing.T) {
	s, c := newFake(t, "")
	ctx := t.Context()
	s.AddQueue("pdf", 4, 100)
	j, _ := c.Submit(ctx, "pdf", nil, client.SubmitOptions{})
	c.Submit(ctx, "pdf", nil, client.SubmitOptions{})
	s.Progress(j.ID, 1, 0, "")
	q, err := c.Pause(ctx, "pdf")
	if err != nil || !q.Paused || q.Name != "pdf" {
		t.Fatalf("pause: %+v, %v", q, err)
	}
	qs, err := c.Queues(ctx)
	if err != nil {
		t.Fatal(err)
	}
	want := []client.Queue{
		{Name: "echo", Concurrency: 1},
		{Name: "pdf", Concurrency: 4, Paused: true, MaxQueued: 100, Counts: client.QueueCounts{Queued: 1, Running: 1}},
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
	s, c := newFake(t, "")
	s.OnSubmit(func(id string) {
		for i := range int64(5) {
			time.Sleep(20 * time.Millisecond)
			s.Progress(id, i+1, 5, "step")
		}
		s.Succeed(id, "text/plain", []byte("ok"))
	})
	j, err := c.Submit(t.Context(), "echo", nil, client.SubmitOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var seen []*client.Job
	start := time.Now()
	final, err := c.Wait(t.Context(), j.ID, func(j *client.Job) { seen = append(seen, j) })
	if err != nil {
		t.Fatal(err)
	}
	if final.State != client.StateSucceeded || final.Progress.Current != 5 {
		t.Fatalf("final %+v", final)
	}
	if len(seen) < 3 || seen[len(seen)-1].Version != final.Version {
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
		s.OnSubmit(nil)
		j, _ := c.Submit(t.Context(), "echo", nil, client.SubmitOptions{})
		ctx, cancel := context.WithTimeout(t.Context(), 100*time.Millisecond)
		defer cancel()
		if _, err := c.Wait(ctx, j.ID, nil); !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("err %v", err)
		}
		if got, _ := s.Job(j.ID); got.State != client.StateQueued {
			t.Errorf("the job was touched: %s", got.State)
		}
	})
	t.Run("unknown job", func(t *testing.T) {
		if _, err := c.Wait(t.Context(), "nope", nil); !client.IsNotFound(err) {
			t.Fatalf("err %v", err)
		}
	})
}

// Wait rides out a server that is briefly unavailable.
func TestWaitRetriesUnavailable(t *testing.T) {
	var calls atomic.Int32
	hs := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Query().Get("wait") != "30s" || r.URL.Query().Get("after") == "" {
			t.Errorf("poll without wait and after: %s", r.URL)
		}
		switch calls.Add(1) {
		case 1, 2:
			w.Header().Set("Retry-After", "0")
			w.Header().Set("Content-Type", "application/problem+json")
			w.WriteHeader(503)
			io.WriteString(w, `{"title":"restarting","status":503}`)
		default:
			io.WriteString(w, `{"id":"a","state":"succeeded","version":9}`)
		}
	}))
	defer hs.Close()
	j, err := client.New(hs.URL, "").Wait(t.Context(), "a", nil)
	if err != nil || j.Version != 9 || calls.Load() != 3 {
		t.Fatalf("%+v, %v after %d calls", j, err, calls.Load())
	}
}

// patternReader produces size bytes of a known pattern without holding
// them, and checks that the client never reads far ahead of what the server
// has received.
type patternReader struct {
	off, size int64
	received  *atomic.Int64
	maxAhead  atomic.Int64
}

func (r *patternReader) Read(p []byte) (int, error) {
	if r.off >= r.size {
		return 0, io.EOF
	}
	if ahead := r.off - r.received.Load(); ahead > r.maxAhead.Load() {
		r.maxAhead.Store(ahead)
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

// A 50 MiB input goes through the client as a stream: the heap stays small
// and the client stays close behind the server.
func TestSubmitStreams(t *testing.T) {
	const size = 50 << 20
	for _, mp := range []bool{false, true} {
		t.Run(map[bool]string{false: "raw", true: "multipart"}[mp], func(t *testing.T) {
			var received atomic.Int64
			var bad atomic.Value
			hs := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				var in io.Reader = r.Body
				if mt, params, _ := mime.ParseMediaType(r.Header.Get("Content-Type")); mt == "multipart/form-data" {
					part, err := multipart.NewReader(r.Body, params["boundary"]).NextPart()
					if err != nil || part.FormName() != "file" || part.FileName() != "big.bin" {
						bad.Store("no file part")
						return
					}
					in = part
				}
				buf := make([]byte, 64<<10)
				for {
					n, err := in.Read(buf)
					if !bytes.Equal(buf[:n], pattern[received.Load()%251:][:n]) {
						bad.Store("corrupt input")
						return
					}
					received.Add(int64(n))
					if err == io.EOF {
						break
					}
					if err != nil {
						bad.Store(err.Error())
						return
					}
				}
				w.Header().Set("Content-Type", "application/json")
				w.WriteHeader(http.StatusAccepted)
				io.WriteString(w, `{"id":"big","state":"queued","version":1}`)
			}))
			defer hs.Close()

			src := &patternReader{size: size, received: &received}
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
			j, err := client.New(hs.URL, "").Submit(t.Context(), "big", src, client.SubmitOptions{Multipart: mp, Filename: "big.bin"})
			close(stop)
			wg.Wait()
			if err != nil || j.ID != "big" {
				t.Fatalf("submit: %v", err)
			}
			if v := bad.Load(); v != nil {
				t.Fatal(v)
			}
			if received.Load() != size {
				t.Fatalf("server received %d bytes, want %d", received.Load(), size)
			}
			grew := int64(peak.Load()) - int64(base)
			t.Logf("heap grew by %d KiB; the client read at most %d KiB ahead", grew>>10, src.maxAhead.Load()>>10)
			if grew > 20<<20 {
				t.Errorf("heap grew by %d MiB during the upload", grew>>20)
			}
			// Socket buffers on loopback can hold a few MiB.
			if a := src.maxAhead.Load(); a > 16<<20 {
				t.Errorf("the client read %d KiB ahead of the server", a>>10)
			}
		})
	}
}

// Submit tells the server the length of inputs whose length it knows, so
// that an oversized one can be refused before it is sent.
func TestSubmitContentLength(t *testing.T) {
	lengths := make(chan int64, 1)
	hs := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		lengths <- r.ContentLength
		io.Copy(io.Discard, r.Body)
		io.WriteString(w, `{"id":"a","state":"queued"}`)
	}))
	defer hs.Close()
	c := client.New(hs.URL, "")
	for _, tc := range []struct {
		body io.Reader
		want int64
	}{
		{bytes.NewReader([]byte("12345")), 5},
		{strings.NewReader(""), 0},
		{nil, 0},
		{io.LimitReader(strings.NewReader("abc"), 3), -1},
	} {
		if _, err := c.Submit(t.Context(), "q", tc.body, client.SubmitOptions{}); err != nil {
			t.Fatal(err)
		}
		if got := <-lengths; got != tc.want {
			t.Errorf("%T: Content-Length %d, want %d", tc.body, got, tc.want)
		}
	}
}
