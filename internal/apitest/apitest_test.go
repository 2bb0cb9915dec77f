package apitest_test

import (
	"errors"
	"io"
	"net/http"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/docket/docket/client"
	"github.com/docket/docket/internal/api"
	"github.com/docket/docket/internal/apitest"
	"github.com/docket/docket/internal/engine"
	"github.com/docket/docket/internal/job"
)

func result(t *testing.T, c *client.Client, id string) (string, string) {
	t.Helper()
	ctype, body, err := c.Result(t.Context(), id)
	if err != nil {
		t.Fatal(err)
	}
	defer body.Close()
	b, err := io.ReadAll(body)
	if err != nil {
		t.Fatal(err)
	}
	return ctype, string(b)
}

func TestEcho(t *testing.T) {
	srv := apitest.Start(t, apitest.Options{})
	c := client.New(srv.URL, "")
	ctx := t.Context()
	cases := []struct {
		name, ctype, input string
		state              client.State
		progress           int64
		artifacts          []client.Artifact
		err                string
	}{
		{name: "text", ctype: "text/plain", input: "hello", state: client.StateSucceeded},
		{name: "json without asks", ctype: "application/json", input: `[1, 2]`, state: client.StateSucceeded},
		{name: "steps", ctype: "application/json", input: `{"steps": 3}`, state: client.StateSucceeded, progress: 3},
		{name: "steps of a text", ctype: "text/plain", input: `{"steps": 3}`, state: client.StateSucceeded},
		{name: "artifacts", ctype: "application/json", input: `{"artifacts": {"b.png": "png", "a.bin": "12345"}}`, state: client.StateSucceeded,
			artifacts: []client.Artifact{{Name: "a.bin", ContentType: "application/octet-stream", Size: 5}, {Name: "b.png", ContentType: "image/png", Size: 3}}},
		{name: "fail", ctype: "application/json", input: `{"steps": 2, "fail": "no pages"}`, state: client.StateFailed, progress: 2, err: "no pages"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			j, err := c.Submit(ctx, "echo", strings.NewReader(tc.input), client.SubmitOptions{ContentType: tc.ctype})
			if err != nil {
				t.Fatal(err)
			}
			j, err = c.Wait(ctx, j.ID, nil)
			if err != nil {
				t.Fatal(err)
			}
			if j.State != tc.state || j.Progress.Current != tc.progress || j.Progress.Total != tc.progress || j.Artifacts != len(tc.artifacts) {
				t.Fatalf("job %+v", j)
			}
			if tc.state == client.StateFailed {
				// Failed for good, though the queue allows three attempts.
				if j.Error == nil || j.Error.Message != tc.err || j.Attempt != 1 || j.MaxAttempts != 3 {
					t.Fatalf("error %+v after %d of %d attempts", j.Error, j.Attempt, j.MaxAttempts)
				}
				return
			}
			if ctype, b := result(t, c, j.ID); ctype != tc.ctype || b != tc.input {
				t.Errorf("result %q (%s)", b, ctype)
			}
			list, err := c.Artifacts(ctx, j.ID)
			if err != nil {
				t.Fatal(err)
			}
			for i := range list {
				list[i].URL = ""
			}
			if len(list) != len(tc.artifacts) || (len(list) > 0 && (list[0] != tc.artifacts[0] || list[1] != tc.artifacts[1])) {
				t.Errorf("artifacts %+v", list)
			}
		})
	}
}

// Steps moves only when the test says so, and every step is seen.
func TestSteps(t *testing.T) {
	next := make(chan struct{})
	srv := apitest.Start(t, apitest.Options{Queues: []engine.Queue{
		{Name: "paced", Concurrency: 1, Handler: apitest.Steps(2, next)},
		{Name: "held", Concurrency: 1, Handler: apitest.Steps(1, nil)},
	}})
	c := client.New(srv.URL, "")
	j, err := c.Submit(t.Context(), "paced", strings.NewReader("in"), client.SubmitOptions{ContentType: "text/plain"})
	if err != nil {
		t.Fatal(err)
	}
	for step := int64(1); step <= 2; step++ {
		got := srv.Await(t, j.ID, func(j *job.Job) bool { return j.Progress.Current == step })
		if got.State != job.Running || got.Progress.Total != 2 || got.Progress.Message == "" {
			t.Fatalf("step %d: %+v", step, got)
		}
		next <- struct{}{}
	}
	srv.Await(t, j.ID, func(j *job.Job) bool { return j.State.Terminal() })
	if ctype, b := result(t, c, j.ID); ctype != "text/plain" || b != "in" {
		t.Errorf("result %q (%s)", b, ctype)
	}
	// A nil channel holds the job running until it is canceled.
	h, _ := c.Submit(t.Context(), "held", nil, client.SubmitOptions{})
	srv.Await(t, h.ID, func(j *job.Job) bool { return j.State == job.Running && j.Progress.Current == 1 })
	if _, err := c.Cancel(t.Context(), h.ID); err != nil {
		t.Fatal(err)
	}
	if got := srv.Job(t, h.ID); got.State != job.Canceled {
		t.Errorf("held job %s after cancel", got.State)
	}
}

func TestOptions(t *testing.T) {
	var mu sync.Mutex
	var seen []string
	srv := apitest.Start(t, apitest.Options{
		Tokens: map[string]apitest.Token{
			"alice-secret": {Owner: "alice", Scopes: []string{api.ScopeSubmit, api.ScopeRead}},
			"ops-secret":   {Owner: "ops", Scopes: []string{api.ScopeAdmin}},
		},
		// No workers on echo: its jobs stay queued.
		Queues:  []engine.Queue{{Name: "echo"}},
		MaxBody: 10,
		Rate:    1000, Burst: 1000,
		Observe: func(r *http.Request) {
			mu.Lock()
			defer mu.Unlock()
			seen = append(seen, r.Method+" "+r.URL.Path+" "+r.Header.Get("Idempotency-Key"))
		},
	})
	ctx := t.Context()
	alice := client.New(srv.URL, "alice-secret")
	j, err := alice.Submit(ctx, "echo", strings.NewReader("0123456789"), client.SubmitOptions{IdempotencyKey: "k"})
	if err != nil {
		t.Fatal(err)
	}
	if got := srv.Job(t, j.ID); got.Owner != "alice" || got.State != job.Queued || got.IdempotencyKey != "k" {
		t.Errorf("stored %+v", got)
	}
	if b := srv.Input(t, j.ID); string(b) != "0123456789" {
		t.Errorf("input %q", b)
	}
	if _, err := alice.Submit(ctx, "echo", strings.NewReader("0123456789A"), client.SubmitOptions{}); !isStatus(err, 413) {
		t.Errorf("over MaxBody: %v", err)
	}
	if _, err := alice.Pause(ctx, "echo"); !isStatus(err, 403) {
		t.Errorf("pause without admin: %v", err)
	}
	if _, err := client.New(srv.URL, "ops-secret").Pause(ctx, "echo"); err != nil {
		t.Errorf("pause as admin: %v", err)
	}
	if _, err := client.New(srv.URL, "guess").Queues(ctx); !isStatus(err, 401) {
		t.Errorf("unknown token: %v", err)
	}
	qs, err := alice.Queues(ctx)
	if err != nil || len(qs) != 1 || qs[0].Name != "echo" || qs[0].Concurrency != 0 {
		t.Errorf("queues %+v, %v", qs, err)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(seen) < 2 || seen[0] != "POST /v1/queues/echo/jobs k" {
		t.Errorf("observed %q", seen)
	}
}

func TestRate(t *testing.T) {
	srv := apitest.Start(t, apitest.Options{Rate: 0.001, Burst: 1})
	c := client.New(srv.URL, "")
	if _, err := c.Queues(t.Context()); err != nil {
		t.Fatal(err)
	}
	_, err := c.Queues(t.Context())
	if p, ok := errors.AsType[*client.Problem](err); !ok || p.Status != 429 || p.RetryAfter <= 0 {
		t.Fatalf("second request: %v", err)
	}
}

// Close cancels a job the test left running instead of waiting for it,
// removes what New made, and may be called again.
func TestNewAndClose(t *testing.T) {
	tmp := t.TempDir()
	t.Setenv("TMPDIR", tmp)
	srv, err := apitest.New(apitest.Options{Queues: []engine.Queue{{Name: "held", Concurrency: 1, Handler: apitest.Steps(1, nil)}}})
	if err != nil {
		t.Fatal(err)
	}
	if entries, _ := os.ReadDir(tmp); len(entries) != 1 {
		t.Fatalf("New made %d directories in $TMPDIR, want 1", len(entries))
	}
	c := client.New(srv.URL, "")
	j, err := c.Submit(t.Context(), "held", nil, client.SubmitOptions{})
	if err != nil {
		t.Fatal(err)
	}
	srv.Await(t, j.ID, func(j *job.Job) bool { return j.State == job.Running })
	start := time.Now()
	srv.Close()
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("Close took %v with a job running", d)
	}
	srv.Close()
	if entries, _ := os.ReadDir(tmp); len(entries) != 0 {
		t.Errorf("left behind: %v", entries)
	}
	if _, err := c.Queues(t.Context()); err == nil {
		t.Error("the server still answers after Close")
	}
}

func isStatus(err error, status int) bool {
	p, ok := errors.AsType[*client.Problem](err)
	return ok && p.Status == status
}
